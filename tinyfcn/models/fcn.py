"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer & Darrell, CVPR 2015).

The classifier's FC layers are convolutions (fc6, fc7), so the net returns a
coarse map of class scores (score_fr, 1/32 of the input). FCN-32s upsamples it
x32 in one transposed convolution; FCN-16s first upsamples it x2 and adds
scores predicted from pool4 (1/16), then x16; FCN-8s does that once more with
pool3 (1/8), then x8. The finer skips bring back the detail pooling lost.

Each `forward` reads like the reference `voc-fcn8s/net.py`, layer by layer and
with the same names, so the reference Caffe and PyTorch ports' state dicts load
1:1. The crop offsets come from the layer geometry (models/geometry.py): with
`backbone="vgg16"` (conv1_1 padding 100) they are the reference's 5, 9 and
19 / 27 / 31; with `backbone="lite"` the input is padded to a multiple of 32,
the upsampling layers are padded to give exactly x s, and every offset is 0.
"""

from __future__ import annotations

import numpy as np

from tinyfcn import functional as F
from tinyfcn.models import geometry
from tinyfcn.models.backbones import add_encoder, make_backbone
from tinyfcn.models.base import SegmentationModel
from tinyfcn.models.vgg import conv_indices
from tinyfcn.nn import Conv2d, ConvTranspose2d, Module, init
from tinyfcn.serialization import load, unwrap_state_dict
from tinyfcn.tensor import Tensor


class FCN(SegmentationModel):
    """The encoder and score_fr that FCN32s, FCN16s and FCN8s share."""

    variant = ""  # "32s", "16s" or "8s"

    def __init__(self, num_classes: int = 21, backbone: str = "vgg16", fc_width=None,
                 dropout=None, at_once: bool = False):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if at_once and self.variant != "8s":
            raise ValueError("at_once applies to FCN-8s only")
        self.backbone = make_backbone(backbone, fc_width)
        self.num_classes, self.at_once = num_classes, at_once
        self.reference = backbone == "vgg16"
        self.dropout = (0.5 if self.reference else 0.0) if dropout is None else dropout
        self.config = {"model": f"fcn{self.variant}", "num_classes": num_classes,
                       "backbone": backbone, "fc_width": self.backbone.fc_width,
                       "dropout": self.dropout, "at_once": at_once}
        add_encoder(self, self.backbone)
        self.score_fr = Conv2d(self.backbone.fc_width, num_classes, 1)
        if self.reference:
            init.zeros_(self.score_fr.weight)

    def copy_params_from_vgg16(self, source) -> list:
        """Start from a trained VGG classifier (pytorch-fcn's name): `source` is a state dict
        in torchvision's layout, a `models.vgg16` / `models.vgg` model, or a file `tinyfcn.load`
        reads (.pth, .safetensors, .npz). features.N -> conv1_1 ... conv5_3; classifier.0 ->
        fc6 and classifier.3 -> fc7, each FC layer reshaped into the equivalent convolution
        (convolutionalization). Returns one "source -> target" line per copied array; raises
        ValueError listing every missing or mis-shaped array, copying nothing: shapes must
        match exactly (an FC weight may also be in its (out, in) layout)."""
        if isinstance(source, Module):
            state = source.state_dict()
        elif isinstance(source, dict):
            state = source
        else:
            state = load(source)
        state = unwrap_state_dict(state)  # e.g. a tinyfcn training checkpoint of a classifier
        pairs = [(f"features.{i}.{p}", f"{name}.{p}") for name, i in conv_indices(self.backbone)
                 for p in ("weight", "bias")]
        pairs += [(f"classifier.{i}.{p}", f"{fc}.{p}") for i, fc in ((0, "fc6"), (3, "fc7"))
                  for p in ("weight", "bias")]
        own = self.state_dict()
        problems, arrays = [], {}
        for src, dst in pairs:
            if src not in state:
                problems.append(f"{src} is missing")
                continue
            value = np.asarray(state[src].data if isinstance(state[src], Tensor) else state[src])
            shape = own[dst].shape  # an FC weight (out, in) is convolutionalized by a reshape
            fc_weight = src.startswith("classifier") and len(shape) == 4
            linear = (shape[0], int(np.prod(shape[1:]))) if fc_weight else shape
            if value.shape not in (shape, linear):
                problems.append(f"{src} has shape {value.shape}, {dst} needs {shape}"
                                + (f" or {linear}" if linear != shape else ""))
                continue
            arrays[dst] = value.reshape(own[dst].shape).astype(own[dst].dtype)
        if problems:
            raise ValueError("cannot copy the classifier's weights: " + "; ".join(problems))
        self.load_state_dict(arrays, strict=False)
        return [f"{src} -> {dst}" for src, dst in pairs]

    def _score(self, pool: str) -> Conv2d:
        """Class scores from "pool3" or "pool4": a 1x1 conv, zero-initialised (the reference's
        choice: the skip starts contributing nothing and learns what to add)."""
        layer = Conv2d(self.backbone.layer(pool).out_channels, self.num_classes, 1)
        init.zeros_(layer.weight)
        return layer

    def _upsample(self, stride: int) -> ConvTranspose2d:
        """x `stride` upsampling: kernel 2 * stride, no bias, bilinear-initialised. The
        reference pads nothing (its crops realign); lite pads stride / 2 for an exact x s."""
        padding = 0 if self.reference else stride // 2
        layer = ConvTranspose2d(self.num_classes, self.num_classes, 2 * stride, stride=stride,
                                padding=padding, bias=False)
        init.bilinear_(layer.weight)
        return layer

    def _crop_offsets(self, path: list) -> dict:
        """{name: offset} for each (name, upsampling layer, skip map) on the decoder's path
        and "output" for the last map against the input image."""
        maps = self.backbone.coord_maps()
        here, offsets = maps["fc7"], {}  # score_fr is 1x1: same grid as fc7
        for name, layer, skip in path:
            here = here.then(geometry.conv_transpose(layer.kernel_size[0], layer.stride[0],
                                                     layer.padding[0]))
            if skip is not None:
                offsets[name] = geometry.crop_offset(here, maps[skip])
        offsets["output"] = geometry.crop_offset(geometry.IDENTITY, here)
        return offsets


class FCN32s(FCN):
    """score_fr -> upscore (x32) -> crop."""

    variant = "32s"

    def __init__(self, num_classes: int = 21, backbone: str = "vgg16", fc_width=None,
                 dropout=None, at_once: bool = False):
        super().__init__(num_classes, backbone, fc_width, dropout, at_once)
        self.upscore = self._upsample(32)
        self.crop_offsets = self._crop_offsets([("upscore", self.upscore, None)])

    def forward(self, x):
        x, (H, W) = self.pad_input(x)
        features = self.encode(x)
        h = self.score_fr(features.fc7)                              # 1/32
        h = self.upscore(h)                                          # 1/1
        return F.crop(h, self.crop_offsets["output"], (H, W))


class FCN16s(FCN):
    """score_fr -> upscore2 (x2) + score_pool4 -> upscore16 (x16) -> crop."""

    variant = "16s"

    def __init__(self, num_classes: int = 21, backbone: str = "vgg16", fc_width=None,
                 dropout=None, at_once: bool = False):
        super().__init__(num_classes, backbone, fc_width, dropout, at_once)
        self.score_pool4 = self._score("pool4")
        self.upscore2 = self._upsample(2)
        self.upscore16 = self._upsample(16)
        self.crop_offsets = self._crop_offsets([("score_pool4", self.upscore2, "pool4"),
                                                ("upscore16", self.upscore16, None)])

    def forward(self, x):
        x, (H, W) = self.pad_input(x)
        features = self.encode(x)
        h = self.score_fr(features.fc7)                              # 1/32
        upscore2 = self.upscore2(h)                                  # 1/16
        h = self.score_pool4(features.pool4)
        score_pool4c = F.crop(h, self.crop_offsets["score_pool4"], upscore2.shape[2:])
        h = upscore2 + score_pool4c                                  # fuse_pool4
        h = self.upscore16(h)                                        # 1/1
        return F.crop(h, self.crop_offsets["output"], (H, W))


class FCN8s(FCN):
    """score_fr -> upscore2 (x2) + score_pool4 -> upscore_pool4 (x2) + score_pool3
    -> upscore8 (x8) -> crop. `at_once` scales pool4 by 0.01 and pool3 by 0.0001 before
    scoring them (the reference's at-once variant, trained in one stage)."""

    variant = "8s"

    def __init__(self, num_classes: int = 21, backbone: str = "vgg16", fc_width=None,
                 dropout=None, at_once: bool = False):
        super().__init__(num_classes, backbone, fc_width, dropout, at_once)
        self.score_pool4 = self._score("pool4")
        self.score_pool3 = self._score("pool3")
        self.upscore2 = self._upsample(2)
        self.upscore_pool4 = self._upsample(2)
        self.upscore8 = self._upsample(8)
        self.crop_offsets = self._crop_offsets([("score_pool4", self.upscore2, "pool4"),
                                                ("score_pool3", self.upscore_pool4, "pool3"),
                                                ("upscore8", self.upscore8, None)])

    def forward(self, x):
        x, (H, W) = self.pad_input(x)
        features = self.encode(x)
        pool4, pool3 = features.pool4, features.pool3
        if self.at_once:
            pool4, pool3 = pool4 * 0.01, pool3 * 0.0001
        h = self.score_fr(features.fc7)                              # 1/32
        upscore2 = self.upscore2(h)                                  # 1/16
        h = self.score_pool4(pool4)
        score_pool4c = F.crop(h, self.crop_offsets["score_pool4"], upscore2.shape[2:])
        h = upscore2 + score_pool4c                                  # fuse_pool4
        upscore_pool4 = self.upscore_pool4(h)                        # 1/8
        h = self.score_pool3(pool3)
        score_pool3c = F.crop(h, self.crop_offsets["score_pool3"], upscore_pool4.shape[2:])
        h = upscore_pool4 + score_pool3c                             # fuse_pool3
        h = self.upscore8(h)                                         # 1/1
        return F.crop(h, self.crop_offsets["output"], (H, W))


def fcn32s(num_classes: int = 21, backbone: str = "vgg16", fc_width=None, **kwargs) -> FCN32s:
    """FCN-32s: score_fr upsampled x32 in one step (coarse)."""
    return FCN32s(num_classes, backbone, fc_width, **kwargs)


def fcn16s(num_classes: int = 21, backbone: str = "vgg16", fc_width=None, **kwargs) -> FCN16s:
    """FCN-16s: x2, + score_pool4, then x16."""
    return FCN16s(num_classes, backbone, fc_width, **kwargs)


def fcn8s(num_classes: int = 21, backbone: str = "vgg16", fc_width=None, **kwargs) -> FCN8s:
    """FCN-8s: x2, + score_pool4, x2, + score_pool3, then x8."""
    return FCN8s(num_classes, backbone, fc_width, **kwargs)
