"""Pieces of serving.batch on hand-built frames: the score table written chunk by chunk (as the score
snapshot's Arrow chunks come) reads back as the whole frame written at once."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from serving import store
from serving.batch import _close_parquet, _write_parquet


def test_the_score_table_written_in_slices_is_the_table_written_at_once(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "customer_id": pd.Series(list("abcde"), dtype=object),
            "previous_tier": pd.Series([None, None, None, "gold", None], dtype=object),  # text: slice 2
            "value": [1.0, np.nan, 3.0, 4.0, 5.0],
            "cold_start": [True, False, True, True, False],
            "horizon_days": np.arange(5),
            "as_of": datetime(2025, 1, 1),
        }
    )
    schema = store.arrow_schema(frame)
    pq.write_table(
        pa.Table.from_pandas(frame, schema=schema, preserve_index=False), tmp_path / "whole.parquet"
    )
    writer: dict[str, pq.ParquetWriter] = {}
    for start in (0, 2, 4):
        chunk = pa.Table.from_pandas(frame.iloc[start : start + 2], schema=schema, preserve_index=False)
        _write_parquet(chunk, tmp_path / "sliced.parquet", writer)
    _close_parquet(writer, tmp_path / "sliced.parquet", frame)
    whole, sliced = pd.read_parquet(tmp_path / "whole.parquet"), pd.read_parquet(tmp_path / "sliced.parquet")
    pd.testing.assert_frame_equal(sliced, whole)
    assert pq.read_schema(tmp_path / "sliced.parquet").equals(pq.read_schema(tmp_path / "whole.parquet"))
    assert pq.ParquetFile(tmp_path / "sliced.parquet").num_row_groups == 3 and not writer
    _close_parquet({}, tmp_path / "empty.parquet", frame)  # no chunk came: the columns, no row
    empty = pd.read_parquet(tmp_path / "empty.parquet")
    assert list(empty.columns) == list(frame.columns) and empty.empty
