"""Convolution as a matrix multiply, and transposed convolution as its transpose.

For a batch, conv2d is `Y = W @ im2col(X)`: W is (C_out, K), the column matrix
(K, N*L), Y (C_out, N*L), one GEMM per layer. Read the same products the other
way round:

    conv2d forward           Y  = W   @ im2col(X)        (_im2col_gemm)
    conv2d input gradient    gX = col2im(W.T @ gY)       (_gemm_col2im)
    conv2d weight gradient   gW = gY @ im2col(X).T

    conv_transpose2d forward           Y  = col2im(W.T @ X)     (_gemm_col2im)
    conv_transpose2d input gradient    gX = W @ im2col(gY)      (_im2col_gemm)
    conv_transpose2d weight gradient   gW = X @ im2col(gY).T

so the transposed convolution is multiplication by C.T, where C is the matrix
of the convolution (`conv2d_matrix`), and both ops share one pair of kernels.
(For speed, a stride-1 conv2d computes the same input gradient as a convolution of gY
with the flipped kernel: see INPUT_GRADIENT_AS_CONV. The products go through
`tinyfcn.kernels.matmul`, which may split them over threads.)
Activations are NCHW; `_rows` / `_unrows` move the channel axis in front of the
batch for the GEMMs, (N, C, H, W) <-> (C, N*H*W). Notation as in `tinyfcn.kernels`.

This is conv2d's "im2col" algorithm, the reference; faster ones for particular layer
shapes (tiled, Winograd, direct) live in `tinyfcn.functional.conv_algorithms`, which also
decides which one `conv2d(..., algorithm=None)` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyfcn.functional._checks import (
    check_bias,
    check_float_nchw,
    check_same_dtype,
    pair,
)
from tinyfcn.kernels import col2im, conv_out_size, conv_transpose_out_size, im2col, matmul
from tinyfcn.tensor import Function, Tensor, as_tensor


@dataclass(frozen=True)
class Geometry:
    """A convolution from images (N, C, H, W) to columns (C*kH*kW, N*H_out*W_out)."""

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
        """A 1x1, stride-1, unpadded conv between equal sizes (a transposed conv's
        output_padding adds a row or column): the image already is its column matrix."""
        return ((self.kH, self.kW, self.sH, self.sW, self.pH, self.pW) == (1, 1, 1, 1, 0, 0)
                and (self.H, self.W) == (self.H_out, self.W_out))

    def im2col(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (K, N*L)."""
        if self.is_pointwise:
            return _rows(x)
        return im2col(np.ascontiguousarray(x), self.kH, self.kW, self.sH, self.sW, self.pH,
                      self.pW, self.dH, self.dW, self.H_out, self.W_out)

    def col2im(self, col: np.ndarray) -> np.ndarray:
        """(K, N*L) -> (N, C, H, W)."""
        N = col.shape[1] // (self.H_out * self.W_out)
        if self.is_pointwise:
            return _unrows(col, N, self.H, self.W)
        return col2im(col, N, self.C, self.H, self.W, self.kH, self.kW, self.sH, self.sW,
                      self.pH, self.pW, self.dH, self.dW, self.H_out, self.W_out)


def _rows(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (C, N*H*W), contiguous."""
    N, C = a.shape[:2]
    return np.ascontiguousarray(a.reshape(N, C, -1).transpose(1, 0, 2)).reshape(C, -1)


def _unrows(a: np.ndarray, N: int, H: int, W: int, bias=None) -> np.ndarray:
    """(C, N*H*W) -> (N, C, H, W), contiguous, adding a per-channel bias in the same pass."""
    C = a.shape[0]
    view = a.reshape(C, N, H * W).transpose(1, 0, 2)
    out = np.empty((N, C, H * W), dtype=a.dtype)
    if bias is None:
        out[...] = view
    else:
        np.add(view, bias[:, None], out=out)
    return out.reshape(N, C, H, W)


def _im2col_gemm(x: np.ndarray, w2: np.ndarray, geo: Geometry):
    """(N, C, H, W) -> (Y (C_out, N*L), col (K, N*L))."""
    col = geo.im2col(x)
    return matmul(w2, col), col  # (C_out, K) @ (K, N*L) -> (C_out, N*L)


def _gemm_col2im(y: np.ndarray, w2: np.ndarray, geo: Geometry) -> np.ndarray:
    """(C_out, N*L) -> (N, C, H, W)."""
    return geo.col2im(matmul(w2.T, y))  # (K, C_out) @ (C_out, N*L) -> (K, N*L)


# A stride-1 convolution's input gradient is itself a stride-1 convolution: of gY with the
# kernel flipped and its channel axes swapped, padded by d*(k-1) - p ("full" correlation).
# Computed that way it is im2col(gY) and a GEMM shaped like the forward one, instead of
# W.T @ gY (a GEMM that writes a column matrix with only C_out rows of reduction, bound by
# memory) and col2im (benchmarks/README.md has the gain). Only where C_out <= C_in: otherwise
# im2col(gY) would be the larger matrix. False computes every input gradient as
# col2im(W.T @ gY), the transposed matrix, as the module docstring shows.
INPUT_GRADIENT_AS_CONV = True

# The weight gradient needs the column matrix, kH*kW times the size of the input. Above this
# many bytes backward rebuilds it from the input (which the graph keeps alive anyway, in
# the ReLU before) instead of holding it from forward to backward: a little more time for a
# much lower peak memory (benchmarks/README.md). float("inf") keeps every column matrix.
KEEP_COLUMNS_BYTES = 32 << 20


class Conv2d(Function):
    def __init__(self, geo: Geometry):
        self.geo = geo

    def forward(self, x, w, b=None):
        N, C_out = x.shape[0], w.shape[0]
        w2 = w.reshape(C_out, -1)
        y, col = _im2col_gemm(x, w2, self.geo)
        self.w2 = w2 if self.needs_input_grad[0] else None  # keep only what backward needs
        keep = self.needs_input_grad[1] and col.nbytes <= KEEP_COLUMNS_BYTES
        self.col = col if keep else None
        self.x = x if self.needs_input_grad[1] and not keep else None
        self.w_shape = w.shape
        return _unrows(y, N, self.geo.H_out, self.geo.W_out, b)

    def backward(self, g):
        g2 = _rows(g)                                              # (C_out, N*L)
        gx = None
        if self.needs_input_grad[0]:
            C_out, C_in = self.w_shape[:2]
            flipped = (_input_gradient_geometry(self.geo, C_out)
                       if INPUT_GRADIENT_AS_CONV and C_out <= C_in else None)
            if flipped is None:
                gx = _gemm_col2im(g2, self.w2, self.geo)
            else:
                w_flip = self.w2.reshape(self.w_shape)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
                # (C_in, N*H*W); its column matrix is dropped at once, before the weight's
                gx2 = _im2col_gemm(g, w_flip.reshape(C_in, -1), flipped)[0]
                gx = _unrows(gx2, g.shape[0], self.geo.H, self.geo.W)
        gw = None
        if self.needs_input_grad[1]:
            col = self.col if self.col is not None else self.geo.im2col(self.x)  # (K, N*L)
            gw = matmul(g2, col.T).reshape(self.w_shape)        # (C_out, N*L) @ (N*L, K)
        self.col = self.x = None  # the largest buffers of the step: free them once used
        if len(self.needs_input_grad) == 2:  # called without a bias
            return gx, gw
        return gx, gw, g2.sum(axis=1) if self.needs_input_grad[2] else None


class ConvTranspose2d(Function):
    """The transpose of a conv from the output (C_out, H_out', W_out') to the input (C_in, H, W)."""

    def __init__(self, geo: Geometry):
        self.geo = geo  # image side = this op's output, column side = this op's input

    def forward(self, x, w, b=None):
        C_in = x.shape[1]
        w2 = w.reshape(C_in, -1)  # (C_in, C_out*kH*kW): the transposed conv's (C_out, K)
        x2 = _rows(x)                                              # (C_in, N*L)
        y = _gemm_col2im(x2, w2, self.geo)
        if b is not None:
            y += b[:, None, None]
        self.w2, self.w_shape = w2, w.shape
        self.x2 = x2 if self.needs_input_grad[1] else None
        return y

    def backward(self, g):
        N = g.shape[0]
        gx = gw = None
        if self.needs_input_grad[0]:
            gx2, col = _im2col_gemm(g, self.w2, self.geo)          # (C_in, N*L), (K, N*L)
            gx = _unrows(gx2, N, self.geo.H_out, self.geo.W_out)
        else:
            col = self.geo.im2col(g)                                # (K, N*L)
        if self.needs_input_grad[1]:
            gw = matmul(self.x2, col.T).reshape(self.w_shape)  # (C_in, N*L) @ (N*L, K)
        if len(self.needs_input_grad) == 2:  # called without a bias
            return gx, gw
        return gx, gw, g.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None


def _input_gradient_geometry(geo: Geometry, C_out: int) -> Geometry | None:
    """The stride-1 conv from gY (C_out, H_out, W_out) to gX (C, H, W) with the flipped
    kernel (see INPUT_GRADIENT_AS_CONV), or None where that does not apply (strided, 1x1,
    or padded past the kernel's reach)."""
    pH, pW = geo.dH * (geo.kH - 1) - geo.pH, geo.dW * (geo.kW - 1) - geo.pW
    if (geo.sH, geo.sW) != (1, 1) or geo.is_pointwise or pH < 0 or pW < 0:
        return None
    return Geometry(C_out, geo.H_out, geo.W_out, geo.kH, geo.kW, 1, 1, pH, pW, geo.dH, geo.dW,
                    geo.H, geo.W)


def _geometry(C, H, W, kH, kW, stride, padding, dilation, H_out=None, W_out=None) -> Geometry:
    (sH, sW), (pH, pW), (dH, dW) = stride, padding, dilation
    if H_out is None:
        H_out, W_out = conv_out_size(H, kH, sH, pH, dH), conv_out_size(W, kW, sW, pW, dW)
    return Geometry(C, H, W, kH, kW, sH, sW, pH, pW, dH, dW, H_out, W_out)


def _conv_args(input, weight, bias, stride, padding, dilation, in_axis):
    """Validated tensors and pairs of conv2d (weight's input channels on axis 1) and
    conv_transpose2d (on axis 0); `inputs` are the tensors for Function.apply."""
    x, w = as_tensor(input), as_tensor(weight)
    check_float_nchw(x, "input")
    check_float_nchw(w, "weight")
    check_same_dtype(x, w, "weight")
    if w.shape[in_axis] != x.shape[1]:
        raise ValueError(f"weight of shape {w.shape} expects {w.shape[in_axis]} input "
                         f"channels, input of shape {x.shape} has {x.shape[1]}")
    inputs = (x, w)
    if bias is not None:
        b = as_tensor(bias)
        check_bias(b, x, w.shape[1 - in_axis])
        inputs = (x, w, b)
    return (inputs, pair(stride, "stride", 1), pair(padding, "padding", 0),
            pair(dilation, "dilation", 1))


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, algorithm=None):
    """2-d convolution (cross-correlation, as PyTorch): NCHW input, weight (C_out, C_in, kH, kW).

    `algorithm`: None picks one per layer shape by a fixed rule (see
    `tinyfcn.functional.conv_algorithms`, which also names what ran); "im2col" is the
    literal im2col + GEMM of this module, the reference every other algorithm is tested
    against; "im2col-tiled", "winograd", "direct" force that one (ValueError where it
    does not apply to this shape)."""
    # conv_algorithms builds on this module's Geometry, so it is imported here, not on top
    from tinyfcn.functional import conv_algorithms

    inputs, stride, padding, dilation = _conv_args(input, weight, bias, stride, padding,
                                                   dilation, in_axis=1)
    N, C, H, W = inputs[0].shape
    C_out, _, kH, kW = inputs[1].shape
    geo = _geometry(C, H, W, kH, kW, stride, padding, dilation)
    if geo.H_out < 1 or geo.W_out < 1:
        raise ValueError(f"kernel {kH}x{kW} (dilation {dilation}) is larger than the padded "
                         f"input {H + 2 * padding[0]}x{W + 2 * padding[1]} "
                         f"(input {H}x{W}, padding {padding})")
    function = conv_algorithms.function_for(geo, C_out, algorithm)
    return function.apply(*inputs, geo=geo)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     dilation=1):
    """Transposed convolution: NCHW input, weight (C_in, C_out, kH, kW), PyTorch semantics."""
    inputs, stride, padding, dilation = _conv_args(input, weight, bias, stride, padding,
                                                   dilation, in_axis=0)
    output_padding = pair(output_padding, "output_padding", 0)
    for axis in range(2):
        if output_padding[axis] >= max(stride[axis], dilation[axis]):
            raise ValueError(f"output_padding {output_padding} must be smaller than stride "
                             f"{stride} or dilation {dilation}")
    N, C_in, H, W = inputs[0].shape
    _, C_out, kH, kW = inputs[1].shape
    H_big = conv_transpose_out_size(H, kH, stride[0], padding[0], output_padding[0], dilation[0])
    W_big = conv_transpose_out_size(W, kW, stride[1], padding[1], output_padding[1], dilation[1])
    if H_big < 1 or W_big < 1:
        raise ValueError(f"conv_transpose2d output would be {H_big}x{W_big}: padding {padding} "
                         f"is too large for input {H}x{W} and kernel {kH}x{kW}")
    geo = _geometry(C_out, H_big, W_big, kH, kW, stride, padding, dilation, H, W)
    return ConvTranspose2d.apply(*inputs, geo=geo)


def conv2d_matrix(weight, input_hw, stride=1, padding=0, dilation=1) -> np.ndarray:
    """The dense matrix C of shape (C_out*H_out*W_out, C_in*H*W) with
    conv2d(x, w).ravel() == C @ x.ravel() for one image x of shape (C_in, H, W).

    Row (o, oh, ow) holds the weights that output pixel reads; column (c, h, w)
    is one input pixel. For a 3x3 kernel on a 4x4 input this is the 4x16 matrix
    of the FCN review; conv_transpose2d with the same weight multiplies by C.T.
    Built by plain loops: it is a teaching object for small inputs, and the one function
    of `F` that returns a NumPy array, not a Tensor (a matrix to look at, not an op).
    """
    w = weight.data if isinstance(weight, Tensor) else np.asarray(weight)
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
