"""Class colors: the PASCAL VOC color map, a data set's palette.txt, and color masks
decoded to class indices (255 = void)."""

from __future__ import annotations

import numpy as np

from tinyfcn.data.errors import DataError
from tinyfcn.data.text import read_lines

VOID = 255


def voc_colormap(n: int = 256) -> np.ndarray:
    """(n, 3) uint8: VOC's colors, from the bits of the class index (the devkit's bitget)."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


COLORMAP = voc_colormap()


def colorize(label: np.ndarray, colors=None) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB: class c in `colors[c]` (a data set's
    palette.txt) or else in the VOC colors; void is cream."""
    label = np.asarray(label, dtype=np.uint8)
    if colors is None:
        return COLORMAP[label]
    table = COLORMAP.copy()
    table[:len(colors)] = colors
    return table[label]


def read_palette(path) -> np.ndarray:
    """(C, 3) uint8 from a palette.txt: one "R G B" line per class, in class order."""
    rows = []
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            values = [int(v) for v in parts]
        except ValueError:
            values = []
        if len(values) != 3 or not all(0 <= v <= 255 for v in values):
            raise DataError(f"{path}, line {n}: expected three numbers 0-255 (R G B), "
                            f"got {line.strip()!r}")
        rows.append(values)
    colors = np.array(rows, np.uint8).reshape(-1, 3)
    keys = _keys(colors)
    if len(set(keys.tolist())) != len(keys):
        raise DataError(f"{path}: two classes share a color")
    return colors


def _keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def decode_color_label(path, rgb: np.ndarray, colors: np.ndarray, void_color) -> np.ndarray:
    """(H, W) class indices from an (H, W, 3) color mask: color `colors[c]` -> c,
    `void_color` (if not None) -> void; any other color is an error naming it."""
    keys = _keys(rgb)
    table = _keys(colors)
    order = np.argsort(table)
    position = np.clip(np.searchsorted(table[order], keys), 0, len(table) - 1)
    label = order[position].astype(np.uint8)
    known = table[order][position] == keys
    if void_color is not None:
        void = keys == _keys(np.asarray(void_color))
        label[void], known = VOID, known | void
    if not known.all():
        unknown = np.unique(keys[~known])[:3]
        named = ", ".join(f"({k >> 16} {(k >> 8) & 255} {k & 255})" for k in unknown.tolist())
        raise DataError(f"{path}: colors {named} are not in palette.txt (nor the void "
                        f"color)")
    return label
