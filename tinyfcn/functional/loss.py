"""Pixel-wise softmax cross-entropy, fused with a numerically stable log-softmax."""

from __future__ import annotations

import numpy as np

from tinyfcn.functional._checks import check_float_nchw
from tinyfcn.tensor import Function, Tensor, as_tensor


class CrossEntropy(Function):
    def __init__(self, target, ignore_index, weight, reduction):
        self.target, self.ignore_index = target, ignore_index
        self.weight, self.reduction = weight, reduction

    def forward(self, logits):
        valid = self.target != self.ignore_index                     # (N, H, W)
        labels = np.where(valid, self.target, 0)[:, None]            # (N, 1, H, W)
        shifted = logits - logits.max(axis=1, keepdims=True)         # largest logit 0: no overflow
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        picked = np.take_along_axis(shifted, labels, axis=1)
        pixel_loss = (np.log(total) - picked)[:, 0]                  # (N, H, W)
        dtype = logits.dtype
        pixel_weight = valid.astype(dtype)
        if self.weight is not None:
            pixel_weight *= self.weight[labels[:, 0]]
        self.softmax, self.labels, self.pixel_weight = exp / total, labels, pixel_weight
        pixel_loss *= pixel_weight
        if self.reduction == "none":
            return pixel_loss
        if self.reduction == "sum":
            return pixel_loss.sum(dtype=dtype)
        # mean over the weight of the valid pixels (PyTorch); a batch of void alone gives 0
        self.denominator = max(pixel_weight.sum(dtype=dtype), dtype.type(np.finfo(dtype).tiny))
        return pixel_loss.sum(dtype=dtype) / self.denominator

    def backward(self, g):
        grad = self.softmax.copy()                                   # d/dlogits = softmax - onehot
        np.put_along_axis(grad, self.labels,
                          np.take_along_axis(grad, self.labels, axis=1) - 1, axis=1)
        scale = self.pixel_weight * g                               # g: (N, H, W) or a scalar
        if self.reduction == "mean":
            scale = scale / self.denominator
        grad *= scale[:, None].astype(grad.dtype, copy=False)
        return (grad,)


def cross_entropy(input, target, ignore_index=255, weight=None, reduction="mean"):
    """Softmax cross-entropy of N x C x H x W logits against N x H x W integer labels;
    pixels labelled `ignore_index` (void) count for nothing."""
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
    return CrossEntropy.apply(logits, target=labels.astype(np.int64, copy=False),
                              ignore_index=ignore_index, weight=weight, reduction=reduction)
