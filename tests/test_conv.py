"""conv2d and conv_transpose2d: references, gradchecks, the matrix C and its transpose."""

import contextlib

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from oracle import agrees_with_pytorch
from reference import conv2d_ref, conv_transpose2d_ref, im2col_ref
from tinyfcn.kernels import col2im, conv_transpose_out_size, gemm, im2col

import tinyfcn.functional as F
from tinyfcn import Tensor, gradcheck


@st.composite
def conv_cases(draw):
    """(x shape, w shape, stride, padding, dilation) with a valid output."""
    N, C, C_out = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kH, kW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    assume(H + 2 * padding[0] >= dilation[0] * (kH - 1) + 1)
    assume(W + 2 * padding[1] >= dilation[1] * (kW - 1) + 1)
    return (N, C, H, W), (C_out, C, kH, kW), stride, padding, dilation


@given(conv_cases())
def test_im2col_and_col2im_kernels_match_reference_and_are_adjoint(case):
    rng = np.random.default_rng(0)
    x_shape, w_shape, stride, padding, dilation = case
    x = rng.standard_normal(x_shape)
    kernel = w_shape[2:]
    expected, (H_out, W_out) = im2col_ref(x, kernel, stride, padding, dilation)
    col = im2col(x, *kernel, *stride, *padding, *dilation, H_out, W_out)
    np.testing.assert_array_equal(col, expected)
    y = rng.standard_normal(col.shape)
    back = col2im(y, *x_shape, *kernel, *stride, *padding, *dilation,
                  H_out, W_out)
    # col2im is the adjoint (transpose) of im2col: <im2col(x), y> == <x, col2im(y)>
    np.testing.assert_allclose(np.sum(col * y), np.sum(x * back), rtol=1e-10)


@contextlib.contextmanager
def input_gradient_as_conv(on: bool):
    """Stride-1 input gradients by the flipped-kernel convolution (on) or col2im(W.T @ gY)."""
    import tinyfcn.functional.conv as conv
    saved, conv.INPUT_GRADIENT_AS_CONV = conv.INPUT_GRADIENT_AS_CONV, on
    try:
        yield
    finally:
        conv.INPUT_GRADIENT_AS_CONV = saved


@contextlib.contextmanager
def split_products(split: bool):
    """With `split`, every product of the convolutions goes through the thread-split path
    of tinyfcn.kernels.matmul (3 blocks, however small), else through plain `a @ b`."""
    saved = gemm.MIN_FLOP, gemm.gemm_threads()
    gemm.MIN_FLOP, threads = (0, 3) if split else (saved[0], 1)
    gemm.set_gemm_threads(threads)
    try:
        yield
    finally:
        gemm.MIN_FLOP = saved[0]
        gemm.set_gemm_threads(saved[1])


@pytest.mark.parametrize("shape", [(5, 7, 300), (300, 7, 5), (64, 1, 64), (1, 9, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_split_matmul_equals_one_product(shape, dtype):
    M, K, N = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)
    for x, y in [(a, b), (np.asfortranarray(a), b.T.copy().T)]:  # also transposed layouts
        with split_products(True):
            out = gemm.matmul(x, y)
        assert out.flags.c_contiguous and out.dtype == dtype
        np.testing.assert_allclose(out, a @ b, rtol=1e-6 if dtype == np.float32 else 1e-13,
                                   atol=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("split, as_conv", [(False, False), (True, True)],
                         ids=["plain-paths", "fast-paths"])
@given(conv_cases(), st.booleans())
def test_conv2d_matches_reference_and_gradchecks(split, as_conv, case, with_bias):
    rng = np.random.default_rng(1)
    x_shape, w_shape, stride, padding, dilation = case
    x = Tensor(rng.standard_normal(x_shape), requires_grad=True)
    w = Tensor(rng.standard_normal(w_shape), requires_grad=True)
    b = Tensor(rng.standard_normal(w_shape[0]), requires_grad=True) if with_bias else None
    with split_products(split), input_gradient_as_conv(as_conv):
        out = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
        ref = conv2d_ref(x.data, w.data, None if b is None else b.data, stride, padding,
                         dilation)
        np.testing.assert_allclose(out.data, ref, rtol=1e-10, atol=1e-12)
        inputs = [x, w] + ([b] if with_bias else [])
        assert gradcheck(lambda *a: F.conv2d(*a, stride=stride, padding=padding,
                                             dilation=dilation), inputs)


@pytest.mark.parametrize("split", [False, True], ids=["one-product", "thread-split"])
@given(conv_cases(), st.data())
def test_conv_transpose2d_matches_reference_and_gradchecks(split, case, data):
    rng = np.random.default_rng(2)
    (N, C, H, W), (C_out, _, kH, kW), stride, padding, dilation = case
    output_padding = tuple(data.draw(st.integers(0, max(s, d) - 1))
                           for s, d in zip(stride, dilation))
    H_big = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kH - 1) + output_padding[0] + 1
    W_big = (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kW - 1) + output_padding[1] + 1
    assume(H_big >= 1 and W_big >= 1)
    x = Tensor(rng.standard_normal((N, C, H, W)), requires_grad=True)
    w = Tensor(rng.standard_normal((C, C_out, kH, kW)), requires_grad=True)
    b = Tensor(rng.standard_normal(C_out), requires_grad=True)
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding,
                  dilation=dilation)
    with split_products(split):
        out = F.conv_transpose2d(x, w, b, **kwargs)
        ref = conv_transpose2d_ref(x.data, w.data, b.data, **kwargs)
        np.testing.assert_allclose(out.data, ref, rtol=1e-10, atol=1e-12)
        assert gradcheck(lambda *a: F.conv_transpose2d(*a, **kwargs), [x, w, b])


@given(conv_cases())
def test_adjoint_identity_and_the_matrix_C(case):
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)>; conv2d is C @ x, its transpose C.T @ y."""
    rng = np.random.default_rng(3)
    (N, C, H, W), w_shape, stride, padding, dilation = case
    x = rng.standard_normal((1, C, H, W))
    w = rng.standard_normal(w_shape)
    y_data = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation).data
    y = rng.standard_normal(y_data.shape)
    # output_padding recovers the input size the strided conv rounded away
    H_back = (y.shape[2] - 1) * stride[0] - 2 * padding[0] + dilation[0] * (w_shape[2] - 1) + 1
    W_back = (y.shape[3] - 1) * stride[1] - 2 * padding[1] + dilation[1] * (w_shape[3] - 1) + 1
    op = (H - H_back, W - W_back)
    assume(all(o < max(s, d) for o, s, d in zip(op, stride, dilation)))
    back = F.conv_transpose2d(y, w, stride=stride, padding=padding, output_padding=op,
                              dilation=dilation).data
    np.testing.assert_allclose(np.sum(y_data * y), np.sum(x * back), rtol=1e-9)
    matrix = F.conv2d_matrix(w, (H, W), stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(matrix @ x.ravel(), y_data.ravel(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(matrix.T @ y.ravel(), back.ravel(), rtol=1e-10, atol=1e-12)


def test_the_4x16_matrix_of_the_fcn_review():
    w = np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)
    matrix = F.conv2d_matrix(w, (4, 4))
    assert matrix.shape == (4, 16)
    # first output pixel reads the top-left 3x3 window: rows 0-2, columns 0-2 of the 4x4 input
    expected_row0 = np.zeros((4, 4))
    expected_row0[:3, :3] = w[0, 0]
    np.testing.assert_array_equal(matrix[0].reshape(4, 4), expected_row0)
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 4))
    np.testing.assert_allclose(matrix @ x.ravel(), F.conv2d(x, w).data.ravel())
    y = np.random.default_rng(1).standard_normal((1, 1, 2, 2))
    np.testing.assert_allclose(matrix.T @ y.ravel(), F.conv_transpose2d(y, w).data.ravel())


def test_pointwise_conv_is_a_matmul_over_channels():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 5, 3, 4)), rng.standard_normal((6, 5, 1, 1))
    expected = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x)
    np.testing.assert_allclose(F.conv2d(x, w).data, expected)


def test_float32_stays_float32():
    rng = np.random.default_rng(5)
    x = Tensor(rng.standard_normal((1, 2, 6, 6)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), requires_grad=True)
    wt = Tensor(rng.standard_normal((3, 2, 4, 4)).astype(np.float32), requires_grad=True)
    y = F.conv_transpose2d(F.conv2d(x, w, padding=1), wt, stride=2, padding=1)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == w.grad.dtype == wt.grad.dtype == np.float32


def test_non_contiguous_input_is_read_correctly():
    rng = np.random.default_rng(6)
    base = rng.standard_normal((1, 3, 8, 8))
    x = base[:, :, ::-2, 1::2]  # negative strides, not contiguous
    w = rng.standard_normal((2, 3, 3, 3))
    np.testing.assert_allclose(F.conv2d(x, w, padding=1).data,
                               conv2d_ref(np.ascontiguousarray(x), w, padding=(1, 1)))


@pytest.mark.parametrize("call, message", [
    (lambda x, w: F.conv2d(x, w[:, :2]), "input channels"),
    (lambda x, w: F.conv2d(x[:, :, :2, :2], w), "larger than the padded input"),
    (lambda x, w: F.conv2d(x, w, stride=0), "stride must be >= 1"),
    (lambda x, w: F.conv2d(x, w, dilation=-1), "dilation must be >= 1"),
    (lambda x, w: F.conv2d(x, w, padding=-1), "padding must be >= 0"),
    (lambda x, w: F.conv2d(x, w, bias=np.zeros(5)), r"bias must have shape \(4,\)"),
    (lambda x, w: F.conv2d(x[0], w), "4-d"),
    (lambda x, w: F.conv_transpose2d(x, w.transpose(1, 0, 2, 3), stride=2, output_padding=2),
     "output_padding"),
])
def test_bad_input_gives_clear_error(call, message):
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((1, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    with pytest.raises(ValueError, match=message):
        call(x, w)


def test_dtype_mismatch_and_integer_input_raise_type_error():
    w = np.zeros((1, 1, 3, 3))
    with pytest.raises(TypeError, match="dtype"):
        F.conv2d(np.zeros((1, 1, 4, 4), dtype=np.float32), w)
    with pytest.raises(TypeError, match="float32 or float64"):
        F.conv2d(np.zeros((1, 1, 4, 4), dtype=np.int64), w)


# ------------------------------------------------------------------ PyTorch oracle

@given(conv_cases())
def test_conv_ops_agree_with_pytorch(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x_shape, w_shape, stride, padding, dilation = case
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    w = rng.standard_normal(w_shape)
    arrays = (rng.standard_normal(x_shape), w, rng.standard_normal(w_shape[0]))
    torch_f = torch.nn.functional
    out_shape = agrees_with_pytorch(torch, lambda *t: F.conv2d(*t, **kwargs),
                                    lambda *t: torch_f.conv2d(*t, **kwargs), arrays, rng)
    # the transposed conv of the same weight, from the conv's output size
    H_back, W_back = (conv_transpose_out_size(n, k, s, p, 0, d) for n, k, s, p, d in
                      zip(out_shape[2:], w_shape[2:], stride, padding, dilation))
    assume(H_back >= 1 and W_back >= 1)
    arrays = (rng.standard_normal(out_shape), w, rng.standard_normal(w_shape[1]))
    agrees_with_pytorch(torch, lambda *t: F.conv_transpose2d(*t, **kwargs),
                        lambda *t: torch_f.conv_transpose2d(*t, **kwargs), arrays, rng)


def test_taps_that_never_land_inside_the_image():
    """Regression: a 1-pixel input, 3-tap kernel, padding 2, dilation 2 and output padding 1:
    tap 0 only ever meets padding, and col2im once built a negative-length slice for it
    (which wraps around in NumPy indexing)."""
    rng = np.random.default_rng(9)
    x = Tensor(rng.standard_normal((1, 2, 1, 1)), requires_grad=True)
    w = Tensor(rng.standard_normal((2, 3, 3, 3)), requires_grad=True)
    kwargs = dict(padding=2, dilation=2, output_padding=1)
    np.testing.assert_allclose(F.conv_transpose2d(x, w, **kwargs).data,
                               conv_transpose2d_ref(x.data, w.data, padding=(2, 2),
                                                    output_padding=(1, 1), dilation=(2, 2)))
    assert gradcheck(lambda a, b: F.conv_transpose2d(a, b, **kwargs), [x, w])


def test_pointwise_transposed_conv_with_output_padding():
    """Regression (found by the explore profile): a 1x1 transposed conv whose output_padding
    makes the output larger than the input must not take the 1x1 shortcut."""
    rng = np.random.default_rng(10)
    x = Tensor(rng.standard_normal((1, 2, 1, 1)), requires_grad=True)
    w = Tensor(rng.standard_normal((2, 3, 1, 1)), requires_grad=True)
    kwargs = dict(output_padding=(0, 1), dilation=(1, 2))
    np.testing.assert_allclose(F.conv_transpose2d(x, w, **kwargs).data,
                               conv_transpose2d_ref(x.data, w.data, **kwargs))
    assert gradcheck(lambda a, b: F.conv_transpose2d(a, b, **kwargs), [x, w])


def test_weight_gradient_from_rebuilt_columns_equals_the_kept_ones(monkeypatch):
    """Above KEEP_COLUMNS_BYTES backward rebuilds the column matrix from the input instead of
    keeping it: the gradients must not change, not even in the last bit."""
    import tinyfcn.functional.conv as conv
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    grads = []
    for limit in (float("inf"), 0):
        monkeypatch.setattr(conv, "KEEP_COLUMNS_BYTES", limit)
        xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        out = F.conv2d(xt, wt, stride=(2, 2), padding=1, dilation=(1, 2))
        out.backward(Tensor(g))
        grads.append((xt.grad.data, wt.grad.data))
    for kept, rebuilt in zip(*grads):
        np.testing.assert_array_equal(kept, rebuilt)
    monkeypatch.setattr(conv, "KEEP_COLUMNS_BYTES", 0)
    x64 = Tensor(x.astype(np.float64), requires_grad=True)
    w64 = Tensor(w.astype(np.float64), requires_grad=True)
    assert gradcheck(lambda a, b: F.conv2d(a, b, padding=1), [x64, w64])


@given(conv_cases())
def test_stride_one_input_gradient_as_a_flipped_kernel_conv_equals_col2im(case):
    import tinyfcn.functional.conv as conv
    x_shape, w_shape, _, padding, dilation = case
    (_, C, H, W), (C_out, _, kH, kW) = x_shape, w_shape
    geo = conv._geometry(C, H, W, kH, kW, (1, 1), padding, dilation)
    # only cases that take the flipped-kernel path: elsewhere both sides are col2im
    assume(C_out <= C and conv._input_gradient_geometry(geo, C_out) is not None)
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    grads = []
    for as_conv in (False, True):
        xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        with input_gradient_as_conv(as_conv):
            out = F.conv2d(xt, wt, padding=padding, dilation=dilation)
            out.backward(Tensor(np.cos(np.arange(out.data.size)).reshape(out.shape)))
        grads.append(xt.grad.data)
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-10, atol=1e-12)
    with input_gradient_as_conv(True):
        xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        assert gradcheck(lambda a, b: F.conv2d(a, b, padding=padding, dilation=dilation),
                         [xt, wt])


def test_split_products_work_in_a_forked_child():
    """A forked child has none of the parent's pool threads: it must start its own, not
    wait forever for threads that do not exist."""
    import multiprocessing
    a = np.random.default_rng(0).standard_normal((64, 300)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((300, 4000)).astype(np.float32)
    with split_products(True):
        gemm.matmul(a, b)  # the parent's pool has threads now
        with multiprocessing.get_context("fork").Pool(1) as pool:
            out = pool.apply_async(gemm.matmul, (a, b)).get(timeout=60)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)
