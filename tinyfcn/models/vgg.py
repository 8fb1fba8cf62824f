"""The VGG classifier in torchvision's layout, and FCN's first move: turning it into a
fully convolutional network.

`vgg16()` has torchvision's names (`features.0` ... `features.28`, `classifier.0/3/6`),
so torchvision's ImageNet state dict (`vgg16-397923af.pth`) loads 1:1 and gives its
logits. `convolutionalize()` rewrites the three fully connected layers as
convolutions (`nn.Conv2d.from_linear`): on a 224 x 224 image the result is a 1 x 1
map equal to the logits, on a larger image a heat map of class scores, computed in
one pass instead of by sliding the classifier over every window.
`vgg(backbone="lite")` is the same design at the lite backbone's widths (input 96 x 96,
a 3 x 3 map before the classifier), the classifier `examples/pretrain_classifier.py`
trains.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from tinyfcn.models.backbones import make_backbone, preprocess
from tinyfcn.nn import Conv2d, Dropout, Linear, MaxPool2d, Module, ReLU, Sequential

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_preprocess(images):
    """uint8 RGB -> float32 NCHW in torchvision's convention (RGB / 255, ImageNet mean/std)."""
    return preprocess(replace(make_backbone("lite"), mean=IMAGENET_MEAN, std=IMAGENET_STD),
                      images)


def features_layout(backbone) -> list:
    """torchvision's `features` in order, as the encoder's layers: each 3x3 conv followed by
    its ReLU (None here), each pooling alone, so a layer's position is its index in
    torchvision's state dict (conv1_1 is features.0, conv1_2 features.2, pool1 features.4)."""
    layout = []
    for layer in backbone.layers:
        if layer.kind == "conv":
            layout += [layer, None]
        elif layer.kind == "pool":
            layout.append(layer)
    return layout


def feature_layers(backbone) -> list:
    """torchvision's `features` as modules. Every conv is padded by 1 and every pooling
    rounds down, as in torchvision (conv1_1's padding of 100 and ceil pooling are FCN's)."""
    modules = []
    for layer in features_layout(backbone):
        if layer is None:
            modules.append(ReLU())
        elif layer.kind == "pool":
            modules.append(MaxPool2d(layer.kernel_size, layer.stride))
        else:
            modules.append(Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                  padding=1))
    return modules


def conv_indices(backbone) -> list:
    """(FCN name, torchvision index) of every 3x3 conv: conv1_1 <-> features.0, ..."""
    return [(layer.name, index) for index, layer in enumerate(features_layout(backbone))
            if layer is not None and layer.kind == "conv"]


class VGG(Module):
    """A VGG classifier: `features` (3x3 convs and pooling), then `classifier` (FC, ReLU,
    Dropout, FC, ReLU, Dropout, FC) reading a k x k map (k = 7 for vgg16, input 224)."""

    def __init__(self, num_classes: int = 1000, backbone: str = "vgg16", fc_width=None,
                 dropout: float = 0.5):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = make_backbone(backbone, fc_width)
        self.num_classes = num_classes
        self.config = {"model": "vgg", "num_classes": num_classes, "backbone": backbone,
                       "fc_width": self.backbone.fc_width, "dropout": dropout}
        fc6 = self.backbone.layer("fc6")  # the first FC layer, as FCN writes it
        k, width, fc = fc6.kernel_size, fc6.in_channels, fc6.out_channels
        self.map_size = k                          # what the first FC layer reads
        self.input_size = k * int(self.backbone.coord_maps()["pool5"].a)  # pool5's stride
        self.features = Sequential(*feature_layers(self.backbone))
        self.classifier = Sequential(Linear(width * k * k, fc), ReLU(), Dropout(dropout),
                                     Linear(fc, fc), ReLU(), Dropout(dropout),
                                     Linear(fc, num_classes))

    def preprocess(self, images):
        return torchvision_preprocess(images)

    def forward(self, x):
        h = self.features(x)
        N, C, H, W = h.shape
        k = self.map_size
        if (H, W) != (k, k):
            # torchvision's AdaptiveAvgPool2d((k, k)), where it is a plain average pooling
            if H % k or W % k:
                raise ValueError(f"an input of {x.shape[2]} x {x.shape[3]} gives a {H} x {W} "
                                 f"map; the classifier reads {k} x {k} (give {self.input_size}"
                                 f" x {self.input_size} or a multiple; convolutionalize() "
                                 f"takes any size)")
            h = h.reshape(N, C, k, H // k, k, W // k).mean(axis=(3, 5))
        return self.classifier(h.reshape(N, C * k * k))

    def convolutionalize(self) -> FullyConvVGG:
        """The same network with its FC layers as convolutions (weights copied)."""
        return FullyConvVGG(self)


class FullyConvVGG(Module):
    """A VGG whose classifier is convolutional: class-score maps for inputs of any size
    (at least the classifier's input size), one score vector per window position."""

    def __init__(self, vgg: VGG):
        fc1, fc2, fc3 = vgg.classifier[0], vgg.classifier[3], vgg.classifier[6]
        width, k = vgg.backbone.layer("fc6").in_channels, vgg.map_size
        self.backbone, self.num_classes = vgg.backbone, vgg.num_classes
        self.features = copy.deepcopy(vgg.features)
        self.classifier = Sequential(
            Conv2d.from_linear(fc1.weight, fc1.bias, (width, k, k)), ReLU(),
            Dropout(vgg.classifier[2].p),
            Conv2d.from_linear(fc2.weight, fc2.bias, (fc2.in_features, 1, 1)), ReLU(),
            Dropout(vgg.classifier[5].p),
            Conv2d.from_linear(fc3.weight, fc3.bias, (fc3.in_features, 1, 1)))

    def preprocess(self, images):
        return torchvision_preprocess(images)

    def forward(self, x):
        return self.classifier(self.features(x))


def vgg16(num_classes: int = 1000, **kwargs) -> VGG:
    """VGG16 with torchvision's layout and names (loads `vgg16-397923af.pth` 1:1)."""
    return VGG(num_classes, "vgg16", **kwargs)


def vgg(num_classes: int = 1000, backbone: str = "vgg16", **kwargs) -> VGG:
    """A VGG classifier on either backbone ("vgg16" or "lite")."""
    return VGG(num_classes, backbone, **kwargs)
