"""One dtype rule: Tensors of two float dtypes meet in no op (no silent float32 -> float64),
and Python values take PyTorch's dtypes, as the Tensor docstring says."""

import operator

import numpy as np
import pytest

from tinyfcn import Tensor

BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
          "div": operator.truediv, "pow": operator.pow, "matmul": operator.matmul}


@pytest.mark.parametrize("name", BINARY)
def test_two_float_dtypes_are_refused_in_forward_with_the_dtypes_named(name):
    op = BINARY[name]
    a = Tensor(np.full((2, 2), 2.0, np.float32), requires_grad=True)
    b = Tensor(np.full((2, 2), 3.0, np.float64), requires_grad=True)
    for x, y in ((a, b), (b, a)):
        with pytest.raises(TypeError, match="inputs mix float32 and float64 Tensors"):
            op(x, y)
    # one dtype: float32 stays float32 through forward and backward, and an array or Python
    # number meeting a Tensor takes its dtype
    others = [Tensor(np.full((2, 2), 3.0, np.float32)), np.full((2, 2), 3.0)]
    for other in others + ([3.0] if name != "matmul" else []):
        out = op(a, other)
        out.backward(np.ones((2, 2), np.float32))
        assert out.dtype == np.float32 and a.grad.dtype == np.float32
        a.grad = None


PYTHON_VALUES = {"ints": ([1, 2, 3], np.int64), "floats": ([1.0, 2.0], np.float32),
                 "mixed": ([1, 2.5], np.float32), "int": (3, np.int64),
                 "float": (2.5, np.float32), "bool": (True, np.bool_),
                 "nested ints": ([[1], [2]], np.int64), "bools": ([True, False], np.bool_)}


@pytest.mark.parametrize("name", PYTHON_VALUES)
def test_python_values_take_pytorchs_dtypes(name):
    data, dtype = PYTHON_VALUES[name]
    assert Tensor(data).dtype == dtype
    try:
        import torch
    except ImportError:
        return
    assert str(torch.tensor(data).dtype).removeprefix("torch.") == np.dtype(dtype).name
