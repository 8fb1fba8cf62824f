"""Segmentation metrics from one confusion matrix over a data set (FCN's `fast_hist`).

Rows are ground truth, columns prediction; void (255) and any label outside the
classes are ignored. Classes absent from both ground truth and prediction have
an undefined IoU and are left out of the means.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(label: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: [true class, predicted class]."""
    label, pred = np.asarray(label).ravel(), np.asarray(pred).ravel()
    if label.shape != pred.shape:
        raise ValueError(f"label and prediction differ in size: {label.size} vs {pred.size}")
    valid = (label >= 0) & (label < num_classes)
    bad = valid & ((pred < 0) | (pred >= num_classes))
    if bad.any():
        raise ValueError(f"predictions {sorted(np.unique(pred[bad]).tolist())[:5]} are not "
                         f"classes 0..{num_classes - 1}")
    index = num_classes * label[valid].astype(np.int64) + pred[valid].astype(np.int64)
    return np.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores(hist: np.ndarray, class_names=None) -> dict:
    """pixel_acc, mean_acc, mean_iou, fw_iou and per_class_iou (NaN where undefined)."""
    hist = np.asarray(hist, dtype=np.float64)
    tp = np.diag(hist)
    gt, predicted = hist.sum(1), hist.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        class_acc = tp / gt
        iou = tp / (gt + predicted - tp)
    total = hist.sum()
    freq = gt / total if total else gt
    seen = freq > 0
    names = class_names or [str(i) for i in range(len(tp))]
    return {
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
        "mean_acc": float(np.nanmean(class_acc)) if np.isfinite(class_acc).any() else float("nan"),
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "fw_iou": float((freq[seen] * iou[seen]).sum()) if total else float("nan"),
        "per_class_iou": {name: float(v) for name, v in zip(names, iou)},
    }
