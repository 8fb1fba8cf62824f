"""Seeded batching: the order of epoch e comes from a generator seeded by (seed, e) and the
augmentation of its batch b from one seeded by (seed, e, b), so a run interrupted at any
batch resumes on exactly the data it would have seen."""

from __future__ import annotations

import numpy as np


class Subset:
    """The items `ids` of `dataset`, in that order (`class_names` passed through)."""

    def __init__(self, dataset, ids):
        self.dataset, self.ids = dataset, np.asarray(ids, dtype=np.int64)

    @property
    def class_names(self):
        return self.dataset.class_names

    @property
    def palette(self):
        return getattr(self.dataset, "palette", None)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return self.dataset[int(self.ids[i])]


def subset_ids(num_items: int, subset, seed: int) -> np.ndarray:
    """`subset` indices chosen reproducibly from range(num_items) (all of them if None)."""
    if subset is None or subset >= num_items:
        return np.arange(num_items)
    if subset < 1:
        raise ValueError(f"subset must be >= 1, got {subset}")
    return np.sort(np.random.default_rng([seed, 7]).choice(num_items, subset, replace=False))


def epoch_batches(dataset, indices, batch_size: int, augment, seed: int, epoch: int,
                  skip: int = 0):
    """Yield (images uint8 (B, h, w, 3), labels uint8 (B, h, w)) for one shuffled epoch,
    starting at batch `skip`; the last incomplete batch is dropped."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.random.default_rng([seed, epoch]).permutation(indices)
    for b in range(skip, batches_per_epoch(len(order), batch_size)):
        rng = np.random.default_rng([seed, epoch, b])
        images, labels = [], []
        for i in order[b * batch_size:(b + 1) * batch_size]:
            image, label = augment(*dataset[int(i)], rng)
            images.append(image)
            labels.append(label)
        yield np.stack(images), np.stack(labels)


def batches_per_epoch(num_items: int, batch_size: int) -> int:
    return num_items // batch_size
