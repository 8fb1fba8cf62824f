"""Matrix products split over threads this module owns, for BLAS running on one thread.

Why not let BLAS thread itself: between two products a training step runs Numba kernels
(im2col, col2im, pooling, ReLU), and OpenBLAS's idle threads keep spinning for a while
after each product, so on a few cores those kernels could only run on one thread. With
BLAS on one thread, `matmul` cuts each large product into blocks of output rows or
columns and computes them at once on a small pool (NumPy releases the GIL inside a
product); between products the pool's threads sleep, and the kernels get every core.

`set_gemm_threads(1)` (the default) makes `matmul` plain `a @ b`.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MIN_FLOP = 1 << 21  # below this a hand-off to another thread costs more than it saves

_pool: ThreadPoolExecutor | None = None
_pool_pid = None  # the process that started the pool: a forked child has none of its threads
_threads = 1


def set_gemm_threads(n: int) -> None:
    """Compute large products in `n` blocks at once (1: plain `a @ b`)."""
    global _threads
    n = max(1, int(n))
    if n != _threads or _pool_pid != os.getpid():
        _threads = n
        _start_pool()


def _start_pool() -> None:
    global _pool, _pool_pid
    if _pool is not None and _pool_pid == os.getpid():
        _pool.shutdown()
    _pool = (ThreadPoolExecutor(_threads - 1, thread_name_prefix="tinyfcn-gemm")
             if _threads > 1 else None)
    _pool_pid = os.getpid()


def gemm_threads() -> int:
    """How many blocks `matmul` and `in_parallel` compute at once."""
    return _threads


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (M, K) @ b (K, N) -> (M, N), C-contiguous. Each block is one BLAS call on a
    slice of the inputs written straight into its slice of the output."""
    M, N = a.shape[0], b.shape[1]
    if _pool is None or 2 * M * N * a.shape[1] < MIN_FLOP:
        return a @ b
    if _pool_pid != os.getpid():  # forked: the parent's pool threads do not exist here
        _start_pool()
    out = np.empty((M, N), dtype=np.result_type(a, b))
    along = N if N >= M else M
    cuts = [along * k // _threads for k in range(_threads + 1)]
    if N >= M:  # column blocks: a @ b[:, j0:j1] -> out[:, j0:j1]
        parts = [(a, b[:, lo:hi], out[:, lo:hi]) for lo, hi in zip(cuts[:-1], cuts[1:])]
    else:       # row blocks: a[i0:i1] @ b -> out[i0:i1]
        parts = [(a[lo:hi], b, out[lo:hi]) for lo, hi in zip(cuts[:-1], cuts[1:])]
    others = [_pool.submit(np.matmul, x, y, out=o) for x, y, o in parts[1:]]
    np.matmul(*parts[0][:2], out=parts[0][2])
    for future in others:
        future.result()
    return out


def in_parallel(fn, parts: int) -> list:
    """[fn(0), ..., fn(parts - 1)], computed at once on the pool (part 0 on this thread),
    for work that releases the GIL (NumPy products, `nogil` Numba kernels). A part must not
    call `matmul` (it would wait for the pool it runs on): it calls `np.matmul`."""
    if _pool is None or parts == 1:
        return [fn(k) for k in range(parts)]
    if _pool_pid != os.getpid():  # forked: the parent's pool threads do not exist here
        _start_pool()
    others = [_pool.submit(fn, k) for k in range(1, parts)]
    return [fn(0)] + [future.result() for future in others]
