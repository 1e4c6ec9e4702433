"""One process at a time: an exclusive, non-blocking OS lock on a file (fcntl.flock) naming its holder.

Used by the batch run's score lock on a SQLite store (serving.store) and by `diamond retrain`
(training.retrain). The OS releases the lock when the holder's descriptor closes, so a killed process never
leaves a stale lock behind; the text in the file only names the holder for the message of the one refused.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


class Held(Exception):
    """The lock is held by another process; `holder` is what it wrote ("pid unknown" when nothing)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def me() -> str:
    """How a holder names itself: pid, host and start time."""
    return f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"


@contextmanager
def exclusive(path: Path | str) -> Iterator[None]:
    """Hold an exclusive flock on `path` for the block (the file is created, its folder too), or raise Held
    at once naming the holder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Held(os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "pid unknown") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{me()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the lock
