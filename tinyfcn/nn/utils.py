"""Gradient utilities."""

from __future__ import annotations

import math

import numpy as np


def grad_norm(parameters) -> float:
    """The global L2 norm of all gradients (inf or nan if any gradient is not finite)."""
    total = 0.0
    for p in parameters:
        if p.grad is not None:
            total += float(np.vdot(p.grad, p.grad))  # vdot: one pass, no temporary
    return math.sqrt(total)


def clip_grad_norm_(parameters, max_norm: float) -> float:
    """Scale all gradients together so that their global norm is at most `max_norm`, as
    torch.nn.utils.clip_grad_norm_; returns the norm before clipping."""
    parameters = list(parameters)
    norm = grad_norm(parameters)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for p in parameters:
            if p.grad is not None:
                p.grad *= p.grad.dtype.type(scale)
    return norm
