"""The `diamond` command as a user meets it: help everywhere, clear errors, a demo that says where to look."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.helpers import SMALL_TRAINING, run_diamond


@pytest.mark.parametrize(
    "args",
    [
        *([], ["data"], ["data", "cdnow"], ["data", "synthetic"], ["data", "validate"], ["demo"]),
        *(["backtest"], ["train"], ["promote"], ["models"], ["outcomes"], ["effect"], ["uplift"]),
    ],
)
def test_every_command_has_help(args: list[str]) -> None:
    result = run_diamond(*args, "--help")
    assert "Usage: diamond" in result.stdout


def test_validate_prints_the_summary(cdnow_dir: Path) -> None:
    result = run_diamond("data", "validate", str(cdnow_dir), "--json")
    summary = json.loads(result.stdout)
    assert summary["transactions"] == 69_659 and summary["customers_with_transactions"] == 23_570


def test_validate_reports_bad_input_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "transactions.csv").write_text("customer_id,timestamp,amount\na,2024-01-02,abc\n")
    result = run_diamond("data", "validate", str(tmp_path), check=False)
    assert result.returncode == 2
    assert "transactions.csv: column 'amount': 1 values are not numbers" in result.stderr
    assert "line 2: 'abc'" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_as_of_option(cdnow_dir: Path) -> None:
    result = run_diamond("data", "validate", str(cdnow_dir), "--as-of", "1998-01-31", check=False)
    assert result.returncode == 2
    assert "values are after the as-of date 1998-01-31 23:59:59" in result.stderr


def test_demo_runs_end_to_end_and_says_where_results_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # its own, empty store
    config = tmp_path / "training.yaml"
    # two Optuna trials of small models: what is checked here is the sequence and what it prints
    config.write_text(yaml.safe_dump({**SMALL_TRAINING, "trials": 2}), encoding="utf-8")
    result = run_diamond("demo", "--out", str(tmp_path / "out"), "--config", str(config), cwd=tmp_path)
    text = result.stdout.replace("\n", "")
    predictions = tmp_path / "out" / "cdnow_backtest_1997-09-30_273d.parquet"
    assert str(predictions.resolve()) in text
    assert pq.read_metadata(predictions).num_rows == 23_570
    assert "churn_auc" in text and "bgnbd" in text and "rfm" in text  # scored beside the baselines
    assert "registered diamond version" in text and "gate: promoted" in text
    assert "mlflow ui --backend-store-uri sqlite:///" in text
    assert f"DIAMOND_STORE_URL=sqlite:///{(tmp_path / 'out').resolve()}" in text and "/ui/" in text
