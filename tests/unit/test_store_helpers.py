"""The batch store step's helpers on small hand-built inputs: rows taken from a table of many chunks, frames
made ahead in a thread, SQLite datetimes and the Parquet schema without converting every text."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from serving import bulk, store


def _chunked() -> pa.Table:
    """Rows 0..6 in three chunks (3, 0, 4 rows); `v` is the row's position times ten."""
    parts = [
        pa.table({"v": [0, 10, 20]}),
        pa.table({"v": pa.array([], pa.int64())}),
        pa.table({"v": [30, 40, 50, 60]}),
    ]
    return pa.concat_tables(parts)


def test_take_gives_the_rows_asked_for_in_position_order_and_which_each_is() -> None:
    table = _chunked()
    assert table.column("v").num_chunks == 3
    rows, order = store._take(table, np.array([5, 0, 3, 5, 2]))
    assert rows.column("v").to_pylist() == [0, 20, 30, 50, 50]  # ascending position
    assert order.tolist() == [1, 4, 2, 0, 3]  # taken row k is rows[order[k]]
    empty, none = store._take(table, np.array([], dtype=np.int64))
    assert empty.num_rows == 0 and none.tolist() == []


def _frames(n: int, fail_at: int | None = None) -> Iterator[pd.DataFrame]:
    for i in range(n):
        if i == fail_at:
            raise RuntimeError(f"frame {i} could not be made")
        yield pd.DataFrame({"i": [i]})


def test_ahead_gives_every_frame_in_order_whether_ready_or_waited_for() -> None:
    with store._Ahead(_frames(5)) as coming:
        got = [int(f["i"].iloc[0]) for f in coming.ready()]  # whatever is made by now, without waiting
        got += [int(f["i"].iloc[0]) for f in coming]
        assert list(coming) == []  # the end was seen
    assert got == [0, 1, 2, 3, 4]


def test_ahead_raises_the_threads_error_in_the_reader() -> None:
    with store._Ahead(_frames(5, fail_at=2)) as coming, pytest.raises(RuntimeError, match="frame 2"):
        list(coming)


def test_ahead_stops_its_thread_when_the_reader_leaves_early() -> None:
    closed = []

    def endless() -> Iterator[pd.DataFrame]:
        try:
            while True:
                yield pd.DataFrame({"i": [0]})
        finally:
            closed.append(True)

    ahead = store._Ahead(endless(), depth=1)
    with ahead as coming:
        next(iter(coming))
    assert not ahead._thread.is_alive()
    assert closed == [True]  # the generator was closed (in its own thread)


def test_sqlite_datetimes_are_sqlalchemys_text_with_none_for_missing() -> None:
    at = pd.Timestamp("2025-01-02 03:04:05.000006")
    t = pd.Series([at, pd.NaT, at, pd.Timestamp("1999-12-31")], dtype="datetime64[us]")
    assert bulk.sqlite_datetimes(t) == [
        "2025-01-02 03:04:05.000006",
        None,
        "2025-01-02 03:04:05.000006",
        "1999-12-31 00:00:00.000000",
    ]


def test_float_values_bind_nan_as_null() -> None:
    kind = sa.Float(precision=53)
    values = bulk._values(pd.Series([1.5, np.nan, -0.0]), kind, None, sqlite=True)
    assert values == [1.5, None, -0.0] and values[0].__class__ is float


def test_schema_is_pyarrows_own_for_text_empty_and_mixed_object_columns() -> None:
    frame = pd.DataFrame(
        {
            "text": pd.Series(["a", None, "ccc"], dtype=object),
            "none": pd.Series([None, None, None], dtype=object),
            "number": [1.0, 2.0, 3.0],
            "when": [datetime(2025, 1, 1)] * 3,
            "arrow_text": pd.Series(["x", "y", "z"], dtype="str"),
            "boxed_ints": pd.Series([1, 2, 3], dtype=object),
        }
    )
    assert store.arrow_schema(frame).equals(
        pa.Schema.from_pandas(frame, preserve_index=False), check_metadata=True
    )
