"""serving.bulk.insert_frame stores what pandas' `to_sql` through SQLAlchemy stores, value for value
(missing values as NULL, datetimes as SQLAlchemy's SQLite text, booleans as integers), in chunks, inside
the caller's transaction. On PostgreSQL it COPYs, and stores what its executemany stores."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from serving import bulk
from tests.helpers.postgres import PostgresCluster


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


def test_columns_with_one_value_are_stored_as_bound_ones_are(tmp_path: Path) -> None:
    """On SQLite a column with one value in every row of a chunk is written into the statement once
    (a run's as_of, its model version, a curve the model lacks): the same values and types as bound."""
    path = tmp_path / "s.db"
    eng = sa.create_engine(f"sqlite:///{path}")
    at = datetime(2026, 1, 2, 3, 4, 5, 6)
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "version": ["it's 7"] * 4,  # a quote in the text
            "n": [3] * 4,
            "missing": [np.nan] * 4,  # a float column all NaN: NULL
            "x": [0.1] * 4,  # floats are always bound
            "as_of": [at] * 4,
            "flag": [True] * 4,
            "mixed": pd.Series([1, 1.0, True, 1], dtype=object),  # equal, not one type: bound
            "none": pd.Series([None] * 4, dtype=object),
        }
    )
    with eng.begin() as con:
        frame.to_sql("by_pandas", con, index=False)
        frame.iloc[:0].to_sql("by_bulk", con, index=False)
        assert bulk.insert_frame(con, bulk.table_of(con, "by_bulk"), frame, chunk=3) == len(frame)
    typed = "SELECT {} FROM {} ORDER BY rowid"
    columns = ", ".join(f"{c}, typeof({c})" for c in frame.columns)
    con = sqlite3.connect(path)
    try:
        got = con.execute(typed.format(columns, "by_bulk")).fetchall()
        want = con.execute(typed.format(columns, "by_pandas")).fetchall()
    finally:
        con.close()
    assert got == want
    assert got[0][2:4] == ("it's 7", "text") and got[3][6:8] == (None, "null")
    assert got[0][10:12] == ("2026-01-02 03:04:05.000006", "text")


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


# --- PostgreSQL: COPY stores what executemany stores -------------------------------------------------------

AWKWARD_TEXT = ["tab\there", "new\nline\r\n", "back\\slash \\N \\t", "", None, "ünï — 😀 'q' \"dq\"", "\\N"]


def _awkward() -> pd.DataFrame:
    """Every value a COPY could get wrong, a row each: NULLs of every kind, escapes, float edges, ties."""
    n = len(AWKWARD_TEXT)
    return pd.DataFrame(
        {
            "k": range(n),
            "text": AWKWARD_TEXT,
            "label": ["a", "b", None, "d", "e", "f", "g"],  # into varchar(20)
            "x": [1.5, np.nan, -0.0, 1e300, np.inf, -np.inf, 5e-324],
            "whole": [1.0, np.nan, 2.5, 3.5, -2.5, 1e9, 0.4999999999999999],  # into integer: rounded
            "n": [0, -1, 2**62, 7, -(2**40), 1, 2],
            "maybe": pd.array([1, None, 3, None, 5, 6, None], dtype="Int64"),
            "flag": [True, False, True, False, True, False, True],
            "flag_na": pd.array([True, None, False, None, True, False, None], dtype="boolean"),
            "at": pd.to_datetime(
                [
                    *("2024-01-01 10:00:00.123456", None, "1999-12-31 00:00:00"),
                    *("2024-02-29 23:59:59.999999", "1970-01-01", "2000-01-01", "2262-04-11"),
                ],
                format="ISO8601",
            ),
            "at_paris": pd.to_datetime(
                [
                    *("2024-07-01 12:00", None, "2024-01-01 00:30", "2024-03-31 03:00"),
                    *("2024-10-27 02:30", "2000-01-01", "1999-12-31 23:59:59.5"),
                ],
                format="ISO8601",
            ).tz_localize("Europe/Paris", ambiguous=[True] * 7),  # into timestamp: UTC wall time
            "at_zoned": pd.to_datetime(
                ["2024-01-01 10:00", None, "2024-06-01", None, "2024-06-02", "2024-06-03", "2024-06-04"],
                format="ISO8601",
            ),  # naive, into timestamptz: taken as UTC
        }
    )


def _awkward_table() -> sa.Table:
    return sa.Table(
        "awkward",
        sa.MetaData(),
        sa.Column("k", sa.Integer, primary_key=True),
        sa.Column("text", sa.Text),
        sa.Column("label", sa.String(20)),
        sa.Column("x", sa.Float(precision=53)),
        sa.Column("whole", sa.Integer),
        sa.Column("n", sa.BigInteger),
        sa.Column("maybe", sa.BigInteger),
        sa.Column("flag", sa.Boolean),
        sa.Column("flag_na", sa.Boolean),
        sa.Column("at", sa.DateTime),
        sa.Column("at_paris", sa.DateTime),
        sa.Column("at_zoned", sa.DateTime(timezone=True)),
    )


def _both_ways(url: str, table: sa.Table, frame: pd.DataFrame, zone: str = "UTC") -> list[list[Any]]:
    """The rows `frame` becomes in `table` through executemany, then through COPY (a fresh table each),
    with the session's TimeZone `zone`, read back ordered by k."""
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    got = []
    for method in ("executemany", "copy"):
        table.metadata.drop_all(eng)
        table.metadata.create_all(eng)
        with eng.begin() as con:
            con.exec_driver_sql(f"SET LOCAL TIME ZONE '{zone}'")
            assert bulk.insert_frame(con, table, frame, chunk=3, method=method) == len(frame)
        with eng.connect() as con:
            con.exec_driver_sql("SET TIME ZONE 'UTC'")
            got.append([tuple(r) for r in con.execute(sa.select(table).order_by(table.c.k))])
    return got


@pytest.mark.parametrize("form", ["binary", "text"])
def test_copy_stores_what_executemany_stores_on_postgresql(
    postgres: PostgresCluster, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COPY's binary format (what Diamond's tables get), and its text format (the fallback for values
    without a binary form), on the same frame."""
    url = postgres.new_schema()
    table, frame = _awkward_table(), _awkward()
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with eng.connect() as con:
        assert bulk.can_copy(con)
        table.metadata.create_all(con)
        types = bulk._pg_types(con.connection.dbapi_connection, '"awkward"', list(frame.columns))
        assert all(bulk._binary_ok(frame[c], types[c]) for c in frame.columns)
    if form == "text":
        monkeypatch.setattr(bulk, "_binary_ok", lambda column, pg_type: False)
    by_insert, by_copy = _both_ways(url, table, frame)
    assert repr(by_copy) == repr(by_insert)  # repr: -0.0 and 5e-324 exactly, None where NaN
    assert [r[1] for r in by_copy] == AWKWARD_TEXT
    assert [r[3] for r in by_copy][:2] == [1.5, None] and repr(by_copy[2][3]) == "-0.0"
    assert [r[4] for r in by_copy] == [1, None, 2, 4, -2, 10**9, 0]  # ties to even, as PostgreSQL casts
    assert [r[8] for r in by_copy] == [True, None, False, None, True, False, None]
    assert by_copy[0][9] == datetime(2024, 1, 1, 10, 0, 0, 123456) and by_copy[1][9] is None
    assert by_copy[0][10] == datetime(2024, 7, 1, 10, 0)  # 12:00 in Paris (summer) is 10:00 UTC
    assert by_copy[0][11] == datetime(2024, 1, 1, 10, 0, tzinfo=UTC)


def test_copy_of_values_without_a_binary_form_matches_executemany(postgres: PostgresCluster) -> None:
    """Columns COPY's binary format cannot take as they are (numbers or dates in an object column, text in
    a date column) go in COPY's text format, with the same result."""
    url = postgres.new_schema()
    t = sa.Table(
        "loose",
        sa.MetaData(),
        sa.Column("k", sa.Integer, primary_key=True),
        sa.Column("text", sa.Text),
        sa.Column("day", sa.Date),
        sa.Column("whole", sa.BigInteger),
        sa.Column("at", sa.DateTime),
        sa.Column("at_obj", sa.DateTime),
    )
    frame = pd.DataFrame(
        {
            "k": range(len(AWKWARD_TEXT)),
            "text": [1, "two", None, 3.5, "tab\t", "\\", "ü"],  # mixed: text format
            "day": [date(2024, 1, 1), None, "2024-02-29", date(1999, 12, 31), None, date(2000, 1, 1), None],
            "whole": [1.0, np.nan, 2.5, 3.5, -2.5, 1e15, 7.0],
            "at": pd.to_datetime(
                ["2024-01-01 10:00:00.5", None, "1999-12-31", None, "2024-06-01", "2024-06-02", "2024-06-03"],
                format="ISO8601",
            ),
            "at_obj": [  # datetime objects, zone-aware or not (an object column): naive UTC
                datetime(2024, 7, 1, 12, tzinfo=ZoneInfo("Europe/Paris")),
                None,
                datetime(2024, 1, 1, 9, 30),
                *[datetime(2024, 1, 1, 10, tzinfo=UTC)] * 4,
            ],
        }
    )
    by_insert, by_copy = _both_ways(url, t, frame)
    assert repr(by_copy) == repr(by_insert)
    assert [r[1] for r in by_copy] == ["1", "two", None, "3.5", "tab\t", "\\", "ü"]
    assert by_copy[2][2] == date(2024, 2, 29) and [r[3] for r in by_copy][:5] == [1, None, 2, 4, -2]
    expected = [datetime(2024, 7, 1, 10), None, datetime(2024, 1, 1, 9, 30), datetime(2024, 1, 1, 10)]
    assert [r[5] for r in by_copy][:4] == expected


def test_copy_stores_naive_utc_whatever_the_sessions_time_zone(postgres: PostgresCluster) -> None:
    """Diamond's times are naive UTC: a zone-aware time goes to a `timestamp` column as its UTC wall time
    and a naive one to a `timestamptz` column as UTC, under any session TimeZone (an INSERT would convert
    through the session's zone)."""
    url = postgres.new_schema()
    table, frame = _awkward_table(), _awkward()
    _, in_utc = _both_ways(url, table, frame, zone="UTC")
    _, in_tokyo = _both_ways(url, table, frame, zone="Asia/Tokyo")
    assert [r[10:] for r in in_tokyo] == [r[10:] for r in in_utc]
    assert in_tokyo[0][10:] == (datetime(2024, 7, 1, 10, 0), datetime(2024, 1, 1, 10, 0, tzinfo=UTC))


def test_copy_is_part_of_the_callers_transaction_on_postgresql(postgres: PostgresCluster) -> None:
    eng = sa.create_engine(postgres.new_schema(), poolclass=sa.pool.NullPool)
    t = sa.Table(
        "t", sa.MetaData(), sa.Column("k", sa.Integer, primary_key=True), sa.Column("at", sa.DateTime)
    )
    t.metadata.create_all(eng)
    rows = pd.DataFrame({"k": [1, 2, 2], "at": [datetime(2024, 1, 1)] * 3})
    with pytest.raises(sa.exc.IntegrityError, match="duplicate key"), eng.begin() as con:
        con.execute(sa.insert(t).values(k=10))
        bulk.insert_frame(con, t, rows.iloc[:2])
        bulk.insert_frame(con, t, rows.iloc[2:])  # a repeated key: the whole transaction rolls back
    with eng.connect() as con:
        assert con.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 0
    with eng.connect() as con:  # no begin(): COPY first starts the transaction, commit() keeps it
        bulk.insert_frame(con, t, rows.iloc[:2])
        con.commit()
    with eng.connect() as con:
        bulk.insert_frame(con, t, rows.iloc[:0].assign(k=[]))  # nothing to write: nothing done
        bulk.insert_frame(con, t, pd.DataFrame({"k": [3], "at": [datetime(2025, 1, 1)]}))
        con.rollback()
    with eng.connect() as con:
        assert con.execute(sa.select(t.c.k, t.c.at).order_by(t.c.k)).all() == [
            (1, datetime(2024, 1, 1)),
            (2, datetime(2024, 1, 1)),
        ]


def test_copy_refuses_what_insert_refuses_on_postgresql(postgres: PostgresCluster) -> None:
    """An infinite float for an integer column, text for a number: the server's error, nothing written."""
    eng = sa.create_engine(postgres.new_schema(), poolclass=sa.pool.NullPool)
    t = sa.Table("t", sa.MetaData(), sa.Column("k", sa.BigInteger), sa.Column("x", sa.Float))
    t.metadata.create_all(eng)
    with pytest.raises(sa.exc.DataError, match="bigint"), eng.begin() as con:
        bulk.insert_frame(con, t, pd.DataFrame({"k": [1.0, np.inf]}))
    with pytest.raises(sa.exc.DataError, match="double precision"), eng.begin() as con:
        bulk.insert_frame(con, t, pd.DataFrame({"k": [1], "x": ["one"]}))
    with eng.connect() as con:
        assert con.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 0
