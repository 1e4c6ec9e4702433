"""Bulk writes: a frame inserted into a table in large batches of plain values, inside the caller's
transaction. Batch scoring writes about a million rows per table per run (snapshots, score history, tiers,
recent events); row by row through `pandas.to_sql` or SQLAlchemy's per-row parameter handling that took
minutes.

On PostgreSQL (psycopg 3) the rows go through `COPY ... FROM STDIN` (psycopg's `cursor.copy`) on the
connection's own DBAPI connection, so in the caller's transaction; elsewhere (SQLite) to the driver's
`executemany`. Either way values are converted column by column as SQLAlchemy binds them (the column type's
bind processor on this dialect: datetimes as SQLite's text, booleans as integers on SQLite), missing values
(None, NaN, NaT, NA) become NULL, and the frame goes in chunks, so memory stays bounded whatever its length.
`insert_frame` is the one place bulk inserts go through."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import processors

CHUNK = 50_000  # rows per executemany call, or per batch of COPY rows
Method = Literal["auto", "executemany", "copy"]


def insert_frame(
    con: sa.Connection, table: sa.Table, frame: pd.DataFrame, chunk: int = CHUNK, method: Method = "auto"
) -> int:
    """Insert every row of `frame` (its columns: some of `table`'s, by name) into `table` on `con`, in the
    caller's transaction. Returns the number of rows inserted. `method`: COPY on PostgreSQL with psycopg
    ("auto"), else executemany; forcing one is for the tests and benchmarks that compare them."""
    if frame.empty:
        return 0
    columns = [str(c) for c in frame.columns]
    unknown = [c for c in columns if c not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {unknown}")
    if method == "copy" or (method == "auto" and can_copy(con)):
        _copy(con, table, frame, columns, chunk)
    else:
        _executemany(con, table, frame, columns, chunk)
    return len(frame)


def can_copy(con: sa.Connection) -> bool:
    """True on PostgreSQL through psycopg 3, whose cursors speak COPY FROM STDIN."""
    return con.dialect.name == "postgresql" and con.dialect.driver == "psycopg"


def table_of(con: sa.Connection, name: str) -> sa.Table:
    """A table as the database has it (the snapshot tables take their columns from the model)."""
    return sa.Table(name, sa.MetaData(), autoload_with=con)


def _executemany(
    con: sa.Connection, table: sa.Table, frame: pd.DataFrame, columns: list[str], chunk: int
) -> None:
    mark = "?" if con.dialect.paramstyle == "qmark" else "%s"
    quote = con.dialect.identifier_preparer
    head = f"INSERT INTO {quote.format_table(table)} ({', '.join(quote.quote(c) for c in columns)}) VALUES "
    sqlite = con.dialect.name == "sqlite"
    kinds = [table.c[c].type for c in columns]
    processors = [t._cached_bind_processor(con.dialect) for t in kinds]
    for start in range(0, len(frame), chunk):
        part = frame.iloc[start : start + chunk]
        values = [_values(part.iloc[:, i], kinds[i], processors[i], sqlite) for i in range(len(columns))]
        # on SQLite, a column with one value in every row of the chunk (a run's as_of, its model version,
        # a curve the model lacks) is written once into the statement: SQLite's cost is per bound value
        fixed = [_literal(v) if sqlite and len(part) > 1 else None for v in values]
        marks = [mark if f is None else f for f in fixed]
        bound = [v for v, f in zip(values, fixed, strict=True) if f is None]
        rows = list(zip(*bound, strict=True)) if bound else [()] * len(part)
        con.exec_driver_sql(f"{head}({', '.join(marks)})", rows)


def _literal(values: list[Any]) -> str | None:
    """SQLite's literal for a column's values when they are all one NULL, integer or text (what binding
    each would store, the column's affinity applied alike), else None (bound row by row). Floats are
    always bound: a literal's decimal text would be parsed by SQLite, and its last bit is not promised."""
    first = values[0]
    if first is None:
        return "NULL" if values.count(None) == len(values) else None
    kind = type(first)
    if kind not in (int, str) or values.count(first) != len(values):
        return None
    if set(map(type, values)) != {kind}:
        return None  # 1 == 1.0 == True: one value, but not one type
    if kind is int:
        return str(first)
    if "\x00" in first:
        return None
    return "'" + first.replace("'", "''") + "'"


def _copy(con: sa.Connection, table: sa.Table, frame: pd.DataFrame, columns: list[str], chunk: int) -> None:
    """COPY the frame in on the connection's psycopg connection. Binary format when every column's values
    have a binary form for its PostgreSQL type (numbers, booleans, text, timestamps: Diamond's tables), else
    text format, where psycopg escapes tabs, newlines and backslashes. A failure is raised as SQLAlchemy's
    exception for it (IntegrityError for a repeated key, ...), and the caller's transaction rolls back as
    for an INSERT."""
    if not con.in_transaction():
        con.begin()  # what an execute would autobegin: the caller's commit() then commits the rows
    raw: Any = con.connection.dbapi_connection
    quote = con.dialect.identifier_preparer
    name = quote.format_table(table)
    kinds = [table.c[c].type for c in columns]
    pg_types = _pg_types(raw, name, columns)
    binary = all(_binary_ok(frame[c], pg_types[c]) for c in columns)
    sql = f"COPY {name} ({', '.join(quote.quote(c) for c in columns)}) FROM STDIN"
    try:
        with raw.cursor() as cur, cur.copy(sql + (" (FORMAT BINARY)" if binary else "")) as copy:
            if binary:
                copy.set_types([pg_types[c] for c in columns])
            processors = [t._cached_bind_processor(con.dialect) for t in kinds]
            for start in range(0, len(frame), chunk):
                part = frame.iloc[start : start + chunk]
                values = [
                    _binary_values(part[c], pg_types[c])
                    if binary
                    else _copy_values(part[c], kinds[i], processors[i])
                    for i, c in enumerate(columns)
                ]
                for row in zip(*values, strict=True):
                    copy.write_row(row)
    except con.dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(
            sql, None, exc, con.dialect.loaded_dbapi.Error, dialect=con.dialect
        ) from exc


_INTS = ("int2", "int4", "int8")
_FLOATS = ("float4", "float8")
_TEXTS = ("text", "varchar", "bpchar")
_TIMES = ("timestamp", "timestamptz")


def _pg_types(raw: Any, name: str, columns: list[str]) -> dict[str, str]:
    """Each column's PostgreSQL type name (pg_type.typname: int8, float8, text, timestamp, ...), from the
    catalogue: the table as it is, whatever SQLAlchemy's Table says."""
    with raw.cursor() as cur:
        cur.execute(
            "SELECT attname, typname FROM pg_attribute JOIN pg_type ON pg_type.oid = atttypid "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (name,),
        )
        found = {str(a): str(t) for a, t in cur.fetchall()}
    return {c: found.get(c, "") for c in columns}


def _binary_ok(column: pd.Series, pg_type: str) -> bool:
    """Whether `_binary_values` can give this column in its PostgreSQL type's binary form."""
    dtype = column.dtype
    if pg_type in _INTS:
        if pd.api.types.is_float_dtype(dtype):  # binary int8 only from what fits (else: the server refuses)
            raw = column.to_numpy(dtype=np.float64, na_value=0.0)
            return bool((np.abs(raw) < 2.0**63).all())
        return pd.api.types.is_integer_dtype(dtype)
    if pg_type in _FLOATS:
        return pd.api.types.is_float_dtype(dtype) or pd.api.types.is_integer_dtype(dtype)
    if pg_type == "bool":
        return pd.api.types.is_bool_dtype(dtype)
    if pg_type in _TIMES:
        return pd.api.types.is_datetime64_any_dtype(dtype)
    if pg_type in _TEXTS:
        return pd.api.types.is_string_dtype(dtype) and pd.api.types.infer_dtype(column, skipna=True) in (
            "string",
            "empty",
        )
    return False


def _binary_values(column: pd.Series, pg_type: str) -> list[Any]:
    """One column as Python values of the type psycopg's binary dumper for `pg_type` takes, None for
    missing; the assignment casts an INSERT would make are made here (a float for an integer column
    rounded to the nearest, ties to even, as PostgreSQL's float8-to-int8 cast)."""
    dtype = column.dtype
    if pg_type in _TIMES:
        if getattr(dtype, "tz", None) is not None:
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
        values: list[Any] = column.to_numpy(dtype="datetime64[us]").astype(object).tolist()
        if pg_type == "timestamptz":
            values = [None if v is None else v.replace(tzinfo=UTC) for v in values]
        return values
    if pg_type in _INTS and pd.api.types.is_float_dtype(dtype):
        return _rounded(column)
    if pg_type in _FLOATS:
        raw = column.to_numpy(dtype=np.float64, na_value=np.nan)
        return _with_nulls(raw.tolist(), np.isnan(raw))
    if pg_type in _INTS:
        if column.hasnans:
            return column.to_numpy(dtype=object, na_value=None).tolist()
        return column.to_numpy(dtype=np.int64).tolist()
    if pg_type == "bool" and not column.hasnans:
        return column.to_numpy(dtype=bool).tolist()
    return column.to_numpy(dtype=object, na_value=None).tolist()  # text, nullable booleans


def _rounded(column: pd.Series) -> list[Any]:
    """Floats bound for an integer column as INSERT's assignment cast stores them: rounded to the nearest,
    ties to even (PostgreSQL's float8-to-int8 is `rint`), None for NaN; a value no int64 holds (inf, 1e300)
    stays a float, for the server to refuse as it refuses it from an INSERT."""
    raw = column.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.isnan(raw)
    fits = np.abs(np.where(missing, 0.0, raw)) < 2.0**63
    values: list[Any] = np.rint(np.where(fits & ~missing, raw, 0.0)).astype(np.int64).tolist()
    if not fits.all():
        values = [v if ok else f for v, ok, f in zip(values, fits.tolist(), raw.tolist(), strict=True)]
    return _with_nulls(values, missing)


def _with_nulls(values: list[Any], missing: np.ndarray) -> list[Any]:
    if missing.any():
        return [None if m else v for v, m in zip(values, missing.tolist(), strict=True)]
    return values


def _copy_values(column: pd.Series, kind: sa.types.TypeEngine[Any], processor: Any) -> list[Any]:
    """One column for COPY's text format: what `_values` gives INSERT, with the server's assignment casts
    done here (COPY reads text with the column's own input function, so a float like 3.0 bound for an
    integer column must arrive as 3, as INSERT would round it) and datetimes as ISO text."""
    dtype = column.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype) and isinstance(kind, sa.DateTime):
        return _iso_datetimes(column, with_zone=bool(kind.timezone))
    if isinstance(kind, sa.Integer) and pd.api.types.is_float_dtype(dtype):
        return _rounded(column)
    values = _values(column, kind, processor, sqlite=False)
    if isinstance(kind, sa.DateTime):  # datetime objects: COPY would drop a zone for `timestamp`
        values = [_utc(v, bool(kind.timezone)) if isinstance(v, datetime) else v for v in values]
    return values


def _utc(value: datetime, with_zone: bool) -> datetime:
    """A datetime as Diamond stores it: naive UTC, or UTC-aware for a `timestamp with time zone`."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.replace(tzinfo=UTC) if with_zone else value


def _values(column: pd.Series, kind: sa.types.TypeEngine[Any], processor: Any, sqlite: bool) -> list[Any]:
    """One column as plain Python values, None for missing, as the column's type binds them."""
    dtype = column.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if sqlite and isinstance(kind, sa.DateTime) and getattr(dtype, "tz", None) is None:
            return sqlite_datetimes(column)  # SQLAlchemy's SQLite DATETIME text, written in one pass
        values: list[Any] = [None if v is pd.NaT else v.to_pydatetime() for v in column.tolist()]
    elif pd.api.types.is_float_dtype(dtype):
        raw = column.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(raw)
        if missing.any():
            boxed = raw.astype(object)
            boxed[missing] = None
            values = boxed.tolist()
        else:
            values = raw.tolist()
        if processor is processors.to_float:
            return values  # Python floats already: float() of each would change nothing
    elif pd.api.types.is_integer_dtype(dtype) and not column.hasnans:
        values = column.to_numpy(dtype=np.int64).tolist()
    elif pd.api.types.is_bool_dtype(dtype) and not column.hasnans:
        flags = column.to_numpy(dtype=bool)
        if sqlite and isinstance(kind, sa.Boolean):
            return flags.astype(np.int64).tolist()  # what the Boolean type binds on SQLite: 1 and 0
        values = flags.tolist()
    else:
        values = column.to_numpy(dtype=object, na_value=None).tolist()  # NaN, NaT, NA: None
    if processor is not None:
        values = [None if v is None else processor(v) for v in values]
    return values


def sqlite_datetimes(column: pd.Series) -> list[Any]:
    """'YYYY-MM-DD HH:MM:SS.ffffff', the text SQLAlchemy's SQLite DATETIME stores; None for NaT. Each
    distinct time is written once (a run's million rows share one as_of)."""
    raw = column.to_numpy(dtype="datetime64[us]")
    codes, distinct = pd.factorize(raw.view(np.int64))
    written = np.datetime_as_string(distinct.view("datetime64[us]"), unit="us")
    text = np.strings.replace(written, "T", " ").astype(object)[codes]
    missing = np.isnat(raw)
    if missing.any():
        text[missing] = None
    return list(text.tolist())


def _iso_datetimes(column: pd.Series, with_zone: bool) -> list[Any]:
    """ISO text for PostgreSQL's timestamp input: zone-aware values in UTC, '+00:00' appended for a
    `timestamp with time zone` column; naive values as they are (Diamond's times are naive UTC)."""
    if getattr(column.dtype, "tz", None) is not None:
        column = column.dt.tz_convert("UTC").dt.tz_localize(None)
    text = sqlite_datetimes(column)
    if with_zone:
        text = [None if v is None else f"{v}+00:00" for v in text]
    return text
