"""The autograd core: `Tensor`, `Function` and the backward traversal.

A `Tensor` wraps a NumPy array. Every differentiable operation is a `Function`
subclass with a `forward` over plain arrays and a `backward` that maps the
upstream gradient to one gradient per input; the machinery here knows nothing
about any particular op. Calling `Function.apply` records a node only when a
gradient could flow (some input requires grad and `no_grad` is not active).

The graph points one way only: an output tensor holds its creating node, the
node holds its input tensors. No node refers to its outputs, so there are no
reference cycles, and freeing a node after backward releases every
intermediate array it kept.
"""

from __future__ import annotations

import contextlib

import numpy as np

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside this context no graph is recorded (inference, optimizer steps)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


def as_array(value, dtype=None) -> np.ndarray:
    """NumPy array from a Tensor, array or Python value; Python floats become float32."""
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    array = np.asarray(value, dtype=dtype)
    if dtype is None and array.dtype == np.float64:
        array = array.astype(np.float32)
    return array


class Tensor:
    """An n-dimensional array that records the operations applied to it.

    `Tensor(data, requires_grad=False)`: `data` is kept as given when it is a
    NumPy array (float32 and float64 both work). Python values take PyTorch's
    dtypes (`torch.tensor`): floats (and lists holding one) become float32, ints
    int64, bools bool. An op refuses Tensors of two float dtypes (convert one:
    there is no silent float32 -> float64 promotion).
    """

    __array_priority__ = 1000  # make `ndarray + Tensor` call Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False):
        self.data = as_array(data)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.creator = None  # the Function that produced this tensor, if recorded

    # ----------------------------------------------------------- properties
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self):
        return self.data.item()

    def detach(self) -> Tensor:
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(self.data, prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}{grad})"

    # ------------------------------------------------------------- backward
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires grad.

        `grad` is the upstream gradient; it may be omitted only for a tensor
        of one element. The graph is freed afterwards unless `retain_graph`.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of the computation had requires_grad=True)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a tensor of one element, "
                    f"this one has shape {self.shape}; pass grad= of that shape")
            grad = np.ones_like(self.data)
        else:
            grad = as_array(grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward(grad=...) has shape {grad.shape}, "
                                 f"the tensor has shape {self.shape}")
        run_backward(self, grad, retain_graph)

    # Operators and methods are attached in tinyfcn.ops, next to their Functions.


def as_tensor(x) -> Tensor:
    """`x` itself if it is a Tensor, else a Tensor (without grad) over `np.asarray(x)`."""
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x))


class Function:
    """One differentiable operation: `forward` over arrays, `backward` over gradients.

    Subclasses implement `forward(*arrays) -> array` and
    `backward(grad) -> tuple of gradients` (one per input, None where
    `self.needs_input_grad[i]` is False). State that backward needs is stored on
    `self` in forward and released by `free()`. A forward that also produces
    auxiliary results (pooling switches, batch statistics) returns
    `(array, *auxiliary)`; the call then returns `(Tensor, *auxiliary)`, the
    auxiliary arrays as they are and outside the graph (no gradient flows
    through them), so callers never read them off the Function.
    """

    inputs: tuple = ()
    needs_input_grad: tuple = ()
    freed = False

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on `inputs` (Tensors or arrays) with keyword `params` for its constructor."""
        return cls(**params)(*inputs)

    def __call__(self, *inputs):
        floats = sorted({str(x.dtype) for x in inputs if isinstance(x, Tensor)
                         and x.dtype.kind == "f"})
        if len(floats) > 1:  # NumPy would promote, then backward fails on the dtypes
            raise TypeError(f"{type(self).__name__}: inputs mix {' and '.join(floats)} "
                            f"Tensors; convert one first (e.g. Tensor(x.data.astype(np."
                            f"{floats[0]})))")
        arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
        self.needs_input_grad = tuple(_grad_enabled and isinstance(x, Tensor) and x.requires_grad
                                for x in inputs)  # all False under no_grad: nothing is kept
        result = self.forward(*arrays)
        out, auxiliary = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        out = Tensor(np.asarray(out))
        if any(self.needs_input_grad):
            self.inputs = tuple(inputs)
            out.requires_grad = True
            out.creator = self
        return (out, *auxiliary) if auxiliary else out

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def free(self) -> None:
        """Drop inputs and saved arrays; a second backward through here then fails clearly."""
        self.__dict__.clear()
        self.freed = True


def _topological_order(root: Tensor) -> list:
    """Function nodes reachable from `root`, each after every node that consumes its output."""
    order, visited = [], set()
    stack = [(root.creator, False)]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        stack.append((fn, True))
        for x in fn.inputs:
            if isinstance(x, Tensor) and x.creator is not None and id(x.creator) not in visited:
                stack.append((x.creator, False))
    order.reverse()  # post-order reversed: consumers before producers
    return order


def run_backward(root: Tensor, grad: np.ndarray, retain_graph: bool) -> None:
    if root.creator is None:  # a leaf
        root.grad = grad.copy() if root.grad is None else root.grad + grad
        return
    if root.creator.freed:
        raise RuntimeError("backward() through a graph that was already freed; call the "
                           "first backward with retain_graph=True to run it twice")
    # Each non-leaf tensor has exactly one creator and each node one output, so the
    # upstream gradient of a node's output is kept under the node's identity.
    grads = {id(root.creator): grad}
    for fn in _topological_order(root):
        if fn.freed:
            raise RuntimeError("backward() reached a part of the graph that was already freed "
                               "by an earlier backward; use retain_graph=True")
        out_grad = grads.pop(id(fn), None)
        if out_grad is None:
            continue  # no gradient reached this node
        inputs = fn.inputs
        input_grads = _checked_gradients(fn, inputs, fn.backward(out_grad))
        if not retain_graph:
            fn.free()
        for x, g in zip(inputs, input_grads):
            if g is None or not isinstance(x, Tensor) or not x.requires_grad:
                continue
            if x.creator is None:  # leaf: accumulate into .grad
                x.grad = g.copy() if x.grad is None else x.grad + g
            else:
                key = id(x.creator)
                grads[key] = g if key not in grads else grads[key] + g


def _checked_gradients(fn: Function, inputs: tuple, grads) -> tuple:
    """`grads` if it is what the Function contract asks of a backward, else an error naming
    the op: one gradient (or None) per input, each of its input's shape and dtype."""
    op = f"{type(fn).__name__}.backward"
    if not isinstance(grads, (tuple, list)):
        raise TypeError(f"{op} must return a tuple with one gradient (or None) per input, "
                        f"got {type(grads).__name__}")
    if len(grads) != len(inputs):
        raise ValueError(f"{op} returned {len(grads)} gradients for {len(inputs)} inputs")
    for i, (x, g) in enumerate(zip(inputs, grads)):
        if g is None or not (isinstance(x, Tensor) and x.requires_grad):
            continue
        if not isinstance(g, (np.ndarray, np.generic)):
            raise TypeError(f"{op}: gradient {i} must be an array, got {type(g).__name__}")
        if np.shape(g) != x.shape:
            raise ValueError(f"{op}: gradient {i} has shape {np.shape(g)}, its input has "
                             f"shape {x.shape}")
        if g.dtype != x.dtype:
            raise TypeError(f"{op}: gradient {i} has dtype {g.dtype}, its input has "
                            f"dtype {x.dtype}")
    return grads


from tinyfcn import ops  # noqa: E402,F401  (attaches operators to Tensor)
