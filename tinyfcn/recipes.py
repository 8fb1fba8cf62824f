"""How to train, as data, and the builders a command wires: FCN's reference fine-tuning
recipe (pytorch-fcn's `configurations` table, from the voc-fcn*s solvers of Long, Shelhamer
& Darrell), the defaults fitted to a user's own images, and opening a data set's splits and
a new model as a run asks for them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tinyfcn import models
from tinyfcn.data import DataError, VOCSegmentation
from tinyfcn.data.check import without_bad_files
from tinyfcn.data.loader import Subset, subset_ids
from tinyfcn.data.stats import class_pixel_counts, median_frequency_weights
from tinyfcn.data.transforms import resize
from tinyfcn.nn import ConvTranspose2d
from tinyfcn.optim import SCHEDULES, SGD, ConstantLR, build

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
    at_once = getattr(model, "at_once", False)
    config = _configuration(model_name, at_once)
    why = "--lr" if lr else (f"the reference's rate for its summed loss x {pixels_per_batch} "
                             f"pixels per batch")
    lr = lr or reference_lr(model_name, at_once, pixels_per_batch)
    opt = SGD(reference_param_groups(model, learn_upsampling), lr,
              momentum=config["momentum"], weight_decay=config["weight_decay"])
    summary = (f"Reference recipe: SGD momentum {config['momentum']}, fixed lr {lr:.3g} "
               f"({why}), biases at 2x lr without decay, upsampling "
               f"{'learned' if learn_upsampling else 'frozen'}")
    return opt, ConstantLR(opt, total_steps), summary


# ------------------------------------------------------- defaults fitted to the images
BUILT_IN = {"crop": (96, 96), "time_budget": 330.0}  # the built-in demo's: a few minutes
LARGEST_CROP = 256  # a CPU-sized crop: larger images are cropped, not shrunk
VALIDATION_SHARE = 0.25  # of the training time, at most, spent validating (by the cadence)
SMALL_VALIDATION = 2e6  # pixels: seconds of work on a laptop CPU, so every epoch


def fit_to_images(train, val):
    """The crop and validation cadence for the images of the data sets `train` and `val`
    (their sizes sampled from up to 16 training images).

    The crop is the median smaller side (a multiple of 8, 32 to LARGEST_CROP), so most
    crops are image, not padding. Validating an image at full size costs about a third of
    a training step on as many pixels (forward only); a validation set of more than
    SMALL_VALIDATION pixels is validated every N epochs, N chosen so that validating takes
    at most VALIDATION_SHARE of the training time. Returns (crop (H, W), val_every, a note
    that says why)."""
    sizes = np.array([train[i][0].shape[:2] for i in range(min(len(train), 16))], np.float64)
    side = min(max(int(np.median(sizes.min(axis=1))) // 8 * 8, 32), LARGEST_CROP)
    val_pixels = len(val) * float(np.mean(sizes.prod(axis=1)))
    share = val_pixels / (3.0 * max(len(train), 1) * side * side)
    val_every = 1 if val_pixels <= SMALL_VALIDATION else math.ceil(share / VALIDATION_SHARE)
    median = np.median(sizes, axis=0).astype(int)
    note = (f"images of median size {median[0]} x {median[1]}; a validation costs about "
            f"{share:.0%} of an epoch's training")
    return (side, side), val_every, note


def fill_defaults(own_data: bool, train, val, crop=None, val_every=None, time_budget=None):
    """The crop, validation cadence and time budget of a run, where not given (None): the
    built-in demo's, or on the user's own data fitted to its images and without a budget.
    Returns them and a line that says what was chosen (None for the built-in data)."""
    if not own_data:
        budget = BUILT_IN["time_budget"] if time_budget is None else time_budget
        return crop or BUILT_IN["crop"], val_every or 1, budget, None
    fitted_crop, fitted_every, note = fit_to_images(train, val)
    crop, val_every = crop or fitted_crop, val_every or fitted_every
    budget = f"time budget {time_budget:.0f} s" if time_budget else "no time budget"
    return crop, val_every, time_budget, (f"For these images ({note}): crop {crop[0]} x "
                                          f"{crop[1]}, validation every {val_every} "
                                          f"epoch(s), {budget}")


def class_weights(train, how):
    """Loss weights per class for the data set `train`: `how` is "auto" (median-frequency
    balancing, for rare classes), one weight per class, or such a list as text
    ("1,2.5,..."). Returns (weights, each class's share of the training pixels, or None
    when not counted)."""
    if how == "auto":
        pixels, present_in = class_pixel_counts(train, len(train.class_names))
        return median_frequency_weights(pixels, present_in), pixels / max(pixels.sum(), 1)
    if isinstance(how, str):
        try:
            how = [float(w) for w in how.split(",")]
        except ValueError:
            raise ValueError(f"class weights {how!r}: expected auto or numbers separated by "
                             f"commas") from None
    weights = np.asarray(how, np.float32)
    if weights.shape != (len(train.class_names),) or not (np.isfinite(weights)
                                                          & (weights >= 0)).all():
        raise ValueError(f"class weights: {len(train.class_names)} finite, non-negative "
                         f"weights are needed, one per class; got {list(how)}")
    return weights, None


def optimizer(model, recipe: str, name: str, total_steps: int, pixels_per_batch: int, *,
              lr=None, weight_decay=None, momentum=None, schedule="poly", warmup_steps=0,
              learn_upsampling=False):
    """(optimizer, schedule, a line saying what was chosen or None) of a run: the
    reference's (`recipe` "reference", see `reference_optimizer`) or `optim.build(name)`
    with the schedule `schedule` over `total_steps`."""
    if recipe == "reference":
        return reference_optimizer(model, model.config["model"], pixels_per_batch,
                                   total_steps, lr, learn_upsampling)
    opt = build(name, model.parameters(), lr, weight_decay, momentum)
    return opt, SCHEDULES[schedule](opt, total_steps, warmup_steps=warmup_steps), None


# ------------------------------------------------------------------- the builders
def open_split(root, split: str, seed: int, subset: int | None = None, scale: float = 1.0,
               ignore_index: int = 255, void_color=(0, 0, 0), skip_bad: bool = False,
               warn=print):
    """The split `split` of the VOC-layout folder `root`: `subset` images of it chosen from
    `seed` (all if None), resized by `scale`; with `skip_bad`, every file is checked first
    and the bad ones skipped (each named through `warn`)."""
    dataset = VOCSegmentation(root, split, ignore_index=ignore_index,
                              void_color=tuple(void_color))
    if scale != 1.0:
        dataset.transform = lambda im, lab: resize(im, lab, scale)
    ids = subset_ids(len(dataset), subset, seed)
    if not skip_bad:
        return Subset(dataset, ids)
    kept, bad = without_bad_files(dataset, ids)
    for message in bad:
        warn(f"warning: skipping {message}")
    if bad:
        warn(f"Skipped {len(bad)} bad file(s) of split {split}")
    if not len(kept):
        raise DataError(f"{root}: no readable images in split {split}")
    return kept


def open_splits(root, train_split: str, val_split: str, seed: int, warn=print, **options):
    """The training and validation splits of `root` (`open_split`'s `options`), which must
    agree on the classes; warns when the classes are assumed to be VOC's."""
    root = Path(root)
    train = open_split(root, train_split, seed, warn=warn, **options)
    val = open_split(root, val_split, seed + 1, warn=warn, **options)
    if train.class_names != val.class_names:
        raise DataError(f"{root}: train and val splits disagree on class names")
    if not train.dataset.has_class_names:
        warn(f"warning: {root / 'class_names.txt'} is missing: assuming PASCAL VOC's 21 "
             f"classes (write the file, one name per line, for any other set)")
    return train, val


def new_model(name: str, num_classes: int, backbone: str, backbone_weights=None,
              init_from=None, log=print):
    """A fresh `name` model, started from a VGG classifier's weights (`backbone_weights`)
    and/or the matching arrays of a checkpoint (`init_from`: staged training)."""
    model = models.MODELS[name](num_classes, backbone=backbone)
    if backbone_weights:
        if not isinstance(model, models.FCN):
            raise ValueError("backbone weights need an FCN model (fcn32s, fcn16s, fcn8s)")
        copied = model.copy_params_from_vgg16(backbone_weights)
        log(f"Copied {len(copied)} arrays of {backbone_weights} into conv1_1 ... fc7")
    if init_from:
        copied, total = models.init_from(model, init_from)
        log(f"Initialised {copied} of {total} parameter arrays from {init_from}")
    return model
