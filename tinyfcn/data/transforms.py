"""Joint image/label augmentation: random scale, random crop, horizontal flip, resize.

Images are uint8 (H, W, 3), labels uint8 (H, W); images resample bilinearly,
labels by nearest neighbour (a class index must never be blended). Every random
choice comes from the `rng` passed in, so a seeded generator reproduces a run.
Normalisation belongs to the model (`model.preprocess`), which knows what its
weights expect.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from tinyfcn.data.palette import VOID


def resize(image: np.ndarray, label: np.ndarray, scale: float):
    """Both resized by `scale` (at least 1 pixel per side)."""
    H, W = label.shape
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    image = np.array(Image.fromarray(image).resize(size, Image.BILINEAR))
    label = np.array(Image.fromarray(label).resize(size, Image.NEAREST))
    return image, label


def random_scale(image, label, rng, low: float = 0.75, high: float = 1.25):
    return resize(image, label, rng.uniform(low, high))


def random_crop(image, label, size, rng):
    """A random (h, w) window; smaller inputs are padded first (image 0, label void)."""
    h, w = size
    H, W = label.shape
    pad_h, pad_w = max(h - H, 0), max(w - W, 0)
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=VOID)
        H, W = label.shape
    top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    return image[top:top + h, left:left + w], label[top:top + h, left:left + w]


def random_hflip(image, label, rng, p: float = 0.5):
    if rng.random() < p:
        return image[:, ::-1], label[:, ::-1]
    return image, label


class TrainAugment:
    """Random scale, random crop to `crop_size`, random horizontal flip."""

    def __init__(self, crop_size, scale_range=(0.75, 1.25)):
        self.crop_size, self.scale_range = tuple(crop_size), scale_range

    def __call__(self, image, label, rng):
        image, label = random_scale(image, label, rng, *self.scale_range)
        image, label = random_crop(image, label, self.crop_size, rng)
        return random_hflip(image, label, rng)
