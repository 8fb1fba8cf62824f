"""tinyfcn: a from-scratch autograd engine in NumPy + Numba for Fully Convolutional Networks.

Names are loaded on first use (PEP 562), so `import tinyfcn.data` or
`tinyfcn.metrics` needs only NumPy and Pillow, and importing tinyfcn changes
nothing in the host process: the speed settings of `tinyfcn.configure_runtime()`
are applied by tinyfcn's own training and benchmark entry points, or by you.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Function": "tinyfcn.tensor", "Tensor": "tinyfcn.tensor", "as_tensor": "tinyfcn.tensor",
    "is_grad_enabled": "tinyfcn.tensor", "no_grad": "tinyfcn.tensor",
    "concatenate": "tinyfcn.ops", "exp": "tinyfcn.ops", "log": "tinyfcn.ops",
    "pad": "tinyfcn.ops", "relu": "tinyfcn.ops", "sigmoid": "tinyfcn.ops",
    "sqrt": "tinyfcn.ops", "stack": "tinyfcn.ops", "tanh": "tinyfcn.ops",
    "gradcheck": "tinyfcn.gradient_check",
    "get_rng_state": "tinyfcn.random", "manual_seed": "tinyfcn.random",
    "set_rng_state": "tinyfcn.random",
    "load": "tinyfcn.serialization", "save": "tinyfcn.serialization",
    "configure_runtime": "tinyfcn._runtime", "set_kernel_threads": "tinyfcn._runtime",
    "set_threads": "tinyfcn._runtime",
    "conv_algorithms": "tinyfcn.functional.conv_algorithms",
    "set_conv_algorithm": "tinyfcn.functional.conv_algorithms",
}
_SUBMODULES = {"data", "export", "functional", "kernels", "metrics", "models", "nn", "ops", "optim",
               "train", "utils"}


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"tinyfcn.{name}")
    else:
        raise AttributeError(f"module 'tinyfcn' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])


__all__ = sorted(_EXPORTS)
