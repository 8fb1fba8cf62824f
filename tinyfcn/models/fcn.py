"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer & Darrell, CVPR 2015).

The classifier's FC layers are convolutions (fc6, fc7), so the net returns a
coarse map of class scores (score_fr, 1/32 of the input). FCN-32s upsamples it
x32 in one learned transposed convolution; FCN-16s first upsamples x2 and adds
scores predicted from pool4 (1/16), then x16; FCN-8s does that once more with
pool3 (1/8), then x8. The finer skips bring back the detail pooling lost.

With `backbone="vgg16"` the layers, names, crops and initialisation follow the
reference Caffe and PyTorch ports (conv1_1 padding 100 and crops at 5, 9 and
19 / 27 / 31), so their state dicts load 1:1. With `backbone="lite"` the input
is padded to a multiple of 32 and no crop offsets are needed.
"""

from __future__ import annotations

import numpy as np

from tinyfcn import functional as F
from tinyfcn import ops
from tinyfcn.functional._checks import as_tensor
from tinyfcn.models.backbones import add_encoder, make_backbone, preprocess, run_encoder
from tinyfcn.nn import Conv2d, ConvTranspose2d, Module, init

# (kernel, stride) of each upsampling layer and the reference's crop offsets (vgg16)
UPSAMPLING = {
    "32s": {"upscore": (64, 32)},
    "16s": {"upscore2": (4, 2), "upscore16": (32, 16)},
    "8s": {"upscore2": (4, 2), "upscore_pool4": (4, 2), "upscore8": (16, 8)},
}
REFERENCE_CROPS = {"32s": {"out": 19}, "16s": {"pool4": 5, "out": 27},
                   "8s": {"pool4": 5, "pool3": 9, "out": 31}}


class FCN(Module):
    """An FCN of `variant` "32s", "16s" or "8s"; build it with fcn32s / fcn16s / fcn8s."""

    def __init__(self, variant: str, num_classes: int = 21, backbone: str = "vgg16",
                 fc_width=None, dropout=None, at_once: bool = False):
        if variant not in UPSAMPLING:
            raise ValueError(f"variant must be one of {sorted(UPSAMPLING)}, got {variant!r}")
        if at_once and variant != "8s":
            raise ValueError("at_once applies to FCN-8s only")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = make_backbone(backbone, fc_width)
        self.variant, self.num_classes, self.at_once = variant, num_classes, at_once
        self.dropout = (0.5 if backbone == "vgg16" else 0.0) if dropout is None else dropout
        self.config = {"model": f"fcn{variant}", "num_classes": num_classes,
                       "backbone": backbone, "fc_width": self.backbone.fc_width,
                       "dropout": self.dropout, "at_once": at_once}
        add_encoder(self, self.backbone)
        reference = backbone == "vgg16"
        self.score_fr = Conv2d(self.backbone.fc_width, num_classes, 1)
        if reference:
            init.zeros_(self.score_fr.weight)
        widths = [w for w, _ in self.backbone.blocks]
        if variant in ("16s", "8s"):
            self.score_pool4 = _zero_conv(widths[3], num_classes)
        if variant == "8s":
            self.score_pool3 = _zero_conv(widths[2], num_classes)
        for name, (k, s) in UPSAMPLING[variant].items():
            padding = 0 if reference else (k - s) // 2  # lite: exact x s, no crop needed
            layer = ConvTranspose2d(num_classes, num_classes, k, stride=s, padding=padding,
                                    bias=False)
            init.bilinear_(layer.weight)
            setattr(self, name, layer)
        self.crops = REFERENCE_CROPS[variant] if reference else {}

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB images -> the float32 NCHW input these weights expect (see backbones)."""
        return preprocess(self.backbone, images)

    def _fuse(self, coarse, skip, score_layer, offset_key, scale):
        """Upsampled coarse scores + scores of a finer pooling layer, cropped to match."""
        if scale != 1:
            skip = skip * scale
        score = score_layer(skip)
        offset = self.crops.get(offset_key, 0)
        return coarse + F.crop(score, offset, coarse.shape[2:])

    def forward(self, x):
        x = as_tensor(x)
        H, W = x.shape[2:]
        m = self.backbone.pad_to
        if m > 1 and (H % m or W % m):
            x = ops.pad(x, ((0, 0), (0, 0), (0, -H % m), (0, -W % m)))
        pools, h, _, _ = run_encoder(self, self.backbone, x, self.dropout)
        h = self.score_fr(h)
        if self.variant == "32s":
            h = self.upscore(h)
        elif self.variant == "16s":
            h = self._fuse(self.upscore2(h), pools[3], self.score_pool4, "pool4", 1)
            h = self.upscore16(h)
        else:
            h = self._fuse(self.upscore2(h), pools[3], self.score_pool4, "pool4",
                           0.01 if self.at_once else 1)
            h = self._fuse(self.upscore_pool4(h), pools[2], self.score_pool3, "pool3",
                           0.0001 if self.at_once else 1)
            h = self.upscore8(h)
        return F.crop(h, self.crops.get("out", 0), (H, W))


def _zero_conv(in_channels, out_channels):
    layer = Conv2d(in_channels, out_channels, 1)
    init.zeros_(layer.weight)
    return layer


def fcn32s(num_classes: int = 21, backbone: str = "vgg16", fc_width=None, **kwargs) -> FCN:
    """FCN-32s: score_fr upsampled x32 in one step (coarse)."""
    return FCN("32s", num_classes, backbone, fc_width, **kwargs)


def fcn16s(num_classes: int = 21, backbone: str = "vgg16", fc_width=None, **kwargs) -> FCN:
    """FCN-16s: x2, + score_pool4, then x16."""
    return FCN("16s", num_classes, backbone, fc_width, **kwargs)


def fcn8s(num_classes: int = 21, backbone: str = "vgg16", fc_width=None, at_once=False,
          **kwargs) -> FCN:
    """FCN-8s: x2, + score_pool4, x2, + score_pool3, then x8. `at_once` scales pool4 by
    0.01 and pool3 by 0.0001 before scoring (the reference's at-once variant)."""
    return FCN("8s", num_classes, backbone, fc_width, at_once=at_once, **kwargs)
