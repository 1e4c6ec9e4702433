"""core_v3's margin family against an oracle written with loops, on the oracle history of
tests/unit/test_features_oracle.py given a margin column (a negative margin, blanks, refunds giving margin
back); core_v2's columns are unchanged inside core_v3; histories without margins do not get the family; and
events after the cutoff never change it (point in time)."""

from __future__ import annotations

import dataclasses
import random
import statistics
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from features.build import build_features, build_spine, resolve_columns
from features.definitions import REGISTRY
from features.history import History
from features.sets import CORE_V3_FAMILIES, FEATURE_SETS
from tests.unit.test_features_oracle import (
    ATTRIBUTES,
    C1,
    C2_T,
    CUTOFF_TS,
    CUTOFFS,
    HORIZON,
    TRANSACTIONS,
    age_days,
    assert_same,
    make_history,
    seen,
)

MARGIN_FEATURES = CORE_V3_FAMILIES["margin"]


def margin_of(i: int, amount: float) -> float | None:
    """Row i's margin: a third of the amount, except a blank every seventh row and a loss every fifth."""
    if i % 7 == 3:
        return None
    if i % 5 == 2:
        return -0.1 * abs(amount) - 1.0
    return round(amount / 3, 2)


MARGINS = [margin_of(i, r[2]) for i, r in enumerate(TRANSACTIONS)]


def with_margins(history: History, margins: list[float | None]) -> History:
    tx = history.transactions.append_column("margin", pa.array(margins, pa.float64()))
    return dataclasses.replace(history, transactions=tx)


def oracle_margin(cid: str, cutoff: datetime) -> dict[str, Any]:
    rows = [
        (r[1], r[2], m)
        for r, m in zip(TRANSACTIONS, MARGINS, strict=True)
        if r[0] == cid and seen(r[1], r[5], cutoff) and r[2] >= 0 and m is not None
    ]
    amount = sum(a for _, a, _ in rows)
    return {
        "margin_rate": sum(m for _, _, m in rows) / amount if amount else None,
        "margin_mean": statistics.mean(m for _, _, m in rows) if rows else None,
        "margin_90d": sum(m for t, _, m in rows if age_days(cutoff, t) < 90),
    }


@pytest.fixture(scope="module")
def history() -> History:
    return with_margins(make_history(), MARGINS)


@pytest.fixture(scope="module")
def spine(history: History) -> pa.Table:
    return build_spine(history, CUTOFFS)


def test_margin_features_match_the_oracle(history: History, spine: pa.Table) -> None:
    v3 = build_features(history, spine, "core_v3", horizon=f"{HORIZON}d")
    compared = 0
    for row in v3.to_pylist():
        for name, want in oracle_margin(row["customer_id"], row["cutoff"]).items():
            assert_same(row[name], want, f"{name} for {row['customer_id']} at {row['cutoff']}")
            compared += 1
    assert compared == 3 * spine.num_rows > 60
    # worked out by hand: b bought once (55.0, row 14: margin 18.33). a's purchases seen at C1 (rows 0-7):
    # 40 (13.33), 15.5 (5.17), 10.25 (row 2: a loss, -2.025), 4.75 (row 3: blank, left out), 0 (0.0),
    # 22 (7.33), 7.5 at C1 itself (row 7: a loss, -1.75); the refund of row 4 is not a purchase
    by = {(r["customer_id"], r["cutoff"]): r for r in v3.to_pylist()}
    assert by[("b", C2_T)]["margin_mean"] == pytest.approx(18.33)
    rate = (13.33 + 5.17 - 2.025 + 0 + 7.33 - 1.75) / (40 + 15.5 + 10.25 + 0 + 22 + 7.5)
    assert by[("a", C1)]["margin_rate"] == pytest.approx(rate)
    assert by[("a", C1)]["margin_90d"] == pytest.approx(-2.025 + 0 + 7.33 - 1.75)  # Jan 2 to C1


def test_core_v3_is_core_v2_plus_the_margin_family(history: History, spine: pa.Table) -> None:
    v2, v3 = FEATURE_SETS["core_v2"].features, FEATURE_SETS["core_v3"].features
    assert v3 == (*v2, *MARGIN_FEATURES)
    assert all(REGISTRY[name].family == "margin" for name in MARGIN_FEATURES)
    assert resolve_columns("core_v3", history) == [*v2, *MARGIN_FEATURES, *(f"attr_{a}" for a in ATTRIBUTES)]
    two = build_features(history, spine, "core_v2", horizon=f"{HORIZON}d")
    three = build_features(history, spine, "core_v3", horizon=f"{HORIZON}d")
    assert three.select(two.column_names).equals(two)  # core_v2's values inside core_v3 are core_v2's
    # and a margin column changes nothing in core_v2
    assert build_features(make_history(), spine, "core_v2", horizon=f"{HORIZON}d").equals(two)


def test_histories_without_margins_do_not_get_the_family() -> None:
    plain = make_history()
    assert resolve_columns("core_v3", plain) == resolve_columns("core_v2", plain)
    out = build_features(plain, build_spine(plain, [C1]), "core_v3")
    assert not set(MARGIN_FEATURES) & set(out.column_names)


@pytest.mark.parametrize("seed", range(4))
def test_events_after_the_cutoff_never_change_the_margin_family(history: History, seed: int) -> None:
    """Margins and amounts of later rows rewritten, and later purchases added: the family at each cutoff
    stays as it was."""
    rnd = random.Random(seed)
    for cutoff in CUTOFF_TS:
        spine = build_spine(history, [cutoff])
        before = build_features(history, spine, "core_v3").select(["customer_id", *MARGIN_FEATURES])
        tx = history.transactions.to_pylist()
        for row in tx:
            later = row["timestamp"] > cutoff or (
                row["recorded_at"] is not None and row["recorded_at"] > cutoff
            )
            if later:
                row["margin"] = rnd.choice([None, -50.0, 0.0, 7.0, 1e6])
                row["amount"] = rnd.choice([-10.0, 0.0, 3.0, 500.0])
        for cid in ("a", "b", "e"):
            stamp = cutoff + timedelta(microseconds=1, days=rnd.choice([0, 1, 30]))
            tx.append({**tx[0], "customer_id": cid, "timestamp": stamp, "amount": 99.0, "margin": -99.0})
        changed = dataclasses.replace(
            history, transactions=pa.Table.from_pylist(tx, history.transactions.schema)
        )
        after = build_features(changed, spine, "core_v3").select(["customer_id", *MARGIN_FEATURES])
        assert after.equals(before), f"cutoff {cutoff}, seed {seed}"
