"""`to_dot`: the autograd graph as Graphviz DOT text (draw it with `dot -Tpng`, or without
Graphviz with `tinyfcn.plots.autograd_graph`)."""

from __future__ import annotations

from tinyfcn.tensor import Tensor


def to_dot(tensor, name: str = "output") -> str:
    """The autograd graph that produced `tensor`, as Graphviz DOT text (render it with
    `dot -Tpng`): a box per tensor (shape, dtype; leaves that require grad in color), an
    ellipse per operation, arrows in the direction of the forward pass."""
    lines = ["digraph autograd {", '  rankdir="TB"; node [fontname="Helvetica"];']
    seen, stack = set(), [(tensor, name)]

    def tensor_node(t, label=""):
        color = "lightblue" if t.creator is None and t.requires_grad else "white"
        text = f"{label + chr(92) + 'n' if label else ''}{tuple(t.shape)} {t.dtype}"
        lines.append(f'  t{id(t)} [shape=box, style=filled, fillcolor={color}, '
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

