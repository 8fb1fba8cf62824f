"""im2col and its adjoint col2im: the two halves of convolution as a matrix multiply.

The column matrix has shape (K, N*L) = (C*kH*kW, N*H_out*W_out) (Caffe's layout
with the batch folded into the columns): row (c, i, j) holds input channel c seen
through kernel tap (i, j) at every output position of every image. A whole
batch's convolution is then one GEMM, W(C_out, K) @ col(K, N*L), whatever the
image size: even the 4x4 maps of the deepest layers make one large product.
col2im is the exact transpose of im2col as a linear map: it scatter-adds each
column entry back to the pixel it was read from.
"""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def im2col(x, kH, kW, sH, sW, pH, pW, dH, dW, H_out, W_out):
    """x (N, C, H, W) -> col (C*kH*kW, N*H_out*W_out); padding reads as zero."""
    N, C, H, W = x.shape
    L = H_out * W_out
    col = np.empty((C * kH * kW, N * L), dtype=x.dtype)
    for task in prange(C * kH * kW * N):  # one (row, image) strip per task
        row, n = task // N, task % N
        c, i, j = row // (kH * kW), (row // kW) % kH, row % kW
        # the output columns ow whose input column w = ow*sW - pW + j*dW lies inside [0, W)
        first = max(0, -((j * dW - pW) // sW))
        last = min(W_out, (W - 1 - j * dW + pW) // sW + 1) if W - 1 - j * dW + pW >= 0 else 0
        for oh in range(H_out):
            h = oh * sH - pH + i * dH
            base = n * L + oh * W_out
            if h < 0 or h >= H or first >= last:
                col[row, base:base + W_out] = 0
                continue
            col[row, base:base + first] = 0
            col[row, base + last:base + W_out] = 0
            w0 = first * sW - pW + j * dW
            if sW == 1:
                col[row, base + first:base + last] = x[n, c, h, w0:w0 + last - first]
            else:
                for ow in range(first, last):
                    col[row, base + ow] = x[n, c, h, w0 + (ow - first) * sW]
    return col


@njit(parallel=True, cache=True)
def col2im(col, N, C, H, W, kH, kW, sH, sW, pH, pW, dH, dW, H_out, W_out):
    """col (C*kH*kW, N*H_out*W_out) -> x (N, C, H, W), summing overlapping taps.

    Parallel over (n, c) planes: a task writes only its own plane, so the
    scatter-add has no write conflicts."""
    L = H_out * W_out
    x = np.zeros((N, C, H, W), dtype=col.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for i in range(kH):
            for j in range(kW):
                row = (c * kH + i) * kW + j
                first = max(0, -((j * dW - pW) // sW))
                if W - 1 - j * dW + pW < 0:
                    continue
                last = min(W_out, (W - 1 - j * dW + pW) // sW + 1)
                if first >= last:  # this tap never lands inside the image
                    continue
                for oh in range(H_out):
                    h = oh * sH - pH + i * dH
                    if h < 0 or h >= H:
                        continue
                    base = n * L + oh * W_out
                    w0 = first * sW - pW + j * dW
                    if sW == 1:
                        x[n, c, h, w0:w0 + last - first] += col[row, base + first:base + last]
                    else:
                        for ow in range(first, last):
                            x[n, c, h, w0 + (ow - first) * sW] += col[row, base + ow]
    return x
