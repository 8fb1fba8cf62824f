"""Weight initialisation, in place on a Tensor's data (PyTorch's names, trailing underscore)."""

from __future__ import annotations

import math

import numpy as np

from tinyfcn import random


def _fans(tensor) -> tuple[int, int]:
    shape = tensor.shape
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def zeros_(tensor):
    tensor.data[...] = 0
    return tensor


def kaiming_normal_(tensor, mode: str = "fan_in"):
    """He initialisation for ReLU networks: N(0, 2 / fan)."""
    fan_in, fan_out = _fans(tensor)
    std = math.sqrt(2.0 / (fan_in if mode == "fan_in" else fan_out))
    tensor.data[...] = random.generator().standard_normal(tensor.shape) * std
    return tensor


def xavier_uniform_(tensor, gain: float = 1.0):
    fan_in, fan_out = _fans(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    tensor.data[...] = random.generator().uniform(-bound, bound, tensor.shape)
    return tensor


def bilinear_kernel(size: int, dtype=np.float32) -> np.ndarray:
    """The 2-d bilinear interpolation kernel of FCN's upsampling layers (size x size)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - np.abs(np.arange(size) - center) / factor
    return np.outer(taps, taps).astype(dtype)


def bilinear_(tensor):
    """FCN's initialisation of a transposed conv weight (C, C, k, k): channel c is upsampled
    bilinearly into channel c, with no mixing between classes."""
    c_in, c_out, kH, kW = tensor.shape
    if c_in != c_out or kH != kW:
        raise ValueError(f"bilinear_ needs a square (C, C, k, k) weight, got {tensor.shape}")
    tensor.data[...] = 0
    kernel = bilinear_kernel(kH, tensor.dtype)
    for c in range(c_in):
        tensor.data[c, c] = kernel
    return tensor
