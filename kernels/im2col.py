"""im2col and its adjoint col2im: the two halves of convolution as a matrix multiply.

The column matrix has shape (K, N*L) = (C*kH*kW, N*H_out*W_out) (Caffe's layout
with the batch folded into the columns): row (c, i, j) holds input channel c seen
through kernel tap (i, j) at every output position of every image. A whole
batch's convolution is then one GEMM, W(C_out, K) @ col(K, N*L), whatever the
image size: even the 4x4 maps of the deepest layers make one large product.
col2im is the exact transpose of im2col as a linear map: it scatter-adds each
column entry back to the pixel it was read from.

`im2col_tile` / `col2im_tile` do the same for output rows [oh0, oh1) of one image, into
or out of a small (K, (oh1-oh0)*W_out) tile: the tiled algorithm's pieces, single-threaded
and without the GIL so that several tiles can be worked on at once.
"""

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _tap_columns(W, W_out, j, sW, pW, dW):
    """[first, last): the output columns ow whose input column ow*sW - pW + j*dW lies
    inside [0, W)."""
    first = max(0, -((j * dW - pW) // sW))
    last = min(W_out, (W - 1 - j * dW + pW) // sW + 1) if W - 1 - j * dW + pW >= 0 else 0
    return first, last


@njit(cache=True)
def _gather_strip(x, col, row, base0, n, c, i, j, oh0, oh1, sH, sW, pH, pW, dH, dW, W_out):
    """col[row, base0 + (oh - oh0)*W_out + ow] = x[n, c, h, w] of tap (i, j), for the
    output rows oh in [oh0, oh1); padding reads as zero."""
    H, W = x.shape[2], x.shape[3]
    first, last = _tap_columns(W, W_out, j, sW, pW, dW)
    for oh in range(oh0, oh1):
        h = oh * sH - pH + i * dH
        base = base0 + (oh - oh0) * W_out
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


@njit(cache=True)
def _scatter_strip(col, x, row, base0, n, c, i, j, oh0, oh1, sH, sW, pH, pW, dH, dW, W_out):
    """The adjoint of _gather_strip: x[n, c, h, w] += col[row, ...] for the rows [oh0, oh1)."""
    H, W = x.shape[2], x.shape[3]
    first, last = _tap_columns(W, W_out, j, sW, pW, dW)
    if first >= last:  # this tap never lands inside the image
        return
    for oh in range(oh0, oh1):
        h = oh * sH - pH + i * dH
        if h < 0 or h >= H:
            continue
        base = base0 + (oh - oh0) * W_out
        w0 = first * sW - pW + j * dW
        if sW == 1:
            x[n, c, h, w0:w0 + last - first] += col[row, base + first:base + last]
        else:
            for ow in range(first, last):
                x[n, c, h, w0 + (ow - first) * sW] += col[row, base + ow]


@njit(parallel=True, cache=True)
def im2col(x, kH, kW, sH, sW, pH, pW, dH, dW, H_out, W_out):
    """x (N, C, H, W) -> col (C*kH*kW, N*H_out*W_out); padding reads as zero."""
    N, C = x.shape[:2]
    L = H_out * W_out
    col = np.empty((C * kH * kW, N * L), dtype=x.dtype)
    for task in prange(C * kH * kW * N):  # one (row, image) strip per task
        row, n = task // N, task % N
        c, i, j = row // (kH * kW), (row // kW) % kH, row % kW
        _gather_strip(x, col, row, n * L, n, c, i, j, 0, H_out, sH, sW, pH, pW, dH, dW, W_out)
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
                _scatter_strip(col, x, row, n * L, n, c, i, j, 0, H_out, sH, sW, pH, pW,
                               dH, dW, W_out)
    return x


@njit(nogil=True, cache=True)
def im2col_tile(x, col, n, oh0, oh1, kH, kW, sH, sW, pH, pW, dH, dW, W_out):
    """Image n's output rows [oh0, oh1) into col[:, :(oh1-oh0)*W_out] (col has K rows)."""
    for row in range(x.shape[1] * kH * kW):
        c, i, j = row // (kH * kW), (row // kW) % kH, row % kW
        _gather_strip(x, col, row, 0, n, c, i, j, oh0, oh1, sH, sW, pH, pW, dH, dW, W_out)


@njit(nogil=True, cache=True)
def col2im_tile(col, x, n, oh0, oh1, kH, kW, sH, sW, pH, pW, dH, dW, W_out):
    """x[n] += the adjoint of im2col_tile: col's columns back to image n's pixels."""
    for row in range(x.shape[1] * kH * kW):
        c, i, j = row // (kH * kW), (row // kW) % kH, row % kW
        _scatter_strip(col, x, row, 0, n, c, i, j, oh0, oh1, sH, sW, pH, pW, dH, dW, W_out)
