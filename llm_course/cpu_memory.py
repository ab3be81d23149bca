"""Training on a CPU: let each step reuse the memory the previous step freed.

Every training step allocates and frees the same large tensors: the logits, their fp32 copy under
autocast, the softmax and its gradient, the embedding gradient. For the course model each of these is
(8 * 32 positions) x 50,257 vocabulary entries, up to 51 MB. glibc's malloc, the allocator of most
Linux systems, serves blocks that large (above its mmap threshold, at most 32 MiB when left alone)
straight from the operating system and hands them back when they are freed. The next step then asks
for them again, and the kernel zero-fills every 4 KiB page on first touch. On the CPU the benchmarks
ran on, that was a third of an fp32 step's time and half of a bf16 step's (benchmarks/bf16.py).
PyTorch's GPU allocator avoids this by caching freed blocks; on the CPU, `reuse_freed_memory` asks
malloc to do the same.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["reuse_freed_memory"]

CHAPTER = 4

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_REUSE_LIMIT = 256 * 1024 * 1024  # blocks up to this size come from (and return to) the process's heap


def reuse_freed_memory() -> bool:
    """Make malloc keep freed blocks of up to 256 MiB in the process for the next allocation.

    Speeds up training on a CPU (fp32 and bf16 alike; see benchmarks/bf16.py) at the cost of the process
    keeping up to 512 MiB of freed memory instead of returning it at once. Affects the whole process and
    stays in force; calling it again changes nothing. Returns whether it took effect: True on Linux with
    glibc, False elsewhere (macOS, Windows and musl have allocators that need no such setting).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False  # not glibc (e.g. musl on Alpine)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # The trim threshold is how much free memory may sit at the top of the heap before malloc returns
    # it to the system: twice the largest block, so that two steps' worth of blocks stay available.
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, _REUSE_LIMIT)
    trim_ok = mallopt(_M_TRIM_THRESHOLD, 2 * _REUSE_LIMIT)
    return bool(mmap_ok and trim_ok)
