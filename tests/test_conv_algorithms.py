"""conv2d's algorithms ("im2col-tiled", "winograd", "direct") against the "im2col" reference,
the rule that picks one per layer shape, and what a user sees of it."""

import contextlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from oracle import agrees_with_pytorch
from tinyfcn.kernels import gemm, im2col, im2col_tile

import tinyfcn
import tinyfcn.functional as F
import tinyfcn.functional.conv_algorithms as algorithms
from tinyfcn import Tensor, gradcheck
from tinyfcn.functional._checks import pair
from tinyfcn.functional.conv import _geometry

FAST = ("im2col-tiled", "winograd", "direct")


@st.composite
def conv_cases(draw):
    """(x shape, w shape, stride, padding, dilation): 3x3 stride 1 half of the time (the
    shape Winograd takes), any valid geometry otherwise."""
    N, C, C_out = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if draw(st.booleans()):
        (kH, kW), stride, dilation = (3, 3), (1, 1), (1, 1)
    else:
        kH, kW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    H, W = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    assume(H + 2 * padding[0] >= dilation[0] * (kH - 1) + 1)
    assume(W + 2 * padding[1] >= dilation[1] * (kW - 1) + 1)
    return (N, C, H, W), (C_out, C, kH, kW), stride, padding, dilation


@contextlib.contextmanager
def small_tiles_on_three_threads():
    """Tiles of one output row and a pool of 3: every image is cut into several tiles and
    the tiles (or images) are shared unevenly between threads, as on a real layer; Winograd
    band by band of one tile row, and its own weight gradient (the wide layers' paths)."""
    names = ("TILE_BYTES", "WINOGRAD_WEIGHT_GRADIENT_CHANNELS", "WINOGRAD_BAND_TILES")
    saved = [getattr(algorithms, name) for name in names], gemm.gemm_threads()
    for name in names:
        setattr(algorithms, name, 1)
    gemm.set_gemm_threads(3)
    try:
        yield
    finally:
        for name, value in zip(names, saved[0]):
            setattr(algorithms, name, value)
        gemm.set_gemm_threads(saved[1])


def run(algorithm, x, w, b, g, kwargs):
    """Output and the gradients of x, w, b of conv2d with `algorithm`."""
    xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, b))
    out = F.conv2d(xt, wt, bt, algorithm=algorithm, **kwargs)
    out.backward(g)
    return out.data, xt.grad, wt.grad, bt.grad


def unsupported(algorithm, x_shape, w_shape, stride, padding, dilation):
    geo = _geometry(x_shape[1], *x_shape[2:], *w_shape[2:], stride, padding, dilation)
    return algorithms.unsupported(algorithm, geo, w_shape[0])


@pytest.mark.parametrize("algorithm", FAST)
@given(conv_cases())
def test_each_algorithm_equals_the_im2col_reference(algorithm, case):
    """float64: equal to rounding (1e-10). float32: within 2e-5 of the largest entry of the
    float64 reference, for the output and each gradient. Why that tolerance: every value is
    a sum of at most C*kH*kW (forward), C_out*kH*kW (input gradient) or N*H_out*W_out
    (weight gradient) products, here at most a few hundred; float32 rounding grows such a
    sum's error by about sqrt(length) * 6e-8 relative to its largest terms, Winograd's
    transforms (entries of size 1/2 to 1, at most 4 x 4 terms) by a small factor more:
    about 1e-6. 2e-5 leaves a margin of 10 or more, and a tap read from a wrong position
    is off by a whole term (order 1)."""
    x_shape, w_shape, stride, padding, dilation = case
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    why = unsupported(algorithm, *case)
    if why is not None:
        with pytest.raises(ValueError, match=f"algorithm '{algorithm}' cannot compute"):
            F.conv2d(x, w, b, algorithm=algorithm, **kwargs)
        return
    g = rng.standard_normal(F.conv2d(x, w, **kwargs).shape)
    reference = run("im2col", x, w, b, g, kwargs)
    with small_tiles_on_three_threads():
        fast64 = run(algorithm, x, w, b, g, kwargs)
        fast32 = run(algorithm, *(a.astype(np.float32) for a in (x, w, b, g)), kwargs)
    for name, ref, got64, got32 in zip(("output", "x grad", "w grad", "b grad"), reference,
                                       fast64, fast32):
        assert got32.dtype == np.float32, name
        np.testing.assert_allclose(got64, ref, rtol=1e-10, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(got32, ref, rtol=0, atol=2e-5 * max(1, np.abs(ref).max()),
                                   err_msg=name)


@pytest.mark.parametrize("algorithm", FAST)
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((2, 3, 6, 5), (4, 3, 3, 3), dict(padding=1)),
    ((1, 2, 5, 7), (3, 2, 3, 3), dict(padding=(0, 2))),
    ((2, 2, 7, 6), (3, 2, 2, 3), dict(stride=(2, 1), padding=1, dilation=(1, 2))),
])
def test_each_algorithm_gradchecks(algorithm, x_shape, w_shape, kwargs):
    rng = np.random.default_rng(1)
    x, w, b = (Tensor(rng.standard_normal(s), requires_grad=True)
               for s in (x_shape, w_shape, w_shape[:1]))
    stride, padding, dilation = (pair(kwargs.get(k, d), k, d)
                                 for k, d in (("stride", 1), ("padding", 0), ("dilation", 1)))
    if unsupported(algorithm, x_shape, w_shape, stride, padding, dilation) is not None:
        pytest.skip(f"{algorithm} does not apply to this shape (tested to raise above)")
    with small_tiles_on_three_threads():
        assert gradcheck(lambda *a: F.conv2d(*a, algorithm=algorithm, **kwargs), [x, w, b])


@pytest.mark.parametrize("algorithm", FAST)
def test_each_algorithm_agrees_with_pytorch(algorithm):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    arrays = (rng.standard_normal((2, 5, 9, 8)), rng.standard_normal((6, 5, 3, 3)),
              rng.standard_normal(6))
    with small_tiles_on_three_threads():
        agrees_with_pytorch(torch, lambda *t: F.conv2d(*t, padding=1, algorithm=algorithm),
                            lambda *t: torch.nn.functional.conv2d(*t, padding=1), arrays, rng)


def test_tile_kernel_builds_the_columns_of_its_rows():
    """im2col_tile for image n, rows [oh0, oh1) is exactly that slice of im2col's matrix."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    args = (3, 2, 2, 1, 1, 2, 1, 2)  # kH, kW, sH, sW, pH, pW, dH, dW
    H_out, W_out = 4, 5
    full = im2col(x, *args, H_out, W_out)
    col = np.full((3 * 3 * 2, 2 * W_out), np.nan)
    im2col_tile(x, col, 1, 2, 4, *args, W_out)
    L = H_out * W_out
    np.testing.assert_array_equal(col, full[:, L + 2 * W_out:L + 4 * W_out])


def test_a_model_trains_alike_with_the_selection_and_with_im2col_forced():
    """Three SGD steps of FCN-8s-lite from the same weights: the selection (Winograd on the
    wide 3x3 layers here) and im2col forced give the same losses, in float32."""
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    target = np.random.default_rng(5).integers(0, 5, (2, 32, 32))
    losses = {}
    try:
        for forced in (None, "im2col"):
            tinyfcn.set_conv_algorithm(forced)
            tinyfcn.manual_seed(0)
            model = tinyfcn.models.fcn8s(5, backbone="lite")
            opt = tinyfcn.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            losses[forced] = []
            for _ in range(3):
                opt.zero_grad()
                loss = F.cross_entropy(model(x), target)
                loss.backward()
                opt.step()
                losses[forced].append(float(loss.data))
            ran = set(tinyfcn.conv_algorithms().values())
            assert ran == ({"im2col"} if forced else {"im2col", "winograd"}), ran
    finally:
        tinyfcn.set_conv_algorithm(None)
    assert losses[None][2] < losses[None][0]  # it learns
    np.testing.assert_allclose(losses[None], losses["im2col"], rtol=1e-4)


def test_the_rule_and_the_report():
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((1, 16, 8, 8)), rng.standard_normal((16, 16, 3, 3))
    tinyfcn.set_conv_algorithm(None)  # also empties the report
    F.conv2d(x, w, padding=1)
    F.conv2d(x, w[:, :, :1, :1])
    F.conv2d(x[:, :3], w[:, :3], stride=2)
    assert tinyfcn.conv_algorithms() == {
        "16->16 3x3 @ 8x8, stride 1, padding 1": "winograd",
        "16->16 1x1 @ 8x8, stride 1, padding 0": "im2col",
        "3->16 3x3 @ 8x8, stride 2, padding 0": "im2col",
    }
    geo = _geometry(3, 128, 128, 3, 3, (1, 1), (1, 1), (1, 1))
    assert algorithms.choose(geo, 32) == "im2col-tiled"  # an RGB image's first layer


def test_forcing_everywhere_falls_back_where_it_does_not_apply():
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    reference = F.conv2d(x, w, stride=2, algorithm="im2col").data
    try:
        tinyfcn.set_conv_algorithm("winograd")
        y = F.conv2d(x, w, stride=2)  # not Winograd's shape: runs im2col, and says why
        np.testing.assert_array_equal(y.data, reference)
        F.conv2d(x, w, padding=1)
        assert tinyfcn.conv_algorithms() == {
            "2->3 3x3 @ 6x6, stride 2, padding 0":
                "im2col ('winograd' does not apply: F(2x2, 3x3) needs a 3x3 kernel, stride 1 "
                "and dilation 1)",
            "2->3 3x3 @ 6x6, stride 1, padding 1": "winograd",
        }
    finally:
        tinyfcn.set_conv_algorithm(None)


@pytest.mark.parametrize("call, error", [
    (lambda x, w: F.conv2d(x, w, algorithm="fft"), "algorithm must be None or one of"),
    (lambda x, w: F.conv2d(x, w, stride=2, algorithm="winograd"), "stride 1"),
    (lambda x, w: F.conv2d(x, w[:, :, :1, :1], algorithm="im2col-tiled"), "1x1"),
    (lambda x, w: tinyfcn.set_conv_algorithm("Winograd"), "set_conv_algorithm's name"),
])
def test_bad_algorithm_names_and_forced_misfits_raise(call, error):
    rng = np.random.default_rng(8)
    with pytest.raises(ValueError, match=error):
        call(rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3)))


def test_kernels_is_reachable_after_import_tinyfcn():
    code = "import tinyfcn; print(tinyfcn.kernels.im2col.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "im2col"


def test_the_weight_gradient_follows_keep_columns_bytes_as_set(monkeypatch):
    """conv.KEEP_COLUMNS_BYTES, the documented setting, is read when it is needed: set to 0,
    the weight gradient of every algorithm that builds it whole goes tile by tile."""
    import tinyfcn.functional.conv as conv
    rng = np.random.default_rng(4)
    x, g = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((1, 3, 6, 6))
    geo = _geometry(2, 6, 6, 3, 3, (1, 1), (1, 1), (1, 1))
    tiled, real = [], algorithms.tiled_weight_gradient
    monkeypatch.setattr(algorithms, "tiled_weight_gradient",
                        lambda *a: tiled.append(a) or real(*a))
    whole = algorithms.weight_gradient(x, g, geo)
    assert not tiled
    monkeypatch.setattr(conv, "KEEP_COLUMNS_BYTES", 0)
    np.testing.assert_allclose(algorithms.weight_gradient(x, g, geo), whole, rtol=1e-12)
    assert len(tiled) == 1
