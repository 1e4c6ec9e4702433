"""The feature builder against a slow, obviously correct pure-Python oracle.

The oracle below uses plain loops over lists of tuples, `datetime` and `statistics` only: no pandas,
no DuckDB, no Ibis. It restates the documented semantics of every non-BTYD feature of core_v1
(features/definitions.py, features/build.py) and of the labels, and the hand-built history exercises
their edge cases: events exactly at and one microsecond after a cutoff, several purchases on one day,
refunds, late-recorded events, signups after the first purchase, cancellations before and inside the
label window.
"""

from __future__ import annotations

import random
import statistics
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from features.build import build_features, build_labels, build_spine, build_training_set, resolve_columns
from features.config import DatasetConfig
from features.definitions import INTERACTION_TYPES, INTERACTION_WINDOWS, REGISTRY, WINDOWS
from features.history import History, history_from_frames
from features.sets import FEATURE_SETS

US = timedelta(microseconds=1)
HORIZON = 90
AS_OF = datetime(2024, 1, 31, 23, 59, 59)

# Cutoffs: one given as an exact datetime (events exactly at it are seen), two as dates (end of day).
C1 = datetime(2023, 3, 15, 12, 0, 0)
C2 = "2023-06-30"
C3 = "2023-09-30"
C2_T = datetime(2023, 6, 30, 23, 59, 59, 999999)
C3_T = datetime(2023, 9, 30, 23, 59, 59, 999999)
CUTOFFS = [C1, C2, C3]
CUTOFF_TS = [C1, C2_T, C3_T]


def d(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- the hand-built history ------------------------------------------------------------------------
# transactions: (customer_id, timestamp, amount, category, channel, recorded_at)
TRANSACTIONS: list[tuple[str, datetime, float, str | None, str | None, datetime | None]] = [
    # a: the busy one — same-day purchases, a refund, a zero-amount purchase, an event exactly at C1,
    # another one microsecond after C1, categories/channels (one null category), purchases at the end
    # of C2's label window (exactly T + 90d: inside; one microsecond later: outside).
    ("a", d("2022-03-10 09:00:00"), 40.0, "books", "web", None),
    ("a", d("2022-11-20 10:00:00"), 15.5, "music", "store", None),
    ("a", d("2023-01-02 08:00:00"), 10.25, "books", "web", None),
    ("a", d("2023-01-02 18:30:00"), 4.75, "toys", "app", None),
    ("a", d("2023-01-02 19:00:00"), -3.0, "toys", "app", None),
    ("a", d("2023-02-14 12:00:00"), 0.0, None, "web", None),
    ("a", d("2023-03-01 07:00:00"), 22.0, "music", "web", None),
    ("a", C1, 7.5, "books", "store", None),
    ("a", C1 + US, 100.0, "books", "store", None),
    ("a", d("2023-03-20 10:00:00"), -7.5, "books", "store", None),
    ("a", d("2023-05-05 10:00:00"), 30.0, "games", "app", None),
    ("a", d("2023-06-30 23:59:59.999999"), 12.0, "games", "app", None),
    ("a", d("2023-09-28 23:59:59.999999"), 1.0, "games", "app", None),  # C2 + 90d exactly: in C2's window
    ("a", d("2023-09-29 00:00:00"), 2.0, "games", "app", None),  # C2 + 90d + 1us: outside
    # b: one purchase only.
    ("b", d("2023-02-01 11:00:00"), 55.0, "books", "web", None),
    # c: purchases only (no interactions), several per day, with a late refund.
    ("c", d("2022-06-01 10:00:00"), 5.0, "music", "web", None),
    ("c", d("2022-06-01 11:00:00"), 6.0, "music", "web", None),
    ("c", d("2022-09-15 10:00:00"), 8.0, "music", "store", None),
    ("c", d("2023-01-10 10:00:00"), 9.0, "books", "store", None),
    ("c", d("2023-03-15 00:00:00"), 3.0, "books", "store", None),
    ("c", d("2023-08-01 10:00:00"), 4.0, "books", "store", None),
    ("c", d("2023-08-02 10:00:00"), -4.0, "books", "store", None),
    # e: joins after C1 (first event in May).
    ("e", d("2023-05-10 10:00:00"), 20.0, "toys", "app", None),
    ("e", d("2023-05-10 10:30:00"), 5.0, "toys", "web", None),
    ("e", d("2023-06-25 10:00:00"), 25.0, "toys", "app", None),
    ("e", d("2023-08-15 10:00:00"), 30.0, "toys", "app", None),
    # f: subscriber who cancelled before C1: never in the spine.
    ("f", d("2022-05-01 10:00:00"), 10.0, "books", "web", None),
    ("f", d("2022-07-01 10:00:00"), 10.0, "books", "web", None),
    # g: subscriber who cancels inside C2's label window but keeps buying.
    ("g", d("2022-12-01 10:00:00"), 30.0, "music", "web", None),
    ("g", d("2023-02-01 10:00:00"), 30.0, "music", "web", None),
    ("g", d("2023-04-01 10:00:00"), 30.0, "music", "web", None),
    ("g", d("2023-07-01 10:00:00"), 30.0, "music", "web", None),
    # h: after C2 only refunds (future_value negative, churned 1).
    ("h", d("2023-01-15 10:00:00"), 80.0, "games", "store", None),
    ("h", d("2023-04-15 10:00:00"), 40.0, "games", "store", None),
    ("h", d("2023-07-10 10:00:00"), -40.0, "games", "store", None),
    ("h", d("2023-08-10 10:00:00"), -20.0, "games", "store", None),
    # i: a purchase before C1 recorded only after C1 (unseen at C1, seen at C2); recorded_at given.
    ("i", d("2023-01-20 10:00:00"), 12.0, "books", "web", d("2023-01-20 10:00:00")),
    ("i", d("2023-03-10 10:00:00"), 99.0, "books", "web", d("2023-04-01 00:00:00")),
    ("i", d("2023-05-01 10:00:00"), 11.0, "books", "web", d("2023-05-01 10:00:01")),
    # j: only refunds seen at C1 (n_purchases 0, recency null), a purchase later.
    ("j", d("2023-02-10 10:00:00"), -15.0, "books", "web", None),
    ("j", d("2023-06-10 10:00:00"), 25.0, None, None, None),
    # k: bought before signing up (signup_tenure_days null while signup is after the cutoff).
    ("k", d("2023-01-05 10:00:00"), 14.0, "music", "app", None),
    ("k", d("2023-04-05 10:00:00"), 16.0, "music", "app", None),
    # n: cancels exactly at C1 (not eligible at C1: cancellation at or before T).
    ("n", d("2023-01-03 10:00:00"), 9.0, "books", "web", None),
]

# interactions: (customer_id, timestamp, type, recorded_at)
INTERACTIONS: list[tuple[str, datetime, str, datetime | None]] = [
    ("a", d("2022-06-01 10:00:00"), "email_open", None),
    ("a", d("2023-02-20 10:00:00"), "email_open", None),
    ("a", d("2023-03-14 10:00:00"), "login", None),
    ("a", C1, "login", None),  # exactly at C1: seen
    ("a", C1 + US, "visit", None),  # one microsecond after: not seen at C1
    ("a", d("2023-06-01 10:00:00"), "support_ticket", None),
    ("a", d("2023-06-02 10:00:00"), "complaint", None),
    ("a", d("2023-06-30 23:00:00"), "campaign_sent", None),
    ("a", d("2023-07-01 00:00:00"), "campaign_click", None),
    ("b", d("2023-01-25 10:00:00"), "campaign_sent", None),
    ("b", d("2023-01-26 10:00:00"), "campaign_click", None),
    ("b", d("2023-03-01 10:00:00"), "visit", None),
    ("b", d("2023-03-02 10:00:00"), "visit", None),
    # d: interactions but no purchases.
    ("d", d("2022-12-15 10:00:00"), "visit", None),
    ("d", d("2023-02-28 10:00:00"), "login", None),
    ("d", d("2023-06-15 10:00:00"), "support_ticket", None),
    ("d", d("2023-06-16 10:00:00"), "unknown_kind", None),  # not one of the typed features
    ("e", d("2023-05-09 10:00:00"), "visit", None),
    ("g", d("2023-06-20 10:00:00"), "complaint", None),
    ("h", d("2022-09-01 10:00:00"), "support_ticket", None),
    ("i", d("2023-03-01 10:00:00"), "login", d("2023-03-20 00:00:00")),  # recorded after C1
    ("i", d("2023-03-02 10:00:00"), "login", None),
    ("k", d("2023-02-01 10:00:00"), "email_open", d("2023-02-01 10:00:00")),
]

CANCELLATIONS: list[tuple[str, datetime]] = [
    ("f", d("2022-12-31 10:00:00")),
    ("g", d("2023-08-01 10:00:00")),
    ("n", C1),
]

# customers: (customer_id, signup_date, is_subscriber, segment, score)
CUSTOMERS: list[tuple[str, datetime | None, bool | None, str | None, float | None]] = [
    ("a", d("2022-03-01 00:00:00"), False, "gold", 0.9),
    ("b", d("2023-01-20 00:00:00"), False, "silver", None),
    ("c", None, None, "bronze", 0.3),
    ("d", d("2022-12-01 00:00:00"), False, None, 0.1),
    ("e", d("2023-05-08 00:00:00"), False, "silver", 0.5),
    ("f", d("2022-04-01 00:00:00"), True, "gold", 0.7),
    ("g", d("2022-11-30 00:00:00"), True, "gold", 0.8),
    ("h", d("2023-01-01 00:00:00"), False, "bronze", 0.2),
    ("i", d("2023-01-19 00:00:00"), True, "silver", 0.4),
    ("j", d("2023-02-01 00:00:00"), False, "bronze", 0.6),
    ("k", d("2023-03-20 00:00:00"), False, "silver", 0.55),  # after C1, after k's first purchase
    ("l", d("2023-03-01 00:00:00"), True, "gold", 0.95),  # signed up, nothing else
    ("m", d("2023-07-15 00:00:00"), False, "silver", 0.35),  # signs up after C2, never buys
    ("n", d("2023-01-01 00:00:00"), True, "bronze", 0.15),
]
ATTRIBUTES = ("is_subscriber", "segment", "score")


def make_history(churn: str = "non_contractual") -> History:
    tx = pa.table(
        {
            "customer_id": [r[0] for r in TRANSACTIONS],
            "timestamp": pa.array([r[1] for r in TRANSACTIONS], pa.timestamp("us")),
            "amount": [r[2] for r in TRANSACTIONS],
            "category": pa.array([r[3] for r in TRANSACTIONS], pa.string()),
            "channel": pa.array([r[4] for r in TRANSACTIONS], pa.string()),
            "recorded_at": pa.array([r[5] for r in TRANSACTIONS], pa.timestamp("us")),
        }
    )
    customers = pa.table(
        {
            "customer_id": [r[0] for r in CUSTOMERS],
            "signup_date": pa.array([r[1] for r in CUSTOMERS], pa.timestamp("us")),
            "is_subscriber": pa.array([r[2] for r in CUSTOMERS], pa.bool_()),
            "segment": pa.array([r[3] for r in CUSTOMERS], pa.string()),
            "score": pa.array([r[4] for r in CUSTOMERS], pa.float64()),
        }
    )
    interactions = pa.table(
        {
            "customer_id": [r[0] for r in INTERACTIONS],
            "timestamp": pa.array([r[1] for r in INTERACTIONS], pa.timestamp("us")),
            "type": [r[2] for r in INTERACTIONS],
            "recorded_at": pa.array([r[3] for r in INTERACTIONS], pa.timestamp("us")),
        }
    )
    cancellations = pa.table(
        {
            "customer_id": [r[0] for r in CANCELLATIONS],
            "timestamp": pa.array([r[1] for r in CANCELLATIONS], pa.timestamp("us")),
        }
    )
    return history_from_frames(
        transactions=tx,
        customers=customers,
        interactions=interactions,
        cancellations=cancellations,
        config=DatasetConfig(churn=churn),
        as_of=AS_OF,
    )


# --- the oracle ------------------------------------------------------------------------------------


def age_days(cutoff: datetime, ts: datetime) -> int:
    return (cutoff.date() - ts.date()).days


def seen(ts: datetime, recorded_at: datetime | None, cutoff: datetime) -> bool:
    return ts <= cutoff and (recorded_at is None or recorded_at <= cutoff)


def oracle_spine(cutoffs: list[datetime]) -> list[tuple[str, datetime]]:
    ids = sorted({r[0] for r in TRANSACTIONS} | {r[0] for r in INTERACTIONS} | {r[0] for r in CUSTOMERS})
    rows = []
    for cutoff in sorted(cutoffs):
        for cid in ids:
            firsts = [r[1] for r in TRANSACTIONS if r[0] == cid]
            firsts += [r[1] for r in INTERACTIONS if r[0] == cid]
            firsts += [r[1] for r in CUSTOMERS if r[0] == cid and r[1] is not None]
            if not firsts or min(firsts) > cutoff:
                continue
            if any(r[0] == cid and r[1] <= cutoff for r in CANCELLATIONS):
                continue
            rows.append((cid, cutoff))
    return rows


def _sum_or_none(values: list[float]) -> float | None:
    return sum(values) if values else None


def oracle_features(cid: str, cutoff: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    txs = [(r[1], r[2], r[3], r[4]) for r in TRANSACTIONS if r[0] == cid and seen(r[1], r[5], cutoff)]
    purchases = [t for t in txs if t[1] >= 0]
    refunds = [t for t in txs if t[1] < 0]
    p_amounts = [t[1] for t in purchases]
    p_ages = [age_days(cutoff, t[0]) for t in purchases]

    out["recency_days"] = min(p_ages) if p_ages else None
    out["tenure_days"] = max(p_ages) if p_ages else None
    out["n_purchases"] = len(purchases)
    out["monetary_sum"] = sum(p_amounts) if p_amounts else 0
    out["monetary_mean"] = statistics.mean(p_amounts) if p_amounts else None
    out["monetary_max"] = max(p_amounts) if p_amounts else None
    out["monetary_std"] = statistics.stdev(p_amounts) if len(p_amounts) >= 2 else None
    out["net_amount"] = sum(t[1] for t in txs) if txs else 0
    out["refund_count"] = len(refunds)
    out["refund_amount"] = -sum(t[1] for t in refunds) if refunds else 0
    out["n_categories"] = len({t[2] for t in purchases if t[2] is not None})
    out["n_channels"] = len({t[3] for t in purchases if t[3] is not None})
    for w in WINDOWS:
        inside = [a for a, age in zip(p_amounts, p_ages, strict=True) if age < w]
        out[f"purchases_{w}d"] = len(inside)
        out[f"amount_{w}d"] = sum(inside) if inside else 0
    recent = [a for a, age in zip(p_amounts, p_ages, strict=True) if age < 90]
    before = [a for a, age in zip(p_amounts, p_ages, strict=True) if 90 <= age < 180]
    out["trend_purchases_90d"] = len(recent) - len(before)
    out["trend_amount_90d"] = sum(recent) - sum(before)

    # purchase days: one per calendar day with a purchase
    day_amount: dict[Any, float] = {}
    for ts, amount, _, _ in purchases:
        day_amount[ts.date()] = day_amount.get(ts.date(), 0.0) + amount
    days = sorted(day_amount)
    gaps = [(days[i] - days[i - 1]).days for i in range(1, len(days))]
    out["frequency_days"] = len(days)
    out["ipt_mean_days"] = statistics.mean(gaps) if gaps else None
    out["ipt_std_days"] = statistics.stdev(gaps) if len(gaps) >= 2 else None
    out["ipt_last_days"] = gaps[-1] if gaps else None
    out["monetary_first"] = day_amount[days[0]] if days else None
    out["monetary_last"] = day_amount[days[-1]] if days else None
    ipt = out["ipt_mean_days"]
    rec = out["recency_days"]
    out["recency_over_ipt"] = rec / ipt if rec is not None and ipt else None

    inter = [(r[1], r[2]) for r in INTERACTIONS if r[0] == cid and seen(r[1], r[3], cutoff)]
    for kind in INTERACTION_TYPES:
        ages = [age_days(cutoff, ts) for ts, t in inter if t == kind]
        for w in INTERACTION_WINDOWS:
            out[f"{kind}_{w}d"] = len([a for a in ages if a < w])
        out[f"days_since_{kind}"] = min(ages) if ages else None

    (cust,) = [r for r in CUSTOMERS if r[0] == cid]
    signup = cust[1]
    tenure = age_days(cutoff, signup) if signup is not None else None
    out["signup_tenure_days"] = tenure if tenure is not None and tenure >= 0 else None
    for name, value in zip(ATTRIBUTES, cust[2:], strict=True):
        out[f"attr_{name}"] = value
    return out


def oracle_labels(cid: str, cutoff: datetime, churn: str, horizon: int = HORIZON) -> dict[str, Any]:
    end = cutoff + timedelta(days=horizon)
    window = [r[2] for r in TRANSACTIONS if r[0] == cid and cutoff < r[1] <= end]
    silent = not any(a >= 0 for a in window)
    cancelled = any(r[0] == cid and cutoff < r[1] <= end for r in CANCELLATIONS)
    (cust,) = [r for r in CUSTOMERS if r[0] == cid]
    subscriber = cust[2] is True
    if churn == "non_contractual":
        churned = silent
    elif churn == "contractual":
        churned = cancelled
    else:
        churned = cancelled if subscriber else silent
    return {"churned": int(churned), "future_value": sum(window) if window else 0.0}


# --- comparison helpers ----------------------------------------------------------------------------

BTYD = ("btyd_expected_purchases", "btyd_p_alive", "btyd_p_no_purchase", "btyd_expected_spend")


def assert_same(got: Any, want: Any, where: str) -> None:
    if want is None or got is None:
        assert got is None and want is None, f"{where}: pipeline {got!r}, oracle {want!r}"
    elif isinstance(want, bool) or isinstance(got, bool) or isinstance(want, str):
        assert got == want, f"{where}: pipeline {got!r}, oracle {want!r}"
    elif isinstance(want, float) or isinstance(got, float):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), f"{where}: pipeline {got!r}, oracle {want!r}"
    else:
        assert got == want, f"{where}: pipeline {got!r}, oracle {want!r}"


@pytest.fixture(scope="module")
def history() -> History:
    return make_history()


@pytest.fixture(scope="module")
def spine(history: History) -> pa.Table:
    return build_spine(history, CUTOFFS)


@pytest.fixture(scope="module")
def features(history: History, spine: pa.Table) -> pa.Table:
    return build_features(history, spine, "core_v1", horizon=f"{HORIZON}d")


# --- tests -----------------------------------------------------------------------------------------


def test_cutoff_strings_mean_end_of_day(spine: pa.Table) -> None:
    assert sorted(set(spine.column("cutoff").to_pylist())) == CUTOFF_TS


def test_spine_matches_oracle(spine: pa.Table) -> None:
    got = list(zip(spine.column("customer_id").to_pylist(), spine.column("cutoff").to_pylist(), strict=True))
    want = sorted(oracle_spine(CUTOFF_TS), key=lambda r: (r[1], r[0]))
    assert got == want


def test_spine_edge_cases(spine: pa.Table) -> None:
    """The eligibility edge cases the history was built for, stated directly."""
    at = {c: set() for c in CUTOFF_TS}
    for cid, cutoff in zip(
        spine.column("customer_id").to_pylist(), spine.column("cutoff").to_pylist(), strict=True
    ):
        at[cutoff].add(cid)
    assert "e" not in at[C1] and "e" in at[C2_T]  # joins after C1
    assert all("f" not in ids for ids in at.values())  # cancelled before every cutoff
    assert "g" in at[C2_T] and "g" not in at[C3_T]  # cancels inside C2's window
    assert all("n" not in ids for ids in at.values())  # cancelled exactly at C1
    assert "l" in at[C1]  # signup only
    assert "m" not in at[C2_T] and "m" in at[C3_T]  # signup after C2
    assert "d" in at[C1]  # interactions only


def test_feature_columns(history: History, features: pa.Table) -> None:
    columns = resolve_columns("core_v1", history)
    assert features.column_names == ["customer_id", "cutoff", *columns]
    expected = [*FEATURE_SETS["core_v1"].features, *(f"attr_{a}" for a in ATTRIBUTES)]
    assert columns == expected  # every family is fed by this history


def test_features_match_oracle(features: pa.Table, spine: pa.Table) -> None:
    rows = features.to_pylist()
    assert [(r["customer_id"], r["cutoff"]) for r in rows] == list(
        zip(spine.column("customer_id").to_pylist(), spine.column("cutoff").to_pylist(), strict=True)
    )
    compared = 0
    for row in rows:
        want = oracle_features(row["customer_id"], row["cutoff"])
        assert set(want) == {c for c in row if c not in ("customer_id", "cutoff", *BTYD)}
        for name, value in want.items():
            assert_same(row[name], value, f"{name} for {row['customer_id']} at {row['cutoff']}")
            compared += 1
    assert compared > 500


def test_oracle_covers_every_non_btyd_core_feature() -> None:
    names = oracle_features("a", C1)
    for name in FEATURE_SETS["core_v1"].features:
        assert (name in names) != (REGISTRY[name].source == "btyd"), name


@pytest.mark.parametrize(
    ("cid", "cutoff", "column", "value"),
    [
        ("a", C1, "recency_days", 0),  # the purchase exactly at C1 is seen...
        ("a", C1, "monetary_last", 7.5),  # ...the one a microsecond later is not
        ("a", C1, "days_since_login", 0),
        ("a", C1, "visit_365d", 0),
        ("a", C2_T, "monetary_first", 40.0),
        ("a", C1, "purchases_90d", 5),  # Jan 2 (x2), Feb 14 (zero amount), Mar 1, Mar 15
        ("c", C1, "recency_days", 0),  # 2023-03-15 00:00 is on C1's day
        ("i", C1, "n_purchases", 1),  # the March purchase was recorded after C1
        ("i", C2_T, "n_purchases", 3),
        ("i", C1, "login_30d", 1),
        ("j", C1, "n_purchases", 0),
        ("j", C1, "recency_days", None),
        ("j", C1, "refund_amount", 15.0),
        ("k", C1, "signup_tenure_days", None),
        ("k", C2_T, "signup_tenure_days", 102),
        ("l", C1, "n_purchases", 0),
        ("l", C1, "monetary_mean", None),
        ("d", C1, "frequency_days", 0),
        ("c", C1, "support_ticket_365d", 0),
        ("c", C1, "days_since_visit", None),
    ],
)
def test_selected_edge_values(
    features: pa.Table, cid: str, cutoff: datetime, column: str, value: Any
) -> None:
    """A few values worked out by hand, so the oracle itself is checked too."""
    rows = [r for r in features.to_pylist() if r["customer_id"] == cid and r["cutoff"] == cutoff]
    assert len(rows) == 1
    assert_same(rows[0][column], value, f"{column} for {cid} at {cutoff}")
    assert_same(oracle_features(cid, cutoff)[column], value, f"oracle {column} for {cid} at {cutoff}")


def seeded_transactions(seed: int = 7, n: int = 150) -> pa.Table:
    """A BG/NBD-like population (gamma purchase rates, beta dropout, customer-level mean spend): large and
    heterogeneous enough for both models to be identified, unlike the hand-built history."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        day = rnd.uniform(0, 120)
        rate = rnd.gammavariate(1.5, 1 / 20.0)
        dropout = rnd.betavariate(1, 5)
        mean_spend = rnd.lognormvariate(3, 0.6)
        while day < 540:
            rows.append(
                (f"s{i:03d}", datetime(2022, 1, 1) + timedelta(days=day), rnd.gammavariate(6, mean_spend / 6))
            )
            if rnd.random() < dropout:
                break
            day += rnd.expovariate(rate)
    return pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "timestamp": pa.array([r[1] for r in rows], pa.timestamp("us")),
            "amount": [round(r[2], 2) for r in rows],
        }
    )


def assert_btyd_in_range(features: pa.Table) -> None:
    for name in BTYD:
        assert name in features.column_names
    for name in ("btyd_p_alive", "btyd_p_no_purchase"):
        for v in features.column(name).to_pylist():
            assert v is None or 0.0 <= v <= 1.0, (name, v)
    for name in ("btyd_expected_purchases", "btyd_expected_spend"):
        for v in features.column(name).to_pylist():
            assert v is None or v >= 0.0, (name, v)
    # customers with no purchase seen have no BTYD summary at all
    for row in features.to_pylist():
        if row["frequency_days"] == 0:
            assert all(row[n] is None for n in BTYD), row["customer_id"]


def test_btyd_columns_in_range(features: pa.Table) -> None:
    """On the hand-built history the models are not identified (too few customers): the columns are
    there, null or in range."""
    assert_btyd_in_range(features)


def test_btyd_columns_in_range_when_the_model_fits() -> None:
    history = history_from_frames(transactions=seeded_transactions(), as_of=datetime(2023, 7, 1))
    features = build_features(history, build_spine(history, ["2022-09-30", "2023-01-31"]), "rfm_v1", "90d")
    assert_btyd_in_range(features)
    for name in BTYD:
        assert features.column(name).null_count == 0, name  # every customer has a purchase: all fitted


@pytest.mark.parametrize("churn", ["non_contractual", "contractual", "mixed"])
def test_labels_match_oracle(spine: pa.Table, churn: str) -> None:
    history = make_history(churn)
    for explicit in (None, churn):
        labels = build_labels(history, spine, f"{HORIZON}d", churn=explicit)
        assert labels.column_names == ["customer_id", "cutoff", "churned", "future_value"]
        assert labels.schema.field("churned").type == pa.int8()
        rows = labels.to_pylist()
        assert [(r["customer_id"], r["cutoff"]) for r in rows] == list(
            zip(spine.column("customer_id").to_pylist(), spine.column("cutoff").to_pylist(), strict=True)
        )
        for row in rows:
            want = oracle_labels(row["customer_id"], row["cutoff"], churn)
            where = f"{churn} labels for {row['customer_id']} at {row['cutoff']}"
            assert row["churned"] == want["churned"], where
            assert_same(row["future_value"], want["future_value"], where)


def test_label_edge_cases(spine: pa.Table) -> None:
    nc = {(r["customer_id"], r["cutoff"]): r for r in build_labels(make_history(), spine, "90d").to_pylist()}
    ct = {
        (r["customer_id"], r["cutoff"]): r
        for r in build_labels(make_history(), spine, "90d", churn="contractual").to_pylist()
    }
    # h: only refunds after C2
    assert nc[("h", C2_T)] == {"customer_id": "h", "cutoff": C2_T, "churned": 1, "future_value": -60.0}
    # a: the purchase at exactly C2 + 90d is inside the window, the one a microsecond later is not
    assert nc[("a", C2_T)]["future_value"] == pytest.approx(1.0)
    # a: the purchase a microsecond after C1 belongs to C1's window
    assert nc[("a", C1)]["future_value"] == pytest.approx(100.0 - 7.5 + 30.0)
    # g: cancels inside C2's window while still buying
    assert ct[("g", C2_T)]["churned"] == 1 and nc[("g", C2_T)]["churned"] == 0


def test_training_set_is_features_plus_labels(history: History, features: pa.Table) -> None:
    ts = build_training_set(history, CUTOFFS, f"{HORIZON}d", "core_v1")
    assert ts.column_names == [*features.column_names, "churned", "future_value"]
    assert ts.select(features.column_names).equals(features)


def test_labels_refuse_incomplete_windows(history: History) -> None:
    late = build_spine(history, ["2023-11-15"])
    with pytest.raises(ValueError, match="ends after the history"):
        build_labels(history, late, "90d")
    # without an as-of date the last event bounds the history
    no_as_of = history_from_frames(
        transactions=history.transactions, customers=history.customers, interactions=history.interactions
    )
    with pytest.raises(ValueError, match="ends after the history"):
        build_labels(no_as_of, build_spine(no_as_of, ["2023-07-01"]), "90d")
    build_labels(no_as_of, build_spine(no_as_of, ["2023-06-30"]), "90d")


def test_absent_families_are_left_out() -> None:
    tx = pa.table(
        {
            "customer_id": [r[0] for r in TRANSACTIONS],
            "timestamp": pa.array([r[1] for r in TRANSACTIONS], pa.timestamp("us")),
            "amount": [r[2] for r in TRANSACTIONS],
        }
    )
    history = history_from_frames(transactions=tx, as_of=AS_OF)
    columns = resolve_columns("core_v1", history)
    for absent in ("n_categories", "n_channels", "signup_tenure_days", "login_30d", "days_since_visit"):
        assert absent not in columns
    assert not [c for c in columns if c.startswith("attr_")]
    out = build_features(history, build_spine(history, [C1]), "core_v1")
    assert out.column_names == ["customer_id", "cutoff", *columns]
