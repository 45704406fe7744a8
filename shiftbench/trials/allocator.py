"""Host memory: keep the memory that freed tensors held in the process, for the next ones.

PyTorch's CPU tensors come from ``malloc``. glibc's ``malloc`` serves a block larger than
``M_MMAP_THRESHOLD`` with a fresh ``mmap`` and hands the top of its heap back to the kernel
once more than ``M_TRIM_THRESHOLD`` of it is free (both start at 128 KiB and adapt to the
blocks freed, ``mallopt(3)``). A training loop's evaluation allocates activations of a few
MiB per split and frees them together, so glibc gives them back and the next checkpoint
touches fresh, zeroed pages: about 10,000 page faults per checkpoint of the quickstart CNN,
which took 35 ms against 5 ms with the memory kept (a one-off measurement; its trials run
1.2x faster with it, ``perf/allocator.py``). Raising both
thresholds keeps it, as PyTorch's caching allocator does on a GPU and as jemalloc or tcmalloc
(which PyTorch's CPU performance guide suggests preloading) do. The arithmetic is the same,
so no number changes.

The setting is the process's (glibc has one allocator per process), so a worker sets it
before a trial and leaves it; turning it off again restores glibc's documented static
thresholds (128 KiB), not their adaptation.
"""

from __future__ import annotations

import ctypes
import platform
from functools import cache

# mallopt(3) parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold (HEAP_MAX_SIZE / 2 on 64-bit): larger blocks are still
# mapped and unmapped each time, but they are rare and their own work dwarfs the faults
MMAP_THRESHOLD = 32 * 2**20
# free memory at the heap's top beyond this goes back to the kernel: the most a process keeps
TRIM_THRESHOLD = 2**30
GLIBC_DEFAULT = 128 * 2**10

_retained = False


@cache
def _glibc() -> ctypes.CDLL | None:
    """The C library of this process when it is glibc (``mallopt`` elsewhere, as in musl, is
    a no-op or absent)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(None)


def can_retain() -> bool:
    """Whether this process's allocator can be told to keep freed memory (glibc's)."""
    return _glibc() is not None


def retained() -> bool:
    """Whether this process keeps freed memory now (set by :func:`retain`)."""
    return _retained


def retain(on: bool) -> None:
    """Keep freed memory in this process (``on``), or give it back as glibc does by
    default; a no-op when already so."""
    global _retained
    if on == _retained:
        return
    libc = _glibc()
    if libc is None:
        raise RuntimeError("retain_memory: this process's C library is not glibc")
    mmap, trim = (MMAP_THRESHOLD, TRIM_THRESHOLD) if on else (GLIBC_DEFAULT, GLIBC_DEFAULT)
    if not (libc.mallopt(M_MMAP_THRESHOLD, mmap) and libc.mallopt(M_TRIM_THRESHOLD, trim)):
        raise RuntimeError("retain_memory: glibc refused the malloc thresholds")
    _retained = on
