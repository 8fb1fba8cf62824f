"""`tinyfcn.gradcheck`: it refuses what it cannot check, and the name is always the function."""

import importlib
import pkgutil

import numpy as np
import pytest

import tinyfcn
from tinyfcn import Function, Tensor


class WrongSquare(Function):
    """x * x with a wrong backward (3x instead of 2x)."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return (3 * self.x * g,)


def test_gradcheck_refuses_an_input_it_cannot_perturb():
    """A step of eps rounds to 0 on an integer input, so nothing would be checked."""
    for dtype in (np.int64, np.int32, np.bool_):
        x = Tensor(np.arange(1, 5).astype(dtype))
        x.requires_grad = True
        with pytest.raises(TypeError, match=f"input #0 requires grad but has dtype "
                                            f"{np.dtype(dtype)}"):
            tinyfcn.gradcheck(WrongSquare.apply, [x])
    with pytest.raises(AssertionError, match="gradcheck failed"):  # caught on floats
        tinyfcn.gradcheck(WrongSquare.apply, [Tensor(np.arange(1.0, 5.0), requires_grad=True)])


def test_no_submodule_shadows_a_public_name():
    """Importing a submodule sets it as an attribute of the package, so a module named like
    a public function would replace the function for everyone who imported it first."""
    submodules = {m.name for m in pkgutil.iter_modules(tinyfcn.__path__)}
    assert not submodules & set(tinyfcn.__all__)
    importlib.import_module(tinyfcn.gradcheck.__module__)
    assert callable(tinyfcn.gradcheck) and tinyfcn.gradcheck.__name__ == "gradcheck"
