"""Keep freed large buffers in the process instead of returning them to the OS.

A training step allocates and frees the same few hundred MB of im2col buffers
every time. glibc hands allocations above 128 KiB straight back to the kernel,
so each step pays page faults to touch that memory again (about 30% of a step
here). Raising glibc's mmap and trim thresholds lets freed buffers be reused,
which is what PyTorch's caching allocator achieves. Peak resident memory is
unchanged; it is simply not given back between steps. TINYFCN_DEFAULT_MALLOC=1
leaves the allocator alone.
"""

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_buffers() -> bool:
    if not sys.platform.startswith("linux") or os.environ.get("TINYFCN_DEFAULT_MALLOC"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
                    and libc.mallopt(M_TRIM_THRESHOLD, 1 << 31))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
