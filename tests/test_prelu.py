"""F.prelu and nn.PReLU: a NumPy reference, gradcheck, PyTorch, bad arguments."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import agrees_with_pytorch

import tinyfcn.functional as F
from tinyfcn import Tensor, gradcheck, nn


def prelu_ref(x, weight):
    """Element by element: x if x > 0, else the slope of x's channel times x."""
    out = np.empty_like(x)
    for index in np.ndindex(x.shape):
        slope = weight[0] if weight.size == 1 else weight[index[1]]
        out[index] = x[index] if x[index] > 0 else slope * x[index]
    return out


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.booleans(), st.integers(0, 99))
def test_prelu_matches_reference_and_gradchecks(shape, shared, seed):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    weight = Tensor(rng.uniform(-0.5, 1.0, 1 if shared else shape[1]), requires_grad=True)
    np.testing.assert_array_equal(F.prelu(x, weight).data, prelu_ref(x.data, weight.data))
    assert gradcheck(F.prelu, [x, weight])


def test_prelu_slope_gradient_sums_each_channel_alone():
    # channel 0 all negative, channel 1 all positive: only channel 0's slope gets a gradient
    x = Tensor(np.stack([-np.ones((2, 2)), np.ones((2, 2))])[None], requires_grad=True)
    weight = Tensor(np.array([0.1, 0.2]), requires_grad=True)
    F.prelu(x, weight).sum().backward()
    np.testing.assert_array_equal(weight.grad, [-4.0, 0.0])
    np.testing.assert_array_equal(x.grad[0, 0], 0.1)
    np.testing.assert_array_equal(x.grad[0, 1], 1.0)


@pytest.mark.parametrize("slopes", [1, 3])
def test_prelu_agrees_with_pytorch(slopes):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(slopes)
    x = rng.standard_normal((2, 3, 4, 5))
    weight = rng.uniform(0, 0.5, slopes)
    agrees_with_pytorch(torch, F.prelu, torch.nn.functional.prelu, [x, weight], rng)


def test_prelu_layer_starts_at_a_quarter_and_learns_its_slopes():
    layer = nn.PReLU(3, dtype=np.float64)
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    np.testing.assert_array_equal(layer.weight.data, [0.25] * 3)
    x = -np.ones((1, 3, 2, 2))
    np.testing.assert_array_equal(layer(x).data, -0.25)
    layer(x).sum().backward()
    np.testing.assert_array_equal(layer.weight.grad, [-4.0] * 3)
    assert "num_parameters=3" in repr(layer)


def test_prelu_refuses_bad_arguments():
    x = np.zeros((1, 3, 2, 2))
    with pytest.raises(ValueError, match="2 slopes .* 3 channels"):
        F.prelu(x, np.zeros(2))
    with pytest.raises(ValueError, match="1-d"):
        F.prelu(x, np.zeros((3, 1)))
    with pytest.raises(TypeError, match="weight has dtype float32"):
        F.prelu(x, np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        F.prelu(np.zeros((1, 3), np.int64), np.zeros(3, np.int64))
