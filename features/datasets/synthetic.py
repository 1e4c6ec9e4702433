"""Vectorised synthetic customer-history generator.

Produces the customer-history contract tables (``transactions``, ``customers``, ``interactions``,
``cancellations``) plus a ``truth`` table with the latent churn times, so models and feature code can be
tested end to end on data whose true structure is known.

The simulation, per customer (all of it vectorised over customers and events, numpy only):

* static attributes (segment, region, acquisition channel, age, subscription plan, e-mail opt-in) that
  shift the purchase rate, the spend and the churn hazard;
* signups spread over the history, growing over time;
* support tickets and complaints as Poisson processes; the dropout time follows a piecewise-constant hazard
  that is multiplied after each ticket (a little) and each complaint (a lot), sampled by inverting the
  cumulative hazard with grouped cumulative sums over the flattened event arrays;
* purchases as a non-homogeneous Poisson process (thinning): gamma-heterogeneous rate, seasonality
  (November/December peak, weekday and hour-of-day profile) and activity decaying in the 90 days before
  dropout; Gamma-Gamma spend, categories (each with its margin rate: the `margin` column), preferred
  channels, a few refunds (returning their order's amount and margin);
* a subscription segment (~20 %) paying a monthly plan fee until an explicit cancellation at churn;
  everybody else churns silently;
* campaigns sent to opted-in customers (also after they silently churned), opens and clicks far more
  likely while active; clicks sometimes lead to a purchase; visits and logins.

Times are handled as float/int64 seconds since :data:`START` and converted to ``timestamp[us]`` only when
the arrow arrays are built. Customers are simulated in fixed-size chunks, each with its own random stream
derived from the seed, so the output depends only on ``(n_customers, seed)`` and :func:`write` can stream
chunk by chunk into parquet with modest memory.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from features.datasets.tables import (
    CANCELLATIONS_SCHEMA,
    INTERACTIONS_SCHEMA,
    TIMESTAMP,
    TRANSACTIONS_SCHEMA,
    contract_schema,
    fixed_width_ids,
    fresh_sibling,
    replace_dir,
    timestamps,
)

__all__ = [
    "AS_OF",
    "CANCELLATIONS_SCHEMA",
    "CUSTOMERS_SCHEMA",
    "INTERACTIONS_SCHEMA",
    "INTERACTION_TYPES",
    "START",
    "TABLES",
    "TRANSACTIONS_SCHEMA",
    "TRUTH_SCHEMA",
    "generate",
    "write",
]

START: datetime = datetime(2023, 1, 1)
"""Start of the simulated history (naive, UTC); no customer signs up before it."""
AS_OF: datetime = datetime(2025, 12, 31, 23, 59, 59)
"""Declared end of the history (naive, UTC); no event is later."""

TABLES: tuple[str, ...] = ("transactions", "customers", "interactions", "cancellations", "truth")

_TS = TIMESTAMP
CUSTOMERS_SCHEMA = contract_schema(
    "customers",
    (
        "customer_id",
        "signup_date",
        "segment",
        "region",
        "acquisition_channel",
        "plan",
        "age",
        "is_subscriber",
        "email_opt_in",
    ),
)
# truth (not part of the contract): churn_time = latent dropout (cancellation for subscribers) if on or before
# AS_OF, else null; dropout_time = the same latent time even when after AS_OF (for future-window labels);
# purchase_rate = base purchases per day (before seasonality and decay); mean_spend = expected amount of a
# purchase before the category factor; base_hazard = dropout hazard per day before tickets and complaints.
TRUTH_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("churn_time", _TS),
        ("dropout_time", _TS),
        ("is_subscriber", pa.bool_()),
        ("purchase_rate", pa.float64()),
        ("mean_spend", pa.float64()),
        ("base_hazard", pa.float64()),
    ]
)
_SCHEMAS: dict[str, pa.Schema] = {
    "transactions": TRANSACTIONS_SCHEMA,
    "customers": CUSTOMERS_SCHEMA,
    "interactions": INTERACTIONS_SCHEMA,
    "cancellations": CANCELLATIONS_SCHEMA,
    "truth": TRUTH_SCHEMA,
}

# ---------------------------------------------------------------------------------------------------------
# Simulation constants. Rates are per day; times are seconds since START.
# ---------------------------------------------------------------------------------------------------------
_DAY = 86_400.0
_START_EPOCH_S = int(START.replace(tzinfo=UTC).timestamp())
_HORIZON_S = int((AS_OF - START).total_seconds())  # AS_OF in seconds since START (inclusive)
_END_EXCL = float(_HORIZON_S + 1)  # events t (float seconds) satisfy t < _END_EXCL, so floor(t) <= AS_OF
_N_DAYS = _HORIZON_S // 86_400 + 1
_MAX_TIME_S = int((datetime(2200, 1, 1) - START).total_seconds())  # cap for latent dropout times

_CHUNK = 50_000  # customers per chunk; fixed so that output does not depend on how it is consumed

SEGMENTS = ("consumer", "business")
REGIONS = ("north", "south", "east", "west", "central")
ACQUISITION = ("organic", "paid_search", "referral", "social")
PLANS = ("basic", "standard", "premium")
CATEGORIES = (
    "electronics",
    "home",
    "fashion",
    "beauty",
    "sports",
    "grocery",
    "books",
    "toys",
    "subscription",
)
CHANNELS = ("web", "app", "store", "phone")
INTERACTION_TYPES = (
    "campaign_sent",
    "email_open",
    "campaign_click",
    "support_ticket",
    "complaint",
    "login",
    "visit",
)
_IT = {name: i for i, name in enumerate(INTERACTION_TYPES)}

_REGION_P = np.array([0.24, 0.22, 0.2, 0.2, 0.14])
_REGION_RATE = np.array([1.0, 1.1, 0.9, 1.05, 0.95])
_REGION_SPEND = np.array([1.0, 0.9, 1.15, 1.05, 0.85])
_REGION_HAZARD = np.array([1.0, 1.1, 0.95, 1.0, 1.05])
_ACQ_P = np.array([0.4, 0.25, 0.15, 0.2])
_ACQ_RATE = np.array([1.0, 0.9, 1.15, 0.85])
_ACQ_HAZARD = np.array([1.0, 1.25, 0.7, 1.4])
# preferred channel probabilities (web, app, store, phone) by acquisition channel
_ACQ_CHANNEL_P = np.array(
    [
        [0.40, 0.25, 0.30, 0.05],
        [0.60, 0.25, 0.12, 0.03],
        [0.35, 0.25, 0.35, 0.05],
        [0.25, 0.65, 0.08, 0.02],
    ]
)
_PLAN_P = np.array([0.5, 0.35, 0.15])
_PLAN_FEE = np.array([9.99, 19.99, 39.99])
_PLAN_HAZARD = np.array([1.2, 1.0, 0.75])
_CAT_P = np.array([0.14, 0.16, 0.2, 0.12, 0.1, 0.14, 0.08, 0.06])  # 8 shop categories
_CAT_SPEND = np.array([1.8, 1.2, 1.0, 0.8, 1.1, 0.6, 0.5, 0.9])
_CAT_SUBSCRIPTION = 8
# margin rate (profit / amount) by category, the subscription fee last: electronics thin, beauty and
# fashion fat, a plan fee mostly profit. Deterministic (no draw), so the other columns are as they were.
_CAT_MARGIN = np.array([0.12, 0.35, 0.5, 0.6, 0.3, 0.18, 0.25, 0.4, 0.8])

_BASE_RATE = 0.056  # purchases per day for an average customer
_RATE_SHAPE = 0.9  # gamma heterogeneity of the purchase rate
_SPEND_P, _SPEND_Q, _SPEND_GAMMA = 4.0, 3.0, 22.5  # Gamma-Gamma: mean spend p * gamma / (q - 1) = 45
_BASE_HAZARD = 1.0 / 520.0  # dropout hazard per day for non-subscribers
_SUB_HAZARD = 1.0 / 700.0  # cancellation hazard per day for subscribers
_TICKET_RATE = 0.5 / 365.0
_COMPLAINT_RATE = 0.15 / 365.0
_COMPLAINT_MULT = 3.5  # hazard multiplier after a complaint
_TICKET_MULT_PER_SEVERITY = 0.08  # hazard multiplier 1 + 0.08 * severity after a support ticket
_MAX_HAZARD_MULT = 20.0
_DECAY_DAYS = 90.0  # activity decays linearly over this window before dropout ...
_DECAY_FLOOR = 0.1  # ... down to this fraction of the normal rate
_REFUND_P = 0.04
_CAMPAIGN_EVERY_DAYS = 14
_CAMPAIGN_TARGET_P = 0.07
_OPEN_P = (0.04, 0.32)  # (churned, active)
_CLICK_P = (0.05, 0.28)
_CLICK_PURCHASE_P = 0.3
_VISIT_PER_PURCHASE = 0.06
_LOGIN_RATE = 0.35 / 30.0  # subscribers only

_MONTH_FACTOR = np.array([0.85, 0.85, 0.95, 0.95, 1.0, 0.95, 0.9, 0.95, 1.0, 1.05, 1.45, 1.9])
_WEEKDAY_FACTOR = np.array([0.95, 0.95, 0.95, 1.0, 1.05, 1.15, 0.95])  # Monday .. Sunday
_HOUR_P = np.array(  # relative intensity by hour of day (00-11, 12-23): quiet nights, evening peak
    [
        [0.4, 0.25, 0.15, 0.1, 0.1, 0.15, 0.35, 0.7, 1.0, 1.2, 1.3, 1.4],
        [1.5, 1.4, 1.3, 1.3, 1.35, 1.45, 1.6, 1.75, 1.8, 1.6, 1.2, 0.75],
    ]
).ravel()
_HOUR_P = _HOUR_P / _HOUR_P.sum()
_OFFICE_HOUR_P = np.where((np.arange(24) >= 8) & (np.arange(24) < 19), 1.0, 0.08)
_OFFICE_HOUR_P = _OFFICE_HOUR_P / _OFFICE_HOUR_P.sum()


def _day_factor() -> np.ndarray:
    """Seasonal intensity per day of the history (month x weekday), used to thin purchases and visits."""
    days = np.datetime64(START.date(), "D") + np.arange(_N_DAYS)
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    return _MONTH_FACTOR[month] * _WEEKDAY_FACTOR[weekday]


_DAY_FACTOR = _day_factor()
_FLAT_DAY_FACTOR = np.ones(_N_DAYS)


# ---------------------------------------------------------------------------------------------------------
# Small vectorised helpers
# ---------------------------------------------------------------------------------------------------------
def _ts(seconds: np.ndarray) -> pa.Array:
    """Seconds since START (int64) -> arrow timestamp[us] (naive, UTC)."""
    return timestamps(seconds, START)


def _names(values: tuple[str, ...], codes: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """Map integer codes to a plain arrow string array (nulls where ``mask`` is True)."""
    arr = pa.array(values, type=pa.string()).take(pa.array(np.asarray(codes, dtype=np.int64)))
    if mask is not None:
        arr = pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), arr)
    return arr


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (n, k) probability matrix."""
    u = rng.random(len(probs))
    return np.minimum((u[:, None] > np.cumsum(probs, axis=1)).sum(axis=1), probs.shape[1] - 1)


def _group_offsets(group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts and first-row offsets of a sorted group-index array."""
    counts = np.bincount(group, minlength=n_groups)
    offsets = np.zeros(n_groups, dtype=np.int64)
    np.cumsum(counts[:-1], out=offsets[1:])
    return counts, offsets


def _grouped_cumsum(values: np.ndarray, group: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each group of a group-sorted array."""
    cs = np.cumsum(values)
    before = np.concatenate(([0.0], cs))[offsets]  # total of all earlier groups
    return cs - before[group]


def _poisson_times(
    rng: np.random.Generator,
    rate: np.ndarray,
    t0: np.ndarray,
    t1: np.ndarray,
    day_factor: np.ndarray,
    dropout: np.ndarray | None,
    hour_p: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Events of independent inhomogeneous Poisson processes, one per customer, by thinning.

    Customer ``i`` has intensity ``rate[i] * day_factor[day] * decay_i(t)`` (per day) on ``[t0[i], t1[i])``
    where ``decay_i`` ramps linearly down to ``_DECAY_FLOOR`` over the ``_DECAY_DAYS`` before
    ``dropout[i]`` (no decay if ``dropout`` is None). The time of day is then redrawn from ``hour_p``
    (kept as drawn when the redrawn time would leave the window). Returns (customer index, float seconds),
    sorted by customer.
    """
    fmax = float(day_factor.max())
    duration = np.maximum(t1 - t0, 0.0)
    n = rng.poisson(rate * fmax * duration / _DAY)
    cust = np.repeat(np.arange(len(rate)), n)
    t = t0[cust] + rng.random(len(cust)) * duration[cust]
    accept = day_factor[(t // _DAY).astype(np.int64)] / fmax
    if dropout is not None:
        left = (dropout[cust] - t) / (_DECAY_DAYS * _DAY)
        accept *= np.where(left < 1.0, _DECAY_FLOOR + (1.0 - _DECAY_FLOOR) * np.maximum(left, 0.0), 1.0)
    keep = rng.random(len(cust)) < accept
    cust, t = cust[keep], t[keep]
    del accept, keep
    if hour_p is not None and len(t):
        hour = rng.choice(24, size=len(t), p=hour_p)
        t_new = np.floor(t / _DAY) * _DAY + (hour + rng.random(len(t))) * 3600.0
        t = np.where((t_new >= t0[cust]) & (t_new < t1[cust]), t_new, t)
    return cust, t


# ---------------------------------------------------------------------------------------------------------
# One chunk of customers
# ---------------------------------------------------------------------------------------------------------
def _simulate_chunk(
    rng: np.random.Generator, first_customer: int, m: int, first_order: int, id_width: int
) -> tuple[dict[str, pa.Table], int]:
    """Simulate customers number ``first_customer + 1 .. first_customer + m``.

    Order numbers start after ``first_order``; customer ids have ``id_width`` digits. Returns the tables and
    the number of orders used.
    """
    # --- static attributes ----------------------------------------------------------------------------------
    business = rng.random(m) < 0.2
    region = rng.choice(len(REGIONS), size=m, p=_REGION_P)
    acq = rng.choice(len(ACQUISITION), size=m, p=_ACQ_P)
    age = np.where(
        business, rng.normal(45.0, 10.0, m), rng.gamma(6.0, 1.0, m) * 7.0 + 4.0
    )  # right-skewed consumer ages
    age = np.clip(np.rint(age), 18, 90).astype(np.int64)
    age_null = rng.random(m) < np.where(business, 0.3, 0.08)
    subscriber = rng.random(m) < np.where(business, 0.3, 0.175)
    plan = rng.choice(len(PLANS), size=m, p=_PLAN_P)
    opt_in = rng.random(m) < 0.8
    young = ~age_null & (age < 30)
    senior = ~age_null & (age >= 60)

    # signups end 2 weeks before AS_OF: 20 % in the first 120 days (the launch base), 40 % uniform,
    # 40 % with linearly growing density (the business grows)
    span = _HORIZON_S - 14 * 86_400
    u = rng.random(m)
    kind = rng.random(m)
    signup = np.where(kind < 0.2, u * (120 * 86_400 / span), np.where(kind < 0.6, u, np.sqrt(u))) * span
    signup = np.floor(signup).astype(np.int64)
    signup_f = signup.astype(np.float64)

    channel_p = _ACQ_CHANNEL_P[acq].copy()
    channel_p[senior] = channel_p[senior] * np.array([0.6, 0.4, 1.8, 2.5])
    channel_p /= channel_p.sum(axis=1, keepdims=True)
    pref_channel = _categorical(rng, channel_p)
    fav_category = rng.choice(len(_CAT_P), size=m, p=_CAT_P)

    # --- latent rates ---------------------------------------------------------------------------------------
    rate_mult = (
        np.where(business, 1.3, 1.0)
        * _REGION_RATE[region]
        * _ACQ_RATE[acq]
        * np.where(young, 0.9, 1.0)
        * np.where(subscriber, 0.5, 1.0)
    )
    lam = _BASE_RATE * rng.gamma(_RATE_SHAPE, 1.0 / _RATE_SHAPE, m) * rate_mult
    nu = rng.gamma(_SPEND_Q, 1.0 / _SPEND_GAMMA, m)  # Gamma-Gamma: per-customer scale of amounts
    spend_mult = np.where(business, 2.5, 1.0) * _REGION_SPEND[region] * np.where(senior, 1.15, 1.0)
    hazard_mult = (
        np.where(business, 0.7, 1.0)
        * _REGION_HAZARD[region]
        * _ACQ_HAZARD[acq]
        * np.where(young, 1.25, np.where(senior, 0.85, 1.0))
        * np.where(opt_in, 1.0, 1.15)
        * np.clip(lam / _BASE_RATE, 0.2, 5.0) ** -0.25  # light buyers leave sooner
    )
    base = np.where(subscriber, _SUB_HAZARD * _PLAN_HAZARD[plan], _BASE_HAZARD)
    hazard = base * hazard_mult * rng.gamma(2.0, 0.5, m)

    # --- support tickets and complaints (candidates over the whole history) ---------------------------------
    frailty = rng.gamma(0.6, 1.0 / 0.6, m)
    ticket_mult = frailty * np.where(business, 1.5, 1.0) * np.where(subscriber, 1.3, 1.0)
    t_end = np.full(m, _END_EXCL)
    tk_c, tk_t = _poisson_times(
        rng, _TICKET_RATE * ticket_mult, signup_f, t_end, _FLAT_DAY_FACTOR, None, _OFFICE_HOUR_P
    )
    cp_c, cp_t = _poisson_times(
        rng, _COMPLAINT_RATE * ticket_mult, signup_f, t_end, _FLAT_DAY_FACTOR, None, None
    )
    tk_sev = rng.integers(1, 5, size=len(tk_c)).astype(np.float64)
    ev_c = np.concatenate((tk_c, cp_c))
    ev_t = np.concatenate((tk_t, cp_t))
    ev_type = np.concatenate(
        (np.full(len(tk_c), _IT["support_ticket"], np.int8), np.full(len(cp_c), _IT["complaint"], np.int8))
    )
    ev_value = np.concatenate((tk_sev, np.full(len(cp_c), np.nan)))
    ev_logm = np.concatenate(
        (np.log1p(_TICKET_MULT_PER_SEVERITY * tk_sev), np.full(len(cp_c), np.log(_COMPLAINT_MULT)))
    )
    order = np.lexsort((ev_t, ev_c))
    ev_c, ev_t, ev_type, ev_value, ev_logm = (
        ev_c[order],
        ev_t[order],
        ev_type[order],
        ev_value[order],
        ev_logm[order],
    )
    del tk_c, tk_t, cp_c, cp_t, tk_sev, order

    # --- dropout: piecewise-constant hazard, multiplied after each event; invert the cumulative hazard ------
    counts, offsets = _group_offsets(ev_c, m)
    log_after = np.minimum(_grouped_cumsum(ev_logm, ev_c, offsets), np.log(_MAX_HAZARD_MULT))
    first = np.zeros(len(ev_c), dtype=bool)
    first[offsets[counts > 0]] = True
    log_before = np.concatenate(([0.0], log_after[:-1]))
    log_before[first] = 0.0
    t_prev = np.concatenate(([0.0], ev_t[:-1]))
    t_prev[first] = signup_f[ev_c[first]]
    seg_h = (
        hazard[ev_c] * np.exp(log_before) * (ev_t - t_prev) / _DAY
    )  # hazard mass of segment ending at event
    cum_h = _grouped_cumsum(seg_h, ev_c, offsets)  # cumulative hazard at each event time
    e = rng.exponential(1.0, m)
    k = np.bincount(ev_c, weights=(cum_h < e[ev_c]), minlength=m).astype(np.int64)  # events before dropout
    has = k > 0
    last = np.where(has, offsets + k - 1, 0)
    if len(ev_c):
        seg_t0 = np.where(has, ev_t[last], signup_f)
        h0 = np.where(has, cum_h[last], 0.0)
        seg_hz = hazard * np.where(has, np.exp(log_after[last]), 1.0)
    else:
        seg_t0, h0, seg_hz = signup_f, np.zeros(m), hazard
    dropout_f = seg_t0 + (e - h0) / seg_hz * _DAY
    dropout = np.minimum(np.floor(dropout_f), _MAX_TIME_S).astype(np.int64)
    dropout = np.maximum(dropout, signup + 1)
    dropout_f = dropout.astype(np.float64)
    churned = dropout <= _HORIZON_S
    active_end = np.minimum(dropout_f, _END_EXCL)  # activity window is [signup, active_end)
    keep = ev_t < dropout_f[ev_c]  # nobody files tickets after leaving
    ev_c, ev_t, ev_type, ev_value = ev_c[keep], ev_t[keep], ev_type[keep], ev_value[keep]
    del counts, offsets, log_after, first, log_before, t_prev, seg_h, cum_h, last, ev_logm, keep

    # --- campaigns: sent to opted-in customers already signed up (also to silently churned ones) ------------
    campaign_t = (np.arange(10, _N_DAYS, _CAMPAIGN_EVERY_DAYS) * _DAY + 9 * 3600.0).astype(np.float64)
    target_p = np.where(opt_in, _CAMPAIGN_TARGET_P, 0.0) * np.where(business, 0.7, 1.0)
    sent = (rng.random((m, len(campaign_t))) < target_p[:, None]) & (signup_f[:, None] < campaign_t[None, :])
    cs_c, cs_k = np.nonzero(sent)
    del sent
    cs_t = campaign_t[cs_k] + rng.random(len(cs_c)) * 3600.0
    cs_active = cs_t < dropout_f[cs_c]
    opened = rng.random(len(cs_c)) < np.where(cs_active, _OPEN_P[1], _OPEN_P[0])
    op_t = cs_t + 60.0 + rng.exponential(8 * 3600.0, len(cs_c))
    opened &= op_t < _END_EXCL
    clicked = opened & (rng.random(len(cs_c)) < np.where(cs_active, _CLICK_P[1], _CLICK_P[0]))
    cl_t = op_t + 5.0 + rng.exponential(600.0, len(cs_c))
    clicked &= cl_t < _END_EXCL
    # some clicks convert into a purchase shortly after, if the customer is still around
    cp_t2 = cl_t + rng.exponential(0.5 * _DAY, len(cs_c))
    converts = clicked & (rng.random(len(cs_c)) < _CLICK_PURCHASE_P) & (cp_t2 < active_end[cs_c])
    camp_buy_c, camp_buy_t = cs_c[converts], cp_t2[converts]
    cs_val = (cs_k + 1).astype(np.float64)  # campaign number

    # --- visits (everyone) and logins (subscribers), decaying before dropout --------------------------------
    visit_rate = _VISIT_PER_PURCHASE * lam / rate_mult * np.where(subscriber, 2.0, 1.0)
    vi_c, vi_t = _poisson_times(rng, visit_rate, signup_f, active_end, _DAY_FACTOR, dropout_f, _HOUR_P)
    vi_val = (1 + rng.poisson(4.0, len(vi_c))).astype(np.float64)  # pages viewed
    lg_c, lg_t = _poisson_times(
        rng,
        np.where(subscriber, _LOGIN_RATE, 0.0),
        signup_f,
        active_end,
        _FLAT_DAY_FACTOR,
        dropout_f,
        _HOUR_P,
    )

    # --- purchases ------------------------------------------------------------------------------------------
    pu_c, pu_t = _poisson_times(rng, lam, signup_f, active_end, _DAY_FACTOR, dropout_f, _HOUR_P)
    pu_c = np.concatenate((pu_c, camp_buy_c))
    pu_t = np.concatenate((pu_t, camp_buy_t))
    n_pu = len(pu_c)
    n_camp = len(camp_buy_c)
    cat = np.where(rng.random(n_pu) < 0.55, fav_category[pu_c], rng.choice(len(_CAT_P), size=n_pu, p=_CAT_P))
    chan = np.where(rng.random(n_pu) < 0.75, pref_channel[pu_c], rng.integers(0, len(CHANNELS), n_pu))
    online_pref = np.where(pref_channel[camp_buy_c] == 1, 1, 0)  # campaign purchases: app or web
    chan[n_pu - n_camp :] = online_pref
    amount = rng.gamma(_SPEND_P, 1.0, n_pu) / nu[pu_c] * spend_mult[pu_c] * _CAT_SPEND[cat]
    amount = np.maximum(np.round(amount, 2), 0.5)
    qty = 1 + rng.poisson(np.where(business[pu_c], 2.0, 0.4))

    # subscription fees: at signup, then monthly on the same day of month (clipped to the 28th)
    sub_idx = np.flatnonzero(subscriber)
    sig_s = signup[sub_idx] + _START_EPOCH_S
    sig_day = sig_s // 86_400
    sig_month = sig_day.astype("datetime64[D]").astype("datetime64[M]")
    dom = sig_day - sig_month.astype("datetime64[D]").astype(np.int64)  # 0-based day of month
    tod = sig_s % 86_400
    n_months = 37
    month_k = sig_month[:, None] + np.arange(1, n_months + 1)[None, :]
    fee_t = (
        (month_k.astype("datetime64[D]").astype(np.int64) + np.minimum(dom, 27)[:, None]) * 86_400
        + tod[:, None]
        - _START_EPOCH_S
    )
    fee_ok = fee_t < active_end[sub_idx][:, None]
    fr, _ = np.nonzero(fee_ok)
    fee_c = np.concatenate((sub_idx, sub_idx[fr]))
    fee_t = np.concatenate((signup[sub_idx], fee_t[fee_ok])).astype(np.float64)
    del month_k, fee_ok, fr
    fee_amount = _PLAN_FEE[plan[fee_c]]

    # all purchases + fees, sorted, numbered; then refunds referencing their order ids
    all_c = np.concatenate((pu_c, fee_c))
    all_t = np.floor(np.concatenate((pu_t, fee_t))).astype(np.int64)
    all_amount = np.concatenate((amount, fee_amount))
    all_qty = np.concatenate((qty, np.ones(len(fee_c), np.int64)))
    all_cat = np.concatenate((cat, np.full(len(fee_c), _CAT_SUBSCRIPTION)))
    all_chan = np.concatenate((chan, np.zeros(len(fee_c), np.int64)))
    is_fee = np.concatenate((np.zeros(n_pu, bool), np.ones(len(fee_c), bool)))
    order = np.lexsort((all_t, all_c))
    all_c, all_t, all_amount, all_qty = all_c[order], all_t[order], all_amount[order], all_qty[order]
    all_cat, all_chan, is_fee = all_cat[order], all_chan[order], is_fee[order]
    all_margin = all_amount * _CAT_MARGIN[all_cat]  # a refund returns the margin of its order
    del order, pu_c, pu_t, amount, qty, cat, chan, fee_c, fee_t, fee_amount
    n_orders = len(all_c)
    order_no = first_order + 1 + np.arange(n_orders, dtype=np.int64)

    refund = ~is_fee & (rng.random(n_orders) < _REFUND_P)
    rf_t = all_t + np.floor((1.0 + rng.random(n_orders) * 13.0) * _DAY).astype(np.int64)
    refund &= rf_t <= _HORIZON_S
    rf = np.flatnonzero(refund)
    n_rf = len(rf)

    tx_c = np.concatenate((all_c, all_c[rf]))
    tx_t = np.concatenate((all_t, rf_t[rf]))
    tx_order = np.lexsort((np.concatenate((np.zeros(n_orders, np.int8), np.ones(n_rf, np.int8))), tx_t, tx_c))
    order_ids = pa.concat_arrays(
        [fixed_width_ids("O", order_no, 10), fixed_width_ids("O", order_no[rf], 10, "-R")]
    ).take(pa.array(tx_order))
    cust_ids = fixed_width_ids("C", first_customer + 1 + np.arange(m), id_width)
    tx_c = tx_c[tx_order]
    transactions = pa.table(
        [
            cust_ids.take(pa.array(tx_c)),
            _ts(tx_t[tx_order]),
            pa.array(np.concatenate((all_amount, -all_amount[rf]))[tx_order]),
            pa.array(np.concatenate((all_qty, -all_qty[rf]))[tx_order]),
            _names(CATEGORIES, np.concatenate((all_cat, all_cat[rf]))[tx_order]),
            _names(CHANNELS, np.concatenate((all_chan, all_chan[rf]))[tx_order]),
            order_ids,
            pa.array(np.round(np.concatenate((all_margin, -all_margin[rf]))[tx_order], 2)),
        ],
        schema=TRANSACTIONS_SCHEMA,
    )
    del tx_c, tx_t, tx_order, order_ids, all_c, all_t, all_amount, all_qty, all_cat, all_chan, is_fee, rf_t
    del all_margin

    # --- interactions ---------------------------------------------------------------------------------------
    n_cs = len(cs_c)
    in_c = np.concatenate((cs_c, cs_c[opened], cs_c[clicked], ev_c, vi_c, lg_c))
    in_t = np.floor(np.concatenate((cs_t, op_t[opened], cl_t[clicked], ev_t, vi_t, lg_t))).astype(np.int64)
    in_type = np.concatenate(
        (
            np.full(n_cs, _IT["campaign_sent"], np.int8),
            np.full(int(opened.sum()), _IT["email_open"], np.int8),
            np.full(int(clicked.sum()), _IT["campaign_click"], np.int8),
            ev_type,
            np.full(len(vi_c), _IT["visit"], np.int8),
            np.full(len(lg_c), _IT["login"], np.int8),
        )
    )
    in_val = np.concatenate(
        (cs_val, cs_val[opened], cs_val[clicked], ev_value, vi_val, np.full(len(lg_c), np.nan))
    )
    order = np.lexsort((in_type, in_t, in_c))
    in_c, in_t, in_type, in_val = in_c[order], in_t[order], in_type[order], in_val[order]
    # drop exact duplicates (same customer, second, type; e.g. two visits in the same second)
    dup = np.zeros(len(in_c), dtype=bool)
    dup[1:] = (in_c[1:] == in_c[:-1]) & (in_t[1:] == in_t[:-1]) & (in_type[1:] == in_type[:-1])
    in_c, in_t, in_type, in_val = in_c[~dup], in_t[~dup], in_type[~dup], in_val[~dup]
    interactions = pa.table(
        [
            cust_ids.take(pa.array(in_c)),
            _ts(in_t),
            _names(INTERACTION_TYPES, in_type),
            pa.array(in_val, mask=np.isnan(in_val), type=pa.float64()),
        ],
        schema=INTERACTIONS_SCHEMA,
    )
    del in_c, in_t, in_type, in_val, order, dup

    # --- customers, cancellations, truth --------------------------------------------------------------------
    customers = pa.table(
        [
            cust_ids,
            _ts(signup),
            _names(SEGMENTS, business.astype(np.int64)),
            _names(REGIONS, region),
            _names(ACQUISITION, acq),
            _names(PLANS, plan, mask=~subscriber),
            pa.array(age, mask=age_null, type=pa.int64()),
            pa.array(subscriber),
            pa.array(opt_in),
        ],
        schema=CUSTOMERS_SCHEMA,
    )
    cancelled = np.flatnonzero(subscriber & churned)
    cancellations = pa.table(
        [cust_ids.take(pa.array(cancelled)), _ts(dropout[cancelled])], schema=CANCELLATIONS_SCHEMA
    )
    truth = pa.table(
        [
            cust_ids,
            pa.array((dropout + _START_EPOCH_S) * 1_000_000, mask=~churned, type=_TS),
            _ts(dropout),
            pa.array(subscriber),
            pa.array(lam),
            pa.array(_SPEND_P / nu * spend_mult),
            pa.array(hazard),
        ],
        schema=TRUTH_SCHEMA,
    )
    tables = {
        "transactions": transactions,
        "customers": customers,
        "interactions": interactions,
        "cancellations": cancellations,
        "truth": truth,
    }
    return tables, n_orders


def _id_width(n_customers: int) -> int:
    """Digits of customer ids: 7 (``C0000001``) unless more customers need more."""
    return max(7, len(str(max(n_customers, 1))))


def _chunks(
    n_customers: int, seed: int, progress: Callable[[str], None] | None = None
) -> Iterator[dict[str, pa.Table]]:
    """Yield the tables chunk by chunk; each chunk has its own random stream derived from ``seed``."""
    if n_customers < 0:
        raise ValueError(f"n_customers must be >= 0, got {n_customers}")
    n_chunks = -(-n_customers // _CHUNK)
    first_order = 0
    for k in range(n_chunks):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,)))
        first = k * _CHUNK
        m = min(_CHUNK, n_customers - first)
        if progress is not None:
            progress(f"customers {first + 1:,}-{first + m:,} of {n_customers:,} (chunk {k + 1}/{n_chunks})")
        tables, n_orders = _simulate_chunk(rng, first, m, first_order, _id_width(n_customers))
        first_order += n_orders
        yield tables


def generate(n_customers: int, seed: int = 0) -> dict[str, pa.Table]:
    """Simulate ``n_customers`` customer histories; same ``(n_customers, seed)`` gives identical tables.

    Returns the tables ``transactions``, ``customers``, ``interactions``, ``cancellations`` (the
    customer-history contract) and ``truth`` (latent churn times and rates, for tests and evaluation).
    """
    parts: dict[str, list[pa.Table]] = {name: [] for name in TABLES}
    for tables in _chunks(n_customers, seed):
        for name in TABLES:
            parts[name].append(tables[name])
    return {
        name: pa.concat_tables(parts[name]) if parts[name] else _SCHEMAS[name].empty_table()
        for name in TABLES
    }


def _dataset_yaml(n_customers: int, seed: int) -> dict[str, str]:
    """Metadata describing a generated dataset (written as ``dataset.yaml``)."""
    return {
        "name": "synthetic",
        "description": f"Synthetic history ({n_customers} customers, seed {seed}) generated by Diamond",
        "as_of": AS_OF.isoformat(),
        "churn": "mixed",
    }


def write(
    out_dir: str | Path,
    n_customers: int,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Generate and write ``out_dir/{table}.parquet`` plus ``out_dir/dataset.yaml``; return rows per table.

    Chunks are streamed into the parquet files, so memory stays modest. The folder appears atomically: all
    files are written to a temporary sibling folder that is renamed into place at the end. An existing
    non-empty ``out_dir`` is refused unless ``overwrite`` is True, in which case it is replaced only after
    the new folder is complete. ``progress(message)`` is called at each stage.
    """
    out = Path(out_dir).absolute()
    if n_customers < 0:
        raise ValueError(f"n_customers must be >= 0, got {n_customers}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _msg: None)
    tmp = fresh_sibling(out, "tmp")
    try:
        writers = {name: pq.ParquetWriter(tmp / f"{name}.parquet", _SCHEMAS[name]) for name in TABLES}
        rows = dict.fromkeys(TABLES, 0)
        try:
            for tables in _chunks(n_customers, seed, progress=say):
                for name in TABLES:
                    say(f"writing {name}")
                    writers[name].write_table(tables[name])
                    rows[name] += tables[name].num_rows
                del tables
        finally:
            for w in writers.values():
                w.close()
        say("dataset.yaml")
        with open(tmp / "dataset.yaml", "w", encoding="utf-8") as fh:
            yaml.safe_dump(_dataset_yaml(n_customers, seed), fh, sort_keys=False)
        say(f"moving into place: {out}")
        replace_dir(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say("done")
    return rows
