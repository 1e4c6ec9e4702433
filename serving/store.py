"""The embedded store (SQLite by default, any SQLAlchemy URL in production): the latest feature snapshot and
score table that batch scoring writes and the service reads, each customer's last few events as of that run,
a compact score history (one row per customer per run, for the dashboard's charts) and a log of runs.

A batch run writes its tables under new names and swaps them in with one transaction, so readers see
either the previous snapshot or the new one, never half of one; a failed run leaves the previous intact.
The score history rows of the run are written in the same transaction (re-running an as_of replaces them).

The store's fixed tables are declared in serving.schema and migrated with Alembic (serving/migrations).
`prepare` is every command's way in: it creates a new store at the head revision and refuses one at another
revision, which `upgrade` (`diamond db upgrade`) migrates in place, in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from core.clock import utc_naive, utc_now
from features.history import History
from serving import schema
from serving.schema import score_history_table, score_runs_table

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy.pool import ConnectionPoolEntry

FEATURES, SCORES, EVENTS = schema.SNAPSHOT_TABLES
RUNS = score_runs_table.name
RECENT_EVENTS = 10  # events kept per customer for the dashboard
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


class StoreRevisionError(ValueError):
    """The store is at another schema revision than this release's (a ValueError: commands report it as bad
    input, exit code 2)."""


def engine(url: str) -> sa.Engine:
    """An engine on `url`, creating a SQLite file's folder on first use."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///file:"):  # a file: URI names its own
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url, future=True)


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


@contextmanager
def _migrating(eng: sa.Engine) -> Iterator[sa.Connection]:
    """One connection in one transaction for a whole migration. On a SQLite file the transaction is taken
    with BEGIN IMMEDIATE on a connection of its own: pysqlite would otherwise commit each DDL statement by
    itself, and the write lock makes a concurrent upgrader wait and then find the store at head."""
    if eng.dialect.name != "sqlite" or eng.url.database in (None, "", ":memory:"):
        with eng.begin() as con:
            yield con
        return
    locked = sa.create_engine(eng.url, poolclass=sa.pool.NullPool)

    @sa.event.listens_for(locked, "connect")
    def _driver_leaves_transactions_to_us(
        dbapi_con: sqlite3.Connection, _record: ConnectionPoolEntry
    ) -> None:
        dbapi_con.isolation_level = None

    @sa.event.listens_for(locked, "begin")
    def _begin_immediate(con: sa.Connection) -> None:
        con.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with locked.begin() as con:
            yield con
    finally:
        locked.dispose()


# --- snapshots ----------------------------------------------------------------------------------------------


def write_snapshot(
    eng: sa.Engine,
    features: pd.DataFrame,
    scores: pd.DataFrame,
    run: dict[str, Any],
    events: pd.DataFrame | None = None,
) -> None:
    """Replace the feature and score snapshots (and the recent events, if given), append the run's score
    history (`scores` with HISTORY_COLUMNS) and log the run (`run`: as_of and optionally model_version,
    customers, parquet), all in one transaction. The store must be prepared (`prepare`)."""
    missing = set(HISTORY_COLUMNS) - set(scores.columns)
    if missing:
        raise ValueError(f"scores lack column(s) {sorted(missing)} for the score history")
    unknown = set(run) - set(RUN_COLUMNS)
    if unknown or "as_of" not in run:
        raise ValueError(
            f"a run is logged with as_of and optionally {list(RUN_COLUMNS[1:])}; got {sorted(run)}"
        )
    logged = {**run, "as_of": utc_naive(run["as_of"]), "created_at": utc_now()}
    tables = [(FEATURES, features, True), (SCORES, scores, True)]
    if events is not None:
        tables.append((EVENTS, events, False))
    with eng.begin() as con:
        for name, frame, unique in tables:
            frame.to_sql(f"{name}__new", con, if_exists="replace", index=False, chunksize=5_000)
            con.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))  # its index goes with it
            kind = "UNIQUE INDEX" if unique else "INDEX"
            con.execute(sa.text(f"CREATE {kind} ix_{name}_id ON {name}__new (customer_id)"))
            con.execute(sa.text(f"ALTER TABLE {name}__new RENAME TO {name}"))
        _append_history(con, scores)
        con.execute(sa.insert(score_runs_table).values(**logged))


def _append_history(con: sa.Connection, scores: pd.DataFrame) -> None:
    t = score_history_table
    rows = scores[HISTORY_COLUMNS].astype({"customer_id": str, "model_version": str})
    runs = {utc_naive(a) for a in rows["as_of"].unique()}
    con.execute(sa.delete(t).where(t.c.as_of.in_(runs)))  # a re-run of an as_of replaces its rows
    records = rows.assign(as_of=[utc_naive(a) for a in rows["as_of"]]).to_dict("records")
    for start in range(0, len(records), 5_000):
        con.execute(sa.insert(t), records[start : start + 5_000])


def last_events(history: History, n: int = RECENT_EVENTS) -> pd.DataFrame:
    """Each customer's `n` latest events of the history (purchases, interactions, cancellations), newest
    first: customer_id, timestamp, kind, amount (purchases and valued interactions), detail."""
    parts, con = [], duckdb.connect()
    try:
        for name, kind, amount, detail in (
            ("transactions", "'purchase'", "amount", ("category", "channel")),
            ("interactions", "'interaction'", "value", ("type",)),
            ("cancellations", "'cancellation'", None, ()),
        ):
            table = getattr(history, name)
            if table is None:
                continue
            con.register(name, table)
            cols = [f"CAST({c} AS VARCHAR)" for c in detail if c in table.column_names]
            if name == "transactions" and "order_id" in table.column_names:
                cols.append("'order ' || CAST(order_id AS VARCHAR)")
            if name == "transactions" and "quantity" in table.column_names:
                cols.append("'quantity ' || regexp_replace(CAST(quantity AS VARCHAR), '\\.0+$', '')")
            text = f"concat_ws(', ', {', '.join(cols)})" if cols else "''"
            value = f"CAST({amount} AS DOUBLE)" if amount and amount in table.column_names else "NULL"
            parts.append(
                f"SELECT CAST(customer_id AS VARCHAR) AS customer_id, timestamp, {kind} AS kind, "
                f"{value} AS amount, {text} AS detail FROM {name}"
            )
        query = (
            f"SELECT * FROM ({' UNION ALL '.join(parts)}) QUALIFY row_number() OVER "
            f"(PARTITION BY customer_id ORDER BY timestamp DESC, kind) <= {int(n)} "
            "ORDER BY customer_id, timestamp DESC, kind"
        )
        return con.execute(query).df()
    finally:
        con.close()


def read_rows(eng: sa.Engine, table: str, customer_ids: list[str]) -> pd.DataFrame:
    """Rows of `table` for these customers (absent ids are simply not returned)."""
    if not customer_ids:
        return pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
    query = sa.text(f"SELECT * FROM {table} WHERE customer_id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True)
    )
    try:
        with eng.connect() as con:
            result = con.execute(query, {"ids": list(customer_ids)})
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    except sa.exc.OperationalError as exc:  # no snapshot yet
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
    """The customer's latest events as of the last run (`last_events`), newest first."""
    rows = read_rows(eng, EVENTS, [str(customer_id)])
    if rows.empty:
        return pd.DataFrame(columns=["timestamp", "kind", "amount", "detail"])
    return rows.sort_values("timestamp", ascending=False, kind="stable").reset_index(drop=True)


def tier_summary(eng: sa.Engine) -> dict[str, tuple[int, float]]:
    """Customers and total value at risk per tier in the latest score snapshot (empty before a run)."""
    if not sa.inspect(eng).has_table(SCORES):
        return {}
    query = f"SELECT tier, COUNT(*), COALESCE(SUM(value_at_risk), 0) FROM {SCORES} GROUP BY tier"
    with eng.connect() as con:
        rows = con.execute(sa.text(query)).all()
    return {str(tier): (int(n), float(v)) for tier, n, v in rows}
