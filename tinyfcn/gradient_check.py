"""`gradcheck`: compare an op's analytic backward with central differences in float64.

(The module is not named `gradcheck`: `tinyfcn.gradcheck` is the function, whatever
was imported first.)

Anyone who adds an op should run it. It checks, for every input Tensor that
requires grad:

1. the gradient of `<g, fn(x)>` for a random upstream gradient `g` (an
   all-ones `g` lets a backward that routes gradients to the wrong positions
   pass for symmetric ops), element by element for small inputs and along
   random directions for large ones;
2. that a zero upstream gradient gives zero gradients;
3. that running forward and backward twice gives the same gradients (catches
   kernels that reuse or modify buffers).
"""

from __future__ import annotations

import numpy as np

from tinyfcn.tensor import Tensor

FULL_CHECK_MAX_SIZE = 512  # inputs up to this many elements are checked element by element
RANDOM_DIRECTIONS = 8


def _as_float64(inputs):
    out = []
    for x in inputs:
        if isinstance(x, Tensor) and x.dtype.kind == "f":
            out.append(Tensor(x.data.astype(np.float64), requires_grad=x.requires_grad))
        else:
            out.append(x)
    return out


def _run(fn, inputs, upstream):
    """Analytic gradients of <upstream, fn(inputs)> for a fresh copy of the inputs."""
    fresh = [Tensor(x.data.copy(), requires_grad=True) if isinstance(x, Tensor) and x.requires_grad
             else x for x in inputs]
    out = fn(*fresh)
    out.backward(upstream)
    return [x.grad if isinstance(x, Tensor) and x.requires_grad else None for x in fresh]


def _objective(fn, inputs, upstream) -> float:
    out = fn(*inputs)
    return float(np.sum(out.data * upstream))


def _fail(name, index, analytic, numeric, what):
    raise AssertionError(f"gradcheck failed for input {name} {what} at {index}: "
                         f"analytic {analytic!r}, numeric {numeric!r}")


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              seed: int = 0) -> bool:
    """True if `fn`'s analytic gradients match central differences; raises AssertionError if not.

    `fn(*inputs)` must return a Tensor; `inputs` are Tensors (those with
    `requires_grad=True` are checked) or other arguments passed through.
    Floating inputs are converted to float64; an input that requires grad must be floating.
    """
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for i in checked:
        if inputs[i].dtype.kind != "f":  # a step of eps would round to 0: nothing checked
            raise TypeError(f"gradcheck: input #{i} requires grad but has dtype "
                            f"{inputs[i].dtype}; gradients are checked on floating inputs")
    inputs = _as_float64(inputs)
    rng = np.random.default_rng(seed)
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    upstream = rng.standard_normal(out.shape)
    analytic = _run(fn, inputs, upstream)
    for i in checked:
        _check_against_numeric(fn, inputs, i, analytic[i], upstream, eps, atol, rtol, rng)
    _check_zero_upstream(fn, inputs, checked, out.shape)
    _check_repeatable(fn, inputs, checked, analytic, upstream)
    return True


def _check_against_numeric(fn, inputs, i, grad, upstream, eps, atol, rtol, rng) -> None:
    """Check 1: input i's gradient against central differences, element by element for a
    small input and along random directions for a large one."""
    x = inputs[i]
    name = f"#{i} (shape {x.shape})"
    if grad is None:
        grad = np.zeros_like(x.data)
    if grad.shape != x.shape:
        raise AssertionError(f"gradcheck: gradient of input {name} has shape {grad.shape}")
    original = x.data.copy()

    def objective_at(delta):
        x.data = original + delta
        try:
            return _objective(fn, inputs, upstream)
        finally:
            x.data = original

    if x.size <= FULL_CHECK_MAX_SIZE:
        numeric = np.zeros_like(original)
        for idx in np.ndindex(*x.shape):
            delta = np.zeros_like(original)
            delta[idx] = eps
            numeric[idx] = (objective_at(delta) - objective_at(-delta)) / (2 * eps)
        error = np.abs(grad - numeric) - (atol + rtol * np.abs(numeric))
        if error.size and error.max() > 0:
            worst = np.unravel_index(np.argmax(error), error.shape)
            _fail(name, tuple(int(k) for k in worst), float(grad[worst]),
                  float(numeric[worst]), "element")
        return
    for k in range(RANDOM_DIRECTIONS):
        direction = rng.standard_normal(x.shape)
        direction /= np.linalg.norm(direction)
        step = eps * direction
        numeric = (objective_at(step) - objective_at(-step)) / (2 * eps)
        projected = float(np.sum(grad * direction))
        if abs(projected - numeric) > atol + rtol * abs(numeric):
            _fail(name, f"random direction {k}", projected, numeric, "projection")


def _check_zero_upstream(fn, inputs, checked, out_shape) -> None:
    """Check 2: a zero upstream gradient gives zero gradients."""
    zero_grads = _run(fn, inputs, np.zeros(out_shape))
    for i in checked:
        g = zero_grads[i]
        if g is not None and np.any(g != 0):
            worst = np.unravel_index(np.argmax(np.abs(g)), g.shape)
            _fail(f"#{i}", tuple(int(k) for k in worst), float(g[worst]), 0.0,
                  "zero upstream gradient")


def _check_repeatable(fn, inputs, checked, analytic, upstream) -> None:
    """Check 3: forward and backward again give the same gradients (no reused buffers)."""
    again = _run(fn, inputs, upstream)
    for i in checked:
        a, b = analytic[i], again[i]
        if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
            diff = np.abs(a - b)
            worst = np.unravel_index(np.argmax(diff), diff.shape)
            _fail(f"#{i}", tuple(int(k) for k in worst), float(a[worst]), float(b[worst]),
                  "repeated backward (first vs second run)")
