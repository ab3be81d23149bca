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

CHAPTER = 5

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_REUSE_LIMIT = 1 << 30  # 1 GiB: blocks up to this size come from the process's heap
_DEFAULT_MMAP_THRESHOLD = 128 * 1024  # glibc's starting value, put back if the second setting is refused


def reuse_freed_memory() -> bool:
    """Make glibc's malloc serve blocks of up to 1 GiB from the process's heap and keep them there when
    they are freed, for the next allocation.

    Speeds up training on a CPU, fp32 and bf16 alike (see benchmarks/bf16.py). The cost: memory that
    training freed stays with the process (up to its peak use) instead of going back to the system at
    once. Affects the whole process and stays in force, so call it where a program starts (the
    `llm-course` command, the benchmarks and the notebooks do); calling it again changes nothing. All or
    nothing: if glibc refuses either setting, neither stays. Returns whether both were accepted: False on
    macOS and Windows, whose allocators keep freed blocks anyway, and on Linux systems without glibc (musl
    has no such setting). Under a replacement allocator loaded with LD_PRELOAD (jemalloc, tcmalloc), which
    caches freed blocks itself, it returns True but has no effect.
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
    # Blocks up to the limit come from the heap rather than from the system, and up to the limit of free
    # memory at the top of the heap is kept rather than handed back.
    if not mallopt(_M_MMAP_THRESHOLD, _REUSE_LIMIT):
        return False  # refused: nothing changed
    if not mallopt(_M_TRIM_THRESHOLD, _REUSE_LIMIT):
        mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)  # undo the first setting
        return False
    return True
