"""The two encoders: FCN's VGG16 and the CPU-sized "lite" VGG (benchmarks/README.md).

Each encoder is described once, as torchvision's `make_layers(cfg)` describes VGG: a table
of layers with FCN's names (conv1_1 ... pool5, then fc6 and fc7, the classifier's fully
connected layers rewritten as convolutions). `Backbone.layers` expands the table into
`Layer`s, and everything else reads that list: `add_encoder` builds the layers on a model
(as plain attributes, so parameter names match the reference Caffe and PyTorch ports),
`run_encoder` runs them, `Backbone.coord_maps` derives where each map sits on the image,
and models/vgg.py builds torchvision's `features` from it and maps its indices to names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tinyfcn import functional as F
from tinyfcn.models import geometry
from tinyfcn.nn import BatchNorm2d, Conv2d, Module

# The encoders' tables, in torchvision's cfg style: ("convB_I", width) is a 3x3 convolution
# followed by ReLU, "poolB" a 2x2 max pooling. fc6 and fc7 follow (see Backbone.layers).
VGG16_LAYERS = (
    ("conv1_1", 64), ("conv1_2", 64), "pool1",
    ("conv2_1", 128), ("conv2_2", 128), "pool2",
    ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), "pool3",
    ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512), "pool4",
    ("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512), "pool5",
)
LITE_LAYERS = (
    ("conv1_1", 32), ("conv1_2", 32), "pool1",
    ("conv2_1", 64), ("conv2_2", 64), "pool2",
    ("conv3_1", 128), ("conv3_2", 128), "pool3",
    ("conv4_1", 256), ("conv4_2", 256), "pool4",
    ("conv5_1", 256), ("conv5_2", 256), "pool5",
)


class Layer(NamedTuple):
    """One layer of a network description, the same size on both axes. `kind` says how it
    runs: "conv" (a convolution, then ReLU; batch-normalised in DeconvNet), "pool" (2x2 max
    pooling: its output is a skip or its switches are unpooled), or "fc" (a fully connected
    layer of the classifier as a convolution, then ReLU and dropout)."""
    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0


@dataclass(frozen=True)
class Backbone:
    name: str
    table: tuple           # VGG16_LAYERS or LITE_LAYERS
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

    @property
    def layers(self) -> tuple:
        """The encoder, conv1_1 to fc7, as `Layer`s: the one description of it."""
        layers, channels = [], 3
        for entry in self.table:
            if isinstance(entry, str):
                layers.append(Layer(entry, "pool", channels, channels, 2, stride=2))
            else:
                name, width = entry
                padding = self.first_padding if not layers else 1
                layers.append(Layer(name, "conv", channels, width, 3, padding=padding))
                channels = width
        return (*layers,
                Layer("fc6", "fc", channels, self.fc_width, self.fc6_kernel,
                      padding=self.fc6_padding),
                Layer("fc7", "fc", self.fc_width, self.fc_width, 1))

    def layer(self, name: str) -> Layer:
        """The encoder layer called `name` (e.g. "pool4": what score_pool4 reads)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"the {self.name} encoder has no layer {name!r}")

    def coord_maps(self) -> dict:
        """Where each layer's output (pool1 ... pool5, fc7, ...) sits on the input image (see
        models/geometry.py)."""
        maps, here = {}, geometry.IDENTITY
        for layer in self.layers:
            layer_map = geometry.conv(layer.kernel_size, layer.stride, layer.padding)
            here = maps[layer.name] = here.then(layer_map)
        return maps


def vgg16(fc_width: int = 4096) -> Backbone:
    return Backbone("vgg16", VGG16_LAYERS,
                    first_padding=100, ceil_mode=True, fc6_kernel=7, fc_width=fc_width,
                    pad_to=1, bgr=True, scale=1.0,
                    mean=(104.00699, 116.66877, 122.67892), std=(1.0, 1.0, 1.0))


def lite(fc_width: int = 512) -> Backbone:
    return Backbone("lite", LITE_LAYERS,
                    first_padding=1, ceil_mode=False, fc6_kernel=3, fc_width=fc_width,
                    pad_to=32, bgr=False, scale=1 / 255,
                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


BACKBONES = {"vgg16": vgg16, "lite": lite}


def make_backbone(name: str, fc_width=None) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {name!r}")
    return BACKBONES[name]() if fc_width is None else BACKBONES[name](fc_width)


def add_conv(model: Module, layer: Layer, batch_norm: bool = False) -> None:
    """Put `layer`'s convolution on `model` as `layer.name`; with `batch_norm`, it has no bias
    (the norm's shift replaces it) and a BatchNorm2d follows as `<name>_bn`."""
    setattr(model, layer.name, Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                      layer.stride, layer.padding, bias=not batch_norm))
    if batch_norm:
        setattr(model, f"{layer.name}_bn", BatchNorm2d(layer.out_channels))


def run_conv(model: Module, layer: Layer, h):
    """`layer`'s convolution on `model`, its batch norm if it has one, then ReLU."""
    h = getattr(model, layer.name)(h)
    norm = getattr(model, f"{layer.name}_bn", None)
    return F.relu(norm(h) if norm is not None else h)


def add_encoder(model: Module, backbone: Backbone, batch_norm: bool = False) -> None:
    """Put conv1_1 ... fc7 on `model` (with batch_norm, each "conv" layer has a BatchNorm2d
    `<name>_bn`; fc6 and fc7 never do)."""
    for layer in backbone.layers:
        if layer.kind != "pool":
            add_conv(model, layer, batch_norm and layer.kind == "conv")


class Features(NamedTuple):
    """What the encoder hands the decoder, by layer name: each pooling's output and, for max
    unpooling, its switches and the size of the map it pooled; and fc7's output."""
    pools: dict
    fc7: object
    switches: dict
    sizes: dict

    @property
    def pool3(self):
        return self.pools["pool3"]

    @property
    def pool4(self):
        return self.pools["pool4"]


def run_encoder(model: Module, backbone: Backbone, x, dropout: float,
                return_indices: bool = False) -> Features:
    """conv1_1 ... fc7 of `model` on `x`."""
    pools, switches, sizes = {}, {}, {}
    h = x
    for layer in backbone.layers:
        if layer.kind == "pool":
            sizes[layer.name] = h.shape[2:]
            pool = (layer.kernel_size, layer.stride)
            if return_indices:
                h, switches[layer.name] = F.max_pool2d(h, *pool, ceil_mode=backbone.ceil_mode,
                                                       return_indices=True)
            else:
                h = F.max_pool2d(h, *pool, ceil_mode=backbone.ceil_mode)
            pools[layer.name] = h
        else:
            h = run_conv(model, layer, h)
            if layer.kind == "fc":
                h = F.dropout(h, dropout, model.training)
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
