"""Object crops cut from a segmentation data set: a classification data set to pre-train a
classifier on, the way FCN starts from an ImageNet classifier."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tinyfcn.data.palette import VOID


def object_crops(dataset, size: int, margin: float = 1.25, background: int = 0):
    """(images uint8 (M, size, size, 3), labels int64 (M,)): for every image of `dataset` and
    every class in it other than `background` and void, the square around that class's
    pixels (`margin` times the larger side of their bounding box, padded with zeros past
    the image's edge) resized to `size` x `size`, labelled with the class index."""
    images, labels = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        for c in np.unique(label):
            if c in (background, VOID):
                continue
            rows, cols = np.nonzero(label == c)
            side = max(2, int(margin * max(np.ptp(rows), np.ptp(cols)) + 1))
            top = (rows.min() + rows.max()) // 2 - side // 2
            left = (cols.min() + cols.max()) // 2 - side // 2
            images.append(_square(image, top, left, side, size))
            labels.append(int(c))
    if not images:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64)
    return np.stack(images), np.array(labels, np.int64)


def _square(image, top, left, side, size):
    H, W = image.shape[:2]
    window = np.zeros((side, side, 3), np.uint8)
    t, b = max(top, 0), min(top + side, H)
    lt, r = max(left, 0), min(left + side, W)
    window[t - top:b - top, lt - left:r - left] = image[t:b, lt:r]
    return np.array(Image.fromarray(window).resize((size, size), Image.BILINEAR))
