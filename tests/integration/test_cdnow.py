"""The bundled real data: CDNOW, written by `diamond data cdnow`, loads with exactly the published counts and
totals. Converting the original file and refusing to overwrite are in tests/unit/test_cdnow.py."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

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
