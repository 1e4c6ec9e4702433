"""The embedded store (SQLite by default, any SQLAlchemy URL in production): the latest feature snapshot and
score table that batch scoring writes and the service reads, each customer's last few events as of that run,
a compact score history (one row per customer per run, for the dashboard's charts) and a log of runs.

A batch run writes its tables under new names and swaps them in with one transaction, so readers see
either the previous snapshot or the new one, never half of one; a failed run leaves the previous intact.
The score history rows of the run are written in the same transaction (re-running an as_of replaces them).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import sqlalchemy as sa

from core.clock import utc_naive
from features.history import History

FEATURES, SCORES, RUNS, EVENTS = "feature_snapshot", "score_snapshot", "score_runs", "recent_events"
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

metadata = sa.MetaData()
score_history_table = sa.Table(
    "score_history",
    metadata,
    sa.Column("customer_id", sa.String(255), primary_key=True),
    sa.Column("as_of", sa.DateTime, primary_key=True),
    sa.Column("churn_probability", sa.Float, nullable=False),
    sa.Column("predicted_value", sa.Float, nullable=False),
    sa.Column("value_at_risk", sa.Float, nullable=False),
    sa.Column("tier", sa.String(64)),
    sa.Column("model_version", sa.String(64)),
    sa.Index("ix_score_history_as_of", "as_of"),
)


def engine(url: str) -> sa.Engine:
    """An engine on `url`, creating a SQLite file's folder on first use."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url, future=True)


def write_snapshot(
    eng: sa.Engine,
    features: pd.DataFrame,
    scores: pd.DataFrame,
    run: dict[str, Any],
    events: pd.DataFrame | None = None,
) -> None:
    """Replace the feature and score snapshots (and the recent events, if given), append the run's score
    history (`scores` with HISTORY_COLUMNS) and log the run, all in one transaction."""
    missing = set(HISTORY_COLUMNS) - set(scores.columns)
    if missing:
        raise ValueError(f"scores lack column(s) {sorted(missing)} for the score history")
    run = {**run, "created_at": datetime.now(UTC).isoformat()}
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
        pd.DataFrame(
            [{k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in run.items()}]
        ).to_sql(RUNS, con, if_exists="append", index=False)


def _append_history(con: sa.Connection, scores: pd.DataFrame) -> None:
    metadata.create_all(con, checkfirst=True)
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
    if not sa.inspect(eng).has_table(RUNS):
        return None
    with eng.connect() as con:
        row = (
            con.execute(sa.text(f"SELECT * FROM {RUNS} ORDER BY created_at DESC LIMIT 1")).mappings().first()
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
