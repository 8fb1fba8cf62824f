"""What every segmentation model here shares: the input convention of its encoder's
weights, padding to the multiple its decoder needs, and `predict`."""

from __future__ import annotations

import numpy as np

from tinyfcn import ops
from tinyfcn.models.backbones import Backbone, Features, preprocess, run_encoder
from tinyfcn.nn import Module
from tinyfcn.tensor import Tensor, as_tensor, no_grad


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

    def predict(self, images, batch_size: int = 8):
        """Label maps for uint8 RGB images: one (H, W, 3) image gives one (H, W) map, a batch
        (N, H, W, 3) gives (N, H, W), and a list of images of any sizes a list of maps.

        Preprocessing, padding, batching, evaluation mode and `no_grad` are handled here;
        the model's mode is restored afterwards. Maps are uint8 (int32 past 256 classes)."""
        if isinstance(images, (list, tuple)):
            return [self.predict(image, batch_size) for image in images]
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(f"images must be uint8 RGB, got dtype {images.dtype}")
        if images.ndim not in (3, 4) or images.shape[-1] != 3:
            raise ValueError(f"images must be (H, W, 3) or (N, H, W, 3), got shape "
                             f"{images.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch = images[None] if images.ndim == 3 else images
        dtype = np.uint8 if self.num_classes <= 256 else np.int32
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                maps = [self(self.preprocess(batch[i:i + batch_size])).data.argmax(1)
                        .astype(dtype) for i in range(0, len(batch), batch_size)]
        finally:
            self.train(was_training)
        labels = np.concatenate(maps) if maps else np.zeros((0, *batch.shape[1:3]), dtype)
        return labels[0] if images.ndim == 3 else labels
