"""ReLU, dropout and FCN's crop layer."""

from __future__ import annotations

import numpy as np

from tinyfcn import random
from tinyfcn.functional._checks import FLOAT_DTYPES, pair
from tinyfcn.ops import relu
from tinyfcn.tensor import Function, as_tensor


class Dropout(Function):
    def __init__(self, p):
        self.p = p

    def forward(self, x):
        keep = random.generator().random(x.shape, dtype=np.float32) >= self.p
        self.mask = keep.astype(x.dtype) / x.dtype.type(1 - self.p)  # inverted dropout
        return x * self.mask

    def backward(self, g):
        return (g * self.mask,)


def dropout(input, p=0.5, training=True):
    """Zero each element with probability `p` and scale the rest by 1 / (1 - p); identity when
    not training. Seed with `tinyfcn.manual_seed`."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability p must be in [0, 1), got {p}")
    x = as_tensor(input)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"dropout input must be float32 or float64, got {x.dtype}")
    if not training or p == 0:
        return x
    return Dropout.apply(x, p=p)


def crop(input, offset, size):
    """FCN's crop layer: input[:, :, oh:oh+h, ow:ow+w] for offset (oh, ow) and size (h, w)."""
    x = as_tensor(input)
    if x.ndim != 4:
        raise ValueError(f"crop needs a 4-d (N, C, H, W) input, got shape {x.shape}")
    (oh, ow), (h, w) = pair(offset, "offset", 0), pair(size, "size", 1)
    H, W = x.shape[2:]
    if oh + h > H or ow + w > W:
        raise ValueError(f"crop of size {(h, w)} at offset {(oh, ow)} does not fit in "
                         f"an input of {H}x{W}")
    return x[:, :, oh:oh + h, ow:ow + w]


def center_crop(input, size):
    """The centred window of `size` (h, w); an odd margin leaves the extra pixel at the end."""
    x = as_tensor(input)
    h, w = pair(size, "size", 1)
    if x.ndim != 4:
        raise ValueError(f"center_crop needs a 4-d (N, C, H, W) input, got shape {x.shape}")
    return crop(x, ((x.shape[2] - h) // 2, (x.shape[3] - w) // 2), (h, w))


__all__ = ["center_crop", "crop", "dropout", "relu"]
