"""Data-parallel training over MPI (mpi4py, the `distributed` extra).

Launched as `mpiexec -n K python examples/train_voc_subset.py ...`, each of the K
processes (ranks) takes its share of every global batch, computes its gradients,
and one all-reduce of a single flat float32 buffer sums them, so every rank takes
the step a single process would take on the whole batch. Without an MPI launch
this is one process and nothing here is imported from mpi4py.

Collective waits are bounded: a rank that died or hangs ends the run with a message
after `timeout` seconds instead of blocking the others forever.
"""

from __future__ import annotations

import json
import os
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
                self.comm.Abort(3)
            time.sleep(0.0005)

    def sum_(self, array: np.ndarray, what: str = "an all-reduce") -> np.ndarray:
        """Sum `array` (contiguous) over the ranks, in place."""
        if self.comm is None:
            return array
        from mpi4py import MPI
        self._wait(self.comm.Iallreduce(MPI.IN_PLACE, array, op=MPI.SUM), what)
        return array

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
    `extra` if given: one copy, one all-reduce."""
    parts = [p.grad.ravel() for p in parameters if p.grad is not None]
    if extra is not None:
        parts.append(np.array([extra], np.float32))
    return np.concatenate(parts).astype(np.float32, copy=False)


def set_flat_gradients(parameters, flat: np.ndarray) -> None:
    """Put `flat` (as made by `flat_gradients`) back into those gradients."""
    start = 0
    for p in parameters:
        if p.grad is not None:
            p.grad = flat[start:start + p.size].reshape(p.shape).astype(p.dtype)
            start += p.size
