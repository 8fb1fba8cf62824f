"""Seeded batching: the order of epoch e comes from a generator seeded by (seed, e) and the
augmentation of item j of its batch b from one seeded by (seed, e, b, j), so a run
interrupted at any batch resumes on exactly the data it would have seen, and ranks that
share a batch each make their items alone."""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class Subset:
    """The items `ids` of `dataset`, in that order (`class_names` passed through)."""

    def __init__(self, dataset, ids):
        self.dataset, self.ids = dataset, np.asarray(ids, dtype=np.int64).reshape(-1)
        outside = self.ids[(self.ids < -len(dataset)) | (self.ids >= len(dataset))]
        if outside.size:
            raise IndexError(f"Subset: ids {outside[:5].tolist()} are outside a data set of "
                             f"{len(dataset)} items")

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
                  skip: int = 0, workers: int = 0, part=(0, 1), shuffle: bool = True,
                  drop_last: bool = True):
    """Yield (images uint8 (B, h, w, 3), labels uint8 (B, h, w)) for one epoch, shuffled
    and without the last incomplete batch by default, starting at batch `skip`. With
    `workers`, that many threads read and augment the next batches ahead. `part` = (rank,
    ranks) yields only that rank's share of each batch (items rank, rank + ranks, ...).
    Every item has its own generator seeded by (seed, epoch, batch, item), so the batches
    are the same with or without workers, for any split between ranks, and after a resume.

    `augment(image, label, rng)` may be None (items as the data set gives them);
    `shuffle=False` keeps the order of `indices`; `drop_last=False` yields the last,
    smaller batch too. (A batch holds each field of the items stacked, so its items
    must have one size: crop them in `augment`.)"""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank, ranks = part
    indices = np.asarray(indices)
    order = np.random.default_rng([seed, epoch]).permutation(indices) if shuffle else indices

    def make(b):
        items = range(b * batch_size, min((b + 1) * batch_size, len(order)))
        samples = [dataset[int(order[i])] for i in items[rank::ranks]]
        if augment is not None:
            samples = [augment(*sample, np.random.default_rng([seed, epoch, b, j]))
                       for j, sample in zip(range(rank, batch_size, ranks), samples)]
        return _stack(samples, b)

    count = (batches_per_epoch(len(order), batch_size) if drop_last
             else -(-len(order) // batch_size))
    wanted = range(skip, count)
    if not workers:
        yield from map(make, wanted)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = collections.deque(pool.submit(make, b) for b in wanted[:workers])
        for b in wanted[workers:]:
            batch = pending.popleft().result()
            pending.append(pool.submit(make, b))
            yield batch
        while pending:
            yield pending.popleft().result()


def _stack(samples: list, b: int) -> tuple:
    """Each field of the samples stacked into one array, or an error naming the batch."""
    fields = []
    for field in zip(*samples):
        shapes = {np.shape(a) for a in field}
        if len(shapes) > 1:
            raise ValueError(f"batch {b} holds items of shapes {sorted(shapes)}: a batch "
                             f"needs one size (crop the items in the transform, or use "
                             f"batch_size=1)")
        fields.append(np.stack(field))
    return tuple(fields)


def batches_per_epoch(num_items: int, batch_size: int) -> int:
    return num_items // batch_size


class DataLoader:
    """Batches of a data set, as torch.utils.data.DataLoader: `for images, labels in loader`
    gives uint8 arrays (B, h, w, 3) and (B, h, w) (each field of the items stacked).

    `transform(image, label, rng)` changes each item (e.g. `transforms.TrainAugment`,
    which crops them to one size; None keeps them as they are). With `shuffle`, pass k
    over the data (counting from 0, or as set with `set_epoch`) uses the order the Trainer
    uses in epoch k with the same `seed`, and every item's transform has its own seeded
    generator, so a loop is reproducible. `drop_last` drops the last, smaller batch.
    `workers` threads read and transform the next batches ahead."""

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, transform=None, workers: int = 0):
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.drop_last, self.transform, self.workers = drop_last, transform, workers
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The pass the next iteration makes (its shuffle and its transforms' generators)."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        return epoch_batches(self.dataset, np.arange(len(self.dataset)), self.batch_size,
                             self.transform, self.seed, epoch, workers=self.workers,
                             shuffle=self.shuffle, drop_last=self.drop_last)
