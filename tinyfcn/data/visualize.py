"""Pictures a person would rather look at than read: overlays and prediction panels (Pillow
only; the plots of a run are in tinyfcn.plots)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tinyfcn.data.palette import colorize


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5,
            colours=None) -> np.ndarray:
    """The image with the colours of `label` (the data set's, else VOC's) blended over it
    (class 0, background, left clear)."""
    colours = colorize(label, colours).astype(np.float32)
    mixed = image.astype(np.float32) * (1 - alpha) + colours * alpha
    keep = (label == 0)[..., None]
    return np.where(keep, image, mixed).astype(np.uint8)


def panel(rows, height: int = 128, gap: int = 4) -> np.ndarray:
    """Rows of images side by side (each resized to `height`), one row per sample.

    `rows` is a list of lists of (H, W, 3) uint8 arrays."""
    rendered = []
    for row in rows:
        cells = []
        for cell in row:
            h, w = cell.shape[:2]
            width = max(1, round(w * height / h))
            resized = np.array(Image.fromarray(cell).resize((width, height), Image.NEAREST))
            cells += [resized, np.full((height, gap, 3), 255, np.uint8)]
        rendered.append(np.concatenate(cells[:-1], axis=1))
    width = max(r.shape[1] for r in rendered)
    out = []
    for r in rendered:
        out += [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255),
                np.full((gap, width, 3), 255, np.uint8)]
    return np.concatenate(out[:-1], axis=0)


def prediction_row(image, label, pred, colours=None):
    """image | ground truth | prediction, in the data set's colours (else VOC's)."""
    return [image, colorize(label, colours), colorize(pred, colours)]
