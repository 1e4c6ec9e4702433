"""serving.runs on a real SQLite store with hand-built runs: a checkpoint before each run, and the rollback of
the latest putting tiers, alerts, outbox, score history and snapshot back as the previous run left them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from serving import outbox, runs, store, tier_store
from serving.alert_rules import evaluate
from serving.alert_store import acknowledge, list_alerts, sync_alerts
from tests.helpers.frames import AT_RISK, T0, TIERS, score_table

TABLES = ("tier_state", "tier_history", "tier_runs", "alerts", "alert_actions", "outbox", "score_history")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[sa.Engine, Path]]:
    path = tmp_path / "store.db"
    eng = store.prepare(sa.create_engine(f"sqlite:///{path}"))
    yield eng, path
    eng.dispose()


def _run(eng: sa.Engine, at: pd.Timestamp, *rows: tuple[str, str, float, float]) -> None:
    """One batch run as serving.batch does it, after its checkpoint: tiers, snapshot, alerts, outbox."""
    runs.checkpoint(eng, at)
    scores = score_table(*rows)
    tier_store.update_tiers(eng, at, scores[["customer_id"]].assign(tier_raw=scores["tier"]), TIERS, 2)
    history = scores.assign(as_of=at, model_version="1", reasons=[str(r) for r in scores["reasons"]])
    store.write_snapshot(eng, scores[["customer_id"]].assign(f=1.0), history, {"as_of": at})
    synced = sync_alerts(eng, at, evaluate(scores, AT_RISK, None, at), AT_RISK)
    for alert_id, version in synced.notify:
        outbox.enqueue(eng, "crm", {"alert": alert_id}, f"alert-{alert_id}-v{version}")


def _state(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as con:
        out = {t: sorted(map(tuple, con.execute(f"SELECT * FROM {t}").fetchall()), key=repr) for t in TABLES}
        snapshot = con.execute("SELECT name FROM sqlite_master WHERE name = 'score_snapshot'").fetchall()
        rows = con.execute("SELECT * FROM score_snapshot").fetchall() if snapshot else []
        out["score_snapshot"] = sorted(map(tuple, rows))
    return out


def test_rollback_restores_the_previous_run(db: tuple[sa.Engine, Path]) -> None:
    eng, path = db
    _run(eng, T0, ("a", "diamond", 0.2, 1000.0), ("b", "gold", 0.7, 500.0))
    acknowledge(eng, int(list_alerts(eng, "live")["id"].iloc[0]), "ann")  # people act between runs
    before = _state(path)

    bad = T0 + timedelta(days=3000)  # everyone churned: new alerts, moved tiers, queued webhooks
    _run(eng, bad, ("a", "diamond", 0.95, 1000.0), ("b", "bronze", 0.99, 500.0), ("c", "gold", 0.9, 800.0))
    assert _state(path) != before
    listed = runs.list_runs(eng)
    assert listed["as_of"].tolist() == [bad, T0] and listed["can_roll_back"].tolist() == [True, False]

    with pytest.raises(ValueError, match="older than the latest run"):
        runs.checkpoint(eng, T0 + timedelta(days=1))  # refused before any compute, rollback named
    done = runs.rollback(eng, bad)
    assert (done.previous, done.alerts_removed, done.snapshot) == (T0, 2, "restored")
    assert done.outbox_removed == 2 and done.outbox_delivered == 0
    assert _state(path) == before
    with pytest.raises(ValueError, match="no run to roll back"):
        runs.rollback(eng, bad)
    _run(eng, T0 + timedelta(days=1), ("a", "diamond", 0.3, 1000.0))  # later runs at real dates work again
    assert runs.list_runs(eng)["as_of"].tolist() == [T0 + timedelta(days=1), T0]


def test_delivered_webhooks_are_counted_and_a_first_run_rolls_back_to_an_empty_store(
    db: tuple[sa.Engine, Path],
) -> None:
    eng, path = db
    empty = _state(path)
    _run(eng, T0, ("a", "gold", 0.9, 100.0))
    (webhook,) = [r[0] for r in outbox.due(eng, ["crm"], T0 + timedelta(days=9999), 10)]
    outbox.mark_delivered(eng, webhook, T0)
    done = runs.rollback(eng, T0)
    assert (done.previous, done.outbox_delivered, done.outbox_removed, done.snapshot) == (
        None,
        1,
        0,
        "removed",
    )
    assert _state(path) == empty | {"outbox": _state(path)["outbox"]}  # the delivered row stays
    assert not sa.inspect(eng).has_table("score_snapshot")


def test_rerunning_the_same_as_of_keeps_the_checkpoint_from_before_its_first_run(
    db: tuple[sa.Engine, Path],
) -> None:
    eng, path = db
    _run(eng, T0, ("a", "gold", 0.2, 100.0))
    before = _state(path)
    later = T0 + timedelta(days=1)
    _run(eng, later, ("a", "bronze", 0.9, 100.0), ("b", "gold", 0.9, 100.0))
    _run(eng, later, ("a", "bronze", 0.9, 100.0), ("b", "gold", 0.9, 100.0))  # a retried job
    runs.rollback(eng, later)
    assert _state(path) == before


def test_a_read_only_store_is_refused_by_the_probe(db: tuple[sa.Engine, Path]) -> None:
    _, path = db
    ro = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(runs.StoreNotWritable, match=r"cannot be written .*readonly database"):
        runs.probe(ro)
    with pytest.raises(runs.StoreNotWritable):
        runs.checkpoint(ro, T0)
    ro.dispose()


def test_the_snapshot_is_kept_by_renaming_it_and_a_run_that_stopped_before_it_keeps_the_live_one(
    db: tuple[sa.Engine, Path],
) -> None:
    eng, path = db
    _run(eng, T0, ("a", "gold", 0.2, 100.0))
    before = _state(path)
    later = T0 + timedelta(days=1)
    runs.checkpoint(eng, later)  # no copy: the live snapshot is the run's "before" until it writes its own
    assert not sa.inspect(eng).has_table("score_snapshot__prev")
    tier_store.update_tiers(
        eng, later, pd.DataFrame({"customer_id": ["a"], "tier_raw": ["bronze"]}), TIERS, 2
    )
    # the run stops here (before its snapshot): the rollback keeps the live snapshot, which is the one before
    done = runs.rollback(eng, later)
    assert done.snapshot == "restored" and _state(path) == before
    _run(eng, later, ("a", "bronze", 0.9, 100.0))
    with sqlite3.connect(path) as con:  # the snapshot it replaced, renamed, without its index
        parts = con.execute("SELECT batch FROM score_snapshot__prev ORDER BY part").fetchall()
        indexes = con.execute(
            "SELECT tbl_name FROM sqlite_master WHERE name = 'ix_score_snapshot_id'"
        ).fetchall()
        flag = con.execute("SELECT snapshot_kept FROM run_checkpoint").fetchall()
    kept = [
        (r["customer_id"], r["tier"]) for (b,) in parts for r in pa.ipc.open_stream(b).read_all().to_pylist()
    ]
    assert kept == [("a", "gold")] and indexes == [("score_snapshot",)] and flag == [(1,)]
    runs.rollback(eng, later)
    assert _state(path) == before


def test_a_rollback_restores_the_renamed_snapshot_on_each_store(store_url: str) -> None:
    eng = store.prepare(store.engine(store_url))
    events = pd.DataFrame({"customer_id": ["a"], "events": ['{"kind": ["purchase"]}']})
    for at, tier in ((T0, "gold"), (T0 + timedelta(days=1), "bronze")):
        runs.checkpoint(eng, at)
        scores = score_table(("a", tier, 0.5, 100.0))
        history = scores.assign(as_of=at, model_version="1", reasons=[str(r) for r in scores["reasons"]])
        store.write_snapshot(eng, scores[["customer_id"]].assign(f=1.0), history, {"as_of": at}, events)
    assert store.read_rows(eng, store.SCORES, ["a"])["tier"].tolist() == ["bronze"]
    assert sa.inspect(eng).has_table("score_snapshot__prev")
    assert runs.rollback(eng, T0 + timedelta(days=1)).snapshot == "restored"
    assert store.read_rows(eng, store.SCORES, ["a"])["tier"].tolist() == ["gold"]
    assert store.read_rows(eng, store.EVENTS, ["a"])["events"].tolist() == ['{"kind": ["purchase"]}']
    names = {i["name"] for i in sa.inspect(eng).get_indexes("score_snapshot")}
    assert "ix_score_snapshot_id" in names and not sa.inspect(eng).has_table("score_snapshot__prev")
    eng.dispose()
