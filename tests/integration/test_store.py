"""The store's schema and its migrations: a store written by the release before migrations (59865cc, the
checked-in fixture) upgraded in place by the real `diamond db upgrade` with nothing lost; `diamond score` and
`diamond serve` refusing it until then; a new store created at head; the migrations ending exactly at
serving.schema."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from serving import alert_store, outbox, schema, store
from tests.helpers import API_KEY, free_port, run_diamond
from tests.helpers.postgres import PostgresCluster

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store_59865cc.db"
TABLES = {
    "alert_actions",
    "alerts",
    "drift",
    "drift_runs",
    "feature_snapshot",
    "outbox",
    "recent_events",
    "score_history",
    "score_runs",
    "score_snapshot",
    "tier_history",
    "tier_runs",
    "tier_state",
}


@pytest.fixture
def old_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the 59865cc store, the store of every command the test runs."""
    path = tmp_path / "diamond.db"
    shutil.copyfile(FIXTURE, path)
    monkeypatch.setenv("DIAMOND_STORE_URL", f"sqlite:///{path}")
    return path


def _rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows as stored (SQLite's own values, no SQLAlchemy types), in a stable order."""
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        names = [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            n: sorted((dict(r) for r in con.execute(f'SELECT * FROM "{n}"')), key=repr)
            for n in names
            if n != "alembic_version"
        }
    finally:
        con.close()


def _diff(eng: sa.Engine) -> list[Any]:
    with eng.connect() as con:
        context = MigrationContext.configure(
            con, opts={"include_name": schema.include_name, "compare_type": True}
        )
        return list(compare_metadata(context, schema.metadata))


def _sha(path: Path) -> str:
    """The store file's hash once whatever its write-ahead log holds is in it (a no-op outside WAL mode)."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_db_upgrade_migrates_the_previous_release_store_in_place_with_nothing_lost(old_store: Path) -> None:
    before = _rows(old_store)
    assert set(before) == TABLES and all(before.values())  # the fixture has rows in every table
    assert {r["status"] for r in before["outbox"]} == {"pending", "delivered", "dead"}

    current = run_diamond("db", "current").stdout
    assert current.startswith("before migrations:") and "`diamond db upgrade`" in current.replace("\n", "")
    done = run_diamond("db", "upgrade").stdout
    assert f"upgraded from the schema before migrations to revision {store.head()}" in done.replace("\n", " ")

    after = _rows(old_store)
    con = sqlite3.connect(old_store)  # SQLite fixes the page size when it makes the file
    assert con.execute("PRAGMA page_size").fetchone()[0] == 4096
    con.close()
    added = {"sessions", "audit", "store_secrets"}  # 0004, empty
    added |= {"run_checkpoint", "checkpoint_tier_state", "checkpoint_alerts"}  # 0005: empty until a run
    added |= {"alert_controls", "alert_outcomes"}  # 0006: empty until a run
    assert set(after) == TABLES | added and not any(after[n] for n in added)
    assert {n: len(after[n]) for n in TABLES} == {n: len(r) for n, r in before.items()}
    # alerts gained do_not_contact, false for every existing alert (0004)
    assert {r.pop("do_not_contact") for r in after["alerts"]} == {0}
    # ... and priority (their value at risk) and entered_at (when they opened) (0007)
    assert all(r.pop("priority") == r["value_at_risk"] for r in after["alerts"])
    assert all(r.pop("entered_at") == r["opened_at"] for r in after["alerts"])
    for name in TABLES - {"score_runs"}:  # untouched on SQLite, value for value
        assert after[name] == before[name], name

    # score_runs: ISO text (created_at with an offset) became naive UTC datetimes, in SQLAlchemy's format
    eng = store.engine(f"sqlite:///{old_store}")
    with eng.connect() as con:
        runs = con.execute(sa.select(schema.score_runs_table).order_by(schema.score_runs_table.c.id)).all()
    old_runs = sorted(before["score_runs"], key=lambda r: r["created_at"])
    assert [r.id for r in runs] == [1, 2]
    for new, old in zip(runs, old_runs, strict=True):
        assert new.as_of == datetime.fromisoformat(old["as_of"])
        logged = datetime.fromisoformat(old["created_at"])
        assert new.created_at == logged.astimezone(UTC).replace(tzinfo=None)
        assert old["created_at"].endswith("+00:00") and new.created_at.tzinfo is None
        assert (new.model_version, new.customers, new.parquet) == (
            old["model_version"],
            old["customers"],
            old["parquet"],
        )
    latest = store.latest_run(eng)
    assert latest is not None and latest["as_of"] == datetime(2025, 12, 24, 23, 59, 59, 999999)

    # the outbox's aware times were stored as their UTC wall time: read back naive, the same instants
    with eng.connect() as con:
        typed = {r.webhook_id: r for r in con.execute(sa.select(outbox.OUTBOX))}
    for old in before["outbox"]:
        new = typed[old["webhook_id"]]
        for column in ("created_at", "next_attempt_at", "delivered_at"):
            expected = None if old[column] is None else datetime.fromisoformat(old[column])
            assert getattr(new, column) == expected and (expected is None or expected.tzinfo is None)

    assert _diff(eng) == [] and store.revision(eng) == store.head()

    # its feature snapshot, one row per customer (written before packing), is read and erased as it is
    rows = store.read_features(eng)
    assert rows["customer_id"].tolist() == [r["customer_id"] for r in before["feature_snapshot"]]
    with eng.begin() as con:
        assert store.forget_rows(con, "feature_snapshot", [rows["customer_id"].iloc[0]]) == 1
    assert store.read_features(eng)["customer_id"].tolist() == rows["customer_id"].tolist()[1:]

    # the upgraded store serves today's code: the acknowledged alert, its log, the dead letters
    acked = alert_store.get_alert(eng, 3)
    assert (acked["status"], acked["owner"]) == ("acknowledged", "anna")
    assert alert_store.actions(eng, [3])[["action", "who"]].values.tolist() == [["acknowledged", "anna"]]
    dead = sum(r["status"] == "dead" for r in before["outbox"])
    assert run_diamond("alerts", "dead").stdout.strip().endswith(f"{dead} dead letter(s)")


def test_db_upgrade_twice_is_a_no_op(old_store: Path) -> None:
    store.upgrade(store.engine(f"sqlite:///{old_store}"))
    upgraded = _sha(old_store)
    again = run_diamond("db", "upgrade").stdout
    assert f"already at revision {store.head()}, nothing to do" in again.replace("\n", " ")
    assert _sha(old_store) == upgraded
    assert run_diamond("db", "current").stdout.startswith(f"{store.head()} (head): store sqlite:///")


def test_score_and_serve_refuse_an_old_store_until_it_is_upgraded(
    old_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migrating is left to a person (`diamond db upgrade`): both say so and leave the store as it is."""
    monkeypatch.setenv("DIAMOND_API_KEYS", API_KEY)
    # a registry of its own: under xdist another test of this worker may have promoted a champion
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty-mlflow.db'}")
    untouched = _sha(old_store)
    refused = [
        run_diamond("score", "--data", str(tmp_path / "history"), check=False),
        run_diamond("serve", "--port", str(free_port()), check=False),
    ]
    for done in refused:
        message = " ".join(done.stderr.split())
        assert done.returncode == 2, done.stderr
        assert "was written by a release before schema migrations" in message
        assert "run `diamond db upgrade`" in message
    assert _sha(old_store) == untouched

    store.upgrade(store.engine(f"sqlite:///{old_store}"))
    served = run_diamond("serve", "--port", str(free_port()), check=False)  # now the model is what is missing
    assert served.returncode == 2 and "not starting" in served.stderr and "db upgrade" not in served.stderr


def test_a_new_store_is_created_at_head_without_asking(
    new_store: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = new_store()
    monkeypatch.setenv("DIAMOND_STORE_URL", url)
    assert run_diamond("db", "current").stdout.startswith("none:")
    assert run_diamond("alerts", "list").stdout.strip().endswith("0 live alert(s)")  # a reader creates it
    eng = store.engine(url)
    assert store.revision(eng) == store.head()
    assert set(sa.inspect(eng).get_table_names()) == set(schema.metadata.tables) | {"alembic_version"}
    assert _diff(eng) == []
    if store.is_sqlite(eng):  # readers never wait for a writer; a batch run's rows in larger pages
        with eng.connect() as con:
            assert con.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert con.exec_driver_sql("PRAGMA page_size").scalar() == store.SQLITE_PAGE_BYTES == 16384

    other = new_store()
    monkeypatch.setenv("DIAMOND_STORE_URL", other)
    assert f"created at revision {store.head()}" in run_diamond("db", "upgrade").stdout.replace("\n", " ")
    assert store.revision(store.engine(other)) == store.head()


def test_the_migrations_end_at_the_declared_schema_and_start_at_the_previous_release(tmp_path: Path) -> None:
    """From an empty database, revision by revision: 0001 is 59865cc's DDL to the character, head is
    serving.schema (and the comparison does see a difference, one revision short)."""
    eng = store.engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    with eng.begin() as con:
        command.upgrade(store.alembic_config(con), "0001")
    assert _ddl(tmp_path / "migrated.db") == _ddl(FIXTURE)
    with eng.begin() as con:
        command.upgrade(store.alembic_config(con), "0002")
    ops = [d if isinstance(d, tuple) else d[0] for d in _diff(eng)]  # modify_* come in lists per column
    named = {
        (
            op[0],
            op[1].name
            if op[0] in ("add_index", "add_table")
            else op[2]
            if op[0] != "add_column"
            else f"{op[2]}.{op[3].name}",
        )
        for op in ops
    }
    assert named == {
        ("add_column", "score_runs.id"),  # its id
        ("modify_type", "score_runs"),  # text times, before 0003
        ("add_index", "ix_score_runs_created_at"),
        *{("add_table", t) for t in ("sessions", "audit", "store_secrets")},  # 0004 from here on
        *{("add_index", i) for i in ("ix_sessions_key_id", "ix_audit_at", "ix_audit_action_target")},
        ("add_column", "alerts.do_not_contact"),
        *{("add_table", t) for t in ("run_checkpoint", "checkpoint_tier_state", "checkpoint_alerts")},  # 0005
        *{("add_table", t) for t in ("alert_controls", "alert_outcomes")},  # 0006
        *{
            ("add_index", i)
            for i in (
                "uq_alert_controls_live_customer_kind",
                "ix_alert_controls_customer_id",
                "ix_alert_outcomes_customer_id",
                "ix_alert_outcomes_opened_at",
            )
        },
        ("add_column", "alerts.priority"),  # 0007
        ("add_column", "alerts.entered_at"),
        ("add_index", "ix_alerts_status_priority"),
    }
    with eng.begin() as con:
        command.upgrade(store.alembic_config(con), "head")
    assert _diff(eng) == []


def test_the_migrations_build_the_declared_schema_on_postgresql(postgres: PostgresCluster) -> None:
    """The same revisions on PostgreSQL, from an empty database: 0002 turns the outbox's aware times into
    naive UTC (a row written at 0001 keeps its instant), head is serving.schema, and down and up again."""
    eng = store.engine(postgres.new_schema())
    with eng.begin() as con:
        command.upgrade(store.alembic_config(con), "0001")
        con.execute(
            sa.text(
                "INSERT INTO outbox (webhook_id, destination, payload, created_at, attempts, "
                "next_attempt_at, status) VALUES ('w1', 'crm', '{}', '2026-03-01 10:00:00.25+01:00', 0, "
                "'2026-03-01T09:30:00Z', 'pending')"
            )
        )
    assert store.upgrade(eng) == ("0001", store.head()) and _diff(eng) == []
    with eng.connect() as con:
        row = con.execute(sa.select(outbox.OUTBOX)).mappings().one()
    assert row["created_at"] == datetime(2026, 3, 1, 9, 0, 0, 250000)
    assert row["next_attempt_at"] == datetime(2026, 3, 1, 9, 30)
    with eng.begin() as con:
        command.downgrade(store.alembic_config(con), "base")
    assert set(sa.inspect(eng).get_table_names()) == {"alembic_version"}
    assert store.upgrade(eng) == (store.NEW, store.head()) and _diff(eng) == []


def _ddl(path: Path) -> dict[str, str]:
    """The CREATE statements of the fixed tables and their indexes, whitespace normalised."""
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    finally:
        con.close()
    return {
        name: " ".join(sql.split())
        for name, table, sql in rows
        if table in schema.metadata.tables and table != "alembic_version"
    }


def test_downgrade_to_0001_gives_back_the_previous_release_rows(old_store: Path) -> None:
    eng = store.engine(f"sqlite:///{old_store}")
    before = _rows(old_store)
    store.upgrade(eng)
    with eng.begin() as con:
        command.downgrade(store.alembic_config(con), "0001")
    assert _rows(old_store) == before  # score_runs' text times come back character for character
    assert store.upgrade(eng) == ("0001", store.head()) and _diff(eng) == []


def test_outbox_times_stored_with_an_offset_become_naive_utc(old_store: Path) -> None:
    """SQLAlchemy never wrote an offset into SQLite, but another writer may have: 0002 converts those."""
    con = sqlite3.connect(old_store)
    with con:
        wid = con.execute("SELECT webhook_id FROM outbox WHERE status = 'delivered' LIMIT 1").fetchone()[0]
        con.execute(
            "UPDATE outbox SET created_at = ?, next_attempt_at = ?, delivered_at = ? WHERE webhook_id = ?",
            ("2026-03-01 10:00:00.250000+01:00", "2026-03-01T09:30:00Z", "2026-02-28T23:00:00-05:00", wid),
        )
    con.close()
    store.upgrade(store.engine(f"sqlite:///{old_store}"))
    con = sqlite3.connect(old_store)
    raw = con.execute(
        "SELECT created_at, next_attempt_at, delivered_at FROM outbox WHERE webhook_id = ?", (wid,)
    ).fetchone()
    con.close()
    assert raw == ("2026-03-01 09:00:00.250000", "2026-03-01 09:30:00.000000", "2026-03-01 04:00:00.000000")


def test_a_store_of_a_newer_release_is_refused_untouched(old_store: Path) -> None:
    eng = store.engine(f"sqlite:///{old_store}")
    store.upgrade(eng)
    with eng.begin() as con:
        con.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    untouched = _sha(old_store)
    with pytest.raises(store.StoreRevisionError, match="written by a newer Diamond"):
        store.prepare(eng)
    done = run_diamond("db", "upgrade", check=False)
    assert done.returncode == 2 and "revision 9999, which this release does not know" in done.stderr
    assert _sha(old_store) == untouched


def test_concurrent_first_uses_create_the_store_once(store_url: str) -> None:
    """Several workers meeting a new store at once: one creates it, the others wait and find it at head."""
    url = store_url
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            store.prepare(store.engine(url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=first_use) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert store.revision(store.engine(url)) == store.head()


def test_a_failed_upgrade_leaves_the_store_as_it_was(old_store: Path) -> None:
    """One transaction, DDL included: a row 0003 cannot carry over (a run without as_of) undoes 0001-0002."""
    con = sqlite3.connect(old_store)
    with con:
        con.execute("UPDATE score_runs SET as_of = NULL WHERE rowid = 1")
    con.close()
    before = _rows(old_store)
    eng = store.engine(f"sqlite:///{old_store}")
    with pytest.raises(ValueError, match=r"1 run\(s\) without as_of or created_at"):
        store.upgrade(eng)
    assert _rows(old_store) == before and store.revision(eng) == store.BEFORE_MIGRATIONS
    assert "alembic_version" not in sa.inspect(eng).get_table_names()


def test_a_snapshot_commit_leaves_copying_the_log_to_a_thread_and_the_store_reads_the_same(
    tmp_path: Path,
) -> None:
    """On a SQLite file the snapshot's commit does not copy the write-ahead log into the file itself (its
    connection's automatic checkpoint is off for that transaction, back on after); a thread copies it
    (`store.settle` waits for it). Readers see the new snapshot at once, the recent events included (made
    in their own thread), and once the copy is done the whole log is in the file."""
    import pandas as pd

    db = tmp_path / "store.db"
    eng = store.prepare(store.engine(f"sqlite:///{db}"))
    ids = [f"c{i:05d}" for i in range(3000)]
    features = pd.DataFrame({"customer_id": ids, "recency_days": [float(i) for i in range(3000)]})
    scores = pd.DataFrame(
        {
            "customer_id": ids,
            "as_of": datetime(2025, 1, 31),
            "churn_probability": 0.25,
            "predicted_value": 10.0,
            "value_at_risk": 2.5,
            "tier": "gold",
            "model_version": "1",
        }
    )
    events = (pd.DataFrame({"customer_id": ids[i : i + 1000], "events": "{}"}) for i in range(0, 3000, 1000))
    seen: list[int] = []

    @sa.event.listens_for(eng, "commit")
    def _autocheckpoint_at_commit(con: sa.Connection) -> None:
        raw: Any = con.connection.dbapi_connection
        seen.append(raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    store.write_snapshot(eng, features, scores, {"as_of": datetime(2025, 1, 31)}, events)
    store.settle()
    assert seen[0] == 0  # the snapshot's commit: no checkpoint of its own
    with eng.connect() as con:
        assert con.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == store.WAL_AUTOCHECKPOINT
        assert con.exec_driver_sql("SELECT COUNT(*) FROM recent_events").scalar() == 3000
        assert con.exec_driver_sql("SELECT COUNT(*) FROM score_history").scalar() == 3000
        busy, log, copied = con.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    assert busy == 0 and log == copied  # the thread had copied every frame already, or this call did
    with sqlite3.connect(db) as raw:  # another reader: the same snapshot
        assert raw.execute("SELECT SUM(customers) FROM feature_snapshot").fetchone()[0] == 3000  # packed


def test_the_feature_snapshot_comes_back_as_written_and_erasure_rewrites_its_parts(tmp_path: Path) -> None:
    """The feature snapshot is kept packed (parts of Arrow IPC, store.pack_features): read back, every value
    and type is the batch's (NaN as missing, the as_of as the store's DATETIME text), in row order; erasing
    a customer rewrites only the part that held them."""
    import pandas as pd

    eng = store.prepare(store.engine(f"sqlite:///{tmp_path / 'store.db'}"))
    features = pd.DataFrame(
        {
            "customer_id": ["b", "a", "c"],
            "recency_days": [1.5, float("nan"), 3.0],
            "n_purchases": [2, 1, 7],
            "feature_set": "core_v1",
            "as_of": datetime(2025, 1, 31, 23, 59, 59),
        }
    )
    scores = features[["customer_id", "as_of"]].assign(
        churn_probability=0.5, predicted_value=1.0, value_at_risk=0.5, tier="gold", model_version="1"
    )
    store.write_snapshot(eng, features, scores, {"as_of": datetime(2025, 1, 31, 23, 59, 59)})
    back = store.read_features(eng)
    assert back["customer_id"].tolist() == ["b", "a", "c"] and back["n_purchases"].tolist() == [2, 1, 7]
    assert back["recency_days"].iloc[0] == 1.5 and pd.isna(back["recency_days"].iloc[1])
    assert set(back["as_of"]) == {"2025-01-31 23:59:59.000000"}
    assert store.read_rows(eng, store.FEATURES, ["c", "x"])["n_purchases"].tolist() == [7]
    parts = list(store.pack_features(features, rows=2))
    assert [p["customers"] for p in parts] == [2, 1] and [p["part"] for p in parts] == [0, 1]
    with eng.begin() as con:
        assert store.forget_rows(con, store.FEATURES, ["a", "x"]) == 1
    assert store.read_features(eng)["customer_id"].tolist() == ["b", "c"]


def test_recent_events_come_back_per_customer_from_their_part_and_erasure_rewrites_it(engine: Any) -> None:
    """The recent events are kept in parts of customers in id order (store.packed_event_batches): one
    customer's are read from the part whose range holds them, in SQLite and PostgreSQL alike (the range
    compared as bytes, not in the database's collation); erasure rewrites the part without them."""
    import pandas as pd

    from features.history import history_from_frames
    from tests.helpers.events import last_events

    ids = ["B", "a", "b", "\u00e9", "c", "Z"]  # upper before lower, é after every ASCII letter in UTF-8
    t = pd.Timestamp("2025-01-01")
    history = history_from_frames(
        pd.DataFrame(
            {
                "customer_id": [c for c in ids for _ in range(3)],
                "timestamp": [t + pd.Timedelta(days=d) for _ in ids for d in range(3)],
                "amount": [float(k) for k in range(3 * len(ids))],
            }
        )
    )
    scores = pd.DataFrame({"customer_id": ids}).assign(
        as_of=datetime(2025, 1, 31), churn_probability=0.5, predicted_value=1.0, value_at_risk=0.5,
        tier="gold", model_version="1",
    )  # fmt: skip
    events = store.packed_event_batches(history, n=2, rows=4, part_rows=2)
    store.write_snapshot(engine, scores[["customer_id"]], scores, {"as_of": datetime(2025, 1, 31)}, events)
    want = last_events(history, n=2)
    for cid in ids:
        mine = want[want["customer_id"] == cid].drop(columns="customer_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(store.recent_events(engine, cid), mine, check_dtype=False)
    assert store.recent_events(engine, "bb").empty and store.recent_events(engine, "0").empty
    both = store.read_rows(engine, store.EVENTS, ["c", "x", "B", "c"])  # one row per event, ids once each
    ordered = pd.concat([want[want["customer_id"] == c] for c in ("c", "B")], ignore_index=True)
    pd.testing.assert_frame_equal(both, ordered, check_dtype=False)
    with engine.begin() as con:
        assert store.forget_rows(con, store.EVENTS, ["b", "x"]) == 1
        parts = con.execute(sa.text("SELECT first_key, customers, n_events FROM recent_events")).all()
    assert store.recent_events(engine, "b").empty
    assert len(store.recent_events(engine, "\u00e9")) == 2  # the rewritten part keeps the others
    assert sorted((bytes(k), n, e) for k, n, e in parts) == [
        (b"B", 2, 4), (b"a", 1, 2), (b"c", 2, 4)
    ]  # fmt: skip


def test_recent_events_of_an_earlier_release_are_still_read(tmp_path: Path) -> None:
    """A snapshot of the release before the parts (one row per customer, the events as JSON text), e.g.
    restored by `diamond runs rollback`, is read as it was written."""
    import pandas as pd

    eng = store.prepare(store.engine(f"sqlite:///{tmp_path / 'store.db'}"))
    text = (
        '{"timestamp": ["2025-01-02 00:00:00.000000", "2025-01-01 10:30:00.250000"], '
        '"kind": ["interaction", "purchase"], "amount": [null, 2.5], "detail": ["call", "quantity 2"]}'
    )
    events = pd.DataFrame({"customer_id": ["a", "b"], "events": [text, "{}"]})
    scores = pd.DataFrame({"customer_id": ["a", "b"]}).assign(
        as_of=datetime(2025, 1, 31), churn_probability=0.5, predicted_value=1.0, value_at_risk=0.5,
        tier="gold", model_version="1",
    )  # fmt: skip
    store.write_snapshot(eng, scores[["customer_id"]], scores, {"as_of": datetime(2025, 1, 31)}, events)
    a = store.recent_events(eng, "a")
    assert a["timestamp"].tolist() == [pd.Timestamp("2025-01-02"), pd.Timestamp("2025-01-01 10:30:00.25")]
    assert a["kind"].tolist() == ["interaction", "purchase"] and a["detail"].tolist() == [
        "call",
        "quantity 2",
    ]
    assert pd.isna(a["amount"].iloc[0]) and a["amount"].iloc[1] == 2.5
    assert store.recent_events(eng, "b").empty and store.recent_events(eng, "x").empty


def test_the_score_snapshot_in_parts_gives_each_customer_its_row_the_tier_sums_and_forgets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The score snapshot is kept in parts of customers in id order (store._ScoreParts): each customer's row
    is read from its part, whichever part and wherever in it; the dashboard's sums per tier are the rows'
    (a missing tier as SQL groups it); forgetting customers rewrites their
    parts and sums; rows out of id order or repeated are refused, nothing written."""
    import pandas as pd

    monkeypatch.setattr(store, "SCORE_PART_ROWS", 3)
    ids = ["a", "b", "bb", "c", "d", "e", "f", "é"]  # 'é' after 'f' in UTF-8 bytes too
    tiers = ["gold", None, "gold", "silver", "gold", "bronze", None, "silver"]
    risk = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    scores = pd.DataFrame(
        {
            "customer_id": ids[::-1],  # a frame in any order: written in id order
            "as_of": datetime(2025, 1, 31),
            "churn_probability": 0.5,
            "predicted_value": 10.0,
            "value_at_risk": risk[::-1],
            "tier": pd.Series(tiers[::-1], dtype=object),
            "model_version": "7",
            "reasons": [f'["{c}"]' for c in ids[::-1]],
        }
    )
    eng = store.prepare(store.engine(f"sqlite:///{tmp_path / 'd.db'}"))
    features = scores[["customer_id"]].assign(f=1.0)
    store.write_snapshot(eng, features, scores, {"as_of": datetime(2025, 1, 31)})
    with eng.connect() as con:
        parts = con.exec_driver_sql("SELECT part, first_key, last_key, customers FROM score_snapshot").all()
    assert [tuple(p) for p in parts] == [
        (0, b"a", b"bb", 3),
        (1, b"c", b"e", 3),
        (2, b"f", "é".encode(), 2),
    ]
    for cid, tier, why in zip(ids, tiers, risk, strict=True):
        row = store.read_rows(eng, store.SCORES, [cid])
        assert row["customer_id"].tolist() == [cid] and row["reasons"].tolist() == [f'["{cid}"]']
        assert (row["tier"].iloc[0] if tier is not None else None) == tier or pd.isna(row["tier"].iloc[0])
        assert row["value_at_risk"].iloc[0] == why or (
            np.isnan(why) and pd.isna(row["value_at_risk"].iloc[0])
        )
    assert store.read_rows(eng, store.SCORES, ["ba", "0", "zz"]).empty
    assert store.read_scores(eng)["customer_id"].tolist() == ids
    frame = pd.DataFrame({"tier": pd.Series(tiers, dtype=object).fillna("None"), "v": risk})
    want = {t: (len(g), float(g["v"].sum())) for t, g in frame.groupby("tier")}
    assert store.tier_summary(eng) == want
    with eng.begin() as con:
        assert store.forget_rows(con, "score_snapshot", ["bb", "f", "x"]) == 2
    assert store.read_scores(eng)["customer_id"].tolist() == ["a", "b", "c", "d", "e", "é"]
    assert store.read_rows(eng, store.SCORES, ["f"]).empty and store.tier_summary(eng) == {
        "gold": (2, 6.0),
        "None": (1, 2.0),
        "silver": (2, 12.0),
        "bronze": (1, 6.0),
    }
    before = store.read_scores(eng)
    # out of order; then repeated (the score history's key refuses it first)
    for wrong in (scores.iloc[[0, 1]], scores.iloc[[0, 0]]):  # scores: ids in descending order
        late = store.LateScores(wrong.drop(columns="reasons"), lambda w=wrong: iter([w]))
        with pytest.raises((ValueError, sa.exc.IntegrityError), match=r"ascending customer_id|UNIQUE"):
            store.write_snapshot(eng, features, late, {"as_of": datetime(2025, 2, 28)})
    pd.testing.assert_frame_equal(store.read_scores(eng), before)


def test_late_scores_in_chunks_write_what_one_frame_writes(tmp_path: Path) -> None:
    """Batch scoring gives the score snapshot late, chunk by chunk (store.LateScores): the snapshot, its
    column types (from the whole frame: a column empty in the first chunk holds numbers later), the score
    history and each chunk as Arrow (`each`) are what one frame writes."""
    import pandas as pd

    ids = [f"c{i}" for i in range(5)]
    scores = pd.DataFrame(
        {
            "customer_id": ids,
            "as_of": datetime(2025, 1, 31),
            "churn_probability": [0.1, 0.2, 0.3, 0.4, 0.5],
            "predicted_value": [10.0, 20.0, 30.0, 40.0, 50.0],
            "value_at_risk": [1.0, 4.0, 9.0, 16.0, 25.0],
            "tier": ["gold", None, "silver", "gold", "bronze"],
            "model_version": "7",
            "paid": pd.Series([None, None, 2.5, None, 1.0], dtype=object),  # floats, none in chunk one
        }
    )
    late = pd.Series([f'["r{i}"]' for i in range(5)], dtype=object)
    features = scores[["customer_id"]].assign(recency_days=[1.0, 2.0, 3.0, 4.0, 5.0])

    def dump(eng: sa.Engine) -> dict[str, Any]:
        with eng.connect() as con:
            history = con.exec_driver_sql("SELECT * FROM score_history ORDER BY customer_id").all()
        snapshot = store.read_scores(eng)
        return {
            "score_snapshot": (repr(snapshot.to_dict("list")), snapshot.dtypes.astype(str).to_dict()),
            "score_history": history,
            "feature_snapshot": store.read_features(eng).to_dict("list"),
        }

    whole = store.prepare(store.engine(f"sqlite:///{tmp_path / 'whole.db'}"))
    store.write_snapshot(whole, features, scores.assign(reasons=late), {"as_of": datetime(2025, 1, 31)})
    chunked = store.prepare(store.engine(f"sqlite:///{tmp_path / 'chunked.db'}"))
    asked: list[int] = []

    def chunks() -> Any:
        for a in (0, 2, 4):
            asked.append(a)
            yield scores.iloc[a : a + 2].assign(reasons=late.iloc[a : a + 2])

    arrow: list[pa.Table] = []
    store.write_snapshot(
        chunked,
        features,
        store.LateScores(scores, chunks, each=arrow.append),
        {"as_of": datetime(2025, 1, 31)},
    )
    assert asked == [0, 2, 4] and [t.num_rows for t in arrow] == [2, 2, 1]
    got, want = dump(chunked), dump(whole)
    assert got == want
    assert got["feature_snapshot"]["recency_days"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    paid = store.read_scores(chunked)["paid"]
    assert paid.dtype == np.float64 and paid.fillna(-1.0).tolist() == [-1.0, -1.0, 2.5, -1.0, 1.0]  # not text
    assert pa.concat_tables(arrow).column("paid").to_pylist() == [None, None, 2.5, None, 1.0]
    assert store.read_scores(chunked)["reasons"].tolist() == late.tolist()
    history = got["score_history"]
    assert [(r[0], r[2], r[5], r[6]) for r in history] == [
        ("c0", 0.1, "gold", "7"),
        ("c1", 0.2, None, "7"),
        ("c2", 0.3, "silver", "7"),
        ("c3", 0.4, "gold", "7"),
        ("c4", 0.5, "bronze", "7"),
    ]
    with pytest.raises(ValueError, match="no score rows came"):
        store.write_snapshot(
            chunked, features, store.LateScores(scores, lambda: iter([])), {"as_of": "2025-02-28"}
        )


def test_a_batch_engine_gives_each_sqlite_connection_its_larger_page_cache(tmp_path: Path) -> None:
    """`store.engine(url, cache_mib)` sets every new connection's page cache (a batch run's inserts into
    indexed tables); without it SQLite keeps its own 2 MiB."""
    url = f"sqlite:///{tmp_path / 'diamond.db'}"
    plain = store.prepare(store.engine(url))
    batch = store.prepare(store.engine(url, store.BATCH_CACHE_MIB))
    for eng, pages in ((plain, -2000), (batch, -store.BATCH_CACHE_MIB * 1024)):
        with eng.connect() as first, eng.connect() as second:  # two connections of the pool: each set
            for con in (first, second):
                assert con.exec_driver_sql("PRAGMA cache_size").scalar() == pages
    plain.dispose()
    batch.dispose()
