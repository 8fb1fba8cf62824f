"""What every segmentation model here shares: the input convention of its encoder's
weights, padding to the multiple its decoder needs, and `predict`."""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

from tinyfcn import ops
from tinyfcn.models.backbones import Backbone, Features, preprocess, run_encoder
from tinyfcn.nn import Module
from tinyfcn.tensor import Tensor, as_tensor, no_grad

# Images up to this many pixels are predicted whole by default, larger ones in windows of
# at most this many: it bounds the memory of one forward pass, whatever the image's size
# (a PASCAL VOC image, 500 x 375, is predicted whole; memory grows with the window's area).
MAX_PIXELS = 512 * 512


class SegmentationModel(Module):
    """Subclasses set `backbone`, `num_classes` and `dropout` and define `forward`."""

    backbone: Backbone
    num_classes: int
    dropout: float

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB images (N, H, W, 3) or (H, W, 3) -> the float32 NCHW input these weights
        expect (see models/backbones.py)."""
        return preprocess(self.backbone, images)

    def pad_input(self, x) -> tuple[Tensor, tuple[int, int]]:
        """`x` padded with zeros at the bottom and right to a multiple of the backbone's
        `pad_to`, and its height and width before (to crop the scores back to)."""
        x = as_tensor(x)
        H, W = x.shape[2:]
        m = self.backbone.pad_to
        if m > 1 and (H % m or W % m):
            x = ops.pad(x, ((0, 0), (0, 0), (0, -H % m), (0, -W % m)))
        return x, (H, W)

    def encode(self, x, return_indices: bool = False) -> Features:
        """conv1_1 ... fc7 (see backbones.run_encoder)."""
        return run_encoder(self, self.backbone, x, self.dropout, return_indices)

    def predict(self, images, batch_size: int = 8, *, tile=None, overlap: float = 0.25,
                max_pixels: int = MAX_PIXELS, tta=None):
        """Label maps for uint8 RGB images: one (H, W, 3) image gives one (H, W) map, a batch
        (N, H, W, 3) gives (N, H, W), and a list of images of any sizes a list of maps.

        Preprocessing, padding, batching, evaluation mode and `no_grad` are handled here;
        the model's mode is restored afterwards. Maps are uint8 (int32 past 256 classes).

        Large images are predicted in overlapping square windows whose class scores are
        averaged where they overlap (mmsegmentation's slide inference), so memory grows with
        the window, not the image (see `predict_scores`). `tile=None` (automatic): an image
        of up to `max_pixels` pixels is predicted whole, a larger one in windows of about
        `max_pixels`; `tile=0`: always whole; `tile=N`: N x N windows (an image that fits
        in one is predicted whole). `overlap`: the share of a window its neighbour covers
        too. `tta="flip"`: scores averaged with those of the mirrored image."""
        if isinstance(images, (list, tuple)):
            return [self.predict(image, batch_size, tile=tile, overlap=overlap,
                                 max_pixels=max_pixels, tta=tta) for image in images]
        images = _check_images(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        _check_options(tile, overlap, max_pixels, tta)
        batch = images[None] if images.ndim == 3 else images
        dtype = np.uint8 if self.num_classes <= 256 else np.int32
        window = self._window(batch.shape[1:3], tile, max_pixels)
        with self._inference():
            if window is None:
                maps = [self._scores(batch[i:i + batch_size], tta).argmax(1).astype(dtype)
                        for i in range(0, len(batch), batch_size)]
            else:
                maps = [self._tiled_labels(image, window, overlap, tta, dtype)[None]
                        for image in batch]
        labels = np.concatenate(maps) if maps else np.zeros((0, *batch.shape[1:3]), dtype)
        return labels[0] if images.ndim == 3 else labels

    def predict_scores(self, image, *, tile=None, overlap: float = 0.25,
                       max_pixels: int = MAX_PIXELS, tta=None) -> np.ndarray:
        """The float32 class scores (logits), (C, H, W), of one uint8 RGB image (H, W, 3):
        what `predict` takes the argmax of, with the same options. In windows, each
        pixel's scores are the mean over the windows that cover it. The result holds
        C x H x W floats; `predict` never holds more than a band of rows of them."""
        image = _check_images(image)
        if image.ndim != 3:
            raise ValueError(f"image must be one (H, W, 3) image, got shape {image.shape}")
        _check_options(tile, overlap, max_pixels, tta)
        window = self._window(image.shape[:2], tile, max_pixels)
        with self._inference():
            if window is None:
                return self._scores(image[None], tta)[0]
            scores = np.empty((self.num_classes, *image.shape[:2]), np.float32)
            for top, band in self._score_bands(image, window, overlap, tta):
                scores[:, top:top + band.shape[1]] = band
            return scores

    @contextmanager
    def _inference(self):
        """Evaluation mode and no graph, the model's mode restored afterwards."""
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                yield
        finally:
            self.train(was_training)

    def _window(self, size, tile, max_pixels):
        """The side of the windows to predict an image of `size` (H, W) in, or None for the
        whole image. Automatic windows hold at most `max_pixels` pixels, and their side is a
        multiple of the backbone's `pad_to` so that no window needs padding."""
        if tile == 0 or (tile is None and size[0] * size[1] <= max_pixels):
            return None
        if tile is None:
            m = self.backbone.pad_to
            tile = max(m, math.isqrt(max_pixels) // m * m)
        return tile

    def _scores(self, images: np.ndarray, tta) -> np.ndarray:
        """(N, C, H, W) float32 scores of uint8 images (N, H, W, 3); with tta="flip" the mean
        of the scores and the mirrored scores of the mirrored images."""
        x = self.preprocess(images)
        scores = self(x).data
        if tta == "flip":
            mirrored = self(np.ascontiguousarray(x[..., ::-1])).data
            scores = (scores + mirrored[..., ::-1]) / 2
        return scores

    def _score_bands(self, image: np.ndarray, tile: int, overlap: float, tta):
        """Yield (first row, scores (C, rows, W)) of one image band by band from the top:
        every window's scores summed, divided by how many windows cover each pixel. The rows
        above the next row of windows are final; the rest carry over. So only the rows one
        row of windows spans are held (C x tile x W floats, not C x H x W), in one buffer:
        a band is valid until the next one is asked for."""
        H, W = image.shape[:2]
        stride = max(1, tile - round(tile * overlap))
        rows, cols = window_spans(H, tile, stride), window_spans(W, tile, stride)
        row_count, col_count = coverage(rows, H), coverage(cols, W)
        band = np.zeros((self.num_classes, rows[0][1], W), np.float32)  # rows y0..y1
        for i, (y0, y1) in enumerate(rows):
            for x0, x1 in cols:
                band[:, :y1 - y0, x0:x1] += self._scores(image[None, y0:y1, x0:x1], tta)[0]
            done = rows[i + 1][0] if i + 1 < len(rows) else H  # where the next row starts
            final = band[:, :done - y0]
            final /= np.outer(row_count[y0:done], col_count)
            yield y0, final
            band[:, :y1 - done] = band[:, done - y0:y1 - y0]  # the next row's first rows
            band[:, y1 - done:] = 0

    def _tiled_labels(self, image, tile, overlap, tta, dtype) -> np.ndarray:
        """One image's label map, each band's argmax taken as soon as the band is final."""
        labels = np.empty(image.shape[:2], dtype)
        for top, scores in self._score_bands(image, tile, overlap, tta):
            labels[top:top + scores.shape[1]] = scores.argmax(0)
        return labels


def window_spans(size: int, window: int, stride: int) -> list:
    """(start, stop) of the windows along one axis of `size` pixels: one every `stride`
    pixels, the last moved back to end at the border, so every window lies inside the image
    (mmsegmentation's slide inference); a single window of `size` if it fits in one."""
    count = max(size - window + stride - 1, 0) // stride + 1
    spans = []
    for i in range(count):
        stop = min(i * stride + window, size)
        spans.append((max(stop - window, 0), stop))
    return spans


def coverage(spans, size: int) -> np.ndarray:
    """How many of the windows `spans` cover each pixel along an axis of `size` (float32).
    Windows form a grid, so a pixel's count is its row's count times its column's."""
    counts = np.zeros(size, np.float32)
    for start, stop in spans:
        counts[start:stop] += 1
    return counts


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 RGB, got dtype {images.dtype}")
    if images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"images must be (H, W, 3) or (N, H, W, 3), got shape "
                         f"{images.shape}")
    if 0 in images.shape[-3:-1]:
        raise ValueError(f"images must have at least one pixel, got shape {images.shape}")
    return images


def _check_options(tile, overlap, max_pixels, tta) -> None:
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, (int, np.integer))
                             or tile < 0):
        raise ValueError(f"tile must be None (automatic), 0 (whole image) or a window side "
                         f">= 1, got {tile!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) \
            or max_pixels < 1:
        raise ValueError(f"max_pixels must be an integer >= 1, got {max_pixels!r}")
    if tta not in (None, "flip"):
        raise ValueError(f"tta must be None or 'flip', got {tta!r}")
