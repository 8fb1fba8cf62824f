"""The two encoders: FCN's VGG16 and the CPU-sized "lite" VGG (benchmarks/README.md).

Both are plain attributes conv{block}_{i} on the model (so parameter names
match the reference Caffe and PyTorch ports), followed by fc6 and fc7, the
classifier's fully connected layers rewritten as convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tinyfcn import functional as F
from tinyfcn.models import geometry
from tinyfcn.nn import BatchNorm2d, Conv2d, Module


@dataclass(frozen=True)
class Backbone:
    name: str
    blocks: tuple          # (width, number of 3x3 convs) per block, each followed by 2x2 pooling
    first_padding: int     # conv1_1's padding (100 in the reference, so any size crops right)
    ceil_mode: bool        # pooling rounds up (reference) or down
    fc6_kernel: int        # fc6 = conv of this size (7: VGG's FC layer over a 7x7 map)
    fc_width: int          # channels of fc6 / fc7
    pad_to: int            # pad inputs to a multiple of this (lite) or 1 (reference crops instead)
    # input preprocessing the weights expect
    bgr: bool
    scale: float
    mean: tuple
    std: tuple

    @property
    def fc6_padding(self) -> int:
        """0 for VGG's 7x7 fc6 (an FC layer over a 7x7 map), else 'same' padding."""
        return 0 if self.fc6_kernel == 7 else self.fc6_kernel // 2

    def coord_maps(self) -> dict:
        """Where pool1 ... pool5 and fc7 sit on the input image (see models/geometry.py)."""
        maps, here = {}, geometry.IDENTITY
        for b, (_, depth) in enumerate(self.blocks, start=1):
            for i in range(1, depth + 1):
                padding = self.first_padding if (b, i) == (1, 1) else 1
                here = here.then(geometry.conv(3, 1, padding))
            here = maps[f"pool{b}"] = here.then(geometry.conv(2, 2))
        maps["fc7"] = here.then(geometry.conv(self.fc6_kernel, 1, self.fc6_padding))
        return maps


def vgg16(fc_width: int = 4096) -> Backbone:
    return Backbone("vgg16", ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
                    first_padding=100, ceil_mode=True, fc6_kernel=7, fc_width=fc_width,
                    pad_to=1, bgr=True, scale=1.0,
                    mean=(104.00699, 116.66877, 122.67892), std=(1.0, 1.0, 1.0))


def lite(fc_width: int = 512) -> Backbone:
    return Backbone("lite", ((32, 2), (64, 2), (128, 2), (256, 2), (256, 2)),
                    first_padding=1, ceil_mode=False, fc6_kernel=3, fc_width=fc_width,
                    pad_to=32, bgr=False, scale=1 / 255,
                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


BACKBONES = {"vgg16": vgg16, "lite": lite}


def make_backbone(name: str, fc_width=None) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {name!r}")
    return BACKBONES[name]() if fc_width is None else BACKBONES[name](fc_width)


def add_encoder(model: Module, backbone: Backbone, batch_norm: bool = False) -> None:
    """Set conv1_1 ... conv5_x, fc6, fc7 on `model` (with batch_norm, each 3x3 conv is
    followed by a BatchNorm2d named conv{b}_{i}_bn and has no bias of its own)."""
    in_ch = 3
    for b, (width, depth) in enumerate(backbone.blocks, start=1):
        for i in range(1, depth + 1):
            padding = backbone.first_padding if (b, i) == (1, 1) else 1
            setattr(model, f"conv{b}_{i}", Conv2d(in_ch, width, 3, padding=padding,
                                                  bias=not batch_norm))
            if batch_norm:
                setattr(model, f"conv{b}_{i}_bn", BatchNorm2d(width))
            in_ch = width
    model.fc6 = Conv2d(in_ch, backbone.fc_width, backbone.fc6_kernel,
                       padding=backbone.fc6_padding)
    model.fc7 = Conv2d(backbone.fc_width, backbone.fc_width, 1)


class Features(NamedTuple):
    """What the encoder hands the decoder: pool1 ... pool5, fc7's output and, for max
    unpooling, each pooling's switches and the size of the map it pooled."""
    pools: list
    fc7: object
    switches: list
    sizes: list

    @property
    def pool3(self):
        return self.pools[2]

    @property
    def pool4(self):
        return self.pools[3]


def run_encoder(model: Module, backbone: Backbone, x, dropout: float,
                return_indices: bool = False) -> Features:
    """conv1_1 ... fc7 of `model` on `x`."""
    pools, switches, sizes = [], [], []
    h = x
    for b, (_, depth) in enumerate(backbone.blocks, start=1):
        for i in range(1, depth + 1):
            h = getattr(model, f"conv{b}_{i}")(h)
            norm = getattr(model, f"conv{b}_{i}_bn", None)
            h = F.relu(norm(h) if norm is not None else h)
        sizes.append(h.shape[2:])
        if return_indices:
            h, idx = F.max_pool2d(h, 2, 2, ceil_mode=backbone.ceil_mode, return_indices=True)
            switches.append(idx)
        else:
            h = F.max_pool2d(h, 2, 2, ceil_mode=backbone.ceil_mode)
        pools.append(h)
    h = F.dropout(F.relu(model.fc6(h)), dropout, model.training)
    h = F.dropout(F.relu(model.fc7(h)), dropout, model.training)
    return Features(pools, h, switches, sizes)


def preprocess(backbone: Backbone, images: np.ndarray) -> np.ndarray:
    """uint8 RGB images (N, H, W, 3) or (H, W, 3) -> float32 (N, 3, H, W) as the weights expect:
    for vgg16 the reference's BGR in 0-255 minus the mean; for lite RGB/255 normalised."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) or (H, W, 3), got shape {images.shape}")
    x = images.astype(np.float32) * np.float32(backbone.scale)
    if backbone.bgr:
        x = x[..., ::-1]
    x = (x - np.asarray(backbone.mean, np.float32)) / np.asarray(backbone.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
