"""Pictures a person would rather look at than read: prediction panels and training curves.
Pillow only (no plotting library at run time)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tinyfcn.data.palette import colorize, write_image


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with the VOC colours of `label` blended over it (background left clear)."""
    colours = colorize(label).astype(np.float32)
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


def prediction_row(image, label, pred):
    """image | ground truth | prediction, in the VOC palette."""
    return [image, colorize(label), colorize(pred)]


def training_curve(history: list, path, size=(480, 300)) -> None:
    """Train loss (red, left scale) and validation mIoU (blue, 0..1) per epoch."""
    W, H = size
    margin = 36
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([margin, 10, W - 10, H - margin], outline="black")
    epochs = [r["epoch"] for r in history]
    if epochs:
        x_max = max(max(epochs), 2)
        loss_max = max(max(r["train_loss"] for r in history), 1e-6)

        def xy(epoch, value, top):
            x = margin + (epoch - 1) / (x_max - 1) * (W - 10 - margin)
            y = H - margin - value / top * (H - margin - 10)
            return x, y

        for key, top, colour in (("train_loss", loss_max, (200, 40, 40)),
                                 ("mean_iou", 1.0, (40, 60, 200))):
            points = [xy(r["epoch"], r[key], top) for r in history if np.isfinite(r[key])]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for x, y in points:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((margin, H - margin + 6), f"epoch 1 .. {x_max}", fill="black")
        draw.text((W - 190, 14), f"train loss (max {loss_max:.2f})", fill=(200, 40, 40))
        draw.text((W - 190, 28), "val mIoU (0..1)", fill=(40, 60, 200))
    write_image(path, np.array(canvas))
