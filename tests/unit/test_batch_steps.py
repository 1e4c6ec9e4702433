"""Pieces of serving.batch on hand-built frames: the score table written in slices reads back as the whole
frame written at once; the recent events computed ahead come in order, and a failure reaches the caller."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.batch import _ahead, _write_parquet


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


def test_frames_computed_ahead_come_in_order_and_a_failure_reaches_the_caller() -> None:
    def frames(n: int, fail_at: int | None = None) -> Iterator[pd.DataFrame]:
        for i in range(n):
            if i == fail_at:
                raise RuntimeError(f"frame {i} failed")
            yield pd.DataFrame({"i": [i]})

    assert [int(f["i"].iloc[0]) for f in _ahead(frames(3))] == [0, 1, 2]
    assert list(_ahead(frames(0))) == []
    with pytest.raises(RuntimeError, match="frame 0 failed"):
        list(_ahead(frames(3, fail_at=0)))  # in the thread
    with pytest.raises(RuntimeError, match="frame 2 failed"):
        list(_ahead(frames(3, fail_at=2)))  # in the caller's
