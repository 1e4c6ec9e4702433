"""`diamond backtest --rolling` on CDNOW: blind to everything after each cutoff (a truncated copy of the
history gives the same predictions at every cutoff both runs can see), each backtest scored when its labels
are complete, and logged to MLflow as a parent run with one nested run per backtest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import yaml

from tests.helpers import run_diamond
from tests.helpers.history_files import truncated_copy
from training.tracking import MlflowConfig

SMALL = {
    "trials": 1,
    "xgboost": {"n_estimators": 50, "learning_rate": 0.2, "max_depth": 2, "min_child_weight": 20},
    "parity": {"min_customers": 100},
}
CUTOFFS = ("1997-09-30", "1997-12-31", "1998-03-31")
KEY = ["cutoff", "customer_id"]


def test_rolling_backtest_is_leakage_free_scored_and_logged(cdnow_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "training.yaml"
    config.write_text(yaml.safe_dump(SMALL), encoding="utf-8")
    common = ["backtest", "--rolling", "--horizon", "91d", "--config", str(config)]
    # the full history: the default cutoffs are the quarter ends with complete 91-day labels
    full = run_diamond(*common, "--data", str(cdnow_dir), "--out", str(tmp_path / "full.parquet")).stdout
    # the history as it was at the last cutoff, with the same cutoffs given
    cut_dir = truncated_copy(cdnow_dir, tmp_path / "truncated", CUTOFFS[-1])
    given = [a for c in CUTOFFS for a in ("--cutoff", c)]
    blind = run_diamond(
        *common, *given, "--no-track", "--data", str(cut_dir), "--out", str(tmp_path / "cut.parquet")
    ).stdout

    a = pd.read_parquet(tmp_path / "full.parquet").sort_values(KEY, ignore_index=True)
    b = pd.read_parquet(tmp_path / "cut.parquet").sort_values(KEY, ignore_index=True)
    assert sorted(f"{t:%Y-%m-%d}" for t in a["cutoff"].unique()) == list(CUTOFFS)
    assert (a["horizon_days"] == 91).all() and a["churned"].notna().all()  # every cutoff scored
    assert a.groupby("cutoff").size().is_monotonic_increasing  # customers accumulate
    preds = [*KEY, "churn_probability", "predicted_value"]
    pd.testing.assert_frame_equal(a[preds], b[preds], check_exact=True)  # later events change nothing
    # the truncated copy can score only 1997-09-30: the other label windows end after it
    scored = b.groupby("cutoff")["churned"].apply(lambda s: s.notna().all())
    assert scored.tolist() == [True, False, False]
    assert "not yet known" in blind and "worst over the scored backtests" in blind

    worst = re.search(r"aggregate\s+([+-][\d.]+)%\s+\(91d at (\S+)\)", full)
    assert worst is not None, full
    parent = re.search(r"MLflow run (\w+) \(each backtest a nested run under it\)", full)
    assert parent is not None, full
    _check_mlflow(parent.group(1), float(worst.group(1)) / 100, worst.group(2), tmp_path)


def _check_mlflow(parent_id: str, worst_error: float, worst_at: str, tmp: Path) -> None:
    mlcfg = MlflowConfig.load()
    client = mlcfg.client()
    parent = client.get_run(parent_id)
    assert parent.data.tags["kind"] == "rolling" and parent.info.status == "FINISHED"
    assert parent.data.params["cutoffs"] == ",".join(CUTOFFS)
    steps = [m.step for m in client.get_metric_history(parent_id, "h91d/value_aggregate_error")]
    assert sorted(steps) == [19970930, 19971231, 19980331]
    assert round(parent.data.metrics["worst/value_aggregate_error"], 3) == round(worst_error, 3)
    summary = json.loads(
        Path(client.download_artifacts(parent_id, "rolling/summary.json", str(tmp))).read_text()
    )
    assert summary["worst"]["value_aggregate_error"]["cutoff"] == worst_at
    assert [r["cutoff"] for r in summary["rows"]] == list(CUTOFFS)

    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=10
    )
    assert len(children) == 3
    child = children[0]
    assert child.data.tags["kind"] == "backtest"
    assert "holdout_model_value_aggregate_error" in child.data.metrics
    assert "holdout_parity_flags" in child.data.metrics
    assert any(k.startswith("holdout_segment/tier/") for k in child.data.metrics)
    assert any(k.startswith("segment/tier/") for k in child.data.metrics)  # the validation window
    page = Path(client.download_artifacts(child.info.run_id, "report.html", str(tmp))).read_text()
    assert "<h3>On what happened after T (holdout), 91-day window</h3>" in page
    assert "<h4>tier</h4>" in page and "<section id='parity'>" in page


def test_a_single_backtest_needs_one_cutoff_and_one_horizon(cdnow_dir: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "p.parquet")
    cases = (
        [],
        ["--cutoff", "1997-09-30"],
        ["--cutoff", "1997-09-30", "--cutoff", "1997-12-31", "--horizon", "91d"],
    )
    for extra in cases:
        args = ["backtest", "--data", str(cdnow_dir), "--out", out, *extra]
        result = run_diamond(*args, check=False)
        assert result.returncode == 2, result.stdout
        assert "backtest needs one --cutoff and one --horizon (or --rolling for several)" in result.stderr
    assert not (tmp_path / "p.parquet").exists()
