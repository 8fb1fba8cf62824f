"""Numba kernels over plain arrays: no autograd, no Tensor, never imports tinyfcn.

Notation, used in every kernel and wrapper:
    N batch, C channels, H x W input height and width,
    kH x kW kernel, sH x sW stride, pH x pW zero padding, dH x dW dilation,
    H_out x W_out output height and width, L = H_out * W_out,
    K = C * kH * kW rows of the column matrix.
Kernels trust their callers: `tinyfcn.functional` validates every shape and
index before a kernel runs.
"""

from .gemm import gemm_threads, in_parallel, matmul, set_gemm_threads
from .im2col import col2im, col2im_tile, im2col, im2col_tile
from .pooling import (
    max_pool2d,
    max_pool2d_2x2,
    max_pool2d_backward,
    max_unpool2d,
    max_unpool2d_backward,
    unpool_nearest,
    unpool_nearest_backward,
    unpool_zeros,
    unpool_zeros_backward,
)
from .shapes import conv_out_size, conv_transpose_out_size, pool_out_size

__all__ = [
    "col2im", "col2im_tile", "conv_out_size", "conv_transpose_out_size", "gemm_threads",
    "im2col", "im2col_tile", "in_parallel", "matmul",
    "max_pool2d", "max_pool2d_2x2",
    "max_pool2d_backward", "max_unpool2d", "max_unpool2d_backward", "pool_out_size",
    "set_gemm_threads", "unpool_nearest", "unpool_nearest_backward", "unpool_zeros",
    "unpool_zeros_backward",
]
