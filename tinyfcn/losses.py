"""The Trainer's loss: which functions of `tinyfcn.functional` it sums, and what each one's
sum is divided by so that one process and K data-parallel ranks take the same step.

    per-pixel terms (cross-entropy, focal)   summed over the valid pixels, divided by the
                                             weight of the valid pixels of the whole batch
                                             (cross-entropy's mean)
    per-image terms (Dice, Lovasz-softmax)   summed over the images, divided by the number
                                             of images of the whole batch

Both divisors are counted over every rank's share before the forward pass, so each rank's
gradient is its share of the single-process gradient and one all-reduce sums them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tinyfcn import functional as F


@dataclass(frozen=True)
class Term:
    """`fn(logits, target, ignore_index=..., [weight=...,] reduction="sum")`, a function of
    tinyfcn.functional or your own; `per` is "pixel" or "image"; `weighted`: whether it
    takes the class weights."""

    fn: Callable
    per: str = "pixel"
    weighted: bool = True

    def __post_init__(self):
        if self.per not in ("pixel", "image"):
            raise ValueError(f"a loss term sums per 'pixel' or per 'image', got {self.per!r}")

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "loss")

    def sum(self, logits, target, ignore_index: int, weight=None):
        kwargs = {"weight": weight} if self.weighted else {}
        return self.fn(logits, target, ignore_index=ignore_index, reduction="sum", **kwargs)


TERMS = {"ce": Term(F.cross_entropy), "focal": Term(F.focal_loss),
         "dice": Term(F.dice_loss, per="image"),
         "lovasz": Term(F.lovasz_softmax, per="image", weighted=False)}
LOSSES = {"ce": ("ce",), "dice": ("dice",), "focal": ("focal",), "lovasz": ("lovasz",),
          "ce+dice": ("ce", "dice")}


def loss_terms(loss=None, class_weights=None) -> tuple[Term, ...]:
    """The terms of `loss`: None (cross-entropy), a name of LOSSES, a Term, a sequence of
    Terms, or a per-pixel callable with cross-entropy's signature. Refuses class weights
    for a term that cannot honour them."""
    if loss is None:
        loss = "ce"
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
        terms = tuple(TERMS[t] for t in LOSSES[loss])
    elif isinstance(loss, Term):
        terms = (loss,)
    elif callable(loss):
        terms = (Term(loss),)
    else:
        terms = tuple(loss)
        if not terms or not all(isinstance(t, Term) for t in terms):
            raise ValueError(f"loss_fn must be a name, a Term, Terms or a callable, got {loss!r}")
    for term in terms:
        if class_weights is not None and not term.weighted:
            raise ValueError(f"the loss term {term.name} takes no class weights")
    return terms
