"""Pictures a person would rather look at than read: overlays and prediction panels (Pillow
only; the plots of a run are in tinyfcn.plots)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tinyfcn.data.palette import VOID, colorize


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5,
            colors=None) -> np.ndarray:
    """The image with the colors of `label` (the data set's, else VOC's) blended over it
    (class 0, background, left clear)."""
    colors = colorize(label, colors).astype(np.float32)
    mixed = image.astype(np.float32) * (1 - alpha) + colors * alpha
    keep = (label == 0)[..., None]
    return np.where(keep, image, mixed).astype(np.uint8)


def panel(rows, height: int = 128, gap: int = 4, titles=None, legend=None) -> np.ndarray:
    """Rows of images side by side (each resized to `height`), one row per sample, with
    optional column `titles` above and a `legend` of (name, RGB color) below.

    `rows` is a list of lists of (H, W, 3) uint8 arrays."""
    rendered, starts = [], None
    for row in rows:
        cells, x, xs = [], 0, []
        for cell in row:
            h, w = cell.shape[:2]
            width = max(1, round(w * height / h))
            resized = np.array(Image.fromarray(cell).resize((width, height), Image.NEAREST))
            cells += [resized, np.full((height, gap, 3), 255, np.uint8)]
            xs.append((x, width))
            x += width + gap
        rendered.append(np.concatenate(cells[:-1], axis=1))
        starts = starts or xs
    width = max(r.shape[1] for r in rendered)
    if legend:  # at least as wide as the widest entry, so no class name is cut
        width = max(width, max(24 + _text_width(name) for name, _ in legend))
    out = []
    if titles:
        out.append(_strip(width, [(x + w // 2, title) for (x, w), title in zip(starts, titles)]))
    for r in rendered:
        out += [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255),
                np.full((gap, width, 3), 255, np.uint8)]
    if legend:
        out.append(_legend(width, legend))
    return np.concatenate(out if legend else out[:-1], axis=0)


def _font():
    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _text_width(text: str) -> int:
    return int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=_font()))


def _strip(width: int, centred_texts, height: int = 20) -> np.ndarray:
    canvas = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(canvas), _font()
    for centre, text in centred_texts:
        draw.text((centre, height // 2), text, fill="black", font=font, anchor="mm")
    return np.array(canvas)


def _legend(width: int, entries, line: int = 18) -> np.ndarray:
    """Color swatches with class names, wrapped over as many lines as needed."""
    font = _font()
    placed, x, y = [], 4, 2
    for name, color in entries:
        size = _text_width(name)
        if x + 16 + size > width and x > 4:
            x, y = 4, y + line
        placed.append((x, y, name, color))
        x += 16 + size + 12
    canvas = Image.new("RGB", (width, y + line), "white")
    draw = ImageDraw.Draw(canvas)
    for x, y, name, color in placed:
        draw.rectangle([x, y + 3, x + 11, y + 14], fill=tuple(int(c) for c in color),
                       outline="black")
        draw.text((x + 16, y + 1), name, fill="black", font=font)
    return np.array(canvas)


def class_legend(labels, class_names, colors=None) -> list:
    """(name, color) of every class that appears in any of `labels` (void left out)."""
    present = sorted(set().union(*(np.unique(lab).tolist() for lab in labels)) - {VOID})
    table = colorize(np.arange(256, dtype=np.uint8)[None], colors)[0]
    return [(class_names[c] if c < len(class_names) else str(c), table[c]) for c in present]


def prediction_row(image, label, pred, colors=None):
    """image | ground truth | prediction, in the data set's colors (else VOC's)."""
    return [image, colorize(label, colors), colorize(pred, colors)]
