"""tinyfcn: a from-scratch autograd engine in NumPy + Numba for Fully Convolutional Networks."""

from tinyfcn import ops
from tinyfcn.gradcheck import gradcheck
from tinyfcn.ops import concatenate, exp, log, pad, relu, sigmoid, sqrt, stack, tanh
from tinyfcn.tensor import Function, Tensor, is_grad_enabled, no_grad

__version__ = "0.1.0"

__all__ = [
    "Function", "Tensor", "concatenate", "exp", "gradcheck", "is_grad_enabled", "log",
    "no_grad", "ops", "pad", "relu", "sigmoid", "sqrt", "stack", "tanh",
]
