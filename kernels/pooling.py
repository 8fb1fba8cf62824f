"""Max pooling with switches, max unpooling, and the two switch-free unpoolings.

A switch is the flat position h * W + w of a window's maximum inside its
(n, c) input plane (PyTorch's index convention). Every kernel runs in parallel
over (n, c) planes, each task touching only its own plane.
"""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def max_pool2d(x, kH, kW, sH, sW, pH, pW, H_out, W_out):
    """x (N, C, H, W) -> (out (N, C, H_out, W_out), switches int64 of the same shape).

    Padding never wins (it is -inf); NaN propagates as the maximum."""
    N, C, H, W = x.shape
    out = np.empty((N, C, H_out, W_out), dtype=x.dtype)
    switches = np.empty((N, C, H_out, W_out), dtype=np.int64)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for oh in range(H_out):
            h0 = oh * sH - pH
            for ow in range(W_out):
                w0 = ow * sW - pW
                best = x[n, c, 0, 0]
                arg = -1
                for h in range(max(h0, 0), min(h0 + kH, H)):
                    for w in range(max(w0, 0), min(w0 + kW, W)):
                        v = x[n, c, h, w]
                        if arg < 0 or v > best or v != v:  # NaN wins, the last as PyTorch
                            best, arg = v, h * W + w
                out[n, c, oh, ow] = best
                switches[n, c, oh, ow] = arg
    return out, switches


@njit(parallel=True, cache=True)
def max_pool2d_2x2(x):
    """The common case, 2x2 windows with stride 2 and no padding on even H and W: four
    loads per output and no bounds arithmetic. Same results as max_pool2d."""
    N, C, H, W = x.shape
    H_out, W_out = H // 2, W // 2
    out = np.empty((N, C, H_out, W_out), dtype=x.dtype)
    switches = np.empty((N, C, H_out, W_out), dtype=np.int64)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for oh in range(H_out):
            h = 2 * oh
            for ow in range(W_out):
                w = 2 * ow
                best, arg = x[n, c, h, w], h * W + w
                v = x[n, c, h, w + 1]
                if v > best or v != v:  # NaN wins (the last one, as PyTorch)
                    best, arg = v, h * W + w + 1
                v = x[n, c, h + 1, w]
                if v > best or v != v:
                    best, arg = v, (h + 1) * W + w
                v = x[n, c, h + 1, w + 1]
                if v > best or v != v:
                    best, arg = v, (h + 1) * W + w + 1
                out[n, c, oh, ow] = best
                switches[n, c, oh, ow] = arg
    return out, switches


@njit(parallel=True, cache=True)
def max_pool2d_backward(grad_out, switches, H, W):
    """Scatter-add each output gradient to the input pixel its switch points at."""
    N, C, H_out, W_out = grad_out.shape
    grad_in = np.zeros((N, C, H * W), dtype=grad_out.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for oh in range(H_out):
            for ow in range(W_out):
                grad_in[n, c, switches[n, c, oh, ow]] += grad_out[n, c, oh, ow]
    return grad_in.reshape(N, C, H, W)


@njit(parallel=True, cache=True)
def max_unpool2d(x, switches, H_out, W_out):
    """Put each value back at its switch in a zero (N, C, H_out, W_out) map."""
    N, C, H, W = x.shape
    out = np.zeros((N, C, H_out * W_out), dtype=x.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                out[n, c, switches[n, c, h, w]] = x[n, c, h, w]
    return out.reshape(N, C, H_out, W_out)


@njit(parallel=True, cache=True)
def max_unpool2d_backward(grad_out, switches):
    """Gather: the gradient of each unpooled value is the gradient at its switch."""
    N, C, H, W = switches.shape
    W_big = grad_out.shape[3]
    grad_in = np.empty((N, C, H, W), dtype=grad_out.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                s = switches[n, c, h, w]
                grad_in[n, c, h, w] = grad_out[n, c, s // W_big, s % W_big]
    return grad_in


@njit(parallel=True, cache=True)
def unpool_nearest(x, sH, sW):
    """Each value copied over its sH x sW block."""
    N, C, H, W = x.shape
    out = np.empty((N, C, H * sH, W * sW), dtype=x.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H * sH):
            for w in range(W * sW):
                out[n, c, h, w] = x[n, c, h // sH, w // sW]
    return out


@njit(parallel=True, cache=True)
def unpool_nearest_backward(grad_out, sH, sW):
    """Sum of the gradient over each block."""
    N, C, H_big, W_big = grad_out.shape
    grad_in = np.zeros((N, C, H_big // sH, W_big // sW), dtype=grad_out.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H_big):
            for w in range(W_big):
                grad_in[n, c, h // sH, w // sW] += grad_out[n, c, h, w]
    return grad_in


@njit(parallel=True, cache=True)
def unpool_zeros(x, sH, sW):
    """Each value at the top-left corner of its sH x sW block, zeros elsewhere."""
    N, C, H, W = x.shape
    out = np.zeros((N, C, H * sH, W * sW), dtype=x.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                out[n, c, h * sH, w * sW] = x[n, c, h, w]
    return out


@njit(parallel=True, cache=True)
def unpool_zeros_backward(grad_out, sH, sW):
    """Gather the gradient at each block's top-left corner."""
    N, C, H_big, W_big = grad_out.shape
    H, W = H_big // sH, W_big // sW
    grad_in = np.empty((N, C, H, W), dtype=grad_out.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                grad_in[n, c, h, w] = grad_out[n, c, h * sH, w * sW]
    return grad_in
