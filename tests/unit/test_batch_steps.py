"""Pieces of serving.batch on hand-built frames: the score table written in slices reads back as the whole
frame written at once."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from serving.batch import _write_parquet


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
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "whole.parquet")
    _write_parquet(frame, tmp_path / "sliced.parquet", rows=2)
    whole, sliced = pd.read_parquet(tmp_path / "whole.parquet"), pd.read_parquet(tmp_path / "sliced.parquet")
    pd.testing.assert_frame_equal(sliced, whole)
    assert pq.read_schema(tmp_path / "sliced.parquet").equals(pq.read_schema(tmp_path / "whole.parquet"))
    assert pq.ParquetFile(tmp_path / "sliced.parquet").num_row_groups == 3
    _write_parquet(frame.iloc[:0], tmp_path / "empty.parquet", rows=2)
    assert list(pd.read_parquet(tmp_path / "empty.parquet").columns) == list(frame.columns)
