"""Batch scoring gives the numbers it gave before it was made fast: the same models on the same small
histories, run after run (a re-run of an as_of included), store the same snapshots, score history, tiers,
alerts, drift and Parquet tables, and return the same scores and reasons, to 1e-9 (tests/helpers/golden.py;
the reference was made by tests/fixtures/make_batch_golden.py with the per-row implementation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from features.datasets import synthetic
from features.history import History, load_history
from serving.scoring import CURVE_COLUMNS
from tests.helpers import golden


def _history(case: golden.Case, cdnow_dir: Path, tmp_path: Path) -> History:
    if case is golden.CDNOW:
        return golden.cdnow_sample(load_history(cdnow_dir))
    synthetic.write(tmp_path / "history", golden.SYNTHETIC_CUSTOMERS, seed=golden.SYNTHETIC_SEED)
    return load_history(tmp_path / "history")


ADDED_TABLES = (
    *("table_sessions", "table_audit", "table_store_secrets"),  # migration 0004
    *("table_run_checkpoint", "table_checkpoint_tier_state", "table_checkpoint_alerts"),  # 0005
    *("table_alert_controls", "table_alert_outcomes"),  # 0006: no control share; outcomes by `diamond score`
)
ADDED_COLUMNS = {"table_alerts": {"do_not_contact": 0}}  # 0004: nobody withdrew consent
# time to churn (serving.scoring.CURVE_COLUMNS): the reference models predate the curve, so all null; and
# `churn_model`, purchase silence for all
CURVE_FRAMES = ("run", "parquet", "table_score_snapshot")


@pytest.mark.parametrize("case", [golden.CDNOW, golden.SYNTHETIC], ids=lambda c: c.name)
def test_batch_runs_store_what_the_reference_stored(
    case: golden.Case, cdnow_dir: Path, tmp_path: Path
) -> None:
    expected = golden.load(golden.GOLDEN / case.name)
    (tmp_path / "run").mkdir()
    history = _history(case, cdnow_dir, tmp_path)
    frames = golden.run_case(case, history, golden.GOLDEN / case.name / "model", tmp_path / "run")
    # what the store gained after the reference was saved: tables a batch run leaves empty, and columns
    # with one value for every row
    for name in ADDED_TABLES:
        assert frames.pop(name).empty, name
    for name, added in ADDED_COLUMNS.items():
        for column, value in added.items():
            assert set(frames[name].pop(column)) <= {value}, (name, column)
    # 0007: no capacity configured, so every alert entered when it opened, ranked by its value at risk
    alerts = frames["table_alerts"]
    assert (alerts.pop("priority") == alerts["value_at_risk"]).all()
    assert (alerts.pop("entered_at") == alerts["opened_at"]).all()
    for name in CURVE_FRAMES:
        for column in CURVE_COLUMNS:
            assert frames[name].pop(column).isna().all(), (name, column)
        # which model scored whom: the reference models predate the contract model, so purchase silence
        assert set(frames[name].pop("churn_model")) == {"purchase_silence"}, name
    assert sorted(frames) == sorted(expected)
    tied = golden.tied_events(history)
    problems = [p for name, f in frames.items() for p in golden.differences(expected[name], f, name, tied)]
    assert not problems, "\n".join(problems[:60])


def test_the_reference_exercises_what_it_guards() -> None:
    """The golden runs are not trivially empty: reasons both ways, alerts, tier moves held by hysteresis,
    repeated runs."""
    for case in (golden.CDNOW, golden.SYNTHETIC):
        saved = golden.load(golden.GOLDEN / case.name)
        rows = saved["table_score_snapshot"]["rows"]
        assert len(rows) > 300
        directions = {r["direction"] for row in rows for r in json.loads(row["reasons"])}
        assert directions == {"raises churn risk", "lowers churn risk"}
        assert saved["table_alerts"]["rows"], case.name
        assert len(saved["table_score_history"]["rows"]) > len(rows)
    tiers = golden.load(golden.GOLDEN / "cdnow")["table_tier_history"]["rows"]
    assert any(r["tier"] != r["tier_raw"] for r in tiers)  # hysteresis held someone


def test_scoring_at_the_end_reads_the_history_as_until_does(tmp_path: Path) -> None:
    """Batch scoring skips `History.until`'s copy when no row is dated after as_of: the same tables."""
    from datetime import timedelta

    from features.build import end_of
    from serving.batch import _known_at

    synthetic.write(tmp_path / "h", 200, seed=1)
    history = load_history(tmp_path / "h")
    end = end_of(history)
    for t in (end, end + timedelta(days=1), end - timedelta(days=40)):
        fast, slow = _known_at(history, t), history.until(t)
        assert fast.as_of == slow.as_of == t
        for name, table in slow.tables().items():
            assert fast.tables()[name].equals(table), (t, name)
    assert _known_at(history, end).transactions is history.transactions  # nothing copied
