"""PReLU: a ReLU whose negative side has a learned slope per channel (MTCNN's nets use it)."""

from __future__ import annotations

import numpy as np

from tinyfcn.functional._checks import FLOAT_DTYPES, check_same_dtype
from tinyfcn.tensor import Function, as_tensor


class PReLU(Function):
    def forward(self, x, weight):
        # the slope broadcast along axis 1 (channels), or one slope for every element
        shape = [1] * x.ndim
        if weight.size > 1:
            shape[1] = weight.size
        self.slope = weight.reshape(shape)
        self.x = x
        self.negative = x <= 0
        return np.where(self.negative, self.slope * x, x)

    def backward(self, g):
        grad_x = grad_w = None
        if self.needs_input_grad[0]:
            grad_x = np.where(self.negative, g * self.slope, g)
        if self.needs_input_grad[1]:
            per_element = np.where(self.negative, g * self.x, 0)
            axes = tuple(a for a in range(per_element.ndim) if a != 1 or self.slope.size == 1)
            grad_w = per_element.sum(axis=axes).reshape(self.slope.size)
        return grad_x, grad_w


def prelu(input, weight):
    """max(0, x) + weight * min(0, x), as torch.nn.functional.prelu: `weight` holds one slope,
    or one per channel (axis 1 of the input)."""
    x, a = as_tensor(input), as_tensor(weight)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"prelu input must be float32 or float64, got {x.dtype}")
    check_same_dtype(x, a, "prelu weight")
    if a.ndim != 1:
        raise ValueError(f"prelu weight must be 1-d (one slope per channel), got shape {a.shape}")
    if a.size != 1 and (x.ndim < 2 or a.size != x.shape[1]):
        raise ValueError(f"prelu weight has {a.size} slopes but the input of shape {x.shape} "
                         f"has {x.shape[1] if x.ndim >= 2 else 'no'} channels (axis 1)")
    return PReLU.apply(x, a)


__all__ = ["prelu"]
