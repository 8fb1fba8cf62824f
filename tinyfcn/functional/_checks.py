"""Argument validation shared by the functional ops and the layers: bad input fails here,
never in a kernel."""

from __future__ import annotations

import numpy as np

from tinyfcn.tensor import Tensor

FLOAT_DTYPES = (np.float32, np.float64)


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """(a, b) from an int or a pair of ints, each >= `minimum`; ValueError naming `name` if not."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    try:
        a, b = value
        a, b = int(a), int(b)
        if (a, b) != tuple(value):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if a < minimum or b < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return a, b


def check_float_nchw(x: Tensor, name: str) -> None:
    """A 4-d float32/float64 tensor (kernels copy non-contiguous data once, never misread it)."""
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-d (N, C, H, W), got shape {x.shape}")
    if 0 in x.shape:  # kernels index every axis: an empty one is refused, never run
        raise ValueError(f"{name} of shape {x.shape} has an empty axis")


def check_same_dtype(x: Tensor, other: Tensor, name: str) -> None:
    if other.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {other.dtype} but the input is {x.dtype}; "
                        f"convert one of them (no silent casts)")


def check_bias(b: Tensor | None, x: Tensor, channels: int) -> None:
    if b is None:
        return
    check_same_dtype(x, b, "bias")
    if b.shape != (channels,):
        raise ValueError(f"bias must have shape ({channels},), got {b.shape}")
