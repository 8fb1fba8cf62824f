"""Batch normalisation over (N, H, W) per channel, PyTorch's semantics."""

from __future__ import annotations

import numpy as np

from tinyfcn.functional._checks import check_float_nchw, check_same_dtype
from tinyfcn.tensor import Function, Tensor, as_tensor


class BatchNorm(Function):
    def __init__(self, eps, batch_stats, mean=None, var=None):
        self.eps, self.batch_stats = eps, batch_stats
        self.mean, self.var = mean, var  # used when not batch_stats (evaluation)

    def forward(self, x, weight, bias):
        """The normalised map, and the mean and (biased) variance it was normalised with:
        auxiliary results (see `Function`), the batch's in training."""
        axes, shape = (0, 2, 3), (1, -1, 1, 1)
        if self.batch_stats:
            mean, var = x.mean(axis=axes), x.var(axis=axes)  # biased, as used to normalise
        else:
            mean, var = self.mean, self.var
        self.invstd = (1 / np.sqrt(var + x.dtype.type(self.eps))).astype(x.dtype)
        self.xhat = (x - mean.reshape(shape)) * self.invstd.reshape(shape)
        self.weight = weight
        return self.xhat * weight.reshape(shape) + bias.reshape(shape), mean, var

    def backward(self, g):
        axes, shape = (0, 2, 3), (1, -1, 1, 1)
        gbias = g.sum(axis=axes)
        gweight = (g * self.xhat).sum(axis=axes)
        gxhat = g * self.weight.reshape(shape)
        if self.batch_stats:  # the batch mean and variance depend on x too
            M = g.size // g.shape[1]
            gx = (self.invstd.reshape(shape) / M) * (
                M * gxhat - gxhat.sum(axis=axes).reshape(shape)
                - self.xhat * (gxhat * self.xhat).sum(axis=axes).reshape(shape))
        else:
            gx = gxhat * self.invstd.reshape(shape)
        return gx, gweight, gbias


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Normalise each channel of an NCHW input; in training with the batch's statistics (and
    update the running ones in place, unbiased variance, as PyTorch), else with the running
    ones."""
    x = as_tensor(input)
    check_float_nchw(x, "input")
    if momentum is None or not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
    C = x.shape[1]
    w = as_tensor(np.ones(C, x.dtype) if weight is None else weight)
    b = as_tensor(np.zeros(C, x.dtype) if bias is None else bias)
    for name, t in (("weight", w), ("bias", b)):
        check_same_dtype(x, t, name)
        if t.shape != (C,):
            raise ValueError(f"{name} must have shape ({C},), got {t.shape}")
    # running statistics: Tensors or arrays, updated in place either way
    mean, var = (a.data if isinstance(a, Tensor) else a for a in (running_mean, running_var))
    for name, a in (("running_mean", mean), ("running_var", var)):
        if not isinstance(a, np.ndarray) or a.shape != (C,) or a.dtype.kind != "f":
            raise ValueError(f"{name} must be a float array or Tensor of shape ({C},), got "
                             f"{type(a).__name__} of shape {np.shape(a)}")
    if not training:
        out, _, _ = BatchNorm.apply(x, w, b, eps=eps, batch_stats=False,
                                    mean=mean.astype(x.dtype, copy=False),
                                    var=var.astype(x.dtype, copy=False))
        return out
    M = x.size // max(C, 1)
    if M < 2:
        raise ValueError(f"batch_norm in training needs more than one value per channel, "
                         f"got input of shape {x.shape}")
    out, batch_mean, batch_var = BatchNorm.apply(x, w, b, eps=eps, batch_stats=True)
    m = mean.dtype.type(momentum)
    mean *= 1 - m
    mean += m * batch_mean
    var *= 1 - m
    var += m * batch_var * (M / (M - 1))
    return out
