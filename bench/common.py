"""What every benchmark here shares: run a child process and measure it, wait for a server to answer ready,
and record a results row. The tests start their servers with `wait_ready` too (tests/helpers)."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

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


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


READY_TIMEOUT_S = 180.0  # the tests' bound, and about bench_load's (bench_serving gave up after about 120 s)


def wait_ready(
    url: str,
    proc: subprocess.Popen[Any],
    log: Path,
    workers: int = 1,
    timeout_s: float = READY_TIMEOUT_S,
) -> None:
    """Return once GET `url`/readyz has answered 200 from `workers` distinct workers (Diamond's /readyz
    names the worker; a plain-text one counts as one), asking on a new connection each time so that every
    worker gets asked. Raises RuntimeError with the server's output (`log`) if `proc` exits first or time
    runs out: a server that cannot start says why in its log, not in the caller's."""
    ready: set[object] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{url}/readyz", timeout=2)
            if answer.status_code == 200:
                try:
                    ready.add(answer.json().get("worker", 1))
                except ValueError:  # BentoML's own /readyz (the bare service): plain text, one worker
                    ready.add(1)
                if len(ready) >= workers:
                    return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server at {url} exited (code {proc.returncode}) before it was ready:\n{_text(log)}"
            )
        time.sleep(0.25)
    raise RuntimeError(
        f"the server at {url} never became ready in {timeout_s:g} s ({len(ready)} of {workers} worker(s) "
        f"ready):\n{_text(log)}"
    )


def _text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else f"(no output: {log} does not exist)"


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
