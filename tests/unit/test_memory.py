"""core.memory: freed memory kept by the process for reuse (glibc), Arrow's buffers on the same heap,
checked in a process of its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import numpy as np
import pyarrow as pa
from core.memory import keep_freed_memory

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

applied = keep_freed_memory() if sys.argv[1] == "keep" else False
before = rss_mib()
block = np.ones(200 * 2**20, dtype=np.uint8)  # 200 MiB, touched
del block
kept = round(rss_mib() - before)
before = rss_mib()
column = pa.array(np.ones(200 * 2**17))  # 200 MiB of Arrow, touched
del column
print(applied, kept, round(rss_mib() - before), pa.default_memory_pool().backend_name)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator and /proc")
@pytest.mark.parametrize("mode", ["keep", "default"])
def test_freed_memory_is_kept_for_reuse_only_when_asked(mode: str) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    applied, kept_mib, arrow_kept_mib, arrow_pool = done.stdout.split()
    if mode == "keep":
        assert applied == "True"
        assert int(kept_mib) >= 190  # the 200 MiB freed stay in the process, ready for the next allocation
        assert arrow_pool == "system"  # Arrow allocates from the same heap...
        assert int(arrow_kept_mib) < 50  # ...and reuses the block numpy freed, touching nothing new
    else:
        assert int(kept_mib) < 50  # glibc's default: a large block goes back to the system when freed
        assert arrow_pool != "system"
