"""The bundled real data: CDNOW loads with exactly the published counts and totals."""

from __future__ import annotations

import gzip
from datetime import datetime
from pathlib import Path

import duckdb

from features.datasets import cdnow
from features.history import load_history


def test_cdnow_history_matches_the_published_numbers(cdnow_dir: Path) -> None:
    history = load_history(cdnow_dir)
    s = history.summary()
    assert s["customers_with_transactions"] == 23_570
    assert s["transactions"] == 69_659
    assert s["total_quantity"] == 167_881
    assert s["total_amount"] == 2_500_315.63
    assert (s["first_transaction"], s["last_transaction"]) == (datetime(1997, 1, 1), datetime(1998, 6, 30))
    assert s["zero_amount_rows"] == 80  # kept, not dropped
    assert history.report.rows_dropped == {"transactions": 0}
    assert history.name == "cdnow" and history.as_of == datetime(1998, 6, 30, 23, 59, 59, 999999)


def test_cdnow_repeated_rows_are_separate_orders(cdnow_dir: Path) -> None:
    tx = load_history(cdnow_dir).transactions
    con = duckdb.connect()
    con.register("tx", tx)
    repeats = con.execute(
        "SELECT count(*) - count(DISTINCT (customer_id, timestamp, amount, quantity)) FROM tx"
    ).fetchall()[0][0]
    assert repeats == 255  # same customer, day, CDs and dollars: real repeat purchases
    assert con.execute("SELECT count(DISTINCT order_id) FROM tx").fetchall()[0][0] == 69_659


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
