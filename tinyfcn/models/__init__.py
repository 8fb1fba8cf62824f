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


# Bounds on the sizes a config may ask for: a config read from a file is untrusted, and a
# forged `num_classes: 10**6` must not build first and fail later. Label maps are 8-bit with
# 255 = void, so a segmentation model has at most 255 classes; the classifier at most
# ImageNet's 1000; fc6 / fc7 at most VGG16's 4096 channels.
MAX_CLASSES = {**{name: 255 for name in MODELS}, "vgg": 1000}
MAX_FC_WIDTH = 4096

# the weight whose first dimension each size of a config is, per model
SIZED_WEIGHTS = {**{name: {"num_classes": "score_fr.weight", "fc_width": "fc6.weight"}
                    for name in ("fcn32s", "fcn16s", "fcn8s")},
                 "deconvnet": {"num_classes": "score.weight", "fc_width": "fc6.weight"},
                 "vgg": {"num_classes": "classifier.6.weight",
                         "fc_width": "classifier.0.weight"}}


def check_config(config) -> None:
    """ValueError naming the field if `config` asks for an unknown model or sizes no model
    of it can sanely have; checked before anything is built."""
    if not isinstance(config, dict):
        raise ValueError(f"model config must be a dict, got {type(config).__name__}")
    name = config.get("model")
    if not isinstance(name, str) or name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(BUILDERS)}")
    limits = {"num_classes": MAX_CLASSES[name], "fc_width": MAX_FC_WIDTH}
    for field, limit in limits.items():
        value = config.get(field)
        if field in config and not (field == "fc_width" and value is None) and not (
                type(value) is int and 1 <= value <= limit):
            raise ValueError(f"model config: {field} must be an integer from 1 to {limit} "
                             f"for {name}, got {value!r}")
    dropout = config.get("dropout")
    if dropout is not None and not (type(dropout) in (int, float) and 0 <= dropout < 1):
        raise ValueError(f"model config: dropout must be a number in [0, 1), got {dropout!r}")
    if not isinstance(config.get("backbone", ""), str):
        raise ValueError(f"model config: backbone must be a name, got {config['backbone']!r}")


def build(config: dict):
    """A fresh model from a `model.config` dict (checked first: see `check_config`)."""
    check_config(config)
    config = dict(config)
    return BUILDERS[config.pop("model")](**config)


def from_checkpoint(checkpoint: dict, path=""):
    """The model a training checkpoint holds (its `config` and `model` weights). The
    config is checked, and its sizes against the weights' shapes, before the model is
    built: a forged config cannot make us allocate a model its file does not hold."""
    source = path or "checkpoint"
    if not isinstance(checkpoint, dict) or not {"config", "model"} <= set(checkpoint):
        raise ValueError(f"{source}: not a training checkpoint (no model config)")
    config, weights = checkpoint["config"], checkpoint["model"]
    try:
        check_config(config)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    if not isinstance(weights, dict):
        raise ValueError(f"{source}: its model weights are a {type(weights).__name__}, "
                         f"not a dict")
    for field, weight in SIZED_WEIGHTS[config["model"]].items():
        size = config.get(field)
        if size is None:
            continue
        if weight not in weights:
            raise ValueError(f"{source}: its weights have no {weight} (model config "
                             f"{field} {size})")
        if np.shape(weights[weight])[:1] != (size,):
            raise ValueError(f"{source}: model config {field} {size} does not match its "
                             f"weights ({weight} has shape {np.shape(weights[weight])})")
    model = build(config)
    model.load_state_dict(weights)
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
