"""FCN-32s / 16s / 8s, a DeconvNet-style model and the VGG classifier FCN starts from;
`build(config)` rebuilds one from
the `config` dict every model carries, `from_checkpoint` one with its trained weights."""

from tinyfcn.models.base import SegmentationModel
from tinyfcn.models.deconvnet import DeconvNet, deconvnet
from tinyfcn.models.fcn import FCN, FCN8s, FCN16s, FCN32s, fcn8s, fcn16s, fcn32s
from tinyfcn.models.vgg import VGG, FullyConvVGG, vgg, vgg16

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


__all__ = ["FCN", "FCN8s", "FCN16s", "FCN32s", "MODELS", "DeconvNet", "SegmentationModel",
           "VGG", "FullyConvVGG", "build", "deconvnet", "fcn8s", "fcn16s", "fcn32s",
           "from_checkpoint", "vgg", "vgg16"]
