"""Direct convolution: each output row summed tap by tap, with no column matrix.

Pays where the reduction C*kH*kW is short (an RGB image's first layer: 27 taps), so that a
GEMM would only stream a column matrix nine times the input through memory.
"""

import numpy as np
from numba import njit, prange

from .im2col import _tap_columns


@njit(parallel=True, cache=True)
def conv2d_direct(x, w, bias, sH, sW, pH, pW, dH, dW, H_out, W_out):
    """x (N, C, H, W), w (C_out, C, kH, kW), bias (C_out,) -> y (N, C_out, H_out, W_out).

    One task per output row of one image: its C_out x W_out sums stay in the L1 cache
    while every tap adds a weighted row of the input to them."""
    N, C, H, W = x.shape
    C_out, _, kH, kW = w.shape
    y = np.empty((N, C_out, H_out, W_out), dtype=x.dtype)
    for task in prange(N * H_out):
        n, oh = task // H_out, task % H_out
        acc = np.zeros((C_out, W_out), dtype=x.dtype)
        for c in range(C):
            for i in range(kH):
                h = oh * sH - pH + i * dH
                if h < 0 or h >= H:  # this tap reads padding: adds zero
                    continue
                for j in range(kW):
                    first, last = _tap_columns(W, W_out, j, sW, pW, dW)
                    w0 = first * sW - pW + j * dW
                    if sW == 1:  # a contiguous run of the input row: vectorised
                        row = x[n, c, h, w0:w0 + last - first]
                        for o in range(C_out):
                            weight, out = w[o, c, i, j], acc[o, first:last]
                            for k in range(last - first):
                                out[k] += weight * row[k]
                    else:
                        for o in range(C_out):
                            weight = w[o, c, i, j]
                            for ow in range(first, last):
                                acc[o, ow] += weight * x[n, c, h, w0 + (ow - first) * sW]
        for o in range(C_out):
            y[n, o, oh, :] = acc[o, :] + bias[o]
    return y
