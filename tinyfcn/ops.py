"""Element-wise, reduction and shape operations, each forward beside its backward.

Every op here is a `Function` over plain NumPy arrays. Binary ops broadcast
like NumPy and `unbroadcast` sums each gradient back to its input's shape.
Python scalars take the dtype of the tensor they meet, so float32 stays float32.
"""

from __future__ import annotations

import numpy as np

from tinyfcn.tensor import Function, Tensor, as_array

# ------------------------------------------------------------------ helpers


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` over the axes that broadcasting added or stretched to reach it from `shape`."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad


def _convert(a, b):
    """Both operands as Tensors or arrays; a Python scalar takes the dtype of the other side."""
    ref = a if isinstance(a, Tensor) else b
    dtype = ref.dtype if ref.dtype.kind == "f" else None

    def convert(v):
        return v if isinstance(v, Tensor) else as_array(v, dtype=dtype)

    return convert(a), convert(b)


def _broadcastable(a, b):
    a, b = _convert(a, b)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"operands could not be broadcast together: shapes {a.shape} "
                         f"and {b.shape}") from None
    return a, b


def _normalize_axis(axis, ndim):
    if axis is None:
        return None
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for a tensor of {ndim} dimensions")
    return tuple(a % ndim for a in axes)


# ----------------------------------------------------------- arithmetic


class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(g, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(-g, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        ga = unbroadcast(g * self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(g * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga = unbroadcast(g / self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = (unbroadcast(-g * self.a / (self.b * self.b), self.b.shape)
              if self.needs_input_grad[1] else None)
        return ga, gb


class Pow(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, g):
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = unbroadcast(g * self.b * self.a ** (self.b - 1), self.a.shape)
        if self.needs_input_grad[1]:
            gb = unbroadcast(g * self.out * np.log(self.a), self.b.shape)
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class MatMul(Function):
    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul needs operands of at least 2 dimensions, got shapes "
                             f"{a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul shapes do not match: {a.shape} @ {b.shape} "
                             f"({a.shape[-1]} != {b.shape[-2]})")
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = unbroadcast(g @ np.swapaxes(self.b, -1, -2), self.a.shape)
        if self.needs_input_grad[1]:
            gb = unbroadcast(np.swapaxes(self.a, -1, -2) @ g, self.b.shape)
        return ga, gb


# ----------------------------------------------------------- unary maths


class Exp(Function):
    def forward(self, a):
        self.out = np.exp(a)
        return self.out

    def backward(self, g):
        return (g * self.out,)


class Log(Function):
    def forward(self, a):
        self.a = a
        return np.log(a)

    def backward(self, g):
        return (g / self.a,)


class Sqrt(Function):
    def forward(self, a):
        self.out = np.sqrt(a)
        return self.out

    def backward(self, g):
        return (g / (2 * self.out),)


class ReLU(Function):
    def forward(self, a):
        self.out = np.maximum(a, a.dtype.type(0))
        return self.out

    def backward(self, g):
        return (g * (self.out > 0),)  # a new array: never g[mask] = 0, g may be shared


class Sigmoid(Function):
    def forward(self, a):
        one = a.dtype.type(1)
        self.out = one / (one + np.exp(-a))
        return self.out

    def backward(self, g):
        return (g * self.out * (1 - self.out),)


class Tanh(Function):
    def forward(self, a):
        self.out = np.tanh(a)
        return self.out

    def backward(self, g):
        return (g * (1 - self.out * self.out),)


# ------------------------------------------------------------ reductions


class Sum(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, a):
        self.shape = a.shape
        self.axis = _normalize_axis(self.axis, a.ndim)
        return np.asarray(a.sum(axis=self.axis, keepdims=self.keepdims))

    def backward(self, g):
        if not self.keepdims and self.axis is not None:
            g = np.expand_dims(g, self.axis)
        return (np.broadcast_to(g, self.shape).copy(),)


class Mean(Sum):
    def forward(self, a):
        out = super().forward(a)
        self.count = a.size // max(out.size, 1) if a.size else 0
        return (out / a.dtype.type(max(self.count, 1))).astype(a.dtype, copy=False)

    def backward(self, g):
        (grad,) = super().backward(g)
        return (grad / grad.dtype.type(max(self.count, 1)),)


class Max(Function):
    """Maximum over an axis; the gradient is shared equally between tied maxima."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, a):
        if a.size == 0:
            raise ValueError(f"max() of an empty tensor of shape {a.shape}")
        self.axis = _normalize_axis(self.axis, a.ndim)
        self.a = a
        self.out = np.asarray(a.max(axis=self.axis, keepdims=True))
        return self.out if self.keepdims else np.asarray(a.max(axis=self.axis))

    def backward(self, g):
        if not self.keepdims and self.axis is not None:
            g = np.expand_dims(g, self.axis)
        mask = self.a == self.out
        count = mask.sum(axis=self.axis, keepdims=True).astype(g.dtype)
        return (np.where(mask, g / count, g.dtype.type(0)),)


# ------------------------------------------------------------ shapes


class Reshape(Function):
    def __init__(self, shape):
        self.new_shape = shape

    def forward(self, a):
        self.shape = a.shape
        try:
            return a.reshape(self.new_shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {a.shape} "
                             f"into {self.new_shape}") from None

    def backward(self, g):
        return (g.reshape(self.shape),)


class Transpose(Function):
    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, a):
        if self.axes is not None and sorted(np.asarray(self.axes) % max(a.ndim, 1)) != list(
                range(a.ndim)):
            raise ValueError(f"transpose axes {self.axes} are not a permutation of "
                             f"the {a.ndim} axes of shape {a.shape}")
        return np.transpose(a, self.axes)

    def backward(self, g):
        if self.axes is None:
            return (np.transpose(g),)
        return (np.transpose(g, np.argsort(np.asarray(self.axes) % g.ndim)),)


def _is_basic_index(index) -> bool:
    index = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis
               for i in index)


class GetItem(Function):
    def __init__(self, index):
        self.index = index

    def forward(self, a):
        self.shape, self.dtype = a.shape, a.dtype
        out = a[self.index]
        return np.ascontiguousarray(out) if np.ndim(out) else np.asarray(out)

    def backward(self, g):
        grad = np.zeros(self.shape, dtype=self.dtype)
        if _is_basic_index(self.index):
            grad[self.index] = g  # basic slices never repeat an element
        else:
            np.add.at(grad, self.index, g)
        return (grad,)


class Pad(Function):
    """Constant padding; `pad_width` as in `np.pad`: ((before, after), ...) per axis."""

    def __init__(self, pad_width, value=0.0):
        self.pad_width, self.value = pad_width, value

    def forward(self, a):
        width = np.broadcast_to(np.asarray(self.pad_width, dtype=np.int64), (a.ndim, 2))
        if (width < 0).any():
            raise ValueError(f"pad widths must be >= 0, got {self.pad_width}")
        self.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(width, a.shape))
        return np.pad(a, width, constant_values=a.dtype.type(self.value))

    def backward(self, g):
        return (np.ascontiguousarray(g[self.slices]),)


class Concatenate(Function):
    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *arrays):
        try:
            out = np.concatenate(arrays, axis=self.axis)
        except ValueError as e:
            shapes = [a.shape for a in arrays]
            raise ValueError(f"cannot concatenate shapes {shapes} along axis {self.axis}: "
                             f"{e}") from None
        self.splits = np.cumsum([a.shape[self.axis] for a in arrays])[:-1]
        return out

    def backward(self, g):
        return tuple(np.split(g, self.splits, axis=self.axis))


class Stack(Function):
    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *arrays):
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"stack needs tensors of one shape, got {[a.shape for a in arrays]}")
        return np.stack(arrays, axis=self.axis)

    def backward(self, g):
        return tuple(np.moveaxis(g, self.axis, 0))


# -------------------------------------------------------- public functions


def add(a, b):
    return Add.apply(*_broadcastable(a, b))


def sub(a, b):
    return Sub.apply(*_broadcastable(a, b))


def mul(a, b):
    return Mul.apply(*_broadcastable(a, b))


def div(a, b):
    return Div.apply(*_broadcastable(a, b))


def pow(a, b):
    return Pow.apply(*_broadcastable(a, b))


def matmul(a, b):
    return MatMul.apply(*_convert(a, b))


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def relu(x):
    return ReLU.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


def tanh(x):
    return Tanh.apply(x)


def pad(x, pad_width, value=0.0):
    return Pad.apply(x, pad_width=pad_width, value=value)


def concatenate(tensors, axis=0):
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    return Stack.apply(*tensors, axis=axis)


# ------------------------------------------------ methods and operators on Tensor


def _reshape(self, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Reshape.apply(self, shape=tuple(shape))


def _transpose(self, *axes):
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    return Transpose.apply(self, axes=tuple(axes) if axes else None)


Tensor.__add__ = add
Tensor.__radd__ = lambda self, other: add(other, self)
Tensor.__sub__ = sub
Tensor.__rsub__ = lambda self, other: sub(other, self)
Tensor.__mul__ = mul
Tensor.__rmul__ = lambda self, other: mul(other, self)
Tensor.__truediv__ = div
Tensor.__rtruediv__ = lambda self, other: div(other, self)
Tensor.__pow__ = pow
Tensor.__rpow__ = lambda self, other: pow(other, self)
Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = lambda self, other: matmul(other, self)
Tensor.__neg__ = lambda self: Neg.apply(self)
Tensor.__getitem__ = lambda self, index: GetItem.apply(self, index=index)
Tensor.sum = lambda self, axis=None, keepdims=False: Sum.apply(self, axis=axis, keepdims=keepdims)
Tensor.mean = lambda self, axis=None, keepdims=False: Mean.apply(self, axis=axis,
                                                                 keepdims=keepdims)
Tensor.max = lambda self, axis=None, keepdims=False: Max.apply(self, axis=axis, keepdims=keepdims)
Tensor.exp = exp
Tensor.log = log
Tensor.sqrt = sqrt
Tensor.relu = relu
Tensor.sigmoid = sigmoid
Tensor.tanh = tanh
Tensor.reshape = _reshape
Tensor.transpose = _transpose
Tensor.T = property(lambda self: Transpose.apply(self, axes=None))
