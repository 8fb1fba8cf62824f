"""tinyfcn: a from-scratch autograd engine in NumPy + Numba for Fully Convolutional Networks."""

from tinyfcn import ops
from tinyfcn._runtime import configure, set_kernel_threads
from tinyfcn.gradcheck import gradcheck
from tinyfcn.ops import concatenate, exp, log, pad, relu, sigmoid, sqrt, stack, tanh
from tinyfcn.random import get_rng_state, manual_seed, set_rng_state
from tinyfcn.serialization import load, save
from tinyfcn.tensor import Function, Tensor, is_grad_enabled, no_grad

__version__ = "0.1.0"

configure()

__all__ = [
    "Function", "Tensor", "concatenate", "exp", "get_rng_state", "gradcheck",
    "is_grad_enabled", "load", "log", "manual_seed", "no_grad", "ops", "pad", "relu", "save",
    "set_kernel_threads", "set_rng_state", "sigmoid", "sqrt", "stack", "tanh",
]
