"""Max pooling with switches, max unpooling (DeconvNet), nearest and zero-fill unpooling."""

from __future__ import annotations

import numpy as np

from tinyfcn.functional._checks import check_float_nchw, pair
from tinyfcn.kernels import (
    conv_transpose_out_size,
    max_pool2d_2x2,
    max_pool2d_backward,
    max_unpool2d_backward,
    pool_out_size,
    unpool_nearest,
    unpool_nearest_backward,
    unpool_zeros,
    unpool_zeros_backward,
)
from tinyfcn.kernels import max_pool2d as max_pool2d_kernel
from tinyfcn.kernels import max_unpool2d as max_unpool2d_kernel
from tinyfcn.tensor import Function, Tensor, as_tensor


class MaxPool2d(Function):
    def __init__(self, kernel, stride, padding, out_hw):
        self.kernel, self.stride, self.padding, self.out_hw = kernel, stride, padding, out_hw

    def forward(self, x):
        """The pooled map and its switches (an auxiliary result, see `Function`)."""
        self.in_hw = x.shape[2:]
        x = np.ascontiguousarray(x)
        if (self.kernel, self.stride, self.padding) == ((2, 2), (2, 2), (0, 0)) and \
                self.out_hw == (x.shape[2] // 2, x.shape[3] // 2):
            out, self.switches = max_pool2d_2x2(x)  # FCN's pooling: a specialised kernel
        else:
            out, self.switches = max_pool2d_kernel(x, *self.kernel, *self.stride,
                                                   *self.padding, *self.out_hw)
        return out, self.switches

    def backward(self, g):
        return (max_pool2d_backward(np.ascontiguousarray(g), self.switches, *self.in_hw),)


def max_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               return_indices=False):
    """Max pooling; with `return_indices` also the switches as an int64 Tensor (flat position
    of each maximum within its (n, c) input plane, as PyTorch)."""
    x = as_tensor(input)
    check_float_nchw(x, "input")
    kernel = pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else pair(stride, "stride", 1)
    padding = pair(padding, "padding", 0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"padding {padding} must be at most half of kernel_size {kernel}")
    H, W = x.shape[2:]
    out_hw = (pool_out_size(H, kernel[0], stride[0], padding[0], ceil_mode),
              pool_out_size(W, kernel[1], stride[1], padding[1], ceil_mode))
    if min(out_hw) < 1:
        raise ValueError(f"kernel_size {kernel} is larger than the padded input "
                         f"{H + 2 * padding[0]}x{W + 2 * padding[1]} (input {H}x{W})")
    out, switches = MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding,
                                    out_hw=out_hw)
    if not return_indices:
        return out
    # a copy: the backward keeps its own switches, whatever a caller does with these
    return out, Tensor(switches.copy())


class MaxUnpool2d(Function):
    def __init__(self, switches, out_hw):
        self.switches, self.out_hw = switches, out_hw

    def forward(self, x):
        return max_unpool2d_kernel(np.ascontiguousarray(x), self.switches, *self.out_hw)

    def backward(self, g):
        return (max_unpool2d_backward(np.ascontiguousarray(g), self.switches),)


def _unpool_output_hw(in_hw, kernel, stride, padding, output_size):
    default = tuple(conv_transpose_out_size(n, k, s, p)
                    for n, k, s, p in zip(in_hw, kernel, stride, padding))
    if output_size is None:
        return default
    size = tuple(int(v) for v in tuple(output_size)[-2:])
    for axis in range(2):
        low, high = default[axis] - stride[axis], default[axis] + stride[axis]
        if not low < size[axis] < high:
            raise ValueError(f"output_size {tuple(output_size)} cannot come from pooling to "
                             f"{tuple(in_hw)}: each size must lie strictly between "
                             f"{tuple(d - s for d, s in zip(default, stride))} and "
                             f"{tuple(d + s for d, s in zip(default, stride))}")
    return size


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Put each value back where its maximum came from (the pooling switches), zeros elsewhere."""
    x = as_tensor(input)
    check_float_nchw(x, "input")
    kernel = pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else pair(stride, "stride", 1)
    padding = pair(padding, "padding", 0)
    switches = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
    if switches.shape != x.shape:
        raise ValueError(f"indices have shape {switches.shape}, input has {x.shape}")
    if switches.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got {switches.dtype}")
    out_hw = _unpool_output_hw(x.shape[2:], kernel, stride, padding, output_size)
    plane = out_hw[0] * out_hw[1]
    if switches.size and (switches.min() < 0 or switches.max() >= plane):
        raise ValueError(f"indices must lie in [0, {plane}) for an output of {out_hw}, "
                         f"got values in [{switches.min()}, {switches.max()}]")
    switches = np.ascontiguousarray(switches, dtype=np.int64)
    return MaxUnpool2d.apply(x, switches=switches, out_hw=out_hw)


class Unpool2d(Function):
    def __init__(self, scale, mode):
        self.scale, self.mode = scale, mode

    def forward(self, x):
        kernel = unpool_nearest if self.mode == "nearest" else unpool_zeros
        return kernel(np.ascontiguousarray(x), *self.scale)

    def backward(self, g):
        kernel = unpool_nearest_backward if self.mode == "nearest" else unpool_zeros_backward
        return (kernel(np.ascontiguousarray(g), *self.scale),)


def unpool2d(input, scale, mode="nearest"):
    """Switch-free unpooling by an integer `scale`: "nearest" copies each value over its
    block, "zeros" puts it in the block's top-left corner and zeros elsewhere."""
    x = as_tensor(input)
    check_float_nchw(x, "input")
    if mode not in ("nearest", "zeros"):
        raise ValueError(f'mode must be "nearest" or "zeros", got {mode!r}')
    return Unpool2d.apply(x, scale=pair(scale, "scale", 1), mode=mode)
