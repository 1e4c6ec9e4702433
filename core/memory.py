"""The process's memory allocator, set for a batch run.

A batch run at a million customers allocates and frees gigabytes of frames, arrays and Arrow buffers. By
default glibc hands every allocation over 128 kB to its own `mmap` and returns it on `free`, so the next one
is faulted in again, page by page, each page zeroed by the kernel: at 1M customers that was 2.1 million page
faults and a tenth of the run's CPU (`clear_page_erms`, bench/README.md "Batch scoring"). Kept in the heap
instead, freed memory is reused as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_INT_MAX = 2**31 - 1  # mallopt takes a C int
TOP_PAD = 256 * 2**20  # the heap grows by at least this much at a time


def keep_freed_memory() -> bool:
    """Large allocations from the heap (no `mmap` of their own), freed memory kept for reuse rather than
    returned to the system (the heap is trimmed only past 2 GiB free at its top), the heap grown in steps
    of TOP_PAD. For a process that exits when its run ends (`diamond score`): its peak is unchanged, but
    it keeps what it freed. True where it applied (glibc); elsewhere nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(
        mallopt(param, value) == 1
        for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX), (_M_TOP_PAD, TOP_PAD))
    )
