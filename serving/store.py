"""The embedded store (SQLite by default, any SQLAlchemy URL in production): the latest feature snapshot and
score table that batch scoring writes and the service reads, each customer's last few events as of that run,
a compact score history (one row per customer per run, for the dashboard's charts) and a log of runs.

A batch run writes its tables under new names and swaps them in with one transaction, so readers see
either the previous snapshot or the new one, never half of one; a failed run leaves the previous intact.
The score history rows of the run are written in the same transaction (re-running an as_of replaces them).

The store's fixed tables are declared in serving.schema and migrated with Alembic (serving/migrations).
`prepare` is every command's way in: it creates a new store at the head revision and refuses one at another
revision, which `upgrade` (`diamond db upgrade`) migrates in place, in one transaction.

Two stores are supported and tested alike: a SQLite file (the default; in WAL mode, so readers never wait
for a writer, and writers wait for one another up to a busy timeout) and PostgreSQL (`postgresql+psycopg://…`).
One batch run at a time per store: `score_lock` (a file lock beside a SQLite file, an advisory lock on
PostgreSQL).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from core import locks
from core.clock import utc_naive, utc_now
from features.history import History
from serving import bulk, schema
from serving.schema import score_history_table, score_runs_table

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy.pool import ConnectionPoolEntry

FEATURES, SCORES, EVENTS = schema.SNAPSHOT_TABLES
RUNS = score_runs_table.name
RECENT_EVENTS = 10  # events kept per customer for the dashboard
PACKED_BATCH_ROWS = 50_000  # customers whose recent events are ranked and packed at a time
EVENT_PART_ROWS = 250  # customers per part of the recent events (`packed_event_batches`)
EVENT_PART_COLUMNS = ["part", "first_key", "last_key", "customers", "n_events", "batch"]
PACKED_EVENTS_PER_PASS = 2_000_000  # history events per pass of the recent events' top-n aggregate
FEATURE_PART_ROWS = 50_000  # customers per part of the packed feature snapshot (`pack_features`)
SCORE_PART_ROWS = 1_000  # customers per part of the packed score snapshot (`_ScoreParts`)
HISTORY_COLUMNS = [
    "customer_id",
    "as_of",
    "churn_probability",
    "predicted_value",
    "value_at_risk",
    "tier",
    "model_version",
]
RUN_COLUMNS = ("as_of", "model_version", "customers", "parquet")
NEW, BEFORE_MIGRATIONS = "new", "before migrations"
"""`revision` of an empty store, and of a store written by a release before migrations (tables, no
alembic_version)."""
MIGRATIONS = Path(__file__).with_name("migrations")


SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another writer before it fails ("database is locked"); readers never
wait (WAL). `?timeout=SECONDS` in the store URL overrides it."""
SCORE_LOCK_KEY = 0x4449414D  # "DIAM": the PostgreSQL advisory lock a batch run holds on its store
MIGRATION_LOCK_KEY = 0x4449414E  # the one a migration holds for its transaction


class StoreRevisionError(ValueError):
    """The store is at another schema revision than this release's (a ValueError: commands report it as bad
    input, exit code 2)."""


class StoreBusy(ValueError):
    """Another batch run holds the store's score lock (a ValueError: `diamond score` exits 2 saying who)."""


def engine(url: str, cache_mib: int | None = None) -> sa.Engine:
    """An engine on the store at `url`. SQLite: the file's folder is created on first use, and writers wait
    SQLITE_BUSY_TIMEOUT_S for one another (`prepare` puts the file in WAL mode, so readers never wait);
    `cache_mib`: each connection's page cache (None: SQLite's 2 MiB; a batch run takes BATCH_CACHE_MIB).
    PostgreSQL: pooled connections are checked before use, so a restarted server costs no failed request."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)  # a file: URI names its own
    eng = sa.create_engine(parsed, connect_args=_sqlite_connect_args(parsed))
    if cache_mib is not None:
        pages = -int(cache_mib) * 1024  # negative: KiB

        @sa.event.listens_for(eng, "connect")
        def _cache(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA cache_size = {pages}")

    return eng


# a batch run's page cache per SQLite connection: its inserts into indexed tables in an order of their own
# (new alerts by priority, outcomes) touch index pages all over; in SQLite's 2 MiB they were read back from
# the file again and again (197k new alerts: 2.7-3.1 s against 1.8-2.0 s in 64 MiB)
BATCH_CACHE_MIB = 64


def _sqlite_connect_args(url: sa.URL) -> dict[str, Any]:
    return {} if "timeout" in url.query else {"timeout": SQLITE_BUSY_TIMEOUT_S}


def _use_wal(eng: sa.Engine) -> None:
    """Put a SQLite file in WAL mode (the file keeps it): readers see the last committed snapshot while a
    writer writes the next, instead of waiting for it. Only ever done to a store at this release's revision:
    a store `prepare` refuses is left exactly as it is."""
    database = eng.url.database
    if not is_sqlite(eng) or not database or database == ":memory:" or database.startswith("file:"):
        return  # a file: URI (e.g. mode=ro) is opened as given
    # the switch needs the file to itself, and SQLite answers "database is locked" at once (no busy wait)
    # while another connection reads it, e.g. a concurrent first user: retry within the busy timeout
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            with eng.connect() as con:
                if con.exec_driver_sql("PRAGMA journal_mode").scalar() != "wal":
                    con.exec_driver_sql("PRAGMA journal_mode=WAL")
            return
        except sa.exc.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def is_sqlite(eng: sa.Engine) -> bool:
    return eng.dialect.name == "sqlite"


# --- one batch run at a time --------------------------------------------------------------------------------


@contextmanager
def score_lock(eng: sa.Engine) -> Iterator[None]:
    """Hold the store's score lock for the block, or raise StoreBusy at once naming the holder. SQLite: an
    flock on `<store>.score.lock` beside the file (the holder's pid, host and start in it); PostgreSQL: a
    session advisory lock on a connection of its own (the holder is read from pg_stat_activity); another
    store (in memory): no lock."""
    if eng.dialect.name == "postgresql":
        with _advisory_lock(eng, locks.me()):
            yield
        return
    database = eng.url.database
    if not is_sqlite(eng) or not database or database == ":memory:":
        yield
        return
    try:
        with locks.exclusive(f"{database}.score.lock"):  # Held comes from entering only: the body
            yield  # converts its own locks' Held into their errors
    except locks.Held as held:
        raise StoreBusy(_busy(eng, held.holder)) from None


@contextmanager
def _advisory_lock(eng: sa.Engine, me: str) -> Iterator[None]:
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as con:
        named = sa.text("SELECT set_config('application_name', :me, false)")
        con.execute(named, {"me": f"diamond score {me}"})
        if not con.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": SCORE_LOCK_KEY}).scalar():
            holder = con.execute(
                sa.text(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = :k "
                    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"k": SCORE_LOCK_KEY},
            ).scalar()
            raise StoreBusy(_busy(eng, str(holder or "holder unknown").removeprefix("diamond score ")))
        try:
            yield
        finally:
            con.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": SCORE_LOCK_KEY})
            con.execute(sa.text("SELECT set_config('application_name', '', false)"))


def _busy(eng: sa.Engine, holder: str) -> str:
    where = eng.url.render_as_string(hide_password=True)
    return f"another `diamond score` is writing the store {where} ({holder}); nothing done: run again later"


# --- schema revisions ---------------------------------------------------------------------------------------


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration for the store, in code: the migrations that ship in the package, run on
    `connection` (see serving/migrations/env.py)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The schema revision this release writes."""
    found = _script().get_current_head()
    assert found is not None
    return found


def revision(eng: sa.Engine) -> str:
    """The store's schema revision: an Alembic revision id, NEW (no table yet) or BEFORE_MIGRATIONS."""
    with eng.connect() as con:
        return _revision(con)


def prepare(eng: sa.Engine) -> sa.Engine:
    """Every reader's and writer's way into the store: a new store is created at the head revision; a store
    at head passes; any other raises StoreRevisionError, which for an older store says to run
    `diamond db upgrade` (migrating is left to a person: it may take a while and deserves a backup).
    Returns `eng`."""
    current = revision(eng)
    if current == NEW:
        upgrade(eng)  # under the write lock: a concurrent creator's store is found and kept
    elif current != head():
        raise StoreRevisionError(mismatch(eng, current))
    else:
        _use_wal(eng)  # a store made before WAL
    return eng


def upgrade(eng: sa.Engine) -> tuple[str, str]:
    """Bring the store to the head revision in one transaction and return (revision before, after): a new
    store is created from serving.schema and stamped; one written before migrations is adopted by revision
    0001 (which creates whatever tables it lacks) and migrated; an older one is migrated. A store at a
    revision this release does not know (a newer Diamond's) raises StoreRevisionError, untouched."""
    with _migrating(eng) as con:
        before = _revision(con)
        config = alembic_config(con)
        if before == NEW:
            schema.metadata.create_all(con)
            command.stamp(config, "head")
        elif before == BEFORE_MIGRATIONS or _known(before):
            command.upgrade(config, "head")
        else:
            raise StoreRevisionError(mismatch(eng, before))
    _use_wal(eng)
    return before, head()


def _revision(con: sa.Connection) -> str:
    current = MigrationContext.configure(con).get_current_revision()
    if current is not None:
        return current
    ours = [
        t
        for t in sa.inspect(con).get_table_names()
        if t in schema.metadata.tables or schema.is_snapshot_table(t)
    ]
    return BEFORE_MIGRATIONS if ours else NEW


def _known(rev: str) -> bool:
    return rev in {s.revision for s in _script().walk_revisions()}


def mismatch(eng: sa.Engine, current: str) -> str:
    """What is wrong with a store at revision `current` (not head, not NEW), and what to do about it."""
    where = f"the store {eng.url.render_as_string(hide_password=True)}"
    if current == BEFORE_MIGRATIONS:
        was = f"{where} was written by a release before schema migrations"
    elif _known(current):
        was = f"{where} is at schema revision {current}"
    else:
        return (
            f"{where} is at schema revision {current}, which this release does not know (its newest is "
            f"{head()}): it was written by a newer Diamond"
        )
    return f"{was}; this release needs revision {head()}: back it up and run `diamond db upgrade`"


SQLITE_PAGE_BYTES = 16384
"""The page size of a new SQLite store (SQLite's default is 4096). A batch run writes rows of about 750 bytes
(the score snapshot with its reasons) by the hundred thousand: in 16 KiB pages the score rows' insert, their
copy into the score history, the index and the commit took 4.7-5.8 s against 6.7-10.9 s in 4 KiB pages
(883,628 rows, alternating runs), while a small commit costs the same (a webhook claimed and marked delivered,
two commits: 0.66-0.86 ms in 4 KiB pages, 0.70-0.72 ms in 16 KiB). A store made with another size keeps it
(SQLite fixes it at creation)."""


@contextmanager
def _migrating(eng: sa.Engine) -> Iterator[sa.Connection]:
    """One connection in one transaction for a whole migration; a concurrent upgrader waits, then finds the
    store at head. On PostgreSQL the transaction holds an advisory lock. On a SQLite file it is taken with
    BEGIN IMMEDIATE on a connection of its own: pysqlite would otherwise commit each DDL statement by
    itself."""
    if eng.dialect.name != "sqlite" or eng.url.database in (None, "", ":memory:"):
        with eng.begin() as con:
            if eng.dialect.name == "postgresql":  # concurrent first users wait here, then find it at head
                con.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            yield con
        return
    locked = sa.create_engine(eng.url, poolclass=sa.pool.NullPool, connect_args=_sqlite_connect_args(eng.url))

    @sa.event.listens_for(locked, "connect")
    def _driver_leaves_transactions_to_us(
        dbapi_con: sqlite3.Connection, _record: ConnectionPoolEntry
    ) -> None:
        dbapi_con.isolation_level = None
        # the page size of a file this migration creates; a store made before keeps its own
        dbapi_con.execute(f"PRAGMA page_size = {SQLITE_PAGE_BYTES}")

    @sa.event.listens_for(locked, "begin")
    def _begin_immediate(con: sa.Connection) -> None:
        con.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with locked.begin() as con:
            yield con
    finally:
        locked.dispose()


# --- snapshots ----------------------------------------------------------------------------------------------


class Staged:
    """`write_snapshot`'s `events` when the recent events were written beforehand by `stage_events`."""


STAGED = Staged()


def can_stage(eng: sa.Engine) -> bool:
    """Whether `stage_events` may run in a thread beside a run's reads and before its other writes:
    PostgreSQL, or a SQLite file (`prepare` puts it in WAL mode: readers never wait for the writer)."""
    if eng.dialect.name == "postgresql":
        return True
    database = eng.url.database
    in_file = bool(database) and database != ":memory:" and not str(database).startswith("file:")
    return is_sqlite(eng) and in_file


def stage_events(eng: sa.Engine, frames: Iterable[pd.DataFrame], stop: threading.Event | None = None) -> None:
    """Write the recent events of the snapshot about to be written (`packed_event_batches` frames) into
    their new table, `recent_events__new`, in one transaction of their own; `write_snapshot(...,
    events=STAGED)` then swaps it in with the other tables, in its own. Readers never see the new table
    (they read `recent_events`); it replaces any left by an earlier run. Batch scoring stages them in a
    thread while DuckDB computes the feature rows (serving.batch). Setting `stop` rolls the transaction
    back at the next frame (raising StagingStopped): nothing is left written; `drop_staged` removes a
    staged table no snapshot took."""
    with _log_copied_behind(eng) as con:
        made: sa.Table | None = None
        for frame in frames:
            if stop is not None and stop.is_set():
                raise StagingStopped("the run stopped: its recent events were not kept")
            if made is None:
                made = _new_packed(con, EVENTS)
            bulk.insert_frame(con, made, frame)
        if made is None:
            raise ValueError("no frame of recent events to stage (packed_event_batches gives at least one)")


class StagingStopped(RuntimeError):
    """`stage_events` was told to stop: its transaction rolled back."""


def drop_staged(eng: sa.Engine) -> None:
    """Remove staged recent events that no snapshot took (the run failed after staging them)."""
    with eng.begin() as con:
        con.execute(sa.text(f"DROP TABLE IF EXISTS {EVENTS}__new"))


def snapshot_index(con: sa.Connection, table: str, name: str) -> str:
    """The CREATE INDEX statement of snapshot table `name` (held as `table`: its `__new` or `__prev` name
    too): unique per customer; per part of a packed feature snapshot; by first customer of the recent
    events' parts (`recent_events` looks a customer's part up by it); per event for the recent events of a
    release before packing several rows per customer. Index names are global: the one snapshot in use has
    it."""
    columns = {c["name"] for c in sa.inspect(con).get_columns(table)}
    key = "first_key" if "first_key" in columns else "part" if "batch" in columns else "customer_id"
    kind = "INDEX" if name == EVENTS and not {"events", "batch"} & columns else "UNIQUE INDEX"
    return f"CREATE {kind} ix_{name}_id ON {table} ({key})"


def pack_features(frame: pd.DataFrame, rows: int = FEATURE_PART_ROWS) -> Iterator[dict[str, Any]]:
    """The feature snapshot as the store keeps it: parts of `rows` customers in row order, each an Arrow IPC
    stream (LZ4) with its part number and row count. The service reads the snapshot whole, and a million
    customers' 34 columns inserted row by row were SQLite's B-tree work for seconds; packed, the values come
    back exactly as they went in (NaN as null), times as the store's DATETIME text (what a SQLite snapshot
    of rows gave back)."""
    times = {str(c): bulk.sqlite_datetimes(frame[c]) for c in frame.columns if _is_time(frame[c])}
    table = pa.Table.from_pandas(frame.assign(**times) if times else frame, preserve_index=False)
    for part, start in enumerate(range(0, max(table.num_rows, 1), rows)):
        piece = table.slice(start, rows)
        yield {"part": part, "customers": piece.num_rows, "batch": _ipc(piece)}


class _ScoreParts:
    """The score snapshot as the store keeps it, written as its rows come (`write_snapshot`): parts of
    SCORE_PART_ROWS customers in id order, each an Arrow IPC stream (LZ4) with its first and last customer id
    (UTF-8 bytes: the dashboard reads one customer's part, `read_rows`) and its customers per tier with their
    value at risk (JSON [[tier, customers, value at risk], ...]: `tier_summary` adds them up). Row by row, a
    million customers' 19 columns, reasons in words among them, were SQLite's B-tree work for 5-7 s of
    every run. Every chunk is converted with one schema: the first chunk's columns, typed as in
    `arrow_schema(typed)` (a column `typed` lacks or leaves null, a late one, takes the first chunk's type);
    times are kept as the store's DATETIME text, as in `pack_features`. The rows must come in ascending
    customer id, each id once (ValueError)."""

    def __init__(
        self,
        con: sa.Connection,
        table: sa.Table,
        typed: pd.DataFrame,
        each: Callable[[pa.Table], None] | None,
    ) -> None:
        self.con, self.table, self.each = con, table, each
        self.schema = arrow_schema(typed.assign(customer_id=_text(typed["customer_id"])))
        self.typed = False  # late columns typed from a chunk yet
        self.last: str | None = None
        self.parts = 0

    def write(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        frame = frame.assign(customer_id=_text(frame["customer_id"]))
        if not self.typed:  # the chunk's columns, typed as `typed` has them where it can
            found, known = arrow_schema(frame), {f.name: f for f in self.schema}
            self.schema = pa.schema(
                [
                    known[f.name] if f.name in known and not pa.types.is_null(known[f.name].type) else f
                    for f in found
                ]
            )
            self.typed = True
        chunk = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        ids = chunk.column("customer_id").combine_chunks()
        if ids.null_count or (len(ids) > 1 and not pc.all(pc.less(ids[:-1], ids[1:])).as_py()):
            raise ValueError("score snapshot rows must come in ascending customer_id, each id once")
        first = ids[0].as_py()
        if self.last is not None and first <= self.last:
            raise ValueError(f"score snapshot rows must come in ascending customer_id: {first!r} came late")
        self.last = ids[-1].as_py()
        if self.each is not None:
            self.each(chunk)
        for i, field in enumerate(chunk.schema):
            if pa.types.is_timestamp(field.type):  # the store's DATETIME text, as in `pack_features`
                column = chunk.column(i).to_pandas()
                chunk = chunk.set_column(i, field.name, pa.array(bulk.sqlite_datetimes(column), pa.string()))
        n = chunk.num_rows
        starts = range(0, n, SCORE_PART_ROWS)
        sums = _tier_sums(
            frame["tier"].to_numpy(dtype=object),
            frame["value_at_risk"].to_numpy(dtype=np.float64, na_value=np.nan),
            np.arange(n) // SCORE_PART_ROWS,
        )
        rows = []
        for k, start in enumerate(starts):
            piece = chunk.slice(start, SCORE_PART_ROWS)
            last = min(start + SCORE_PART_ROWS, n) - 1
            rows.append(
                {
                    "part": self.parts + k,
                    "first_key": ids[start].as_py().encode(),
                    "last_key": ids[last].as_py().encode(),
                    "customers": piece.num_rows,
                    "tiers": sums[k],
                    "batch": _ipc(piece),
                }
            )
        self.parts += len(rows)
        self.con.execute(sa.insert(self.table), rows)


def _tier_sums(tiers: np.ndarray, value_at_risk: np.ndarray, part: np.ndarray) -> list[str]:
    """Each part's customers and value at risk per tier (`part`: each row's part, 0, 1, ...), as the JSON
    text `_ScoreParts` keeps: [[tier or null, customers, value at risk], ...], tiers in order of first
    appearance; a missing value at risk counts as none (SQL's SUM)."""
    codes, names = pd.factorize(pd.Series(tiers, dtype=object), use_na_sentinel=False)
    parts, k = int(part.max()) + 1 if len(part) else 0, max(len(names), 1)
    cell = part * k + codes
    counts = np.bincount(cell, minlength=parts * k).reshape(parts, k)
    money = np.bincount(cell, np.nan_to_num(value_at_risk, nan=0.0), minlength=parts * k).reshape(parts, k)
    labels = [None if pd.isna(t) else str(t) for t in names]
    return [
        json.dumps(
            [[labels[j], int(counts[i, j]), float(money[i, j])] for j in range(len(labels)) if counts[i, j]]
        )
        for i in range(parts)
    ]


def arrow_schema(frame: pd.DataFrame) -> pa.Schema:
    """`pa.Schema.from_pandas(frame)` without converting every text to Arrow to learn that it is text:
    pyarrow infers an object column's type by converting the whole column (a million rows' reasons: half a
    gigabyte and seconds, then thrown away). A column of text, missing values aside, is inferred from a
    stand-in of empty strings instead, which gives the same type and the same pandas metadata."""
    stand_in = {
        c: pd.Series(np.full(len(frame), "", dtype=object), index=frame.index, dtype=object)
        for c in frame.columns
        if frame[c].dtype == object and pd.api.types.infer_dtype(frame[c], skipna=True) == "string"
    }
    return pa.Schema.from_pandas(frame.assign(**stand_in) if stand_in else frame, preserve_index=False)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as out:
        out.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _is_time(column: pd.Series) -> bool:
    return pd.api.types.is_datetime64_any_dtype(column.dtype) and getattr(column.dtype, "tz", None) is None


def _unpack(batch: bytes) -> pa.Table:
    return pa.ipc.open_stream(batch).read_all()


def _new_packed(con: sa.Connection, name: str) -> sa.Table:
    """`<name>__new`, empty, for a packed snapshot (`pack_features`; the recent events' parts,
    `packed_event_batches`, and the score snapshot's, `_ScoreParts`, with their customers' range); its
    index comes at the swap."""
    ranged = [
        sa.Column("first_key", sa.LargeBinary, nullable=False),
        sa.Column("last_key", sa.LargeBinary, nullable=False),
    ]
    table = sa.Table(
        f"{name}__new",
        sa.MetaData(),
        sa.Column("part", sa.Integer, nullable=False),
        *(ranged if name in (EVENTS, SCORES) else []),
        sa.Column("customers", sa.Integer, nullable=False),
        *([sa.Column("n_events", sa.Integer, nullable=False)] if name == EVENTS else []),
        *([sa.Column("tiers", sa.Text, nullable=False)] if name == SCORES else []),
        sa.Column("batch", sa.LargeBinary, nullable=False),
    )
    table.drop(con, checkfirst=True)
    table.create(con)
    return table


def _is_packed(con: sa.Connection, table: str) -> bool:
    return "batch" in {c["name"] for c in sa.inspect(con).get_columns(table)}


def read_features(eng: sa.Engine) -> pd.DataFrame:
    """The whole feature snapshot, every column as batch scoring gave it (`pack_features`); a snapshot of a
    release before packing (one row per customer, e.g. restored by a rollback) is read as it is. An empty
    frame before the first batch run."""
    try:
        with eng.connect() as con:
            if not _is_packed(con, FEATURES):
                result = con.execute(sa.text(f"SELECT * FROM {FEATURES}"))
                return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
            found = con.execute(sa.text(f"SELECT batch FROM {FEATURES} ORDER BY part")).scalars().all()
    except sa.exc.NoSuchTableError:
        return pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
    return pa.concat_tables([_unpack(b) for b in found]).to_pandas()


def read_scores(eng: sa.Engine) -> pd.DataFrame:
    """The whole score snapshot, one row per customer in id order, every column as batch scoring gave it
    (`_ScoreParts`); a snapshot of a release before packing (one row per customer) is read as it is."""
    with eng.connect() as con:
        if not _is_packed(con, SCORES):
            result = con.execute(sa.text(f"SELECT * FROM {SCORES}"))
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        found = con.execute(sa.text(f"SELECT batch FROM {SCORES} ORDER BY part")).scalars().all()
    if not found:
        return pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
    return pa.concat_tables([_unpack(b) for b in found]).to_pandas()


def forget_rows(con: sa.Connection, table: str, ids: list[str]) -> int:
    """Remove these customers from a snapshot table (`table`: it, or a checkpoint's `__prev` copy), in the
    caller's transaction; returns the customers removed. A packed one (the feature snapshot's, the score
    snapshot's and the recent events' parts) has the parts holding them rewritten (a score part's sums per
    tier with them)."""
    if not _is_packed(con, table):
        query = sa.text(f"DELETE FROM {table} WHERE customer_id IN :ids")
        return int(con.execute(query.bindparams(sa.bindparam("ids", expanding=True)), {"ids": ids}).rowcount)
    columns = {c["name"] for c in sa.inspect(con).get_columns(table)}
    events, scores = "n_events" in columns, "tiers" in columns
    removed = 0
    wanted = pa.array(ids, pa.string())
    for part, batch in con.execute(sa.text(f"SELECT part, batch FROM {table} ORDER BY part")).all():
        held = _unpack(batch)
        who = held.column("customer_id").cast(pa.string())
        gone = pc.is_in(who, value_set=wanted).fill_null(False)
        if pc.any(gone).as_py():
            kept = held.filter(pc.invert(gone))
            counts = {"n": pc.count_distinct(kept.column("customer_id")).as_py(), "e": kept.num_rows}
            rewrite = f"UPDATE {table} SET batch = :b, customers = :n{', n_events = :e' if events else ''}"
            if scores:  # the part's sums per tier, without them
                rewrite += ", tiers = :t"
                tiers = kept.column("tier").to_numpy(zero_copy_only=False).astype(object)
                money = kept.column("value_at_risk").to_numpy(zero_copy_only=False).astype(np.float64)
                counts["t"] = (
                    _tier_sums(tiers, money, np.zeros(kept.num_rows, dtype=np.int64))[0]
                    if len(tiers)
                    else "[]"
                )
            con.execute(sa.text(f"{rewrite} WHERE part = :p"), {"b": _ipc(kept), "p": part, **counts})
            removed += pc.count_distinct(who.filter(gone)).as_py()
    return removed


def _new_table(con: sa.Connection, name: str, frame: pd.DataFrame, typed: pd.DataFrame) -> sa.Table:
    """`<name>__new`, empty, as pandas would create it for `frame` (column types from `typed`)."""
    new = f"{name}__new"
    frame.iloc[:0].to_sql(new, con, if_exists="replace", index=False, dtype=_sql_types(typed))
    return bulk.table_of(con, new)


@dataclass(frozen=True)
class LateScores:
    """A score snapshot whose rows come late, in chunks (batch scoring writes each chunk's reasons while
    TreeSHAP works on the next): `typed` holds every row and every column but the late ones (the column
    types and the score history's checks come from it), `chunks` gives the rows, in order, when asked."""

    typed: pd.DataFrame
    chunks: Callable[[], Iterable[pd.DataFrame]]
    # called last inside the transaction, after the swap (batch scoring waits there for its Parquet file,
    # written meanwhile by a thread): an error it raises rolls the whole snapshot back
    done: Callable[[], None] | None = None
    # given each chunk as Arrow (`_ScoreParts`' schema, times as they are), in order, as it is packed
    each: Callable[[pa.Table], None] | None = None


def write_snapshot(
    eng: sa.Engine,
    features: pd.DataFrame,
    scores: pd.DataFrame | LateScores,
    run: dict[str, Any],
    events: pd.DataFrame | Iterable[pd.DataFrame] | Staged | None = None,
) -> None:
    """Replace the feature and score snapshots (and the recent events, if given), append the run's score
    history (the score snapshot's HISTORY_COLUMNS, written before its late columns come) and log the run
    (`run`: as_of and optionally model_version, customers, parquet), all in one transaction. `events` may
    come in frames (`packed_event_batches`, one row per customer: the first frame gives the table its
    column types); they are then made in a thread of their own while this one writes the other tables
    (`_Ahead`), and written as they come. The store must be prepared (`prepare`). `events` STAGED: they are
    in `recent_events__new` already (`stage_events`), and only swapped in here. `scores` may come late
    (`LateScores`): its chunks are asked for once the features are written, so that batch scoring makes
    its reasons meanwhile. The score snapshot is kept in parts (`_ScoreParts`)."""
    as_of = _check_history(scores.typed if isinstance(scores, LateScores) else scores)
    unknown = set(run) - set(RUN_COLUMNS)
    if unknown or "as_of" not in run:
        raise ValueError(
            f"a run is logged with as_of and optionally {list(RUN_COLUMNS[1:])}; got {sorted(run)}"
        )
    logged = {**run, "as_of": utc_naive(run["as_of"]), "created_at": utc_now()}
    tables = [FEATURES, SCORES] + ([EVENTS] if events is not None else [])
    frames: Iterable[pd.DataFrame] = (
        []
        if events is None or isinstance(events, Staged)
        else [events]
        if isinstance(events, pd.DataFrame)
        else events
    )
    with _log_copied_behind(eng) as con, _Ahead(frames) as coming:
        made: dict[str, sa.Table] = {}
        if isinstance(events, Staged) and not sa.inspect(con).has_table(f"{EVENTS}__new"):
            raise ValueError(f"no staged recent events ({EVENTS}__new): stage them first (stage_events)")

        def write(name: str, frame: pd.DataFrame, whole: pd.DataFrame | None = None) -> None:
            if name not in made and name == EVENTS and "batch" in frame.columns:
                made[name] = _new_packed(con, EVENTS)  # the recent events' parts (packed_event_batches)
            if name not in made:  # the table as pandas would create it (column types from the whole frame)
                made[name] = _new_table(con, name, frame, frame if whole is None else whole)
            bulk.insert_frame(con, made[name], frame)

        made[FEATURES] = _new_packed(con, FEATURES)
        for part in pack_features(features):
            con.execute(sa.insert(made[FEATURES]).values(**part))
            for frame in coming.ready():
                write(EVENTS, frame)
        typed = scores.typed if isinstance(scores, LateScores) else scores
        each = scores.each if isinstance(scores, LateScores) else None
        # the history's numbers are known before the late columns come: written first
        _append_history(con, typed, as_of)
        parts = _ScoreParts(con, _new_packed(con, SCORES), typed, each)
        made[SCORES] = parts.table
        if isinstance(scores, LateScores):
            came = False
            for frame in scores.chunks():
                parts.write(frame)
                came = True
                for ready in coming.ready():
                    write(EVENTS, ready)
            if not came:
                raise ValueError("no score rows came: a snapshot needs its scores")
        else:
            ids = _text(scores["customer_id"]).to_numpy(dtype=object)
            parts.write(scores.iloc[np.argsort(ids, kind="stable")] if len(scores) else scores)
        for frame in coming:
            write(EVENTS, frame)
        con.execute(sa.insert(score_runs_table).values(**logged))
        # the swap comes last: on PostgreSQL, DROP locks the old table, and its readers wait for the commit
        keep = _keeps_snapshot(con, logged["as_of"])
        replaced = set(tables)
        for name in schema.SNAPSHOT_TABLES:  # one this write leaves as it is: the checkpoint keeps a copy
            if keep and name not in replaced and sa.inspect(con).has_table(name):
                con.execute(sa.text(f"DROP TABLE IF EXISTS {name}__prev"))
                con.execute(sa.text(f"CREATE TABLE {name}__prev AS SELECT * FROM {name}"))
        for name in tables:
            if keep:  # the run's checkpoint keeps the snapshot it replaces (serving.runs)
                con.execute(sa.text(f"DROP TABLE IF EXISTS {name}__prev"))
                if sa.inspect(con).has_table(name):
                    con.execute(sa.text(f"DROP INDEX IF EXISTS ix_{name}_id"))  # index names are global
                    con.execute(sa.text(f"ALTER TABLE {name} RENAME TO {name}__prev"))
            else:
                con.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))  # its index goes with it
            con.execute(sa.text(snapshot_index(con, f"{name}__new", name)))
            con.execute(sa.text(f"ALTER TABLE {name}__new RENAME TO {name}"))
        if isinstance(scores, LateScores) and scores.done is not None:
            scores.done()


WAL_AUTOCHECKPOINT = 1000  # SQLite's default: a commit past 1000 pages of log copies it into the file
_BEHIND: list[threading.Thread] = []


@contextmanager
def _log_copied_behind(eng: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction (`eng.begin()`) whose commit, on a SQLite file in WAL mode, does not also copy the
    write-ahead log into the file (SQLite's automatic checkpoint, by the committing connection: a snapshot
    of a million customers is two gigabytes copied and synced, seconds); a thread of its own does it after
    the commit (`settle` waits for it), while the run goes on. Readers read the log meanwhile, as they do
    before any checkpoint; the commit is as durable either way."""
    behind = is_sqlite(eng) and eng.url.database not in (None, "", ":memory:")
    with eng.connect() as con:
        raw: Any = con.connection.dbapi_connection  # a connection setting, outside any transaction
        if behind:
            raw.execute("PRAGMA wal_autocheckpoint=0")
        try:
            with con.begin():
                yield con
        finally:
            if behind:
                try:
                    raw.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
                except Exception:  # whatever it was, the connection is not reused
                    con.invalidate()  # never back in the pool without its automatic checkpoints
    if behind:
        thread = threading.Thread(target=_checkpoint, args=(eng,), name="diamond-wal-checkpoint", daemon=True)
        thread.start()
        _BEHIND.append(thread)


def _checkpoint(eng: sa.Engine) -> None:
    """Copy what the write-ahead log holds into the SQLite file, as far as no reader needs the log
    (PASSIVE: waits for no one). A failure (a full disk) is left for the next commit's checkpoint to meet:
    the log keeps every committed page until a checkpoint succeeds."""
    with suppress(sa.exc.DBAPIError), eng.connect() as con:
        con.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def settle() -> None:
    """Wait for the write-ahead log copies `write_snapshot` left running (`_log_copied_behind`)."""
    while _BEHIND:
        _BEHIND.pop().join()


class _Ahead:
    """The frames of `frames`, made in a thread of their own at most `depth` ahead of their reader: the
    recent events are ranked and packed in DuckDB (which lets go of the GIL) while the snapshot's other
    tables are written, instead of after them. `ready()` gives the frames made so far without waiting;
    iterating gives the rest, waiting for each. An error in the thread is raised in the reader; leaving
    the block (normally or by an error) stops the thread after its current frame, and closes `frames` in
    it (a generator's DuckDB connections are closed where they were opened)."""

    def __init__(self, frames: Iterable[pd.DataFrame], depth: int = 2) -> None:
        self._frames = frames
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._make, name="diamond-recent-events", daemon=True)

    def __enter__(self) -> _Ahead:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with suppress(queue.Empty):  # unblock a thread waiting to hand over a frame
                self._queue.get(timeout=0.05)
        self._thread.join()

    def _make(self) -> None:
        frames = iter(self._frames)
        try:
            for frame in frames:
                if not self._hand(("frame", frame)):
                    return
            self._hand(("end", None))
        except BaseException as exc:  # handed to the reader, who raises it
            self._hand(("error", exc))
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
            self._frames = ()  # the last reference to a wrapped generator goes here: it is closed here

    def _hand(self, item: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _take(self, wait: bool) -> pd.DataFrame | None:
        if self._finished:
            return None
        try:
            kind, item = self._queue.get(block=wait)
        except queue.Empty:
            return None
        if kind == "error":
            self._finished = True
            raise item
        if kind == "end":
            self._finished = True
            return None
        return item

    def ready(self) -> list[pd.DataFrame]:
        found = []
        while (frame := self._take(wait=False)) is not None:
            found.append(frame)
        return found

    def __iter__(self) -> Iterator[pd.DataFrame]:
        while (frame := self._take(wait=True)) is not None:
            yield frame


def _keeps_snapshot(con: sa.Connection, as_of: datetime) -> bool:
    """Whether this write is the first snapshot of the run the checkpoint was taken for (serving.runs): then
    the snapshot it replaces is renamed to <name>__prev rather than dropped, and the checkpoint says so. A
    re-run of that as_of (the checkpoint already kept the one from before) and a run without a checkpoint
    drop it."""
    t = schema.run_checkpoint_table
    kept = con.execute(sa.select(t.c.as_of, t.c.snapshot_kept)).first()
    if kept is None or kept.as_of != as_of or kept.snapshot_kept:
        return False
    con.execute(sa.update(t).values(snapshot_kept=True))
    return True


def _sql_types(frame: pd.DataFrame) -> dict[str, Any]:
    """The SQL type `to_sql` would give each object column from all its values (an empty frame leaves it
    nothing to infer from, and every such column would become TEXT). Typed columns keep their dtype when
    emptied, so pandas infers them the same either way."""
    found = {}
    for col in frame.columns:
        if frame[col].dtype == object:
            kind = pd.api.types.infer_dtype(frame[col], skipna=True)
            sql = _INFERRED.get(kind)
            if sql is not None:
                found[str(col)] = sql
    return found


_INFERRED: dict[str, Any] = {
    "floating": sa.Float(precision=53),
    "integer": sa.BigInteger(),
    "boolean": sa.Boolean(),
    "datetime": sa.DateTime(),
    "datetime64": sa.DateTime(),
    "date": sa.Date(),
}
"""pandas' own choices (pandas.io.sql) for object columns that hold numbers, booleans or times."""


def _check_history(scores: pd.DataFrame) -> datetime | None:
    """The one as_of of a score snapshot's rows (naive UTC; None: no rows), refusing scores that lack a
    score history column or hold several as_of."""
    missing = set(HISTORY_COLUMNS) - set(scores.columns)
    if missing:
        raise ValueError(f"scores lack column(s) {sorted(missing)} for the score history")
    found = {utc_naive(a) for a in scores["as_of"].unique()}
    if len(found) > 1:
        raise ValueError(f"scores hold {len(found)} as_of values; a snapshot is of one run")
    return next(iter(found), None)


def _append_history(con: sa.Connection, scores: pd.DataFrame, as_of: datetime | None) -> None:
    """The score history's rows of this as_of (a re-run replaces them): HISTORY_COLUMNS of the score
    snapshot's rows, ids and model versions as text."""
    t = score_history_table
    if as_of is None:
        return
    con.execute(sa.delete(t).where(t.c.as_of == as_of))
    rows = scores[HISTORY_COLUMNS].assign(
        customer_id=_text(scores["customer_id"]), as_of=as_of, model_version=_text(scores["model_version"])
    )
    bulk.insert_frame(con, t, rows)


def _text(column: pd.Series) -> pd.Series:
    """Python texts, None for missing (ids and versions given as numbers become their text)."""
    values = column.astype(object)
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return values.where(values.notna(), None)
    return values.map(lambda v: None if pd.isna(v) else str(v))


def packed_event_batches(
    history: History,
    n: int = RECENT_EVENTS,
    rows: int = PACKED_BATCH_ROWS,
    threads: int | None = None,
    keep: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    part_rows: int = EVENT_PART_ROWS,
) -> Iterator[pd.DataFrame]:
    """What the store keeps as recent events (`write_snapshot`): each customer's last `n` events, newest
    first, in parts of `part_rows` customers in id order (`EVENT_PART_COLUMNS`: the part's number, its first
    and last customer id as UTF-8 bytes, its customers and events, and `batch`: an Arrow IPC stream, LZ4,
    of the events' rows, customer_id and EVENT_COLUMNS; `unpack_event_part` reads one). The dashboard
    reads one customer's part (`recent_events`): a million customers' events were a million JSON texts,
    made and inserted in seconds, where 4,000 parts are written in a fraction. In frames of the parts
    of at most `rows` customers (at least one frame, maybe empty), in customer order. `keep`: which
    customers to keep, as `erasure.eraser` gives it (a frame of customer_id in, the kept rows out).

    Lean on purpose: one top-n aggregate (DuckDB's arg_max) keeps each customer's `n` largest event keys
    (time, then kind, then table order, in one integer: `_event_order_key`) as 64-bit event ids, so no
    sort of the whole history and its state bounded (a pass per PACKED_EVENTS_PER_PASS events, each over a
    range of the customers); each frame's events are then taken from the history's tables by position
    and only they get their detail text. Customers are numbered once, in id order (`_customer_codes`): a
    pass then picks its range by a number, not by hashing every event's id text again (at a million
    customers, a pass per two million of 25 million events hashed them all thirteen times). `threads`:
    DuckDB threads per connection (None: DuckDB's default, every core)."""
    con, packer = duckdb.connect(), duckdb.connect()  # the packer's queries run while the top-n streams
    numbered = count()
    try:
        if threads is not None:
            for c in (con, packer):
                c.execute(f"SET threads = {int(threads)}")
        sources = {source: (table, amount, shown) for source, table, amount, shown in _event_sources(history)}
        names, codes = _customer_codes({s: table for s, (table, _, _) in sources.items()})
        keys = []
        for source, (table, _, _) in sources.items():
            seq = pa.array(np.arange(table.num_rows, dtype=np.int64))
            con.register(
                f"keys_{source}",
                pa.table({"c": codes[source], "timestamp": table.column("timestamp"), "seq": seq}),
            )
            keys.append(f"SELECT c, timestamp, {source} AS source, seq FROM keys_{source}")
        empty = True
        if keys:
            key = _event_order_key(
                con, " UNION ALL ".join(keys), max(t.num_rows for t, _, _ in sources.values())
            )
            # in passes over a range of the customers each, so that the aggregate's state stays bounded
            # whatever the history's size; customers in id order
            events = sum(table.num_rows for table, _, _ in sources.values())
            passes = max(1, -(-events // PACKED_EVENTS_PER_PASS))
            for part in range(passes):
                lo, hi = part * len(names) // passes, (part + 1) * len(names) // passes
                top = (
                    f"SELECT c, arg_max(source * {1 << _SEQ_BITS} + seq, {key}, {int(n)}) AS ids "
                    f"FROM ({' UNION ALL '.join(keys)}) WHERE c >= {lo} AND c < {hi} GROUP BY c ORDER BY c"
                )
                for batch in con.sql(top).to_arrow_reader(rows):
                    ids = names.take(batch.column("c"))
                    if keep is not None:
                        kept = keep(pd.DataFrame({"customer_id": ids.to_pandas()}))
                        if len(kept) < len(ids):
                            mask = pc.is_in(ids, value_set=pa.array(kept["customer_id"], pa.string()))
                            batch, ids = batch.filter(mask), ids.filter(mask)
                    empty = False
                    yield _event_parts(_pack(packer, sources, ids, batch.column("ids")), numbered, part_rows)
        if empty:
            yield pd.DataFrame({c: [] for c in EVENT_PART_COLUMNS})
    finally:
        con.close()
        packer.close()


def _event_order_key(con: duckdb.DuckDBPyConnection, events: str, rows: int) -> str:
    """SQL of each event's order key in `events` (c, timestamp, source, seq; the longest table has `rows`
    rows): a larger key is listed first: the later time; at the same time, the kind in name order
    (cancellation, interaction, purchase: the larger source); then the earlier row of its table. One
    64-bit integer when the times, counted in their coarsest whole unit (second, millisecond or microsecond)
    from the earliest, leave room for the kind and the row (a real history: seconds, a few years: 27 bits of
    time, 25 of row); else a 128-bit one. Both order every event alike; the top-n aggregate takes a million
    customers' ten latest of 25M events in 1.3 s with the first, 4.6 s with the second."""
    low, high, seconds, millis = con.sql(
        "SELECT min(epoch_us(timestamp)), max(epoch_us(timestamp)), "
        "bool_and(epoch_us(timestamp) % 1000000 = 0), bool_and(epoch_us(timestamp) % 1000 = 0) "
        f"FROM ({events})"
    ).fetchall()[0]
    seq_bits = max(int(rows - 1).bit_length(), 1)
    if low is not None:
        unit = 1_000_000 if seconds else 1000 if millis else 1
        time_bits = ((high - low) // unit).bit_length()
        if time_bits + 2 + seq_bits <= COMPACT_KEY_BITS:
            return (
                f"((epoch_us(timestamp) - ({low})) // {unit}) * {1 << (2 + seq_bits)} "
                f"+ source * {1 << seq_bits} + ({(1 << seq_bits) - 1} - seq)"
            )
    return (
        f"CAST(epoch_us(timestamp) AS HUGEINT) * {1 << 40} + source * {1 << _SEQ_BITS} + ({_SEQ_MASK} - seq)"
    )


COMPACT_KEY_BITS = 62  # an event order key in a BIGINT: time, kind and row in at most this many bits


def _customer_codes(tables: dict[int, pa.Table]) -> tuple[pa.Array, dict[int, pa.Array]]:
    """Every customer id of the event tables as text, sorted (each once), and each table's rows as
    positions in it (int32): each table's ids are hashed once, into a dictionary of its own."""
    encoded = {
        s: pc.dictionary_encode(table.column("customer_id")).combine_chunks() for s, table in tables.items()
    }
    words = {s: pc.cast(d.dictionary, pa.string()) for s, d in encoded.items()}
    found = pc.unique(pa.concat_arrays(list(words.values()))) if words else pa.array([], pa.string())
    names = found.take(pc.sort_indices(found))
    codes = {
        s: pc.index_in(words[s], value_set=names).cast(pa.int32()).take(d.indices) for s, d in encoded.items()
    }
    return names, codes


_SEQ_BITS = 38  # an event id: source * 2**38 + its row in that table
_SEQ_MASK = (1 << _SEQ_BITS) - 1


def _pack(
    con: duckdb.DuckDBPyConnection,
    sources: dict[int, tuple[pa.Table, str | None, tuple[str, ...]]],
    customers: pa.Array,
    ids: pa.ListArray,
) -> tuple[pa.Table, np.ndarray]:
    """The events of one frame's top-n event ids (`ids`, a list per customer of `customers`) as rows:
    customer_id and EVENT_COLUMNS, each customer's newest first; and where each customer's rows start
    (the list offsets, one more than the customers)."""
    offsets = ids.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]  # a frame may be a slice of a longer list array
    flat = pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    source, seq = flat >> _SEQ_BITS, flat & _SEQ_MASK
    parts, where = [], []
    for s, (table, amount, shown) in sources.items():
        at = np.flatnonzero(source == s)
        if not len(at):
            continue
        needed = ["timestamp", *(c for c in (amount, *shown) if c and c in table.column_names)]
        rows, order = _take(table.select(needed), seq[at])
        con.register("taken", rows)
        value = f"CAST({amount} AS DOUBLE)" if amount and amount in table.column_names else "NULL::DOUBLE"
        extra = [_detail_part(c) if c in shown and c in table.column_names else "NULL" for c in _DETAIL_PARTS]
        parts.append(
            con.sql(
                f"SELECT CAST(timestamp AS TIMESTAMP) AS timestamp, '{_EVENT_KINDS[s]}' AS kind, "
                f"{value} AS amount, concat_ws(', ', {', '.join(extra)}) AS detail FROM taken"
            ).to_arrow_table()
        )
        con.unregister("taken")
        where.append(at[order])  # the taken rows' places among the frame's events
    if not parts:
        events = pa.schema(list(_EVENT_ROWS)[1:]).empty_table()
    else:
        placed = np.concatenate(where)
        back = np.empty(len(placed), dtype=np.int64)
        back[placed] = np.arange(len(placed))  # the frame's k-th event is the concatenation's back[k]-th
        events = pa.concat_tables(parts).combine_chunks().take(pa.array(back))
    owner = pc.list_parent_indices(ids)
    return events.add_column(0, "customer_id", customers.take(owner)), offsets


def _detail_part(column: str) -> str:
    """One column's words in an event's detail text (DuckDB SQL over the taken rows)."""
    if column == "order_id":
        return "'order ' || CAST(order_id AS VARCHAR)"
    if column == "quantity":  # a whole number without its '.0': the regular expression only where needed
        text = "CAST(quantity AS VARCHAR)"
        return (
            f"'quantity ' || CASE WHEN suffix({text}, '.0') AND NOT suffix({text}, '.00') "
            f"THEN left({text}, length({text}) - 2) ELSE regexp_replace({text}, '\\.0+$', '') END"
        )
    return f"CAST({column} AS VARCHAR)"


def _event_parts(frame: tuple[pa.Table, np.ndarray], numbered: Iterator[int], part_rows: int) -> pd.DataFrame:
    """One frame's events (`_pack`) as parts of `part_rows` customers: EVENT_PART_COLUMNS, a row a part."""
    events, offsets = frame
    customers = len(offsets) - 1
    rows = []
    for a in range(0, customers, part_rows):
        b = min(a + part_rows, customers)
        piece = events.slice(int(offsets[a]), int(offsets[b] - offsets[a]))
        first, last = (events.column("customer_id")[int(offsets[i])].as_py() for i in (a, b - 1))
        rows.append((next(numbered), first.encode(), last.encode(), b - a, piece.num_rows, _ipc(piece)))
    return pd.DataFrame(rows, columns=EVENT_PART_COLUMNS)


def _take(table: pa.Table, rows: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """The rows at positions `rows` of `table`, in ascending position, and which of `rows` each is (taken
    row k is rows[order[k]]). Chunk by chunk: pyarrow's `take` on a table of many chunks first
    concatenates every column whole, and a frame of a million customers' recent events was a copy of the
    whole history's columns each time."""
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]
    parts, start = [], 0
    for batch in table.to_batches():
        end = start + batch.num_rows
        lo, hi = np.searchsorted(wanted, [start, end], side="left")
        if hi > lo:
            parts.append(batch.take(pa.array(wanted[lo:hi] - start)))
        start = end
    return pa.Table.from_batches(parts, schema=table.schema), order


_DETAIL_PARTS = ("category", "channel", "order_id", "quantity", "type")  # what details are made of, as text
_EVENT_KINDS = ("purchase", "interaction", "cancellation")  # by source: 0, 1, 2


def _event_sources(history: History) -> Iterator[tuple[int, pa.Table, str | None, tuple[str, ...]]]:
    """(source, table, amount column, detail columns) of each kind of event the history has."""
    for source, (name, amount, shown) in enumerate(
        (
            ("transactions", "amount", _DETAIL_PARTS[:4]),
            ("interactions", "value", _DETAIL_PARTS[4:]),
            ("cancellations", None, ()),
        )
    ):
        table = getattr(history, name)
        if table is not None:
            yield source, table, amount, shown


_EVENT_TIME = (
    "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's SQLite DATETIME text, as the JSON of a release before kept it
)
EVENT_COLUMNS = ["timestamp", "kind", "amount", "detail"]
_EVENT_ROWS = pa.schema(  # a part's rows (`packed_event_batches`)
    [("customer_id", pa.string()), ("timestamp", pa.timestamp("us")), ("kind", pa.string()),
     ("amount", pa.float64()), ("detail", pa.string())]
)  # fmt: skip


def unpack_event_part(batch: bytes) -> pd.DataFrame:
    """One part of the store's recent events (`packed_event_batches`): customer_id and EVENT_COLUMNS, each
    customer's events newest first, times as naive Timestamps."""
    return _unpack(batch).to_pandas()


def unpack_events(packed: str | None) -> pd.DataFrame:
    """One customer's recent events from the JSON text a release before the parts kept (one row per
    customer): EVENT_COLUMNS, newest first, times as naive Timestamps."""
    raw = json.loads(packed) if packed else {}
    frame = pd.DataFrame({c: raw.get(c, []) for c in EVENT_COLUMNS})
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], format=_EVENT_TIME)
    frame["amount"] = frame["amount"].astype(np.float64)
    return frame


def read_rows(eng: sa.Engine, table: str, customer_ids: list[str]) -> pd.DataFrame:
    """Rows of `table` for these customers (absent ids are simply not returned). The feature snapshot is
    read whole for it (`read_features`): the service holds it in memory and never asks for a few rows; the
    score snapshot's parts give each customer's row from its part; the recent events' parts give one row
    per event (`recent_events` gives one customer's)."""
    if not customer_ids:
        return pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
    if table == FEATURES:
        whole = read_features(eng)
        return whole[whole["customer_id"].isin(list(customer_ids))].reset_index(drop=True)
    if table in (EVENTS, SCORES):  # in parts: the scores' rows, one row per event of the recent events
        try:
            with eng.connect() as con:
                found = _ranged_rows(con, table, [str(c) for c in dict.fromkeys(customer_ids)])
        except sa.exc.NoSuchTableError:
            return pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
        if found is not None:
            return found.to_pandas()
    query = sa.text(f"SELECT * FROM {table} WHERE customer_id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True)
    )
    try:
        with eng.connect() as con:
            result = con.execute(query, {"ids": list(customer_ids)})
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:  # no snapshot yet
        if "no such table" in str(exc) or "does not exist" in str(exc):
            return pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
        raise


def latest_run(eng: sa.Engine) -> dict[str, Any] | None:
    """The latest logged batch run (score_runs: id, as_of, model_version, customers, parquet, created_at);
    None before the first."""
    if not sa.inspect(eng).has_table(RUNS):
        return None
    t = score_runs_table
    with eng.connect() as con:
        row = (
            con.execute(sa.select(t).order_by(t.c.created_at.desc(), t.c.id.desc()).limit(1))
            .mappings()
            .first()
        )
    return dict(row) if row else None


def score_history(eng: sa.Engine, customer_id: str, limit: int = 100) -> pd.DataFrame:
    """One customer's scores over the last `limit` runs, oldest first (HISTORY_COLUMNS but customer_id)."""
    t = score_history_table
    cols = [t.c[c] for c in HISTORY_COLUMNS[1:]]
    query = (
        sa.select(*cols).where(t.c.customer_id == str(customer_id)).order_by(t.c.as_of.desc()).limit(limit)
    )
    if not sa.inspect(eng).has_table(t.name):
        return pd.DataFrame(columns=HISTORY_COLUMNS[1:])
    with eng.connect() as con:
        rows = con.execute(query).all()
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS[1:]).iloc[::-1].reset_index(drop=True)


def recent_events(eng: sa.Engine, customer_id: str) -> pd.DataFrame:
    """The customer's latest events as of the last run, newest first: EVENT_COLUMNS. The store keeps them
    in parts of customers in id order (`packed_event_batches`): the one whose range holds the customer is
    read. A snapshot written by a release before that (one row per customer with JSON text, or one row
    per event; e.g. restored by a rollback) is read as it is."""
    cid = str(customer_id)
    try:
        with eng.connect() as con:
            mine = _ranged_rows(con, EVENTS, [cid])
    except sa.exc.NoSuchTableError:
        return pd.DataFrame(columns=EVENT_COLUMNS)
    if mine is not None:
        return mine.select(EVENT_COLUMNS).to_pandas()
    rows = read_rows(eng, EVENTS, [cid])
    if rows.empty:
        return pd.DataFrame(columns=EVENT_COLUMNS)
    if "events" in rows.columns:
        return unpack_events(rows["events"].iloc[0])
    return rows.sort_values("timestamp", ascending=False, kind="stable").reset_index(drop=True)


def _ranged_rows(con: sa.Connection, table: str, ids: list[str]) -> pa.Table | None:
    """These customers' rows of a snapshot kept in parts of customers in id order (the recent events, the
    scores), in the order of `ids` (a customer's events newest first), or None when the snapshot is not
    in parts (an earlier release's). Each customer's part is the last one starting at or before the id
    (found through the index on first_key), if it reaches the id; its rows are taken in Arrow."""
    if "first_key" not in {c["name"] for c in sa.inspect(con).get_columns(table)}:
        return None
    query = sa.text(
        f"SELECT batch FROM {table} WHERE last_key >= :k AND first_key = (SELECT first_key "
        f"FROM {table} WHERE first_key <= :k ORDER BY first_key DESC LIMIT 1)"
    )
    taken = []
    for cid in ids:
        for batch in con.execute(query, {"k": cid.encode()}).scalars():
            part = _unpack(batch)
            taken.append(part.filter(pc.equal(part.column("customer_id"), cid)))
    if taken:
        return pa.concat_tables(taken)
    return (
        _EVENT_ROWS.empty_table() if table == EVENTS else pa.table({"customer_id": pa.array([], pa.string())})
    )


def tier_summary(eng: sa.Engine) -> dict[str, tuple[int, float]]:
    """Customers and total value at risk per tier in the latest score snapshot (empty before a run)."""
    if not sa.inspect(eng).has_table(SCORES):
        return {}
    with eng.connect() as con:
        if _is_packed(con, SCORES):  # each part's own sums (`_ScoreParts`)
            found: dict[str, tuple[int, float]] = {}
            for text in con.execute(sa.text(f"SELECT tiers FROM {SCORES}")).scalars():
                for tier, n, v in json.loads(text):
                    had = found.get(str(tier), (0, 0.0))
                    found[str(tier)] = (had[0] + int(n), had[1] + float(v))
            return found
        query = f"SELECT tier, COUNT(*), COALESCE(SUM(value_at_risk), 0) FROM {SCORES} GROUP BY tier"
        rows = con.execute(sa.text(query)).all()
    return {str(tier): (int(n), float(v)) for tier, n, v in rows}
