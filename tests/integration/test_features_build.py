"""The feature builder end to end: the CLI and CDNOW written by it, leakage-free by construction. The rules on
hand-built frames are in tests/unit/test_features_build.py."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.build import build_spine, monthly_cutoffs
from features.history import load_history
from tests.helpers import run_diamond

CUTOFF = "1997-09-30"


def test_cli_features_ignore_everything_after_the_cutoff(cdnow_dir: Path, tmp_path: Path) -> None:
    """Full CDNOW vs a copy with every event after the cutoff deleted: identical feature values."""
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    shutil.copy(cdnow_dir / "dataset.yaml", truncated / "dataset.yaml")
    tx = pd.read_csv(cdnow_dir / "transactions.csv.gz", dtype=str)
    kept = tx[tx["timestamp"] <= CUTOFF]
    assert 0 < len(kept) < len(tx)
    kept.to_csv(truncated / "transactions.csv", index=False)
    for folder, name in ((cdnow_dir, "full"), (truncated, "cut")):
        run_diamond(
            "features", "build", "--data", str(folder), "--cutoffs", CUTOFF, "--horizon", "273d",
            "--no-labels", "--out", str(tmp_path / f"{name}.parquet"),
        )  # fmt: skip
    full = pq.read_table(tmp_path / "full.parquet")
    cut = pq.read_table(tmp_path / "cut.parquet")
    assert full.num_rows == 23_570
    assert full.column_names == cut.column_names
    assert full.equals(cut)


def test_cli_training_set_has_labels_from_the_holdout(cdnow_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.parquet"
    run_diamond(
        "features",
        "build",
        "--data",
        str(cdnow_dir),
        "--cutoffs",
        CUTOFF,
        "--horizon",
        "273d",
        "--out",
        str(out),
    )
    table = pq.read_table(out).to_pandas()
    # the classic CDNOW holdout: 1997-10-01 .. 1998-06-30
    tx = pd.read_csv(cdnow_dir / "transactions.csv.gz", dtype={"customer_id": str})
    holdout = tx[(tx["timestamp"] > CUTOFF) & (tx["timestamp"] <= "1998-06-30")]
    assert table["future_value"].sum() == pytest.approx(holdout["amount"].sum(), rel=1e-12)
    assert int((table["churned"] == 0).sum()) == holdout["customer_id"].nunique()


def test_cli_refuses_an_incomplete_label_window(cdnow_dir: Path, tmp_path: Path) -> None:
    result = run_diamond(
        "features", "build", "--data", str(cdnow_dir), "--cutoffs", "1998-01-31", "--horizon", "273d",
        "--out", str(tmp_path / "x.parquet"), check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "cutoff 1998-01-31 + 273d ends after the history (1998-06-30)" in result.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_monthly_cutoffs_keep_complete_label_windows(cdnow_dir: Path) -> None:
    history = load_history(cdnow_dir)
    cuts = monthly_cutoffs(history, horizon_days=90, min_history_days=90)
    assert cuts[0] == datetime(1997, 4, 30, 23, 59, 59, 999999)  # first month end >= 1997-01-01 + 90 days
    assert cuts[-1] == datetime(1998, 3, 31, 23, 59, 59, 999999)  # + 90 days <= 1998-06-30
    assert len(cuts) == 12


def test_spine_counts_on_cdnow(cdnow_dir: Path) -> None:
    history = load_history(cdnow_dir)
    spine = build_spine(history, ["1997-01-31", "1997-03-31"]).to_pandas()
    counts = spine.groupby("cutoff").size().tolist()
    tx = history.transactions.to_pandas()
    first = tx.groupby("customer_id")["timestamp"].min()
    assert counts == [
        int((first <= "1997-01-31").sum()),
        23_570,
    ]  # every customer's first purchase is in Q1 1997
