"""The published naming contract: every model's state-dict names and shapes, in order.

These names are what the reference Caffe / PyTorch FCN ports and torchvision's VGG16 use,
and what every saved checkpoint holds; a refactoring that renames, reorders or reshapes
one breaks loading. The expected fingerprints were computed from the models as they were
before the encoder was rewritten as one layer description (issue 23), so they pin the
names that code gave, not what the code under test says."""

import functools
import hashlib

import numpy as np
import pytest

from tinyfcn import models

# name -> (model builder, number of entries, sha256 of "name:shape" lines, prefix 16)
CASES = {
    "fcn32s-lite": (lambda: models.fcn32s(21, "lite"), 27, "29fc619025fd1ad7"),
    "fcn16s-lite": (lambda: models.fcn16s(21, "lite"), 30, "cc0e67a558ad4051"),
    "fcn8s-lite": (lambda: models.fcn8s(21, "lite"), 33, "72ca863f0dda47e8"),
    "fcn32s-vgg16": (lambda: models.fcn32s(21, "vgg16", fc_width=64), 33, "9d590982612d03fd"),
    "fcn16s-vgg16": (lambda: models.fcn16s(21, "vgg16", fc_width=64), 36, "7b0f5c9e3a324a91"),
    "fcn8s-vgg16": (lambda: models.fcn8s(21, "vgg16", fc_width=64), 39, "5a9405ffb226c33d"),
    "deconvnet-lite": (lambda: models.deconvnet(21), 111, "9bb4d460f41ce309"),
    "vgg16": (lambda: models.vgg16(), 32, "4d615dd49d91104c"),
    "vgg-lite": (lambda: models.vgg(10, backbone="lite"), 26, "d8d1909c2be1c2e1"),
}


@functools.cache
def shapes(case) -> dict:
    """State-dict name -> shape of a freshly built model, in state-dict order (built once:
    vgg16's classifier takes seconds)."""
    return {k: np.shape(v) for k, v in CASES[case][0]().state_dict().items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_names_and_shapes_are_unchanged(case):
    _, count, fingerprint = CASES[case]
    lines = [f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes(case).items()]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    assert (len(lines), digest) == (count, fingerprint), "\n".join(lines)


# a few entries spelled out, so that the contract can be read here and not only checked
SPOT_CHECKS = {
    "fcn8s-vgg16": {"conv1_1.weight": (64, 3, 3, 3), "conv3_3.bias": (256,),
                    "conv5_3.weight": (512, 512, 3, 3), "fc6.weight": (64, 512, 7, 7),
                    "score_pool3.weight": (21, 256, 1, 1), "upscore8.weight": (21, 21, 16, 16)},
    "deconvnet-lite": {"conv1_1.weight": (32, 3, 3, 3), "conv1_1_bn.running_var": (32,),
                       "deconv_fc.weight": (256, 512, 1, 1), "deconv1_2_bn.bias": (32,),
                       "score.weight": (21, 32, 1, 1)},
    "vgg16": {"features.28.weight": (512, 512, 3, 3), "classifier.0.weight": (4096, 25088),
              "classifier.6.bias": (1000,)},
}


@pytest.mark.parametrize("case", sorted(SPOT_CHECKS))
def test_named_entries_have_their_published_shapes(case):
    state = shapes(case)
    assert {name: state[name] for name in SPOT_CHECKS[case]} == SPOT_CHECKS[case]
