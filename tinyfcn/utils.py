"""Small helpers that layers, ops and users share."""

from __future__ import annotations

import numpy as np


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


def to_dot(tensor, name: str = "output") -> str:
    """The autograd graph that produced `tensor`, as Graphviz DOT text (render it with
    `dot -Tpng`): a box per tensor (shape, dtype; leaves that require grad in colour), an
    ellipse per operation, arrows in the direction of the forward pass."""
    from tinyfcn.tensor import Tensor

    lines = ["digraph autograd {", '  rankdir="TB"; node [fontname="Helvetica"];']
    seen, stack = set(), [(tensor, name)]

    def tensor_node(t, label=""):
        colour = "lightblue" if t.creator is None and t.requires_grad else "white"
        text = f"{label + chr(92) + 'n' if label else ''}{tuple(t.shape)} {t.dtype}"
        lines.append(f'  t{id(t)} [shape=box, style=filled, fillcolor={colour}, '
                     f'label="{text}"];')

    tensor_node(tensor, name)
    seen.add(id(tensor))
    while stack:
        t, _ = stack.pop()
        fn = t.creator
        if fn is None or fn.freed:
            continue
        lines.append(f'  f{id(fn)} [shape=ellipse, label="{type(fn).__name__}"];')
        lines.append(f"  f{id(fn)} -> t{id(t)};")
        for x in fn.inputs:
            if not isinstance(x, Tensor):
                continue
            if id(x) not in seen:
                seen.add(id(x))
                tensor_node(x)
                stack.append((x, ""))
            lines.append(f"  t{id(x)} -> f{id(fn)};")
    lines.append("}")
    return "\n".join(dict.fromkeys(lines))  # an op reached twice is drawn once
