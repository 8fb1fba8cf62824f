"""Fuzzing the doors of the kernels: every public op in tinyfcn.functional, driven with
random and often invalid shapes, parameters and dtypes, either agrees with the NumPy
reference or raises ValueError / TypeError. Never a crash, a hang or a wrong answer."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import conv2d_ref, conv_transpose2d_ref, max_pool2d_ref

import tinyfcn.functional as F

DTYPES = [np.float64, np.float64, np.float32, np.float16, np.int64, np.bool_]
param = st.one_of(st.integers(0, 3), st.integers(0, 3), st.integers(-2, 4),
                  st.tuples(st.integers(-1, 4), st.integers(-1, 4)), st.just(1.5), st.just("2"),
                  st.none())
NDIM = st.sampled_from([4, 4, 4, 4, 3, 5])
fuzz = settings(max_examples=150)  # the rest from the profile in conftest.py
OUTCOMES = {"ok": 0, "error": 0}


@st.composite
def arrays(draw, ndim=NDIM):
    """Arrays with random (possibly empty) shapes, dtypes and layouts."""
    n = draw(ndim)
    shape = draw(st.lists(st.integers(0, 5) | st.integers(1, 5), min_size=n, max_size=n))
    dtype = draw(st.sampled_from(DTYPES))
    a = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    layout = draw(st.sampled_from(["c", "fortran", "reversed", "strided"]))
    if layout == "fortran":
        a = np.asfortranarray(a)
    elif layout == "reversed" and a.ndim:
        a = a[..., ::-1]
    elif layout == "strided" and a.ndim:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    return a


def _pair(v):
    return (v, v) if isinstance(v, int) else v


def expect_valid_or_clear_error(call, reference=None):
    try:
        out = call()
    except (ValueError, TypeError):
        OUTCOMES["error"] += 1
        return
    OUTCOMES["ok"] += 1
    if reference is not None:
        np.testing.assert_allclose(out.data, reference(), rtol=1e-4, atol=1e-4)


@fuzz
@given(arrays(), arrays(), param, param, param)
def test_conv2d(x, w, stride, padding, dilation):
    def reference():
        return conv2d_ref(x.astype(np.float64), w.astype(np.float64), None, _pair(stride),
                          _pair(padding), _pair(dilation))
    expect_valid_or_clear_error(lambda: F.conv2d(x, w, None, stride, padding, dilation),
                                reference)


@fuzz
@given(arrays(), arrays(), param, param, param)
def test_conv_transpose2d(x, w, stride, padding, output_padding):
    def reference():
        return conv_transpose2d_ref(x.astype(np.float64), w.astype(np.float64), None,
                                    _pair(stride), _pair(padding), _pair(output_padding))
    expect_valid_or_clear_error(
        lambda: F.conv_transpose2d(x, w, None, stride, padding, output_padding), reference)


@fuzz
@given(arrays(), param, param, param, st.booleans())
def test_max_pool2d(x, kernel, stride, padding, ceil_mode):
    def reference():
        k = _pair(kernel)
        return max_pool2d_ref(x, k, k if stride is None else _pair(stride), _pair(padding),
                              ceil_mode)[0]
    expect_valid_or_clear_error(lambda: F.max_pool2d(x, kernel, stride, padding, ceil_mode),
                                reference if x.size else None)


@fuzz
@given(arrays(), arrays(), param, param, st.one_of(st.none(), st.tuples(st.integers(-1, 12),
                                                                          st.integers(-1, 12))))
def test_max_unpool2d(x, indices, kernel, stride, output_size):
    indices = (np.abs(indices) * 3).astype(np.int64) if indices.dtype.kind == "f" else indices
    expect_valid_or_clear_error(lambda: F.max_unpool2d(x, indices, kernel, stride,
                                                       output_size=output_size))


@fuzz
@given(arrays(), param, st.sampled_from(["nearest", "zeros", "bilinear"]))
def test_unpool2d(x, scale, mode):
    def reference():
        s = (scale, scale) if isinstance(scale, int) else scale
        if mode == "nearest":
            return np.repeat(np.repeat(x, s[0], axis=2), s[1], axis=3)
        out = np.zeros((*x.shape[:2], x.shape[2] * s[0], x.shape[3] * s[1]), x.dtype)
        out[:, :, ::s[0], ::s[1]] = x
        return out
    expect_valid_or_clear_error(lambda: F.unpool2d(x, scale, mode), reference)


@fuzz
@given(arrays(), arrays(st.integers(2, 4)), st.sampled_from(["mean", "sum", "none", "max"]))
def test_cross_entropy(logits, target, reduction):
    target = (target * 3).astype(np.int64) if target.dtype.kind == "f" else target
    expect_valid_or_clear_error(lambda: F.cross_entropy(logits, target, reduction=reduction))


@fuzz
@given(arrays(), param, param)
def test_crop(x, offset, size):
    expect_valid_or_clear_error(lambda: F.crop(x, offset, size))
    expect_valid_or_clear_error(lambda: F.center_crop(x, size))


@fuzz
@given(arrays(), st.floats(-1, 2))
def test_dropout(x, p):
    expect_valid_or_clear_error(lambda: F.dropout(x, p, training=True))


@fuzz
@given(arrays(), st.tuples(st.integers(-1, 5), st.integers(-1, 5)), param, param)
def test_conv2d_matrix(w, input_hw, stride, padding):
    expect_valid_or_clear_error(lambda: F.conv2d_matrix(w, input_hw, stride, padding))


def test_fuzzing_reached_valid_calls_too():
    """Guard against a fuzzer that only ever tests the error paths."""
    if OUTCOMES["ok"] + OUTCOMES["error"] == 0:
        import pytest
        pytest.skip("run together with the fuzz tests above")
    assert OUTCOMES["ok"] >= 0.05 * (OUTCOMES["ok"] + OUTCOMES["error"]), OUTCOMES
