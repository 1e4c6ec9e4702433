"""What every benchmark here shares: run a child process and measure it, and record a results row."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = Path(__file__).resolve().with_name("README.md")


@dataclass
class Measured:
    """One child process: wall time around it, its own peak RSS, and the JSON it printed last."""

    wall_s: float
    peak_rss_mib: float
    result: Any


def measure(cmd: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run `cmd` from the project root; wall time and that child's peak RSS (`os.wait4` gives its rusage)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed with exit code {code}")
    # ru_maxrss is in KiB on Linux (the same field resource.getrusage(RUSAGE_CHILDREN) reports)
    return Measured(wall, usage.ru_maxrss / 1024, json.loads(stdout.strip().splitlines()[-1]))


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}"


def record_row(start: str, end: str, header: str, row: str, key_columns: int) -> None:
    """Insert `row` into the table between the markers in bench/README.md, replacing any row with the same
    first `key_columns` cells; rows stay sorted by those cells."""
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{header}{end}\n"
    head, rest = text.split(start, 1)
    body, tail = rest.split(end, 1)

    def key(line: str) -> tuple[str, ...]:
        return tuple(c.strip() for c in line.strip("|").split("|")[:key_columns])

    def order(line: str) -> tuple[Any, ...]:  # numbers by value, text by text; never one against the other
        return tuple(
            (0, int(re.sub(r"\D", "", c) or 0), "") if re.fullmatch(r"[\d,.]+", c) else (1, 0, c)
            for c in key(line)
        )

    rows = [line for line in body.strip("\n").splitlines() if line.startswith("| ") and "---" not in line]
    rows = [r for r in rows[1:] if key(r) != key(row)]  # rows[0] is the header
    rows.append(row)
    rows.sort(key=order)
    README.write_text(f"{head}{start}\n{header}{chr(10).join(rows)}\n{end}{tail}")
