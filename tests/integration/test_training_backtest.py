"""The CDNOW backtest through the CLI: deterministic, and blind to everything after the cutoff."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from tests.helpers import run_diamond
from tests.helpers.history_files import truncated_copy

CUTOFF = "1997-09-30"
SMALL = {
    "trials": 3,
    "xgboost": {"n_estimators": 50, "learning_rate": 0.2, "max_depth": 2, "min_child_weight": 20},
}


def _backtest(data: Path, out: Path, config: Path, *extra: str) -> str:
    args = ["backtest", "--data", str(data), "--cutoff", CUTOFF, "--horizon", "273d", "--out", str(out)]
    return run_diamond(*args, "--config", str(config), *extra).stdout


def test_backtest_is_deterministic_and_leakage_free(cdnow_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "training.yaml"
    config.write_text(yaml.safe_dump(SMALL), encoding="utf-8")
    # a copy of the history as it was at the cutoff: every later event deleted
    truncated = truncated_copy(cdnow_dir, tmp_path / "truncated", CUTOFF)

    first = _backtest(cdnow_dir, tmp_path / "a.parquet", config)  # logged to MLflow, as by default
    # the other two untracked: what is compared is the predictions file, and logging (a third of a
    # backtest's time) changes nothing in it (tracked or not, the same flow writes it before logging)
    _backtest(cdnow_dir, tmp_path / "b.parquet", config, "--no-track")
    blind = _backtest(truncated, tmp_path / "cut.parquet", config, "--no-track")

    a, b, cut = (pq.read_table(tmp_path / f"{n}.parquet") for n in ("a", "b", "cut"))
    assert a.num_rows == 23_570
    assert a.column_names == ["customer_id", "churn_probability", "predicted_value"]
    assert a.equals(b)  # same data and config: bit-identical predictions
    assert a.equals(cut)  # events after the cutoff change nothing
    probs = a.column("churn_probability").to_numpy()
    assert ((probs > 0) & (probs < 1)).all()
    assert "churn_auc" in first and "bgnbd" in first and "rfm" in first  # scored against the holdout
    assert "nothing to score" in blind  # the truncated copy has no future to score against
    shutil.rmtree(truncated)
