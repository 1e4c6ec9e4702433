"""Batch scoring writes the recent events into their new table in a thread of their own while the feature
rows are computed (serving.batch._Staging, serving.store.stage_events); the snapshot's transaction swaps
them in. A run that fails after that, or while the thread is still writing, leaves the store as it was:
the previous snapshot whole and no staged table behind."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.datasets import synthetic
from features.history import load_history
from serving import batch, scoring, store, tier_store
from serving.scoring import SCORE_COLUMNS
from tests.helpers import golden
from tests.helpers.events import stored_events
from training.artefact import ScoringArtefact


def _tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = sqlite3.connect(path)
    try:
        names = [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: sorted(con.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}
    finally:
        con.close()


@pytest.fixture
def run(tmp_path: Path) -> Any:
    synthetic.write(tmp_path / "history", 200, seed=5)
    history = load_history(tmp_path / "history")
    (tmp_path / "run").mkdir()
    config = golden.serving_config(tmp_path / "run")
    champion = golden.served(golden.GOLDEN / golden.SYNTHETIC.name / "model")

    def score(day: str) -> batch.BatchResult:
        return batch.score_history(history, datetime.fromisoformat(day), champion, config)

    score.db = tmp_path / "run" / "diamond.db"  # type: ignore[attr-defined]
    return score


def test_the_staged_events_are_the_snapshots_events(run: Any) -> None:
    result = run("2025-12-31")
    tables = _tables(run.db)
    assert "recent_events__new" not in tables
    con = sqlite3.connect(run.db)
    try:
        staged = pd.read_sql_query("SELECT * FROM recent_events", con)
    finally:
        con.close()
    events = stored_events(staged)
    assert events["customer_id"].nunique() > 100
    # what the snapshot transaction wrote from frames before staging: the same rows
    history = load_history(run.db.parents[1] / "history")
    packed = pd.concat(list(store.packed_event_batches(batch._known_at(history, datetime(2025, 12, 31)))))
    pd.testing.assert_frame_equal(stored_events(packed), events)
    assert staged["customers"].sum() == events["customer_id"].nunique()
    assert list(result.scores.columns)[: len(SCORE_COLUMNS)] == SCORE_COLUMNS


def test_a_run_failing_after_staging_leaves_the_previous_snapshot_and_no_staged_table(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("2025-09-30")
    before = _tables(run.db)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tiers broke")

    monkeypatch.setattr(tier_store, "update_tiers", broken)  # after the events were staged
    with pytest.raises(RuntimeError, match="tiers broke"):
        run("2025-12-31")
    after = _tables(run.db)
    assert "recent_events__new" not in after
    assert after == before


def test_a_run_failing_while_the_events_are_staged_rolls_them_back(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("2025-09-30")
    before = _tables(run.db)
    staging, go_on = threading.Event(), threading.Event()
    real = store.bulk.insert_frame

    def slow(con: Any, table: Any, frame: pd.DataFrame, *args: Any, **kwargs: Any) -> int:
        if table.name == "recent_events__new":
            staging.set()
            go_on.wait(10)  # the run fails meanwhile
        return real(con, table, frame, *args, **kwargs)

    def failing(*args: Any, **kwargs: Any) -> Any:
        assert staging.wait(10)  # the thread is writing its first frame
        go_on.set()
        raise RuntimeError("feature rows broke")

    monkeypatch.setattr(store.bulk, "insert_frame", slow)
    monkeypatch.setattr(ScoringArtefact, "feature_rows", failing)
    with pytest.raises(RuntimeError, match="feature rows broke"):
        run("2025-12-31")
    after = _tables(run.db)
    assert "recent_events__new" not in after
    assert after == before


def test_reasons_made_in_chunks_beside_the_run_are_those_made_in_one_go(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TreeSHAP runs in chunks (serving.batch._Effects), by its thread and by the run when it asks, and the
    words are written in chunks of rows (scoring.REASON_ROWS): the reasons are the ones
    `scoring.score_frame` gives the same rows at once."""
    champion = golden.served(golden.GOLDEN / golden.SYNTHETIC.name / "model")
    history = load_history(run.db.parents[1] / "history")
    rows = champion.artefact.feature_rows(history, datetime(2025, 12, 31))
    frame, _ = scoring.score_frame(champion.artefact, rows, 3, 2, champion.rfm)  # in one go
    assert len(rows) > 100
    monkeypatch.setattr(batch._Effects, "CHUNK", 7)  # many chunks, taken by both threads
    monkeypatch.setattr(scoring, "REASON_ROWS", 13)  # the words written 13 rows at a time
    result = run("2025-12-31")
    assert result.scores["reasons"].tolist() == frame["reasons"].tolist()
    assert result.scores["customer_id"].tolist() == frame["customer_id"].tolist()


def test_a_failing_chunk_fails_the_run_and_leaves_the_previous_snapshot(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("2025-09-30")
    before = _tables(run.db)
    real = scoring.reason_effects
    calls = {"n": 0}

    def third_fails(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("TreeSHAP broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(batch._Effects, "CHUNK", 20)
    monkeypatch.setattr(scoring, "reason_effects", third_fails)
    with pytest.raises(RuntimeError, match="TreeSHAP broke"):
        run("2025-12-31")
    after = _tables(run.db)
    assert "recent_events__new" not in after
    # the tiers' step committed before the snapshot's (each step is a transaction); the snapshot, the
    # score history and the run log are as they were, and the run can simply be run again
    for name in (*store.schema.SNAPSHOT_TABLES, "score_history", "score_runs"):
        assert after[name] == before[name], name
    monkeypatch.setattr(scoring, "reason_effects", real)
    assert run("2025-12-31").scores["reasons"].notna().all()


def test_a_score_table_failing_in_its_thread_rolls_the_snapshot_back_and_leaves_no_file(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Parquet score table is written by a thread while the snapshot's transaction copies the score
    history and builds its indexes; the transaction commits only once the file is complete: a failure there
    fails the run, the snapshot stays the previous one and neither the file nor its temporary is left."""
    run("2025-09-30")
    before = _tables(run.db)
    scores_dir = run.db.parent / "scores"
    files = sorted(p.name for p in scores_dir.iterdir())
    threads: list[str] = []

    def broken(table: pd.DataFrame, path: Path, *args: Any, **kwargs: Any) -> None:
        threads.append(threading.current_thread().name)
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(batch, "_write_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        run("2025-12-31")
    after = _tables(run.db)
    for name in (*store.schema.SNAPSHOT_TABLES, "score_history", "score_runs"):
        assert after[name] == before[name], name
    assert sorted(p.name for p in scores_dir.iterdir()) == files  # no new file, no temporary
    assert threads and threads[0].startswith("diamond-score-table")


def test_scores_made_by_two_threads_on_halves_of_the_rows_are_the_whole_scores(run: Any) -> None:
    """`batch._score_in_halves`: two threads, half the rows each, give exactly `ScoringArtefact.score` of all
    the rows at once, in their order: an odd count, three rows and one row (scored in one go) alike."""
    champion = golden.served(golden.GOLDEN / golden.SYNTHETIC.name / "model")
    history = load_history(run.db.parents[1] / "history")
    art = champion.artefact
    rows = art.feature_rows(history, datetime(2025, 12, 31))
    assert len(rows) > 100
    for some in (rows.iloc[: len(rows) // 2 * 2 - 1], rows.iloc[:3], rows.iloc[:1]):
        pd.testing.assert_frame_equal(batch._score_in_halves(art, some), art.score(some, art.matrix(some)))
