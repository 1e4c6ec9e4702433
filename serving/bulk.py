"""Bulk writes: a frame inserted into a table in large batches of plain values, inside the caller's
transaction. Batch scoring writes about a million rows per table per run (snapshots, score history, tiers,
recent events); row by row through `pandas.to_sql` or SQLAlchemy's per-row parameter handling that took
minutes.

Values are converted column by column as SQLAlchemy binds them (the column type's bind processor on this
dialect: datetimes as SQLite's text, booleans as integers), missing values become NULL, and the rows go to
the driver's `executemany` in chunks, so memory stays bounded whatever the frame's length. `insert_frame` is
the one place bulk inserts go through: PostgreSQL's COPY (psycopg's `cursor.copy`) belongs here."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

CHUNK = 50_000  # rows per executemany call


def insert_frame(con: sa.Connection, table: sa.Table, frame: pd.DataFrame, chunk: int = CHUNK) -> int:
    """Insert every row of `frame` (its columns: some of `table`'s, by name) into `table` on `con`, in the
    caller's transaction. Returns the number of rows inserted."""
    if frame.empty:
        return 0
    columns = [str(c) for c in frame.columns]
    unknown = [c for c in columns if c not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {unknown}")
    mark = "?" if con.dialect.paramstyle == "qmark" else "%s"
    quote = con.dialect.identifier_preparer
    sql = (
        f"INSERT INTO {quote.format_table(table)} ({', '.join(quote.quote(c) for c in columns)}) "
        f"VALUES ({', '.join([mark] * len(columns))})"
    )
    sqlite = con.dialect.name == "sqlite"
    kinds = [table.c[c].type for c in columns]
    processors = [t._cached_bind_processor(con.dialect) for t in kinds]
    for start in range(0, len(frame), chunk):
        part = frame.iloc[start : start + chunk]
        values = [_values(part.iloc[:, i], kinds[i], processors[i], sqlite) for i in range(len(columns))]
        con.exec_driver_sql(sql, list(zip(*values, strict=True)))
    return len(frame)


def table_of(con: sa.Connection, name: str) -> sa.Table:
    """A table as the database has it (the snapshot tables take their columns from the model)."""
    return sa.Table(name, sa.MetaData(), autoload_with=con)


def _values(column: pd.Series, kind: sa.types.TypeEngine[Any], processor: Any, sqlite: bool) -> list[Any]:
    """One column as plain Python values, None for missing, as the column's type binds them."""
    dtype = column.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if sqlite and isinstance(kind, sa.DateTime) and getattr(dtype, "tz", None) is None:
            return _sqlite_datetimes(column)  # SQLAlchemy's SQLite DATETIME text, written in one pass
        values: list[Any] = [None if v is pd.NaT else v.to_pydatetime() for v in column.tolist()]
    elif pd.api.types.is_float_dtype(dtype):
        raw = column.to_numpy(dtype=np.float64, na_value=np.nan)
        values = raw.tolist()
        if np.isnan(raw).any():
            values = [None if v != v else v for v in values]
    elif pd.api.types.is_integer_dtype(dtype) and not column.hasnans:
        values = column.to_numpy(dtype=np.int64).tolist()
    elif pd.api.types.is_bool_dtype(dtype) and not column.hasnans:
        values = column.to_numpy(dtype=bool).tolist()
    else:
        values = column.to_numpy(dtype=object, na_value=None).tolist()  # NaN, NaT, NA: None
    if processor is not None:
        values = [None if v is None else processor(v) for v in values]
    return values


def _sqlite_datetimes(column: pd.Series) -> list[Any]:
    """'YYYY-MM-DD HH:MM:SS.ffffff', the text SQLAlchemy's SQLite DATETIME stores; None for NaT."""
    raw = column.to_numpy(dtype="datetime64[us]")
    text = np.strings.replace(np.datetime_as_string(raw, unit="us"), "T", " ").astype(object)
    missing = np.isnat(raw)
    if missing.any():
        text[missing] = None
    return list(text.tolist())
