"""Convolution as a matrix multiply, and transposed convolution as its transpose.

For one image, conv2d is `y = W @ im2col(x)` with W of shape (C_out, K) and
the column matrix of shape (K, L). Read the same two products the other way:

    conv2d forward           y  = W   @ im2col(x)        (_im2col_gemm)
    conv2d input gradient    gx = col2im(W.T @ gy)       (_gemm_col2im)
    conv2d weight gradient   gW = gy @ im2col(x).T       (_weight_grad)

    conv_transpose2d forward           y  = col2im(W.T @ x)     (_gemm_col2im)
    conv_transpose2d input gradient    gx = W @ im2col(gy)      (_im2col_gemm)
    conv_transpose2d weight gradient   gW = x @ im2col(gy).T    (_weight_grad)

so the transposed convolution is multiplication by C.T, where C is the matrix
of the convolution (`conv2d_matrix`), and both ops share one pair of kernels.
Notation as in `tinyfcn.kernels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyfcn.functional._checks import (
    as_tensor,
    check_bias,
    check_float_nchw,
    check_same_dtype,
    pair,
)
from tinyfcn.kernels import col2im, conv_out_size, conv_transpose_out_size, im2col
from tinyfcn.tensor import Function


@dataclass(frozen=True)
class Geometry:
    """A convolution from an image (C, H, W) to columns (C*kH*kW, H_out*W_out)."""

    C: int
    H: int
    W: int
    kH: int
    kW: int
    sH: int
    sW: int
    pH: int
    pW: int
    dH: int
    dW: int
    H_out: int
    W_out: int

    @property
    def is_pointwise(self) -> bool:
        """A 1x1, stride-1, unpadded conv: the image already is its column matrix."""
        return (self.kH, self.kW, self.sH, self.sW, self.pH, self.pW) == (1, 1, 1, 1, 0, 0)

    def im2col(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, K, L)."""
        if self.is_pointwise:
            return x.reshape(x.shape[0], self.C, self.H * self.W)
        return im2col(np.ascontiguousarray(x), self.kH, self.kW, self.sH, self.sW, self.pH,
                      self.pW, self.dH, self.dW, self.H_out, self.W_out)

    def col2im(self, col: np.ndarray) -> np.ndarray:
        """(N, K, L) -> (N, C, H, W)."""
        if self.is_pointwise:
            return col.reshape(col.shape[0], self.C, self.H, self.W)
        return col2im(col, self.C, self.H, self.W, self.kH, self.kW, self.sH, self.sW,
                      self.pH, self.pW, self.dH, self.dW, self.H_out, self.W_out)


def _im2col_gemm(x: np.ndarray, w2: np.ndarray, geo: Geometry):
    """(N, C, H, W) -> ((N, C_out, L), col (N, K, L))."""
    col = geo.im2col(x)
    return np.matmul(w2, col), col  # (C_out, K) @ (N, K, L) -> (N, C_out, L)


def _gemm_col2im(y: np.ndarray, w2: np.ndarray, geo: Geometry) -> np.ndarray:
    """(N, C_out, L) -> (N, C, H, W)."""
    return geo.col2im(np.matmul(w2.T, y))  # (K, C_out) @ (N, C_out, L) -> (N, K, L)


def _weight_grad(a: np.ndarray, col: np.ndarray) -> np.ndarray:
    """sum over n of a[n] @ col[n].T: (N, C_out, L), (N, K, L) -> (C_out, K)."""
    grad = a[0] @ col[0].T
    for n in range(1, a.shape[0]):
        grad += a[n] @ col[n].T
    return grad


class Conv2d(Function):
    def __init__(self, geo: Geometry):
        self.geo = geo

    def forward(self, x, w, b=None):
        N, C_out = x.shape[0], w.shape[0]
        w2 = w.reshape(C_out, -1)
        y, col = _im2col_gemm(x, w2, self.geo)
        if b is not None:
            y += b[:, None]
        self.w2 = w2 if self.needs_grad[0] else None  # keep only what backward needs
        self.col = col if self.needs_grad[1] else None
        self.w_shape = w.shape
        return y.reshape(N, C_out, self.geo.H_out, self.geo.W_out)

    def backward(self, g):
        N, C_out = g.shape[:2]
        g2 = g.reshape(N, C_out, -1)
        gx = _gemm_col2im(g2, self.w2, self.geo) if self.needs_grad[0] else None
        gw = _weight_grad(g2, self.col).reshape(self.w_shape) if self.needs_grad[1] else None
        gb = g.sum(axis=(0, 2, 3)) if len(self.needs_grad) > 2 and self.needs_grad[2] else None
        return gx, gw, gb


class ConvTranspose2d(Function):
    """The transpose of a conv from the output (C_out, H_out', W_out') to the input (C_in, H, W)."""

    def __init__(self, geo: Geometry):
        self.geo = geo  # image side = this op's output, column side = this op's input

    def forward(self, x, w, b=None):
        N, C_in = x.shape[:2]
        w2 = w.reshape(C_in, -1)  # (C_in, C_out*kH*kW): the transposed conv's (C_out, K)
        y = _gemm_col2im(x.reshape(N, C_in, -1), w2, self.geo)
        if b is not None:
            y += b[:, None, None]
        self.w2, self.w_shape = w2, w.shape
        self.x = x if self.needs_grad[1] else None
        return y

    def backward(self, g):
        N, C_in = g.shape[0], self.w_shape[0]
        gx, col = _im2col_gemm(g, self.w2, self.geo)
        gx = gx.reshape(N, C_in, self.geo.H_out, self.geo.W_out) if self.needs_grad[0] else None
        gw = None
        if self.needs_grad[1]:
            gw = _weight_grad(self.x.reshape(N, C_in, -1), col).reshape(self.w_shape)
        gb = g.sum(axis=(0, 2, 3)) if len(self.needs_grad) > 2 and self.needs_grad[2] else None
        return gx, gw, gb


def _geometry(C, H, W, kH, kW, stride, padding, dilation, H_out=None, W_out=None) -> Geometry:
    (sH, sW), (pH, pW), (dH, dW) = stride, padding, dilation
    if H_out is None:
        H_out, W_out = conv_out_size(H, kH, sH, pH, dH), conv_out_size(W, kW, sW, pW, dW)
    return Geometry(C, H, W, kH, kW, sH, sW, pH, pW, dH, dW, H_out, W_out)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-d convolution (cross-correlation, as PyTorch): NCHW input, weight (C_out, C_in, kH, kW)."""
    x, w = as_tensor(input), as_tensor(weight)
    check_float_nchw(x, "input")
    check_float_nchw(w, "weight")
    check_same_dtype(x, w, "weight")
    stride, padding = pair(stride, "stride", 1), pair(padding, "padding", 0)
    dilation = pair(dilation, "dilation", 1)
    N, C, H, W = x.shape
    C_out, C_w, kH, kW = w.shape
    if C_w != C:
        raise ValueError(f"weight of shape {w.shape} expects {C_w} input channels, "
                         f"input of shape {x.shape} has {C}")
    geo = _geometry(C, H, W, kH, kW, stride, padding, dilation)
    if geo.H_out < 1 or geo.W_out < 1:
        raise ValueError(f"kernel {kH}x{kW} (dilation {dilation}) is larger than the padded "
                         f"input {H + 2 * padding[0]}x{W + 2 * padding[1]} "
                         f"(input {H}x{W}, padding {padding})")
    if bias is None:
        return Conv2d.apply(x, w, geo=geo)
    b = as_tensor(bias)
    check_bias(b, x, C_out)
    return Conv2d.apply(x, w, b, geo=geo)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     dilation=1):
    """Transposed convolution: NCHW input, weight (C_in, C_out, kH, kW), PyTorch semantics."""
    x, w = as_tensor(input), as_tensor(weight)
    check_float_nchw(x, "input")
    check_float_nchw(w, "weight")
    check_same_dtype(x, w, "weight")
    stride, padding = pair(stride, "stride", 1), pair(padding, "padding", 0)
    dilation = pair(dilation, "dilation", 1)
    output_padding = pair(output_padding, "output_padding", 0)
    for axis in range(2):
        if output_padding[axis] >= max(stride[axis], dilation[axis]):
            raise ValueError(f"output_padding {output_padding} must be smaller than stride "
                             f"{stride} or dilation {dilation}")
    N, C_in, H, W = x.shape
    C_w, C_out, kH, kW = w.shape
    if C_w != C_in:
        raise ValueError(f"weight of shape {w.shape} expects {C_w} input channels, "
                         f"input of shape {x.shape} has {C_in}")
    H_big = conv_transpose_out_size(H, kH, stride[0], padding[0], output_padding[0], dilation[0])
    W_big = conv_transpose_out_size(W, kW, stride[1], padding[1], output_padding[1], dilation[1])
    if H_big < 1 or W_big < 1:
        raise ValueError(f"conv_transpose2d output would be {H_big}x{W_big}: padding {padding} "
                         f"is too large for input {H}x{W} and kernel {kH}x{kW}")
    geo = _geometry(C_out, H_big, W_big, kH, kW, stride, padding, dilation, H, W)
    if bias is None:
        return ConvTranspose2d.apply(x, w, geo=geo)
    b = as_tensor(bias)
    check_bias(b, x, C_out)
    return ConvTranspose2d.apply(x, w, b, geo=geo)


def conv2d_matrix(weight, input_hw, stride=1, padding=0, dilation=1) -> np.ndarray:
    """The dense matrix C of shape (C_out*H_out*W_out, C_in*H*W) with
    conv2d(x, w).ravel() == C @ x.ravel() for one image x of shape (C_in, H, W).

    Row (o, oh, ow) holds the weights that output pixel reads; column (c, h, w)
    is one input pixel. For a 3x3 kernel on a 4x4 input this is the 4x16 matrix
    of the FCN review; conv_transpose2d with the same weight multiplies by C.T.
    Built by plain loops: it is a teaching object for small inputs.
    """
    w = np.asarray(weight.data if hasattr(weight, "data") else weight)
    if w.ndim != 4:
        raise ValueError(f"weight must be 4-d (C_out, C_in, kH, kW), got shape {w.shape}")
    H, W = pair(input_hw, "input_hw", 1)
    (sH, sW), (pH, pW) = pair(stride, "stride", 1), pair(padding, "padding", 0)
    dH, dW = pair(dilation, "dilation", 1)
    C_out, C_in, kH, kW = w.shape
    H_out, W_out = conv_out_size(H, kH, sH, pH, dH), conv_out_size(W, kW, sW, pW, dW)
    if H_out < 1 or W_out < 1:
        raise ValueError(f"kernel {kH}x{kW} is larger than the padded input {H}x{W}")
    matrix = np.zeros((C_out, H_out, W_out, C_in, H, W), dtype=w.dtype)
    for oh in range(H_out):
        for ow in range(W_out):
            for i in range(kH):
                for j in range(kW):
                    h, x = oh * sH - pH + i * dH, ow * sW - pW + j * dW
                    if 0 <= h < H and 0 <= x < W:  # taps on padding read zero: no entry
                        matrix[:, oh, ow, :, h, x] = w[:, :, i, j]
    return matrix.reshape(C_out * H_out * W_out, C_in * H * W)
