"""The process's memory allocator, set for a run of the command line.

A run at a million customers allocates and frees gigabytes of frames, arrays and Arrow buffers. By default
glibc hands every allocation over 128 kB to its own `mmap` and returns it on `free`, so the next one is
faulted in again, page by page, each page zeroed by the kernel: at 1M customers that was 2.1 million page
faults and a tenth of the batch's CPU (`clear_page_erms`, bench/README.md "Batch scoring"). Kept in the heap
instead, freed memory is reused as it is.

Arrow's buffers (the history's tables, DuckDB's results) come from pyarrow's own allocator, mimalloc, unless
told otherwise. On this project's machines it spent 5-8 s of kernel time loading a 1M-customer history (20M
transactions) against 2-3 s for the same load on glibc's heap, and held 0.4 GB more at its peak
(bench/README.md "Feature pipeline", session 20): the run puts Arrow on the same heap.
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
    of TOP_PAD, and Arrow's new buffers allocated there too. For a process that exits when its run ends
    (every `diamond` command): its peak is unchanged, but it keeps what it freed. True where it applied
    (glibc); elsewhere nothing changes."""
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
    applied = all(
        mallopt(param, value) == 1
        for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX), (_M_TOP_PAD, TOP_PAD))
    )
    if applied:
        import pyarrow as pa  # buffers allocated before keep their own pool; only new ones move

        pa.set_memory_pool(pa.system_memory_pool())
    return applied
