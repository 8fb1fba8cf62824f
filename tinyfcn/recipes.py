"""How to train, as data: FCN's reference fine-tuning recipe (pytorch-fcn's `configurations`
table, from the voc-fcn*s solvers of Long, Shelhamer & Darrell) and the defaults fitted to a
user's own images."""

from __future__ import annotations

import math

import numpy as np

from tinyfcn.nn import ConvTranspose2d
from tinyfcn.optim import SGD, ConstantLR

# The reference solvers: SGD at a fixed rate for a loss *summed* over the pixels of a batch
# (`normalize: false`), with biases at twice the rate and no decay (lr_mult 2, decay_mult 0).
CONFIGURATIONS = {
    "fcn32s": dict(lr=1e-10, momentum=0.99, weight_decay=5e-4),
    "fcn16s": dict(lr=1e-12, momentum=0.99, weight_decay=5e-4),
    "fcn8s": dict(lr=1e-14, momentum=0.99, weight_decay=5e-4),
    "fcn8s-at-once": dict(lr=1e-10, momentum=0.99, weight_decay=5e-4),
}


def _configuration(model_name: str, at_once: bool) -> dict:
    key = "fcn8s-at-once" if at_once else model_name
    if key not in CONFIGURATIONS:
        raise ValueError(f"the reference recipe is defined for {sorted(CONFIGURATIONS)}, "
                         f"not {model_name}")
    return CONFIGURATIONS[key]


def reference_lr(model_name: str, at_once: bool, pixels_per_batch: int) -> float:
    """The reference's learning rate, translated to this engine's mean loss.

    The reference sums the loss over every pixel of a batch, so its gradient is
    `pixels_per_batch` times the mean loss's. The same step from the mean loss takes
    `lr_sum * pixels_per_batch`: for FCN-32s at 1e-10 on a 500 x 375 image that is about
    1.9e-5."""
    return _configuration(model_name, at_once)["lr"] * pixels_per_batch


def reference_param_groups(model, learn_upsampling: bool = False) -> list:
    """Parameter groups of the reference nets: every Deconvolution (transposed conv) frozen
    at its bilinear initialisation (lr_mult 0: here requires_grad=False, so no gradient is
    even computed) unless `learn_upsampling`; biases at twice the learning rate and without
    weight decay (lr_mult 2, decay_mult 0); weights as set (lr_mult 1, decay_mult 1)."""
    frozen = set()
    if not learn_upsampling:
        for module in model.modules():
            if isinstance(module, ConvTranspose2d):
                frozen.update(id(p) for p in module.parameters())
    weights, biases = [], []
    for name, p in model.named_parameters():
        if id(p) in frozen:
            p.requires_grad = False
        else:
            (biases if name.endswith(".bias") else weights).append(p)
    return [{"params": weights}, {"params": biases, "lr_mult": 2.0, "decay_mult": 0.0}]


def reference_optimizer(model, model_name: str, pixels_per_batch: int, total_steps: int,
                        lr=None, learn_upsampling: bool = False):
    """The reference's fine-tuning recipe: SGD over `reference_param_groups` with the
    configuration's momentum and weight decay, at a fixed learning rate (`reference_lr`
    unless `lr` is given). Returns (optimizer, schedule, a line that says what was chosen)."""
    config = _configuration(model_name, getattr(model, "at_once", False))
    lr = lr or config["lr"] * pixels_per_batch
    opt = SGD(reference_param_groups(model, learn_upsampling), lr,
              momentum=config["momentum"], weight_decay=config["weight_decay"])
    summary = (f"Reference recipe: SGD momentum {config['momentum']}, fixed lr {lr:.3g} (the "
               f"reference's rate for its summed loss x {pixels_per_batch} pixels per batch), "
               f"biases at 2x lr without decay, upsampling "
               f"{'learned' if learn_upsampling else 'frozen'}")
    return opt, ConstantLR(opt, total_steps), summary


# ------------------------------------------------------- defaults fitted to the images
BUILT_IN = {"crop": (96, 96), "time_budget": 330.0}  # the built-in demo's: a few minutes
LARGEST_CROP = 256  # a CPU-sized crop: larger images are cropped, not shrunk
VALIDATION_SHARE = 0.25  # of the training time, at most, spent validating (by the cadence)
SMALL_VALIDATION = 2e6  # pixels: seconds of work on a laptop CPU, so every epoch


def fit_to_images(sizes, train_images: int, val_images: int):
    """The crop and validation cadence for images of `sizes` ((H, W) of a sample of them).

    The crop is the median smaller side (a multiple of 8, 32 to LARGEST_CROP), so most
    crops are image, not padding. Validating an image at full size costs about a third of
    a training step on as many pixels (forward only); a validation set of more than
    SMALL_VALIDATION pixels is validated every N epochs, N chosen so that validating takes
    at most VALIDATION_SHARE of the training time. Returns (crop (H, W), val_every, a note
    that says why)."""
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    side = min(max(int(np.median(sizes.min(axis=1))) // 8 * 8, 32), LARGEST_CROP)
    val_pixels = val_images * float(np.mean(sizes.prod(axis=1)))
    share = val_pixels / (3.0 * max(train_images, 1) * side * side)
    val_every = 1 if val_pixels <= SMALL_VALIDATION else math.ceil(share / VALIDATION_SHARE)
    median = np.median(sizes, axis=0).astype(int)
    note = (f"images of median size {median[0]} x {median[1]}; a validation costs about "
            f"{share:.0%} of an epoch's training")
    return (side, side), val_every, note
