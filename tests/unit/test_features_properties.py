"""Point-in-time properties of the builder on random small histories (Hypothesis).

1. Events after the cutoff never change a feature (BTYD included: it is fitted on data <= T only).
2. The row order of the input tables never changes features or labels.
3. Events at or before the cutoff never change a label.

Features are core_v2's (core_v1's plus interaction values, tickets, complaints, campaign response,
engagement trend and category preferences): transactions carry a category and interactions a value.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.build import build_features, build_labels, build_spine
from features.config import DatasetConfig
from features.definitions import INTERACTION_TYPES
from features.history import History, history_from_frames

BASE = datetime(2022, 1, 1)
AS_OF = BASE + timedelta(days=520)
HORIZON = "90d"
CONFIG = DatasetConfig(duplicates="keep")  # random rows may repeat exactly
# build_features costs about half a second (Ibis compilation plus a BTYD fit), so the example counts are
# sized to keep this file under a minute.
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
FEATURE_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=_HEALTH)
SHUFFLE_SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=_HEALTH)
LABEL_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=_HEALTH)

# customer_id, timestamp, amount, recorded_at, category
Tx = tuple[str, datetime, float, datetime | None, str | None]
Ix = tuple[str, datetime, str, float | None]  # customer_id, timestamp, type, value

AMOUNTS = st.sampled_from([0.0, 1.0, 2.5, 10.0, 19.99, 100.0, -1.0, -5.5, -20.0])
TYPES = st.sampled_from([*INTERACTION_TYPES, "other"])
CATEGORIES = st.sampled_from([None, "books", "music", "toys"])
VALUES = st.sampled_from([None, None, 0.0, 1.0, 3.5, 10.0, -2.0])


@st.composite
def timestamps(draw: st.DrawFn, lo: int = 0, hi: int = 420) -> datetime:
    day = draw(st.integers(lo, hi))
    second = draw(st.sampled_from([0, 1, 3600 * 12, 86399]))
    return BASE + timedelta(days=day, seconds=second)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Tx], list[Ix] | None, datetime]:
    n = draw(st.integers(2, 8))
    tx: list[Tx] = []
    for i in range(n):
        for _ in range(draw(st.integers(1 if i == 0 else 0, 15))):
            ts = draw(timestamps())
            late = draw(st.sampled_from([None, None, None, 0, 5, 40]))
            recorded = None if late is None else ts + timedelta(days=late)
            tx.append((f"c{i}", ts, draw(AMOUNTS), recorded, draw(CATEGORIES)))
    interactions: list[Ix] | None = None
    if draw(st.booleans()):
        interactions = [
            (f"c{draw(st.integers(0, n - 1))}", draw(timestamps()), draw(TYPES), draw(VALUES))
            for _ in range(draw(st.integers(1, 12)))
        ]
    # a bare date (end of day) or an exact timestamp, leaving room for a 90-day window before AS_OF
    day = draw(st.integers(60, 400))
    cutoff = BASE + timedelta(days=day, seconds=draw(st.sampled_from([0, 43200, 86399])))
    if draw(st.booleans()):
        cutoff = BASE + timedelta(days=day, hours=23, minutes=59, seconds=59, microseconds=999999)
    return tx, interactions, cutoff


def make_history(tx: list[Tx], interactions: list[Ix] | None) -> History:
    t = pa.table(
        {
            "customer_id": [r[0] for r in tx],
            "timestamp": pa.array([r[1] for r in tx], pa.timestamp("us")),
            "amount": pa.array([r[2] for r in tx], pa.float64()),
            "recorded_at": pa.array([r[3] for r in tx], pa.timestamp("us")),
            "category": pa.array([r[4] for r in tx], pa.string()),
        }
    )
    i = None
    if interactions:
        i = pa.table(
            {
                "customer_id": [r[0] for r in interactions],
                "timestamp": pa.array([r[1] for r in interactions], pa.timestamp("us")),
                "type": [r[2] for r in interactions],
                "value": pa.array([r[3] for r in interactions], pa.float64()),
            }
        )
    return history_from_frames(transactions=t, interactions=i, config=CONFIG, as_of=AS_OF)


def assert_tables_equal(got: pa.Table, want: pa.Table, rel: float = 1e-9) -> None:
    assert got.column_names == want.column_names
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        for k, (a, b) in enumerate(
            zip(got.column(name).to_pylist(), want.column(name).to_pylist(), strict=True)
        ):
            where = f"{name} row {k}"
            if isinstance(b, float) and a is not None:
                assert a == pytest.approx(b, rel=rel, abs=1e-12), where
            else:
                assert a == b, where


def features(history: History, spine: pa.Table) -> pa.Table:
    return build_features(history, spine, "core_v2", horizon=HORIZON)


# --- 1. the future never leaks into features ---------------------------------------------------------


@st.composite
def future_changes(draw: st.DrawFn) -> tuple[tuple[list[Tx], list[Ix] | None, datetime], list[Tx], list[Ix]]:
    tx, interactions, cutoff = draw(histories())
    after = (cutoff - BASE).days
    ids = sorted({r[0] for r in tx} | {"new"})
    new_tx = list(tx)
    # alter existing events after the cutoff (amounts, timestamps moved later)
    for k, r in enumerate(new_tx):
        if r[1] > cutoff and draw(st.booleans()):
            new_tx[k] = (
                r[0],
                r[1] + timedelta(days=draw(st.integers(0, 30))),
                draw(AMOUNTS),
                r[3],
                draw(CATEGORIES),
            )
    # add purchases and refunds after the cutoff, and events before it only recorded after it
    for _ in range(draw(st.integers(1, 6))):
        ts = draw(timestamps(after, 460))
        if ts <= cutoff:
            ts = cutoff + timedelta(microseconds=1)
        new_tx.append((draw(st.sampled_from(ids)), ts, draw(AMOUNTS), None, draw(CATEGORIES)))
    for _ in range(draw(st.integers(0, 3))):
        ts = draw(timestamps(0, after))
        if ts <= cutoff:
            late = cutoff + timedelta(microseconds=1)
            new_tx.append((draw(st.sampled_from(ids)), ts, draw(AMOUNTS), late, draw(CATEGORIES)))
    new_ix = [
        (
            draw(st.sampled_from(ids)),
            cutoff + timedelta(microseconds=1, days=draw(st.integers(0, 60))),
            t,
            draw(VALUES),
        )
        for t in draw(st.lists(TYPES, min_size=0, max_size=4))
    ]
    # clicks just after the cutoff, and purchases just after it: a click's conversion must not see them
    for r in interactions or []:
        if r[1] <= cutoff and r[2] == "campaign_click" and draw(st.booleans()):
            new_tx.append((r[0], cutoff + timedelta(microseconds=1), 5.0, None, "books"))
    for r in interactions or []:
        if r[1] > cutoff:
            new_ix.append((r[0], r[1], draw(TYPES), draw(VALUES)))  # a later one's type and value changed
        else:
            new_ix.append(r)
    return (tx, interactions, cutoff), new_tx, new_ix


@FEATURE_SETTINGS
@given(future_changes())
def test_events_after_the_cutoff_never_change_features(case: Any) -> None:
    (tx, interactions, cutoff), new_tx, new_ix = case
    before = make_history(tx, interactions)
    spine = build_spine(before, [cutoff])
    # interactions: keep the table present in both runs when the first has one, so the columns match
    after = make_history(new_tx, new_ix if interactions else None)
    assert_tables_equal(features(after, spine), features(before, spine))
    # the spine only looks at events <= T. By its documented rule (first event <= T) it reads event
    # timestamps, not recorded_at, so an event before T recorded after it can make a customer eligible:
    # compare only when the added events before T are all for customers already in the spine.
    eligible = set(spine.column("customer_id").to_pylist())
    if {r[0] for r in new_tx if r[1] <= cutoff} <= eligible:
        assert build_spine(after, [cutoff]).equals(spine)


# --- 2. row order never matters ------------------------------------------------------------------------


@SHUFFLE_SETTINGS
@given(histories(), st.randoms(use_true_random=False), st.integers(0, 30))
def test_row_order_never_changes_features_or_labels(case: Any, rnd: random.Random, extra: int) -> None:
    tx, interactions, cutoff = case
    cutoffs = [cutoff, cutoff - timedelta(days=extra + 20)]
    history = make_history(tx, interactions)
    shuffled_tx, shuffled_ix = list(tx), list(interactions) if interactions else None
    rnd.shuffle(shuffled_tx)
    if shuffled_ix:
        rnd.shuffle(shuffled_ix)
    shuffled = make_history(shuffled_tx, shuffled_ix)
    spine = build_spine(history, cutoffs)
    assert_tables_equal(build_spine(shuffled, cutoffs), spine)
    assert_tables_equal(features(shuffled, spine), features(history, spine))
    assert_tables_equal(build_labels(shuffled, spine, HORIZON), build_labels(history, spine, HORIZON))


# --- 3. the past never leaks into labels ------------------------------------------------------------------


@st.composite
def past_changes(draw: st.DrawFn) -> tuple[tuple[list[Tx], list[Ix] | None, datetime], list[Tx], list[Ix]]:
    tx, interactions, cutoff = draw(histories())
    eligible = sorted(
        {r[0] for r in tx if r[1] <= cutoff} | {r[0] for r in interactions or [] if r[1] <= cutoff}
    )
    new_tx = []
    for r in tx:
        if r[1] <= cutoff and draw(st.booleans()):
            r = (r[0], r[1], draw(AMOUNTS), r[3], r[4])  # a purchase becomes a refund, or another amount
        new_tx.append(r)
    if eligible:
        for _ in range(draw(st.integers(0, 5))):
            ts = draw(timestamps(0, (cutoff - BASE).days))
            if ts <= cutoff:
                new_tx.append((draw(st.sampled_from(eligible)), ts, draw(AMOUNTS), None, draw(CATEGORIES)))
        new_ix = list(interactions or []) + [
            (draw(st.sampled_from(eligible)), cutoff, draw(TYPES), draw(VALUES))
            for _ in range(draw(st.integers(0, 3)))
        ]
    else:
        new_ix = list(interactions or [])
    return (tx, interactions, cutoff), new_tx, new_ix


@LABEL_SETTINGS
@given(past_changes())
def test_events_at_or_before_the_cutoff_never_change_labels(case: Any) -> None:
    (tx, interactions, cutoff), new_tx, new_ix = case
    before = make_history(tx, interactions)
    spine = build_spine(before, [cutoff])
    after = make_history(new_tx, new_ix or None)
    assert_tables_equal(build_labels(after, spine, HORIZON), build_labels(before, spine, HORIZON))


# --- 1b. the same, on a history large enough for the BTYD models to be fitted -----------------------------


def seeded_transactions(seed: int = 11, n: int = 150) -> list[Tx]:
    """A BG/NBD-like population: gamma purchase rates, beta dropout, customer-level mean spend."""
    rnd = random.Random(seed)
    rows: list[Tx] = []
    for i in range(n):
        day = rnd.uniform(0, 120)
        rate = rnd.gammavariate(1.5, 1 / 20.0)
        dropout = rnd.betavariate(1, 5)
        mean_spend = rnd.lognormvariate(3, 0.6)
        while day < 500:
            amount = round(rnd.gammavariate(6, mean_spend / 6), 2)
            rows.append((f"s{i:03d}", BASE + timedelta(days=day), amount, None, rnd.choice(["a", "b", None])))
            if rnd.random() < dropout:
                break
            day += rnd.expovariate(rate)
    return rows


def test_events_after_the_cutoff_never_change_fitted_btyd_features() -> None:
    tx = seeded_transactions()
    cutoff = BASE + timedelta(days=300)
    before = make_history(tx, None)
    spine = build_spine(before, [cutoff])
    rnd = random.Random(3)
    later = [(r[0], r[1], r[2] * 3 + 1, r[3], "c") if r[1] > cutoff else r for r in tx]
    later += [
        (f"s{rnd.randrange(150):03d}", cutoff + timedelta(days=rnd.uniform(0, 150)), 50.0, None, "c")
        for _ in range(200)
    ]
    later += [
        (f"s{rnd.randrange(150):03d}", cutoff - timedelta(days=5), 75.0, cutoff + timedelta(days=1), "a")
        for _ in range(20)
    ]
    want = features(before, spine)
    assert want.column("btyd_p_alive").null_count == 0  # the models were fitted
    assert_tables_equal(features(make_history(later, None), spine), want)
