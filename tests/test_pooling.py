"""max_pool2d with switches, max_unpool2d, nearest and zero-fill unpooling."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from reference import max_pool2d_ref, max_unpool2d_ref
from tinyfcn.kernels import (
    max_pool2d_backward,
    max_unpool2d_backward,
    unpool_nearest,
    unpool_nearest_backward,
    unpool_zeros,
    unpool_zeros_backward,
)

import tinyfcn.functional as F
from tinyfcn import Tensor, gradcheck


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    assume(H + 2 * padding[0] >= kernel[0] and W + 2 * padding[1] >= kernel[1])
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W)
    return shape, kernel, stride, padding, draw(st.booleans())


@given(pool_cases())
def test_max_pool_matches_reference_and_gradchecks(case):
    shape, kernel, stride, padding, ceil_mode = case
    # distinct values: no ties, so the switches are unambiguous and differences are smooth
    x = Tensor(np.random.default_rng(0).permutation(np.prod(shape)).reshape(shape) * 0.1,
               requires_grad=True)
    out, idx = F.max_pool2d(x, kernel, stride, padding, ceil_mode, return_indices=True)
    ref_out, ref_idx = max_pool2d_ref(x.data, kernel, stride, padding, ceil_mode)
    np.testing.assert_array_equal(out.data, ref_out)
    np.testing.assert_array_equal(idx.data, ref_idx)
    assert gradcheck(lambda a: F.max_pool2d(a, kernel, stride, padding, ceil_mode), [x],
                     eps=1e-4)


@given(pool_cases())
def test_pool_backward_kernel_scatters_through_switches(case):
    shape, kernel, stride, padding, ceil_mode = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    _, idx = max_pool2d_ref(x, kernel, stride, padding, ceil_mode)
    g = rng.standard_normal(idx.shape)
    expected = np.zeros((shape[0], shape[1], shape[2] * shape[3]))
    for n in range(shape[0]):
        for c in range(shape[1]):
            np.add.at(expected[n, c], idx[n, c].ravel(), g[n, c].ravel())
    np.testing.assert_allclose(max_pool2d_backward(g, idx, *shape[2:]),
                               expected.reshape(shape))


def test_unpooling_after_pooling_puts_each_maximum_at_its_switch():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 8, 6))
    pooled, idx = F.max_pool2d(x, 2, return_indices=True)
    restored = F.max_unpool2d(pooled, idx, 2, output_size=x.shape).data
    windows = x.reshape(2, 3, 4, 2, 3, 2)
    is_max = windows == windows.max(axis=(3, 5), keepdims=True)
    np.testing.assert_array_equal(restored, np.where(is_max.reshape(x.shape), x, 0))
    np.testing.assert_array_equal(restored, max_unpool2d_ref(pooled.data, idx.data, (8, 6)))


@given(pool_cases())
def test_max_unpool_gradcheck_and_backward_kernel(case):
    shape, kernel, stride, padding, ceil_mode = case
    assume(stride[0] >= kernel[0] and stride[1] >= kernel[1])  # no overlap: switches unique
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal(shape)
    pooled, switches = F.max_pool2d(x0, kernel, stride, padding, ceil_mode, return_indices=True)
    idx = switches.data
    y = Tensor(rng.standard_normal(pooled.shape), requires_grad=True)
    size = shape[2:]
    try:
        F.max_unpool2d(y, idx, kernel, stride, padding, output_size=size)
    except ValueError:
        assume(False)  # pooling size arithmetic PyTorch also rejects for unpooling
    assert gradcheck(lambda a: F.max_unpool2d(a, idx, kernel, stride, padding,
                                              output_size=size), [y])
    g = rng.standard_normal(shape)
    np.testing.assert_array_equal(max_unpool2d_backward(g, idx),
                                  g.reshape(*shape[:2], -1)[np.arange(shape[0])[:, None, None],
                                                            np.arange(shape[1])[None, :, None],
                                                            idx.reshape(*shape[:2], -1)]
                                  .reshape(idx.shape))


@pytest.mark.parametrize("mode", ["nearest", "zeros"])
@given(scale=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)))
def test_switch_free_unpooling(mode, scale, shape):
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    out = F.unpool2d(x, scale, mode).data
    sH, sW = scale
    if mode == "nearest":
        expected = np.repeat(np.repeat(x.data, sH, axis=2), sW, axis=3)
    else:
        expected = np.zeros((*shape[:2], shape[2] * sH, shape[3] * sW))
        expected[:, :, ::sH, ::sW] = x.data
    np.testing.assert_array_equal(out, expected)
    assert gradcheck(lambda a: F.unpool2d(a, scale, mode), [x])
    g = rng.standard_normal(out.shape)
    if mode == "nearest":
        np.testing.assert_allclose(unpool_nearest_backward(g, sH, sW),
                                   g.reshape(*shape[:2], shape[2], sH, shape[3], sW).sum((3, 5)))
        np.testing.assert_array_equal(unpool_nearest(x.data, sH, sW), expected)
    else:
        np.testing.assert_array_equal(unpool_zeros_backward(g, sH, sW), g[:, :, ::sH, ::sW])
        np.testing.assert_array_equal(unpool_zeros(x.data, sH, sW), expected)


def test_ceil_mode_matters():
    x = np.random.default_rng(5).standard_normal((1, 1, 5, 5))
    assert F.max_pool2d(x, 2, 2).shape == (1, 1, 2, 2)
    assert F.max_pool2d(x, 2, 2, ceil_mode=True).shape == (1, 1, 3, 3)


@pytest.mark.parametrize("call, error, message", [
    (lambda x, i: F.max_pool2d(x, 3, padding=2), ValueError, "at most half"),
    (lambda x, i: F.max_pool2d(x, 9), ValueError, "larger than the padded input"),
    (lambda x, i: F.max_pool2d(x, 2, stride=0), ValueError, "stride"),
    (lambda x, i: F.max_unpool2d(x[:, :, :2, :2], i[:, :, :2, :2].astype(float), 2), TypeError,
     "integers"),
    (lambda x, i: F.max_unpool2d(x[:, :, :2, :2], i[:, :, :1, :2], 2), ValueError, "shape"),
    (lambda x, i: F.max_unpool2d(x[:, :, :2, :2], i[:, :, :2, :2] + 100, 2), ValueError,
     r"\[0, 16\)"),
    (lambda x, i: F.max_unpool2d(x[:, :, :2, :2], i[:, :, :2, :2], 2, output_size=(9, 9)),
     ValueError, "output_size"),
    (lambda x, i: F.unpool2d(x, 2, mode="bilinear"), ValueError, "mode"),
])
def test_bad_input_gives_clear_error(call, error, message):
    x = np.random.default_rng(6).standard_normal((1, 2, 5, 5))
    _, idx = F.max_pool2d(x, 2, return_indices=True)
    with pytest.raises(error, match=message):
        call(x, idx.data)


# ------------------------------------------------------------------ PyTorch oracle

@given(pool_cases())
def test_pooling_agrees_with_pytorch(case):
    torch = pytest.importorskip("torch")
    shape, kernel, stride, padding, ceil_mode = case
    x = np.random.default_rng(7).permutation(np.prod(shape)).reshape(shape) * 0.1
    ours, theirs = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, idx = F.max_pool2d(ours, kernel, stride, padding, ceil_mode, return_indices=True)
    ref, ref_idx = torch.nn.functional.max_pool2d(theirs, kernel, stride, padding,
                                                  ceil_mode=ceil_mode, return_indices=True)
    np.testing.assert_array_equal(out.data, ref.detach().numpy())
    np.testing.assert_array_equal(idx.data, ref_idx.numpy())
    g = np.random.default_rng(8).standard_normal(out.shape)
    out.backward(g)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy())
    if stride[0] >= kernel[0] and stride[1] >= kernel[1]:
        y = np.random.default_rng(9).standard_normal(out.shape)
        ours, theirs = Tensor(y, requires_grad=True), torch.tensor(y, requires_grad=True)
        try:
            un = F.max_unpool2d(ours, idx, kernel, stride, padding, output_size=shape[2:])
        except ValueError:
            return
        ref = torch.nn.functional.max_unpool2d(theirs, ref_idx, kernel, stride, padding,
                                               output_size=shape[2:])
        np.testing.assert_array_equal(un.data, ref.detach().numpy())
        g = np.random.default_rng(10).standard_normal(un.shape)
        un.backward(g)
        ref.backward(torch.tensor(g))
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy())


@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5))
def test_specialised_2x2_kernel_matches_the_reference(N, C, h, w):
    from tinyfcn.kernels import max_pool2d_2x2
    rng = np.random.default_rng(h * 10 + w)
    x = rng.integers(0, 4, (N, C, 2 * h, 2 * w)).astype(np.float64)  # many ties
    out, idx = max_pool2d_2x2(x)
    ref_out, ref_idx = max_pool2d_ref(x, (2, 2), (2, 2), (0, 0), False)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(idx, ref_idx)  # ties: the first maximum wins, as PyTorch


def test_nan_wins_the_window_in_both_kernels_as_in_pytorch():
    from tinyfcn.kernels import max_pool2d as generic
    from tinyfcn.kernels import max_pool2d_2x2
    x = np.random.default_rng(5).random((2, 3, 6, 6))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = x[1, 2, 3, 3] = np.nan
    out, idx = max_pool2d_2x2(x)
    ref_out, ref_idx = generic(x, 2, 2, 2, 2, 0, 0, 3, 3)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(idx, ref_idx)
    assert np.isnan(out[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 6  # the last NaN of the window
    try:
        import torch
    except ImportError:
        return
    _, torch_idx = torch.nn.functional.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(idx, torch_idx.numpy())
