"""The CDNOW converter: the original CDNOW_master.txt format, and a folder that is not empty."""

from __future__ import annotations

import gzip
from pathlib import Path

from features.datasets import cdnow


def test_from_master_txt_converts_the_original_format(tmp_path: Path) -> None:
    source = tmp_path / "CDNOW_master.txt"
    source.write_text(
        " customer_id  date number_of_cds  dollar_value\n"
        " 00001 19970101  1   11.77\n 00002 19970112  1   12.00\n 00002 19970112  1   12.00\n"
    )
    out = tmp_path / "t.csv.gz"
    assert cdnow.from_master_txt(source, out) == 3
    with gzip.open(out, "rt") as fh:
        lines = fh.read().splitlines()
    assert lines == [
        "customer_id,timestamp,amount,quantity,order_id",
        "00001,1997-01-01,11.77,1,L00002",
        "00002,1997-01-12,12.00,1,L00003",
        "00002,1997-01-12,12.00,1,L00004",
    ]


def test_write_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    try:
        cdnow.write(tmp_path)
    except FileExistsError as exc:
        assert "not empty" in str(exc)
    else:
        raise AssertionError("cdnow.write overwrote a non-empty folder")
    assert (tmp_path / "keep.txt").read_text() == "mine"
