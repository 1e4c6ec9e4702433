"""The flows without the command: they report their steps, print nothing and return what they made; the
retrain flow takes the lock before it reads anything and hands the drift to training as a value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from diamond import flows
from features.build import build_training_set, parse_cutoff, summarise
from features.engine import EngineConfig
from features.history import load_history
from training import retrain


def _history(folder: Path) -> Path:
    """Four customers buying monthly in the first half of 2024; two stop after March."""
    rows = ["customer_id,timestamp,amount"]
    for month in range(1, 7):
        for customer in ("a", "b", "c", "d"):
            if customer in "cd" and month > 3:
                continue
            rows.append(f"{customer},2024-{month:02d}-1{ord(customer) - 96},{10 * month}.5")
    folder.mkdir()
    (folder / "transactions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_build_features_reports_each_step_writes_the_training_set_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = _history(tmp_path / "history"), tmp_path / "out" / "train.parquet"
    steps: list[str] = []
    cutoffs = [parse_cutoff("2024-03-31")]
    built = flows.build_features(
        EngineConfig("duckdb"), str(data), str(out), cutoffs, 60, "rfm_v1", True, None, steps.append
    )
    assert steps == list(flows.FEATURE_STEPS)
    assert capsys.readouterr() == ("", "")
    written = pq.read_table(out)
    assert written.equals(build_training_set(load_history(data), cutoffs, 60, "rfm_v1"))
    assert (built.engine, built.cutoffs, built.summary) == ("duckdb", 1, summarise(written))
    assert built.summary["rows"] == 4 and built.summary["churn_rate"] == 0.5


def test_retrain_takes_the_lock_before_it_reads_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "retrain.lock"
    monkeypatch.setenv(retrain.LOCK_ENV, str(lock))
    # an unusable store URL: reading it first would fail with a different error than Busy
    with retrain.exclusive(lock), pytest.raises(retrain.Busy, match="another retrain is running"):
        flows.retrain(tmp_path / "missing", None, None, "no-such-driver://", force=True, cutoff=None)


def test_retrain_hands_the_latest_drift_to_training_as_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving import monitoring

    monkeypatch.setenv(retrain.LOCK_ENV, str(tmp_path / "retrain.lock"))
    drift = {"alert": True, "model_version": "3", "max_psi": 0.4}
    read: list[str] = []
    monkeypatch.setattr(monitoring, "latest_drift", lambda engine: read.append(str(engine.url)) or drift)
    calls: list[tuple[Any, ...]] = []

    def run(*args: Any) -> retrain.Outcome:
        calls.append(args)
        return retrain.Outcome(False, "no retrain needed: test")

    monkeypatch.setattr(retrain, "run", run)
    url = f"sqlite:///{tmp_path / 'diamond.db'}"
    outcome = flows.retrain(tmp_path / "history", "config", "mlcfg", url, False, "2024-03-31")
    assert outcome.message == "no retrain needed: test"
    assert read == [url]
    assert calls == [(tmp_path / "history", "config", "mlcfg", drift, False, "2024-03-31")]
