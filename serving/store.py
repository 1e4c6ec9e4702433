"""The embedded store (SQLite by default, any SQLAlchemy URL in production): the latest feature snapshot and
score table that batch scoring writes and the service reads, and a log of scoring runs.

A batch run writes its tables under new names and swaps them in with one transaction, so readers see
either the previous snapshot or the new one, never half of one; a failed run leaves the previous intact.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

FEATURES, SCORES, RUNS = "feature_snapshot", "score_snapshot", "score_runs"


def engine(url: str) -> sa.Engine:
    """An engine on `url`, creating a SQLite file's folder on first use."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url, future=True)


def write_snapshot(eng: sa.Engine, features: pd.DataFrame, scores: pd.DataFrame, run: dict[str, Any]) -> None:
    """Replace the feature and score snapshots and log the run, all in one transaction."""
    run = {**run, "created_at": datetime.now(UTC).isoformat()}
    with eng.begin() as con:
        for name, frame in ((FEATURES, features), (SCORES, scores)):
            frame.to_sql(f"{name}__new", con, if_exists="replace", index=False, chunksize=5_000)
            con.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))  # its index goes with it
            con.execute(sa.text(f"CREATE UNIQUE INDEX ix_{name}_id ON {name}__new (customer_id)"))
            con.execute(sa.text(f"ALTER TABLE {name}__new RENAME TO {name}"))
        pd.DataFrame(
            [{k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in run.items()}]
        ).to_sql(RUNS, con, if_exists="append", index=False)


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
