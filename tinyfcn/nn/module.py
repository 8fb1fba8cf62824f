"""`Module` and `Parameter`: parameters and submodules found by attribute, as in PyTorch."""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, NamedTuple

import numpy as np

from tinyfcn.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires_grad=True)."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Buffer(Tensor):
    """State that is saved with a Module but not trained (BatchNorm's running statistics);
    with `persistent=False` it is not saved either (a cache)."""

    def __init__(self, data, persistent: bool = True):
        super().__init__(data, requires_grad=False)
        self.persistent = persistent


class IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of layers and models: subclasses set Parameters and Modules as attributes
    in `__init__` and define `forward`."""

    training = True
    ignored_state_keys = ()  # names a state dict may hold for this module, loaded as nothing

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --------------------------------------------------------------- traversal
    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self) -> Iterator[Module]:
        return (m for _, m in self.named_children())

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def _named(self, kind: type, prefix: str = "") -> Iterator[tuple[str, object]]:
        """Every attribute of type `kind` here and in the submodules, by dotted name."""
        for name, value in vars(self).items():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(value, kind):
                yield full, value
            elif isinstance(value, Module):
                yield from value._named(kind, full)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        return self._named(Parameter, prefix)

    def parameters(self) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters())

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Buffer]]:
        return self._named(Buffer, prefix)

    def buffers(self) -> Iterator[Buffer]:
        return (b for _, b in self.named_buffers())

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Set `name` to a Buffer over `tensor` (an array or Tensor, kept as given, or None):
        saved in the state dict unless `persistent=False`, cast by `to`, never trained.
        Plain attributes work as well; this is PyTorch's spelling."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"buffer name must be a Python identifier, got {name!r}")
        if name in vars(self) and not isinstance(vars(self)[name], Buffer):
            raise KeyError(f"attribute {name!r} already exists and is not a buffer")
        if tensor is None:
            setattr(self, name, None)
            return
        data = tensor.data if isinstance(tensor, Tensor) else np.asarray(tensor)
        setattr(self, name, Buffer(data, persistent))

    def named_state(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """Parameters and persistent buffers, in attribute order: what a state dict holds."""
        for name, value in vars(self).items():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(value, Parameter) or (isinstance(value, Buffer) and value.persistent):
                yield full, value
            elif isinstance(value, Module):
                yield from value.named_state(full)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter: an optimizer skips a parameter
        without a gradient, and backward computes none for it."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def to(self, dtype) -> Module:
        """Cast the floating-point parameters and buffers to `dtype` (float64 to gradcheck,
        float32 to train); integer buffers stay as they are."""
        for p in (*self.parameters(), *self.buffers()):
            if p.dtype.kind == "f":
                p.data = p.data.astype(dtype)
                p.grad = None
        return self

    # ------------------------------------------------------------- state dicts
    def state_dict(self) -> OrderedDict:
        """Parameter and buffer name -> NumPy array (the live arrays, not copies)."""
        return OrderedDict((name, p.data) for name, p in self.named_state())

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays (NumPy, or anything np.asarray takes) into the parameters by name.

        Mis-shaped keys always raise; missing and unexpected keys raise when `strict`,
        otherwise they are returned (as PyTorch). Keys a module lists in
        `ignored_state_keys` (PyTorch's BatchNorm `num_batches_tracked`) are accepted
        and dropped."""
        own = dict(self.named_state())
        ignored = {f"{prefix}.{key}" if prefix else key for prefix, m in self.named_modules()
                   for key in m.ignored_state_keys}
        given = {k: np.asarray(v) for k, v in state_dict.items() if k not in ignored}
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        misshaped = [f"{k}: checkpoint {given[k].shape}, model {own[k].shape}"
                     for k in own if k in given and given[k].shape != own[k].shape]
        problems = []
        if misshaped:
            problems.append("mis-shaped keys: " + "; ".join(misshaped))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise ValueError(f"cannot load state dict into {type(self).__name__}: "
                             + " | ".join(problems))
        for name, p in own.items():
            if name in given:
                p.data = np.array(given[name], dtype=p.dtype)  # a copy, in the model's dtype
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)
