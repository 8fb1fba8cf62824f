"""Batch normalisation over (N, H, W) per channel, PyTorch's semantics."""

from __future__ import annotations

import numpy as np

from tinyfcn.functional._checks import as_tensor, check_float_nchw, check_same_dtype
from tinyfcn.tensor import Function


class BatchNorm(Function):
    def __init__(self, eps, batch_stats, mean=None, var=None):
        self.eps, self.batch_stats = eps, batch_stats
        self.mean, self.var = mean, var  # used when not batch_stats (evaluation)

    def forward(self, x, weight, bias):
        axes = (0, 2, 3)
        if self.batch_stats:
            self.mean = x.mean(axis=axes)
            self.var = x.var(axis=axes)                  # biased, as used to normalise
        shape = (1, -1, 1, 1)
        self.invstd = (1 / np.sqrt(self.var + x.dtype.type(self.eps))).astype(x.dtype)
        self.xhat = (x - self.mean.reshape(shape)) * self.invstd.reshape(shape)
        self.weight = weight
        return self.xhat * weight.reshape(shape) + bias.reshape(shape)

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


def batch_norm(input, running_mean, running_var, weight, bias, training=False, momentum=0.1,
               eps=1e-5):
    """Normalise each channel of an NCHW input; in training with the batch's statistics (and
    update the running ones in place, unbiased variance, as PyTorch), else with the running
    ones."""
    x, w, b = as_tensor(input), as_tensor(weight), as_tensor(bias)
    check_float_nchw(x, "input")
    C = x.shape[1]
    for name, t in (("weight", w), ("bias", b)):
        check_same_dtype(x, t, name)
        if t.shape != (C,):
            raise ValueError(f"{name} must have shape ({C},), got {t.shape}")
    for name, a in (("running_mean", running_mean), ("running_var", running_var)):
        if np.shape(a) != (C,):
            raise ValueError(f"{name} must have shape ({C},), got {np.shape(a)}")
    if not training:
        return BatchNorm.apply(x, w, b, eps=eps, batch_stats=False,
                               mean=np.asarray(running_mean, x.dtype),
                               var=np.asarray(running_var, x.dtype))
    M = x.size // max(C, 1)
    if M < 2:
        raise ValueError(f"batch_norm in training needs more than one value per channel, "
                         f"got input of shape {x.shape}")
    fn = BatchNorm(eps=eps, batch_stats=True)
    out = fn(x, w, b)
    m = running_mean.dtype.type(momentum)
    running_mean *= 1 - m
    running_mean += m * fn.mean
    running_var *= 1 - m
    running_var += m * fn.var * (M / (M - 1))
    return out
