"""Data-parallel training over MPI (mpi4py, the `distributed` extra).

Launched as `mpiexec -n K python examples/train_voc_subset.py ...`, each of the K
processes (ranks) takes its share of every global batch, computes its gradients,
and one all-reduce of a single flat float32 buffer sums them, so every rank takes
the step a single process would take on the whole batch. Without an MPI launch
this is one process and nothing here is imported from mpi4py.

Collective waits are bounded: a rank that died or hangs ends the run with a message
after `timeout` seconds instead of blocking the others forever, and a rank that fails
(`abort`) ends every rank at once. A rank waiting for the others gives up at a second
signal (the first one asks every rank to stop together at the next step).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np

# the variables MPI launchers set: MPICH / Intel MPI (Hydra), Open MPI, MVAPICH
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_size() -> int:
    """How many processes an MPI launcher started (1 without one)."""
    for name in SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


class World:
    """This process's place among the ranks: `rank`, `size`, and the few collectives
    training needs. `World()` is the single process."""

    def __init__(self, comm=None, timeout: float = 600.0):
        self.comm, self.timeout = comm, timeout
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.signals: list = []  # SIGINT / SIGTERM received while training (the Trainer's)

    @classmethod
    def from_environment(cls, timeout: float = 600.0) -> World:
        """The MPI world when launched by mpiexec with more than one process, else one."""
        if launched_size() <= 1:
            return cls()
        try:
            from mpi4py import MPI
        except ImportError:
            raise RuntimeError("launched by mpiexec, but mpi4py is not installed: "
                               "pip install -e \".[distributed]\"") from None
        return cls(MPI.COMM_WORLD, timeout)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def _wait(self, request, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not request.Test():
            if time.monotonic() > deadline:
                print(f"error: rank {self.rank}: no answer from the other ranks within "
                      f"{self.timeout:.0f} s during {what} (a rank died or hangs); ending "
                      f"the run", file=sys.stderr, flush=True)
                self.abort(3)
            if len(self.signals) > 1:  # asked twice: stop waiting for the others
                name = signal.Signals(self.signals[-1]).name
                print(f"error: rank {self.rank}: {name} again while waiting for the other "
                      f"ranks during {what}; ending the run", file=sys.stderr, flush=True)
                self.abort(128 + self.signals[-1])
            time.sleep(0.0005)

    def abort(self, code: int) -> None:
        """End every rank now with exit status `code` (a rank that fails calls it, so the
        others do not wait for it); nothing to do in a single process."""
        if self.comm is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)

    def barrier(self, what: str = "a barrier") -> None:
        """Wait until every rank gets here (bounded like every collective wait)."""
        self.sum_(np.zeros(1, np.float32), what)

    def sum_(self, array: np.ndarray, what: str = "an all-reduce") -> np.ndarray:
        """Sum `array` (contiguous) over the ranks, in place."""
        if self.comm is None:
            return array
        from mpi4py import MPI
        self._wait(self.comm.Iallreduce(MPI.IN_PLACE, array, op=MPI.SUM), what)
        return array

    def sum_gradients(self, parameters, extra) -> np.ndarray:
        """Sum the gradients of `parameters` over the ranks, in place, and `extra` (a few
        numbers riding in the same buffer); returns the summed `extra` as float64. A
        single process has nothing to add: its gradients stay as they are."""
        extra = np.asarray(extra, np.float64).ravel()
        if self.size == 1:
            return extra
        flat = self.sum_(flat_gradients(parameters, extra), "the gradients")
        split = flat.size - extra.size  # (with no extra values, [-0:] would be everything)
        set_flat_gradients(parameters, flat[:split])
        return flat[split:].astype(np.float64)

    def check_same(self, what: str, value) -> None:
        """Refuse a launch whose ranks disagree on `value` (arguments, data, model)."""
        if self.comm is None:
            return
        text = json.dumps(value, sort_keys=True, default=str).encode()
        digest = np.frombuffer(text.ljust((len(text) + 7) // 8 * 8, b" "), np.uint8)
        lengths = np.zeros(self.size, np.int64)
        lengths[self.rank] = digest.size
        self.sum_(lengths, f"checking {what}")
        if len(set(lengths.tolist())) == 1:
            gathered = np.zeros((self.size, digest.size), np.float64)
            gathered[self.rank] = digest
            self.sum_(gathered, f"checking {what}")
            if all(np.array_equal(gathered[0], row) for row in gathered):
                return
        raise RuntimeError(f"the ranks disagree on {what}: launch every rank with the same "
                           f"arguments and data")


def flat_gradients(parameters, extra=None) -> np.ndarray:
    """The gradients of the parameters that have one, in one float32 buffer (every rank
    runs the same graph, so the same parameters have gradients on every rank), followed by
    `extra` (a number or a few) if given: one copy, one all-reduce."""
    parts = [p.grad.ravel() for p in parameters if p.grad is not None]
    if extra is not None:
        parts.append(np.asarray(extra, np.float32).ravel())
    return np.concatenate(parts).astype(np.float32, copy=False)


def set_flat_gradients(parameters, flat: np.ndarray) -> None:
    """Put `flat` (as made by `flat_gradients`) back into those gradients."""
    start = 0
    for p in parameters:
        if p.grad is not None:
            p.grad = flat[start:start + p.size].reshape(p.shape).astype(p.dtype)
            start += p.size
