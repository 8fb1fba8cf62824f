"""FCN-32s / 16s / 8s, a DeconvNet-style model and the VGG classifier FCN starts from;
`build(config)` rebuilds one from
the `config` dict every model carries, `from_checkpoint` one with its trained weights,
`init_from` copies the matching weights of a checkpoint into a model."""

import numpy as np

from tinyfcn.models.base import SegmentationModel
from tinyfcn.models.deconvnet import DeconvNet, deconvnet
from tinyfcn.models.fcn import FCN, FCN8s, FCN16s, FCN32s, fcn8s, fcn16s, fcn32s
from tinyfcn.models.vgg import VGG, FullyConvVGG, vgg, vgg16
from tinyfcn.serialization import load, unwrap_state_dict

MODELS = {"fcn32s": fcn32s, "fcn16s": fcn16s, "fcn8s": fcn8s, "deconvnet": deconvnet}
BUILDERS = {**MODELS, "vgg": vgg}  # segmentation models and the classifier they start from


def build(config: dict):
    """A fresh model from a `model.config` dict."""
    config = dict(config)
    name = config.pop("model", None)
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(BUILDERS)}")
    return BUILDERS[name](**config)


def from_checkpoint(checkpoint: dict, path=""):
    """The model a training checkpoint holds (its `config` and `model` weights)."""
    if not isinstance(checkpoint, dict) or not {"config", "model"} <= set(checkpoint):
        raise ValueError(f"{path or 'checkpoint'}: not a training checkpoint (no model config)")
    model = build(checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    return model


def init_from(model, path) -> tuple[int, int]:
    """Copy into `model` every array of a checkpoint (or plain state dict) at `path` whose
    name and shape match: staged training (32s -> 16s -> 8s). Returns (copied, total)."""
    weights = unwrap_state_dict(load(path))
    own = model.state_dict()
    matching = {k: v for k, v in weights.items() if k in own and np.shape(v) == own[k].shape}
    model.load_state_dict(matching, strict=False)
    return len(matching), len(own)


__all__ = ["FCN", "FCN8s", "FCN16s", "FCN32s", "MODELS", "DeconvNet", "SegmentationModel",
           "VGG", "FullyConvVGG", "build", "deconvnet", "fcn8s", "fcn16s", "fcn32s",
           "from_checkpoint", "init_from", "vgg", "vgg16"]
