"""Modules and layers (PyTorch-style)."""

from tinyfcn.nn import init, utils
from tinyfcn.nn.layers import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Linear,
    MaxPool2d,
    MaxUnpool2d,
    PReLU,
    ReLU,
    Sequential,
)
from tinyfcn.nn.module import Buffer, Module, Parameter

__all__ = [
    "BatchNorm2d", "Buffer", "Conv2d", "ConvTranspose2d", "Dropout", "Linear", "MaxPool2d",
    "MaxUnpool2d",
    "Module", "Parameter", "PReLU", "ReLU", "Sequential", "init", "utils",
]
