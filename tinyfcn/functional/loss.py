"""Segmentation losses over N x C x H x W logits and N x H x W integer labels, void pixels
(`ignore_index`) counting for nothing.

Pixel losses (a sum over pixels, normalised by the weight of the valid pixels):
`cross_entropy` and `focal_loss`, each a Function with its backward beside it (fused with
a numerically stable log-softmax). Image losses (a ratio or a sort over all the pixels of
one image, so not a sum over pixels): `dice_loss` and `lovasz_softmax`, written with
tinyfcn's ops, so autograd gives their gradients; they are computed per image and
averaged over images. Data-parallel training (several processes, each with part of the
batch) sums the per-image losses (`reduction="sum"` or `"none"`) and divides by the
global batch size, which gives the one-process result.
"""

from __future__ import annotations

import numpy as np

from tinyfcn import ops
from tinyfcn.functional._checks import check_float_nchw
from tinyfcn.tensor import Function, Tensor, as_tensor


def _log_softmax_at_labels(logits, target, ignore_index, weight):
    """(labels (N, 1, H, W), log p_t (N, H, W), softmax, pixel weights (N, H, W)) of a
    numerically stable log-softmax; void pixels get label 0 and weight 0."""
    valid = target != ignore_index                                   # (N, H, W)
    labels = np.where(valid, target, 0)[:, None]                     # (N, 1, H, W)
    shifted = logits - logits.max(axis=1, keepdims=True)             # largest logit 0: no overflow
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    log_pt = (np.take_along_axis(shifted, labels, axis=1) - np.log(total))[:, 0]
    pixel_weight = valid.astype(logits.dtype)
    if weight is not None:
        pixel_weight *= weight[labels[:, 0]]
    return labels, log_pt, exp / total, pixel_weight


def _reduce(fn, pixel_loss, pixel_weight):
    """`fn.reduction` of the weighted per-pixel losses; "mean" divides by the weight of the
    valid pixels (PyTorch's), kept as `fn.denominator` for backward (only void gives 0)."""
    dtype = pixel_loss.dtype
    if fn.reduction == "none":
        return pixel_loss
    if fn.reduction == "sum":
        return pixel_loss.sum(dtype=dtype)
    fn.denominator = max(pixel_weight.sum(dtype=dtype), dtype.type(np.finfo(dtype).tiny))
    return pixel_loss.sum(dtype=dtype) / fn.denominator


class CrossEntropy(Function):
    def __init__(self, target, ignore_index, weight, reduction):
        self.target, self.ignore_index = target, ignore_index
        self.weight, self.reduction = weight, reduction

    def forward(self, logits):
        labels, log_pt, self.softmax, pixel_weight = _log_softmax_at_labels(
            logits, self.target, self.ignore_index, self.weight)
        self.labels, self.pixel_weight = labels, pixel_weight
        return _reduce(self, -log_pt * pixel_weight, pixel_weight)

    def backward(self, g):
        grad = self.softmax.copy()                                   # d/dlogits = softmax - onehot
        np.put_along_axis(grad, self.labels,
                          np.take_along_axis(grad, self.labels, axis=1) - 1, axis=1)
        scale = self.pixel_weight * g                               # g: (N, H, W) or a scalar
        if self.reduction == "mean":
            scale = scale / self.denominator
        grad *= scale[:, None].astype(grad.dtype, copy=False)
        return (grad,)


class FocalLoss(Function):
    """-(1 - p_t) ** gamma * log p_t per pixel (Lin et al., ICCV 2017), p_t the softmax
    probability of the pixel's label: confident, correct pixels are down-weighted, so the
    loss dwells on the hard ones. gamma = 0 is cross-entropy."""

    def __init__(self, target, gamma, ignore_index, weight, reduction):
        self.target, self.gamma, self.ignore_index = target, gamma, ignore_index
        self.weight, self.reduction = weight, reduction

    def forward(self, logits):
        dtype = logits.dtype
        labels, log_pt, softmax, pixel_weight = _log_softmax_at_labels(
            logits, self.target, self.ignore_index, self.weight)
        rest = -np.expm1(log_pt)                                     # 1 - p_t, exact near p_t = 1
        modulator = rest ** dtype.type(self.gamma)                   # (N, H, W)
        pixel_loss = -modulator * log_pt * pixel_weight
        # d loss / d logit_j = (onehot_j - p_j) * coefficient, where
        # coefficient = gamma * p_t * (1 - p_t) ** (gamma - 1) * log p_t - (1 - p_t) ** gamma
        # (its first term tends to 0 as p_t -> 1 for every gamma >= 0: written as 0 there)
        with np.errstate(divide="ignore", invalid="ignore"):
            first = np.where(rest > 0, self.gamma * modulator / rest * np.exp(log_pt) * log_pt,
                             dtype.type(0))
        self.coefficient = (first - modulator) * pixel_weight
        self.softmax, self.labels = softmax, labels
        return _reduce(self, pixel_loss, pixel_weight)

    def backward(self, g):
        grad = -self.softmax                                         # onehot - softmax
        np.put_along_axis(grad, self.labels,
                          np.take_along_axis(grad, self.labels, axis=1) + 1, axis=1)
        scale = self.coefficient * g                                 # g: (N, H, W) or a scalar
        if self.reduction == "mean":
            scale = scale / self.denominator
        grad *= scale[:, None].astype(grad.dtype, copy=False)
        return (grad,)


def _loss_arguments(input, target, weight, reduction, ignore_index):
    """(logits Tensor, int64 labels, weight array or None), or one clear error."""
    logits = as_tensor(input)
    check_float_nchw(logits, "input")
    labels = target.data if isinstance(target, Tensor) else np.asarray(target)
    N, C, H, W = logits.shape
    if labels.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class labels, got {labels.dtype}")
    if labels.shape != (N, H, W):
        raise ValueError(f"target has shape {labels.shape}, expected {(N, H, W)} for "
                         f"input of shape {logits.shape}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f'reduction must be "mean", "sum" or "none", got {reduction!r}')
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= C))
    if bad.any():
        raise ValueError(f"target holds labels {sorted(set(np.unique(labels[bad]).tolist()))[:10]} "
                         f"outside [0, {C}) that are not ignore_index={ignore_index}")
    if weight is not None:
        weight = np.asarray(weight.data if isinstance(weight, Tensor) else weight,
                            dtype=logits.dtype)
        if weight.shape != (C,):
            raise ValueError(f"weight must have shape ({C},), got {weight.shape}")
        if (weight < 0).any() or not np.isfinite(weight).all():
            raise ValueError(f"weight must be finite and >= 0, got {weight.tolist()}")
    return logits, labels.astype(np.int64, copy=False), weight


def cross_entropy(input, target, ignore_index=255, weight=None, reduction="mean"):
    """Softmax cross-entropy of N x C x H x W logits against N x H x W integer labels;
    pixels labelled `ignore_index` (void) count for nothing."""
    logits, labels, weight = _loss_arguments(input, target, weight, reduction, ignore_index)
    return CrossEntropy.apply(logits, target=labels, ignore_index=ignore_index, weight=weight,
                              reduction=reduction)


def focal_loss(logits, target, gamma=2.0, ignore_index=255, weight=None, reduction="mean"):
    """Focal loss (Lin et al., ICCV 2017): per pixel -w[y] * (1 - p_y) ** gamma * log p_y,
    p_y the softmax probability of the label y, w the class `weight` (1 if None).

    A per-pixel loss like `cross_entropy` (gamma=0 gives exactly it): "none" returns
    (N, H, W) with 0 at void pixels, "sum" sums over the valid pixels, "mean" divides
    that sum by the summed weight of the valid pixels (under data-parallel training, by
    that weight over the global batch, as for cross-entropy)."""
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    logits, labels, weight = _loss_arguments(logits, target, weight, reduction, ignore_index)
    return FocalLoss.apply(logits, target=labels, gamma=float(gamma),
                           ignore_index=ignore_index, weight=weight, reduction=reduction)


# ---------------------------------------------------------------- per-image losses


def _softmax(logits: Tensor) -> Tensor:
    """Class probabilities over axis 1, from tinyfcn ops. Subtracting each pixel's largest
    logit (a constant: it cancels in the ratio) keeps exp from overflowing."""
    exp = ops.exp(logits - logits.data.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _one_hot(labels, valid, C, dtype) -> np.ndarray:
    """(N, C, H, W) 1 where a valid pixel has class c, else 0 (void pixels are all 0)."""
    return ((labels[:, None] == np.arange(C)[None, :, None, None]) & valid[:, None]).astype(dtype)


def _reduce_images(per_image: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_image
    return per_image.sum() if reduction == "sum" else per_image.mean()


def dice_loss(logits, target, ignore_index=255, weight=None, smooth=1.0, reduction="mean"):
    """Soft Dice loss per image: 1 - the mean over classes of
    (2 * sum(p_c * t_c) + smooth) / (sum(p_c) + sum(t_c) + smooth),
    p_c the softmax probabilities of class c and t_c its one-hot target, both summed over
    the image's valid (not `ignore_index`) pixels.

    The mean runs over the classes present in the image: those its target holds at a
    valid pixel or its prediction (the argmax) gives to one, weighted by the class
    `weight` if given; a class absent from both carries no information about this image.
    An image without valid pixels has loss 0.

    A per-image loss (a ratio, not a sum over pixels): "none" returns (N,), "sum" their
    sum and "mean" their mean over the N images. Under data-parallel training the Trainer
    averages the per-image losses over the global batch, which equals one process's mean."""
    if not smooth >= 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    logits, labels, weight = _loss_arguments(logits, target, weight, reduction, ignore_index)
    N, C = logits.shape[:2]
    dtype = logits.dtype
    valid = labels != ignore_index                                   # (N, H, W)
    truth = _one_hot(labels, valid, C, dtype)                        # (N, C, H, W)
    predicted = _one_hot(logits.data.argmax(axis=1), valid, C, dtype)
    present = (truth + predicted).sum(axis=(2, 3)) > 0               # (N, C)
    class_weight = present * (np.ones(C, dtype) if weight is None else weight)
    class_weight = class_weight.astype(dtype)

    probs = _softmax(logits) * valid[:, None].astype(dtype)          # void pixels count 0
    intersection = (probs * truth).sum(axis=(2, 3))                  # (N, C)
    sizes = probs.sum(axis=(2, 3)) + truth.sum(axis=(2, 3))
    dice = (2 * intersection + smooth) / (sizes + smooth)
    normaliser = np.maximum(class_weight.sum(axis=1), np.finfo(dtype).tiny).astype(dtype)
    per_image = ((1 - dice) * class_weight).sum(axis=1) / normaliser  # (N,)
    return _reduce_images(per_image, reduction)


def _lovasz_gradient(truth_sorted: np.ndarray) -> np.ndarray:
    """Berman et al.'s lovasz_grad over the last axis: the increments of the Jaccard loss
    1 - |truth ∩ top-k| / |truth ∪ top-k| as the k-th largest error joins the top-k."""
    total = truth_sorted.sum(axis=-1, keepdims=True)
    intersection = total - np.cumsum(truth_sorted, axis=-1)
    union = total + np.cumsum(1 - truth_sorted, axis=-1)
    jaccard = 1 - intersection / union
    jaccard[..., 1:] = jaccard[..., 1:] - jaccard[..., :-1]
    return jaccard


def _unsort(sorted_values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Values back at the positions they were sorted from (the inverse of take_along_axis)."""
    out = np.empty_like(sorted_values)
    np.put_along_axis(out, order, sorted_values, axis=-1)
    return out


def lovasz_softmax(logits, target, ignore_index=255, reduction="mean"):
    """Lovász-softmax loss (Berman, Rannen Triki & Blaschko, CVPR 2018) per image: the
    mean over the classes present in the image's target (at a valid pixel) of the Lovász
    extension of the Jaccard loss, evaluated at the errors |t_c - p_c| of the valid pixels
    (p_c the softmax probability of class c, t_c its one-hot target). It optimises the
    intersection-over-union directly. An image without valid pixels has loss 0. No class
    weights: the Jaccard index of each class already counts that class alone.

    The extension is piecewise linear: with the errors sorted in decreasing order it is
    their dot product with the Jaccard increments `_lovasz_gradient`, a constant on the
    piece the errors are on. So the loss is written as sum(errors * G), G those increments
    put back at each pixel's position, and autograd through the errors gives the gradient.

    A per-image loss: "none" returns (N,), "sum" their sum and "mean" their mean over the
    N images. Under data-parallel training the Trainer averages the per-image losses over
    the global batch, which equals one process's mean."""
    logits, labels, _ = _loss_arguments(logits, target, None, reduction, ignore_index)
    N, C, H, W = logits.shape
    dtype = logits.dtype
    valid = labels != ignore_index
    truth = _one_hot(labels, valid, C, dtype)                        # (N, C, H, W)
    probs = _softmax(logits)
    errors = truth + probs * (1 - 2 * truth)                         # |t - p|, linear in p

    # the increments of each present (image, class) pair, its pixels sorted by decreasing
    # error (void pixels last, their increments then zeroed); absent pairs get none
    present = truth.sum(axis=(2, 3)) > 0                             # (N, C)
    image = np.nonzero(present)[0]                                   # image of each pair
    valid_pixels = valid.reshape(N, H * W)[image]                    # (pairs, H*W)
    pair_errors = np.where(valid_pixels, errors.data.reshape(N, C, H * W)[present],
                           dtype.type(-1))
    order = np.argsort(-pair_errors, axis=-1)
    increments = _lovasz_gradient(np.take_along_axis(truth.reshape(N, C, H * W)[present],
                                                     order, axis=-1))
    G = np.zeros((N, C, H * W), dtype)
    G[present] = np.where(valid_pixels, _unsort(increments, order), dtype.type(0))
    G = G.reshape(N, C, H, W)

    count = np.maximum(present.sum(axis=1), 1).astype(dtype)        # classes per image
    per_image = (errors * G).sum(axis=(1, 2, 3)) / count             # (N,)
    return _reduce_images(per_image, reduction)
