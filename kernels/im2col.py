"""im2col and its adjoint col2im: the two halves of convolution as a matrix multiply.

The column matrix of one image has shape (K, L) = (C*kH*kW, H_out*W_out) (Caffe's
layout): row (c, i, j) holds input channel c seen through kernel tap (i, j) at
every output position. Then conv = W(C_out, K) @ col(K, L), which is NCHW directly.
col2im is the exact transpose of im2col as a linear map: it scatter-adds each
column entry back to the pixel it was read from.
"""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def im2col(x, kH, kW, sH, sW, pH, pW, dH, dW, H_out, W_out):
    """x (N, C, H, W) -> col (N, C*kH*kW, H_out*W_out); padding reads as zero."""
    N, C, H, W = x.shape
    col = np.empty((N, C * kH * kW, H_out * W_out), dtype=x.dtype)
    for nc in prange(N * C):  # each task fills the rows of one (n, c) plane
        n, c = nc // C, nc % C
        for i in range(kH):
            for j in range(kW):
                row = (c * kH + i) * kW + j
                for oh in range(H_out):
                    h = oh * sH - pH + i * dH
                    base = oh * W_out
                    if h < 0 or h >= H:
                        col[n, row, base:base + W_out] = 0
                        continue
                    for ow in range(W_out):
                        w = ow * sW - pW + j * dW
                        col[n, row, base + ow] = x[n, c, h, w] if 0 <= w < W else 0
    return col


@njit(parallel=True, cache=True)
def col2im(col, C, H, W, kH, kW, sH, sW, pH, pW, dH, dW, H_out, W_out):
    """col (N, C*kH*kW, H_out*W_out) -> x (N, C, H, W), summing overlapping taps.

    Parallel over (n, c) planes: a task writes only its own plane, so the
    scatter-add has no write conflicts."""
    N = col.shape[0]
    x = np.zeros((N, C, H, W), dtype=col.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for i in range(kH):
            for j in range(kW):
                row = (c * kH + i) * kW + j
                for oh in range(H_out):
                    h = oh * sH - pH + i * dH
                    if h < 0 or h >= H:
                        continue
                    base = oh * W_out
                    for ow in range(W_out):
                        w = ow * sW - pW + j * dW
                        if 0 <= w < W:
                            x[n, c, h, w] += col[n, row, base + ow]
    return x
