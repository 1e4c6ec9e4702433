"""serving.bulk.insert_frame stores what pandas' `to_sql` through SQLAlchemy stores, value for value
(missing values as NULL, datetimes as SQLAlchemy's SQLite text, booleans as integers), in chunks, inside
the caller's transaction."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from serving import bulk


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", None, "d", "e"],
            "x": [1.5, np.nan, -0.0, 1e300, 2.0],
            "n": [1, 2, 3, 4, 5],
            "flag": [True, False, True, False, True],
            "at": pd.to_datetime(
                [
                    "2024-01-01 10:00:00.123456",
                    None,
                    "1999-12-31 00:00:00",
                    "2024-06-01 08:00:00",
                    "2024-06-02 00:00:00",
                ],
                format="ISO8601",
            ),
            "text": ["x", "y", "z", None, "it's — quoted"],
            "maybe": pd.array([1, None, 3, None, 5], dtype="Int64"),
        }
    )


def _stored(path: Path, table: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    finally:
        con.close()


def test_insert_frame_stores_what_to_sql_stores(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    eng = sa.create_engine(f"sqlite:///{path}")
    frame = _frame()
    with eng.begin() as con:
        frame.to_sql("by_pandas", con, index=False)
        frame.iloc[:0].to_sql("by_bulk", con, index=False)
        assert bulk.insert_frame(con, bulk.table_of(con, "by_bulk"), frame, chunk=2) == len(frame)
    assert _stored(path, "by_bulk") == _stored(path, "by_pandas")
    assert _stored(path, "by_bulk")[1][1] is None  # NaN is NULL
    assert _stored(path, "by_bulk")[0][4] == "2024-01-01 10:00:00.123456"


def test_insert_frame_is_part_of_the_callers_transaction(tmp_path: Path) -> None:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    t = sa.Table(
        "t", sa.MetaData(), sa.Column("k", sa.Integer, primary_key=True), sa.Column("at", sa.DateTime)
    )
    t.metadata.create_all(eng)
    rows = pd.DataFrame({"k": [1, 2, 2], "at": [datetime(2024, 1, 1)] * 3})
    with pytest.raises(sa.exc.IntegrityError), eng.begin() as con:
        bulk.insert_frame(con, t, rows.iloc[:2])
        bulk.insert_frame(con, t, rows.iloc[2:])  # a repeated key: the whole transaction rolls back
    with eng.connect() as con:
        assert con.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 0
    with eng.begin() as con:
        bulk.insert_frame(con, t, rows.iloc[:2])
    with eng.connect() as con:
        assert con.execute(sa.select(t.c.at)).scalars().all() == [datetime(2024, 1, 1)] * 2


def test_insert_frame_refuses_unknown_columns(tmp_path: Path) -> None:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    t = sa.Table("t", sa.MetaData(), sa.Column("k", sa.Integer))
    t.metadata.create_all(eng)
    with pytest.raises(ValueError, match=r"t has no column\(s\) \['j'\]"), eng.begin() as con:
        bulk.insert_frame(con, t, pd.DataFrame({"k": [1], "j": [2]}))
