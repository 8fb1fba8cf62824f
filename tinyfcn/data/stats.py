"""Class statistics of a data set: pixel counts and median-frequency class weights."""

from __future__ import annotations

import numpy as np

from tinyfcn.data.palette import VOID


def class_pixel_counts(dataset, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels of each class, pixels of the images each class appears in), void left out;
    int64 arrays of `num_classes`."""
    pixels = np.zeros(num_classes, np.int64)
    present_in = np.zeros(num_classes, np.int64)
    for i in range(len(dataset)):
        _, label = dataset[i]
        valid = label[label != VOID]
        counts = np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
        pixels += counts
        present_in[counts > 0] += valid.size
    return pixels, present_in


def median_frequency_weights(pixels: np.ndarray, present_in: np.ndarray) -> np.ndarray:
    """SegNet's median-frequency balancing (Eigen & Fergus): freq(c) = pixels of c / pixels
    of the images c appears in, weight(c) = median(freq) / freq(c). A class that never
    appears gets weight 0 (there is nothing to weigh). float32."""
    pixels, present_in = np.asarray(pixels, np.float64), np.asarray(present_in, np.float64)
    seen = pixels > 0
    if not seen.any():
        raise ValueError("no labelled pixels: cannot compute class weights")
    freq = np.zeros_like(pixels)
    freq[seen] = pixels[seen] / present_in[seen]
    weights = np.zeros_like(pixels)
    weights[seen] = np.median(freq[seen]) / freq[seen]
    return weights.astype(np.float32)
