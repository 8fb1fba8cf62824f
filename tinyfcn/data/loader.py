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
                  skip: int = 0, workers: int = 0, part=(0, 1)):
    """Yield (images uint8 (B, h, w, 3), labels uint8 (B, h, w)) for one shuffled epoch,
    starting at batch `skip`; the last incomplete batch is dropped. With `workers`, that
    many threads read and augment the next batches ahead. `part` = (rank, ranks) yields
    only that rank's share of each batch (items rank, rank + ranks, ...). Every item has
    its own generator seeded by (seed, epoch, batch, item), so the batches are the same
    with or without workers, for any split between ranks, and after a resume."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank, ranks = part
    order = np.random.default_rng([seed, epoch]).permutation(indices)

    def make(b):
        samples = [augment(*dataset[int(order[b * batch_size + j])],
                           np.random.default_rng([seed, epoch, b, j]))
                   for j in range(rank, batch_size, ranks)]
        return np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples])

    wanted = range(skip, batches_per_epoch(len(order), batch_size))
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


def batches_per_epoch(num_items: int, batch_size: int) -> int:
    return num_items // batch_size
