"""The pictures a run leaves behind, drawn with matplotlib (Agg: no display needed):
training curves, per-class IoU and the confusion matrix. Each is written atomically."""

from __future__ import annotations

import io
import math

import numpy as np

from tinyfcn.fileio import atomic_write


def _figure(width: float, height: float):
    """A figure outside pyplot: no backend is chosen and no global state is touched."""
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height))


def _save(fig, path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    data = buffer.getvalue()
    atomic_write(path, lambda f: f.write(data))


def _log_scale(ax, values) -> None:
    """A log-scale loss axis labelled in plain numbers (0.3, not 3 x 10^-1)."""
    if len(values) and min(values) > 0:
        from matplotlib.ticker import FuncFormatter
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        # minor ticks labelled at 2x and 5x a power of ten only: all of them overlap
        ax.yaxis.set_minor_formatter(FuncFormatter(
            lambda value, _: f"{value:g}" if _leading_digit(value) in (2, 5) else ""))


def _leading_digit(value: float) -> int:
    return round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0


def _whole_epochs(ax, last_epoch: int) -> None:
    """Whole epochs from 0 to the run's last, so a run validated once still shows where."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0, max(last_epoch, 1) + 0.5)


def moving_average(values, window: int) -> np.ndarray:
    """The mean of each value and the `window` - 1 before it (fewer at the start)."""
    values = np.asarray(values, np.float64)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def training_curve(steps: list, history: list, path, label: str = "") -> None:
    """Two panels: the training loss per step (log scale, with a moving average) and the
    validation mIoU and pixel accuracy per epoch. `steps` are log rows (dicts with
    "epoch", "step", "loss"); `history` the per-epoch records."""
    fig = _figure(11, 4)
    left, right = fig.subplots(1, 2)
    if steps:
        steps_per_epoch = max(r["step"] for r in steps)
        x = [r["epoch"] - 1 + r["step"] / steps_per_epoch for r in steps]
        loss = [r["loss"] for r in steps]
        left.plot(x, loss, color="tab:red", alpha=0.3, lw=0.8, label="loss per step")
        left.plot(x, moving_average(loss, max(1, len(loss) // 20)), color="tab:red",
                  label="moving average")
        _log_scale(left, loss)
        left.legend()
    left.set(xlabel="epoch", ylabel="training loss", title=f"training loss {label}".strip())
    epochs = [r["epoch"] for r in history]
    for key, name, color in (("mean_iou", "mean IoU", "tab:blue"),
                              ("pixel_acc", "pixel accuracy", "tab:green")):
        right.plot(epochs, [r[key] for r in history], "o-", color=color, label=name)
    right.set(xlabel="epoch", ylabel="score", ylim=(0, 1), title="validation")
    _whole_epochs(right, max([*epochs, *(r["epoch"] for r in steps)], default=1))
    right.grid(alpha=0.3)
    if history:
        right.legend()
    _save(fig, path)


def per_class_iou(scores: dict, path, title: str = "per-class IoU (validation)") -> None:
    names = list(scores["per_class_iou"])
    values = list(scores["per_class_iou"].values())
    absent = [math.isnan(v) for v in values]  # in neither ground truth nor prediction
    fig = _figure(max(5, 0.4 * len(names) + 2), 4)
    ax = fig.subplots()
    ax.bar(range(len(names)), [1.0 if a else v for a, v in zip(absent, values)],
           color=["whitesmoke" if a else "tab:blue" for a in absent],
           edgecolor=["lightgrey" if a else "none" for a in absent])
    for i in np.flatnonzero(absent):  # a full pale bar, so absent never reads as IoU 0
        ax.text(i, 0.5, "absent", rotation=90, ha="center", va="center", fontsize=8,
                color="grey")
    ax.axhline(scores["mean_iou"], color="tab:red", ls="--",
               label=f"mean IoU {scores['mean_iou']:.3f}")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set(ylim=(0, 1), ylabel="IoU", title=title)
    ax.legend()
    _save(fig, path)


def confusion(hist: np.ndarray, class_names, path) -> None:
    """The confusion matrix with each row (a true class) divided by its pixels."""
    hist = np.asarray(hist, np.float64)
    rows = hist.sum(axis=1, keepdims=True)
    normalised = np.divide(hist, rows, out=np.zeros_like(hist), where=rows > 0)
    n = len(class_names)
    fig = _figure(max(5, 0.35 * n + 3), max(4, 0.35 * n + 2))
    ax = fig.subplots()
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted class", ylabel="true class",
           title="confusion matrix (each row sums to 1)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    _save(fig, path)


def compare_runs(runs: dict, path) -> None:
    """Several runs side by side: {name: (steps, history)} as for `training_curve`; the
    moving average of each run's loss, and its validation mIoU per epoch."""
    fig = _figure(11, 4)
    left, right = fig.subplots(1, 2)
    all_losses, last_epoch = [], 1
    for name, (steps, history) in runs.items():
        if steps:
            steps_per_epoch = max(r["step"] for r in steps)
            x = [r["epoch"] - 1 + r["step"] / steps_per_epoch for r in steps]
            loss = [r["loss"] for r in steps]
            all_losses += loss
            left.plot(x, moving_average(loss, max(1, len(loss) // 20)), label=name)
        last_epoch = max([last_epoch, *(r["epoch"] for r in history)])
        scored = [r for r in history if not math.isnan(r["mean_iou"])]
        right.plot([r["epoch"] for r in scored], [r["mean_iou"] for r in scored], "o-",
                   label=name)
    _log_scale(left, all_losses)
    _whole_epochs(right, last_epoch)
    left.set(xlabel="epoch", ylabel="training loss (moving average)", title="training loss")
    right.set(xlabel="epoch", ylabel="mean IoU", ylim=(0, 1), title="validation mean IoU")
    right.grid(alpha=0.3)
    for ax in (left, right):
        if ax.get_lines():  # a run without log.csv (older runs) draws no loss line
            ax.legend()
    _save(fig, path)


def autograd_graph(tensor, path=None, ax=None):
    """Draw the graph `tinyfcn.utils.to_dot` describes with matplotlib (for machines
    without Graphviz): operations as ellipses, tensors as boxes, the output at the top and
    each node one row below the deepest node that uses it. Saves to `path` or draws on
    `ax`; returns the figure."""
    from tinyfcn.tensor import Tensor
    rows, order, edges = {id(tensor): 0}, [tensor], []
    labels = {id(tensor): f"{tuple(tensor.shape)}"}
    index = 0
    while index < len(order):  # breadth first from the output
        node = order[index]
        index += 1
        inputs = []
        if isinstance(node, Tensor) and node.creator is not None and not node.creator.freed:
            inputs = [node.creator]
            labels[id(node.creator)] = type(node.creator).__name__
        elif not isinstance(node, Tensor):
            inputs = [x for x in node.inputs if isinstance(x, Tensor)]
            for x in inputs:
                labels[id(x)] = f"{tuple(x.shape)}" + (" leaf" if x.creator is None else "")
        for child in inputs:
            edges.append((id(child), id(node)))
            depth = rows[id(node)] + 1
            if id(child) not in rows:
                order.append(child)
            rows[id(child)] = max(rows.get(id(child), 0), depth)
    by_row: dict = {}
    for key, row in rows.items():
        by_row.setdefault(row, []).append(key)
    where = {key: ((i + 1) / (len(keys) + 1), -row)
             for row, keys in by_row.items() for i, key in enumerate(keys)}
    fig = ax.figure if ax is not None else _figure(8, 1.0 + 0.9 * len(by_row))
    ax = ax if ax is not None else fig.subplots()
    for child, parent in edges:
        ax.annotate("", xy=where[parent], xytext=where[child],
                    arrowprops={"arrowstyle": "->", "color": "grey"})
    kinds = {id(n): isinstance(n, Tensor) for n in order}
    for key, (x, y) in where.items():
        tensor_node = kinds.get(key, True)
        ax.text(x, y, labels[key], ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "square" if tensor_node else "round",
                      "facecolor": "lightblue" if tensor_node else "lightyellow"})
    ax.set(xlim=(0, 1), ylim=(-max(by_row) - 0.5, 0.5))
    ax.axis("off")
    if path is not None:
        _save(fig, path)
    return fig
