"""History files written by hand for the history contract's tests (tests/unit/test_history*.py), and copies
of a history cut at a date (the backtests' leakage tests)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

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


def truncated_copy(source: Path, folder: Path, end: str) -> Path:
    """A copy in `folder` of the CSV history in `source` (transactions.csv.gz and dataset.yaml, as `diamond
    data cdnow` writes it) as it was at the end of day `end`: every later event deleted, as_of `end`."""
    folder.mkdir()
    spec = yaml.safe_load((source / "dataset.yaml").read_text(encoding="utf-8"))
    spec["as_of"] = f"{end}T23:59:59"
    (folder / "dataset.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    tx = pd.read_csv(source / "transactions.csv.gz", dtype=str)
    tx[tx["timestamp"] <= end].to_csv(folder / "transactions.csv", index=False)
    return folder
