"""Process-wide settings that make NumPy + Numba fast for this workload.

Not applied on import: `tinyfcn.configure_runtime()` applies them, and tinyfcn's own
training, prediction and benchmark entry points call it.

1. Keep freed large buffers. A training step allocates and frees the same few
   hundred MB of im2col buffers every time; glibc returns allocations above
   128 KiB to the kernel, so every step paid page faults to touch that memory
   again (benchmarks/README.md has the cost). Raising glibc's mmap and trim thresholds
   lets freed buffers be reused, as PyTorch's caching allocator does. Peak
   resident memory is unchanged; it is just not handed back between steps.
2. Own the threads. OpenBLAS's idle threads keep spinning for a while after each
   product, and Numba's parallel workers started in that window fight them for the
   cores (benchmarks/README.md, lever 1, has the figures). Instead BLAS runs on one
   thread (threadpoolctl), the large products of the convolutions are split over a pool tinyfcn owns
   (`tinyfcn.kernels.matmul`), whose threads sleep between products, and the Numba
   kernels run on every core with OpenMP told to sleep, not spin, when idle
   (OMP_WAIT_POLICY=PASSIVE: read when Numba starts its OpenMP layer, so it only
   takes effect if no kernel has run yet). `tinyfcn.set_threads(n)` changes the count.

TINYFCN_DEFAULT_RUNTIME=1 in the environment makes `configure_runtime` leave both alone
(BLAS then threads itself and the kernels use Numba's default thread count).
"""

import ctypes
import os
import sys

import numba

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_buffers() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        # 1 GiB each: any larger does not fit mallopt's C int
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
                    and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


def set_kernel_threads(n: int) -> None:
    """Threads of the Numba kernels (at most NUMBA_NUM_THREADS)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def set_threads(n: int) -> None:
    """Run tinyfcn on `n` threads: BLAS on one, the convolutions' products split over `n`
    (tinyfcn's own pool) and the Numba kernels on `n`. `configure_runtime` keeps the
    count chosen here."""
    global _chosen_threads
    from threadpoolctl import threadpool_limits

    from tinyfcn.kernels import set_gemm_threads
    _chosen_threads = max(1, int(n))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threadpool_limits(1, user_api="blas")
    set_gemm_threads(_chosen_threads)
    set_kernel_threads(_chosen_threads)


_chosen_threads = None  # by set_threads


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_runtime() -> None:
    """Apply both settings to this process (see above); idempotent, and it keeps a thread
    count chosen with `set_threads`."""
    if os.environ.get("TINYFCN_DEFAULT_RUNTIME"):
        return
    keep_freed_buffers()
    set_threads(_chosen_threads or cores())
