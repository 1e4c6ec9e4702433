"""History files written by hand for the history contract's tests (tests/unit/test_history*.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.history import HistoryError, load_history

TX = "customer_id,timestamp,amount\n"  # the header of a minimal transactions.csv


def write(folder: Path, name: str, text: str) -> Path:
    """`text` as `folder/name` (the folder created)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(folder: Path, **kwargs: object) -> str:
    """The message of the HistoryError that loading `folder` raises (fails the test when none is raised)."""
    with pytest.raises(HistoryError) as info:
        load_history(folder, **kwargs)  # type: ignore[arg-type]
    return str(info.value)
