"""The feature builder against a slow, obviously correct pure-Python oracle.

The oracle below uses plain loops over lists of tuples, `datetime` and `statistics` only: no pandas,
no DuckDB, no Ibis. It restates the documented semantics of every non-BTYD feature of core_v1
(features/definitions.py, features/build.py) and of the labels, and the hand-built history exercises
their edge cases: events exactly at and one microsecond after a cutoff, several purchases on one day,
refunds, late-recorded events, signups after the first purchase, cancellations before and inside the
label window.
"""

from __future__ import annotations

import math
import random
import statistics
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from features.build import build_features, build_labels, build_spine, build_training_set, resolve_columns
from features.config import DatasetConfig
from features.definitions import (
    ENGAGEMENT_TYPES,
    INTERACTION_TYPES,
    INTERACTION_WINDOWS,
    REGISTRY,
    VALUE_TYPES,
    WINDOWS,
)
from features.history import History, history_from_frames
from features.sets import CORE_V2_FAMILIES, FEATURE_SETS

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
    # p: categories with a zero-amount one, a null category, a new category just before C2, a refund.
    ("p", d("2023-01-10 10:00:00"), 50.0, "books", "web", None),
    ("p", d("2023-02-03 10:00:00"), 20.0, "music", "web", None),
    ("p", d("2023-02-03 15:00:00"), 0.0, "toys", "web", None),
    ("p", d("2023-04-02 09:00:00"), 30.0, "books", "app", None),
    ("p", d("2023-06-20 10:00:00"), 10.0, None, "app", None),
    ("p", d("2023-06-29 10:00:00"), 25.0, "games", "app", None),
    ("p", d("2023-07-15 10:00:00"), -5.0, "games", "app", None),
]

# interactions: (customer_id, timestamp, type, recorded_at); value None (core_v1's rows), see INTERACTIONS
_INTERACTIONS_V1: list[tuple[str, datetime, str, datetime | None]] = [
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
# p: every core_v2 family — scored tickets with repeats (4 and exactly 7 days apart) and a same-day null
# value, clicks converting within 2 days and exactly 7 days and one not converting (20 days), a click
# without a send, visits scored twice on one day, complaints before and after the last purchase, a login
# recorded late. (customer_id, timestamp, type, recorded_at, value)
_INTERACTIONS_V2: list[tuple[str, datetime, str, datetime | None, float | None]] = [
    ("p", d("2022-12-20 10:00:00"), "campaign_sent", None, 1.0),
    ("p", d("2022-12-21 10:00:00"), "email_open", None, 1.0),
    ("p", d("2022-12-21 10:05:00"), "campaign_click", None, 1.0),
    ("p", d("2023-01-05 10:00:00"), "support_ticket", None, 3.0),
    ("p", d("2023-01-09 10:00:00"), "support_ticket", None, 4.0),
    ("p", d("2023-01-09 16:00:00"), "support_ticket", None, None),
    ("p", d("2023-02-20 10:00:00"), "support_ticket", None, 2.0),
    ("p", d("2023-02-27 10:00:00"), "support_ticket", None, None),
    ("p", d("2023-03-31 09:00:00"), "campaign_sent", None, 2.0),
    ("p", d("2023-03-31 11:00:00"), "campaign_click", None, 2.0),
    ("p", d("2023-03-31 12:00:00"), "campaign_click", None, 2.0),
    ("p", d("2023-04-08 10:00:00"), "visit", None, 5.0),
    ("p", d("2023-04-08 18:00:00"), "visit", None, 2.0),
    ("p", d("2023-05-01 10:00:00"), "visit", None, None),
    ("p", d("2023-05-10 10:00:00"), "complaint", None, 1.0),
    ("p", d("2023-06-22 10:00:00"), "campaign_sent", None, 3.0),
    ("p", d("2023-06-22 12:00:00"), "campaign_click", None, 3.0),
    ("p", d("2023-06-30 20:00:00"), "login", None, 8.0),
    ("p", d("2023-07-20 10:00:00"), "complaint", None, None),
    ("p", d("2023-08-01 10:00:00"), "login", d("2023-10-05 00:00:00"), 6.0),
    ("p", d("2023-09-29 10:00:00"), "campaign_click", None, 4.0),
    ("d", d("2023-06-20 10:00:00"), "support_ticket", None, 1.5),  # 5 days after d's first ticket
    ("g", d("2023-06-21 10:00:00"), "complaint", None, 2.0),
    ("h", d("2022-09-01 18:00:00"), "support_ticket", None, 0.0),  # same day as h's unscored ticket
]
INTERACTIONS = [(*r, None) for r in _INTERACTIONS_V1] + _INTERACTIONS_V2

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
    ("p", d("2022-12-01 00:00:00"), False, "gold", 0.65),
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
            "value": pa.array([r[4] for r in INTERACTIONS], pa.float64()),
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

    out.update(oracle_v2(cid, cutoff, purchases, days, out))

    (cust,) = [r for r in CUSTOMERS if r[0] == cid]
    signup = cust[1]
    tenure = age_days(cutoff, signup) if signup is not None else None
    out["signup_tenure_days"] = tenure if tenure is not None and tenure >= 0 else None
    for name, value in zip(ATTRIBUTES, cust[2:], strict=True):
        out[f"attr_{name}"] = value
    return out


def oracle_v2(
    cid: str, cutoff: datetime, purchases: list[Any], days: list[Any], v1: dict[str, Any]
) -> dict[str, Any]:
    """core_v2's new families, restated with loops over the seen rows."""
    out: dict[str, Any] = {}
    inter = [(r[1], r[2], r[4]) for r in INTERACTIONS if r[0] == cid and seen(r[1], r[3], cutoff)]

    def type_days(kind: str) -> list[Any]:
        return sorted({ts.date() for ts, t, _ in inter if t == kind})

    for kind in VALUE_TYPES:
        values = [(ts, v) for ts, t, v in inter if t == kind and v is not None]
        out[f"{kind}_value_mean"] = statistics.mean(v for _, v in values) if values else None
        last_day = max((ts.date() for ts, _ in values), default=None)
        on_last = [v for ts, v in values if ts.date() == last_day]
        out[f"{kind}_value_last"] = statistics.mean(on_last) if on_last else None

    tdays = type_days("support_ticket")
    tgaps = [(tdays[k] - tdays[k - 1]).days for k in range(1, len(tdays))]
    out["support_ticket_repeat_365d"] = sum(
        1 for k in range(1, len(tdays)) if tgaps[k - 1] <= 7 and (cutoff.date() - tdays[k]).days < 365
    )
    out["support_ticket_gap_last_days"] = tgaps[-1] if tgaps else None
    out["support_ticket_first_days"] = (cutoff.date() - tdays[0]).days if tdays else None

    complaint, recency = v1["days_since_complaint"], v1["recency_days"]
    if complaint is None:
        out["complaint_after_last_purchase"] = 0
    else:
        out["complaint_after_last_purchase"] = 1 if recency is None or complaint <= recency else 0

    def n_of(kind: str) -> int:
        return sum(1 for _, t, _ in inter if t == kind)

    sent = n_of("campaign_sent")
    out["campaign_click_rate"] = n_of("campaign_click") / sent if sent else None
    out["campaign_open_rate"] = n_of("email_open") / sent if sent else None
    clicks = type_days("campaign_click")
    converted = [any(0 <= (p - c).days <= 7 for p in days) for c in clicks]
    out["campaign_conversions_365d"] = sum(
        1 for c, ok in zip(clicks, converted, strict=True) if ok and (cutoff.date() - c).days < 365
    )
    out["campaign_conversion_rate"] = sum(converted) / len(converted) if converted else None

    def engaged(lo: int, hi: int) -> int:
        return sum(1 for ts, t, _ in inter if t in ENGAGEMENT_TYPES and lo <= age_days(cutoff, ts) < hi)

    out["engagement_90d"] = engaged(0, 90)
    out["engagement_trend_90d"] = engaged(0, 90) - engaged(90, 180)
    out["engagement_recent_share_180d"] = engaged(0, 90) / engaged(0, 180) if engaged(0, 180) else None

    spend: dict[str, float] = {}
    first: dict[str, int] = {}
    for ts, amount, category, _ in purchases:
        if category is not None:
            spend[category] = spend.get(category, 0.0) + amount
            first[category] = max(first.get(category, 0), age_days(cutoff, ts))
    total = sum(spend.values())
    out["top_category_share"] = max(spend.values()) / total if total else None
    shares = [s / total for s in spend.values() if s > 0] if total else []
    out["category_entropy"] = -sum(q * math.log(q) for q in shares) if total else None
    out["new_categories_90d"] = sum(1 for a in first.values() if a < 90)
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


@pytest.fixture(scope="module")
def features_v2(history: History, spine: pa.Table) -> pa.Table:
    return build_features(history, spine, "core_v2", horizon=f"{HORIZON}d")


V2_NEW = [name for family in CORE_V2_FAMILIES.values() for name in family]


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


@pytest.mark.parametrize("key", ["core_v1", "core_v2"])
def test_features_match_oracle(features: pa.Table, features_v2: pa.Table, spine: pa.Table, key: str) -> None:
    rows = (features if key == "core_v1" else features_v2).to_pylist()
    assert [(r["customer_id"], r["cutoff"]) for r in rows] == list(
        zip(spine.column("customer_id").to_pylist(), spine.column("cutoff").to_pylist(), strict=True)
    )
    compared = 0
    for row in rows:
        want = oracle_features(row["customer_id"], row["cutoff"])
        if key == "core_v1":
            want = {k: v for k, v in want.items() if k not in V2_NEW}
        assert set(want) == {c for c in row if c not in ("customer_id", "cutoff", *BTYD)}
        for name, value in want.items():
            assert_same(row[name], value, f"{key} {name} for {row['customer_id']} at {row['cutoff']}")
            compared += 1
    assert compared > (500 if key == "core_v1" else 800)


def test_core_v2_is_core_v1_plus_new_families(
    history: History, features: pa.Table, features_v2: pa.Table
) -> None:
    """core_v1 is frozen: the same columns, and core_v2's copy of them holds the same values."""
    v1, v2 = FEATURE_SETS["core_v1"].features, FEATURE_SETS["core_v2"].features
    assert v2 == (*v1, *V2_NEW) and len(set(V2_NEW)) == len(V2_NEW) == 22
    assert resolve_columns("core_v2", history) == [*v1, *V2_NEW, *(f"attr_{a}" for a in ATTRIBUTES)]
    assert features_v2.select(features.column_names).equals(features)
    for name in V2_NEW:
        assert REGISTRY[name].family in CORE_V2_FAMILIES and name in CORE_V2_FAMILIES[REGISTRY[name].family]


@pytest.mark.parametrize("key", ["core_v1", "core_v2"])
def test_oracle_covers_every_non_btyd_core_feature(key: str) -> None:
    names = oracle_features("a", C1)
    for name in FEATURE_SETS[key].features:
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


@pytest.mark.parametrize(
    ("cid", "cutoff", "column", "value"),
    [
        # values: tickets 3.0 (Jan 5), 4.0 and null (Jan 9), 2.0 (Feb 20), null (Feb 27)
        ("p", C1, "support_ticket_value_mean", 3.0),
        ("p", C1, "support_ticket_value_last", 2.0),  # Feb 27 carries no value: Feb 20's
        ("p", C1, "visit_value_mean", None),
        ("p", C2_T, "visit_value_mean", 3.5),  # 5 and 2 on Apr 8 (May 1's null ignored)
        ("p", C2_T, "visit_value_last", 3.5),
        ("p", C2_T, "login_value_last", 8.0),
        ("p", C3_T, "login_value_mean", 8.0),  # Aug 1's login was recorded after C3
        ("p", C3_T, "complaint_value_last", 1.0),  # Jul 20's complaint has no value
        ("h", C1, "support_ticket_value_last", 0.0),  # a zero score is a score
        ("a", C2_T, "support_ticket_value_mean", None),  # tickets without values
        # tickets: days Jan 5, Jan 9 (4 days: repeat), Feb 20 (42), Feb 27 (7: repeat)
        ("p", C1, "support_ticket_repeat_365d", 2),
        ("p", C1, "support_ticket_gap_last_days", 7),
        ("p", C1, "support_ticket_first_days", 69),  # Jan 5 to Mar 15
        ("p", d("2024-01-08"), "support_ticket_repeat_365d", 2),  # Jan 9, 2023 is 364 days old...
        ("p", d("2024-01-09"), "support_ticket_repeat_365d", 1),  # ...and now 365: out of the window
        ("d", C2_T, "support_ticket_repeat_365d", 1),
        ("d", C1, "support_ticket_gap_last_days", None),
        ("b", C1, "support_ticket_first_days", None),
        # complaints against the last purchase (May 10 complaint, purchases to Jun 29, Jul 20 complaint)
        ("p", C2_T, "complaint_after_last_purchase", 0),
        ("p", C3_T, "complaint_after_last_purchase", 1),  # the Jul 15 refund is not a purchase
        ("g", C2_T, "complaint_after_last_purchase", 1),  # complaints Jun 20/21; last purchase seen: Apr 1
        ("a", C2_T, "complaint_after_last_purchase", 0),  # complaint Jun 2, purchase on C2's day
        ("d", C2_T, "complaint_after_last_purchase", 0),  # no complaint
        # campaigns: sent Dec 20, Mar 31, Jun 22; clicks Dec 21 (no purchase within 7 days), Mar 31 x2
        # (purchase Apr 2), Jun 22 (purchase Jun 29: exactly 7 days), Sep 30 (no send, no purchase)
        ("p", C1, "campaign_click_rate", 1.0),
        ("p", C1, "campaign_open_rate", 1.0),
        ("p", C1, "campaign_conversion_rate", 0.0),
        ("p", C2_T, "campaign_click_rate", 4 / 3),
        ("p", C2_T, "campaign_conversions_365d", 2),
        ("p", C2_T, "campaign_conversion_rate", 2 / 3),
        ("p", C3_T, "campaign_conversion_rate", 2 / 4),
        ("p", C3_T, "campaign_click_rate", 5 / 3),
        ("b", C1, "campaign_conversion_rate", 1.0),  # click Jan 26, purchase Feb 1
        ("c", C1, "campaign_click_rate", None),
        ("c", C1, "campaign_conversions_365d", 0),
        # engagement (opens, clicks, logins, visits) at C2: Apr 8 x2, May 1, Jun 22, Jun 30 in the last 90
        # days; Mar 31 x2 in the 90 before (Dec 21's two are older than 180 days)
        ("p", C2_T, "engagement_90d", 5),
        ("p", C2_T, "engagement_trend_90d", 3),
        ("p", C2_T, "engagement_recent_share_180d", 5 / 7),
        ("c", C2_T, "engagement_recent_share_180d", None),
        # categories at C2: books 80, music 20, toys 0, games 25 (the null category is left out)
        ("p", C2_T, "top_category_share", 80 / 125),
        ("p", C2_T, "category_entropy", -sum(q * math.log(q) for q in (80 / 125, 20 / 125, 25 / 125))),
        ("p", C2_T, "new_categories_90d", 1),  # games (Jun 29); books, music, toys are older than 90 days
        ("p", C1, "new_categories_90d", 3),  # books, music, toys within 90 days of Mar 15
        ("b", C1, "category_entropy", 0.0),
        ("d", C1, "top_category_share", None),
    ],
)
def test_selected_core_v2_values(
    history: History, features_v2: pa.Table, cid: str, cutoff: datetime, column: str, value: Any
) -> None:
    """core_v2's new features worked out by hand, checked against the pipeline and the oracle."""
    table = features_v2
    if cutoff not in CUTOFF_TS:
        table = build_features(history, build_spine(history, [cutoff]), "core_v2", horizon=f"{HORIZON}d")
        cutoff = table.column("cutoff")[0].as_py()
    rows = [r for r in table.to_pylist() if r["customer_id"] == cid and r["cutoff"] == cutoff]
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


def test_core_v2_families_need_their_columns() -> None:
    """Without interactions' value or transactions' category those families are absent; the rest stay."""
    history = make_history()
    bare = history_from_frames(
        transactions=history.transactions.drop(["category"]),
        customers=history.customers,
        interactions=history.interactions.drop(["value"]),
        as_of=AS_OF,
    )
    columns = resolve_columns("core_v2", bare)
    dropped = {*CORE_V2_FAMILIES["interaction_value"], *CORE_V2_FAMILIES["category_preferences"]}
    assert [c for c in FEATURE_SETS["core_v2"].features if c not in columns] == [
        "n_categories",
        *(c for c in V2_NEW if c in dropped),
    ]
    out = build_features(bare, build_spine(bare, [C2]), "core_v2")
    assert out.column_names == ["customer_id", "cutoff", *columns]
    # without interactions, nothing of theirs (complaint_after_last_purchase reads days_since_complaint)
    no_ix = history_from_frames(transactions=history.transactions, as_of=AS_OF)
    columns = resolve_columns("core_v2", no_ix)
    assert [c for c in columns if c in V2_NEW] == list(CORE_V2_FAMILIES["category_preferences"])


@pytest.mark.parametrize("parts", [2, 3])
def test_a_run_split_by_customer_gives_the_same_rows(
    history: History, spine: pa.Table, features_v2: pa.Table, monkeypatch: pytest.MonkeyPatch, parts: int
) -> None:
    """Large spines are computed in parts by customer hash (features.engine): forced here on the hand-built
    history, every feature and label equals the one-part run's exactly, in the same row order, and the
    partitioned features still match the oracle."""
    import features.engine

    whole_labels = build_labels(history, spine, HORIZON)
    monkeypatch.setattr(features.engine, "PARTITION_ROWS", 1)
    monkeypatch.setenv(features.engine.PARTS_ENV, str(parts))
    assert features.engine.DuckDBEngine(history, spine).parts == parts
    split = build_features(history, spine, "core_v2", horizon=f"{HORIZON}d")
    assert split.equals(features_v2, check_metadata=True)
    assert build_labels(history, spine, HORIZON).equals(whole_labels)
    rows = split.to_pylist()
    for row in rows:
        want = oracle_features(row["customer_id"], row["cutoff"])
        for column, value in want.items():
            assert_same(row[column], value, f"{row['customer_id']} at {row['cutoff']}: {column}")


@pytest.mark.parametrize("parts", ["0", "-1", "two", "1.5"])
def test_a_part_count_that_is_not_a_whole_number_above_zero_is_refused(
    history: History, spine: pa.Table, monkeypatch: pytest.MonkeyPatch, parts: str
) -> None:
    import features.engine

    monkeypatch.setenv(features.engine.PARTS_ENV, parts)  # refused even for a small spine
    with pytest.raises(ValueError, match=f"DIAMOND_DUCKDB_PARTS='{parts}': expected a whole number"):
        features.engine.DuckDBEngine(history, spine)


def test_any_spine_gives_its_rows_in_cutoff_then_id_order(history: History, features_v2: pa.Table) -> None:
    """The engine computes over the spine's customers by their positions in its sorted ids (features.engine):
    a spine given in any order, of any subset of the pairs, still gets text ids, in (cutoff, id) order, each
    row the one the whole spine's run gave."""
    whole = features_v2.to_pylist()
    picked = [r for i, r in enumerate(whole) if i % 3 != 1][::-1]  # a subset, backwards
    spine = pa.table(
        {
            "customer_id": [r["customer_id"] for r in picked],
            "cutoff": pa.array([r["cutoff"] for r in picked], pa.timestamp("us")),
        }
    )
    got = build_features(history, spine, "core_v2", horizon=f"{HORIZON}d")
    assert got.schema.field("customer_id").type == pa.string()
    want = sorted(picked, key=lambda r: (r["cutoff"], r["customer_id"]))
    assert [(r["customer_id"], r["cutoff"]) for r in got.to_pylist()] == [
        (r["customer_id"], r["cutoff"]) for r in want
    ]
    for row, expected in zip(got.to_pylist(), want, strict=True):
        for column in (c for c in expected if c not in BTYD):  # BTYD is fitted on the spine's customers
            assert_same(row[column], expected[column], f"{row['customer_id']} at {row['cutoff']}: {column}")
