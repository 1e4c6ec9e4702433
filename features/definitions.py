"""Feature definitions: each a pure function of the point-in-time events at a cutoff, named after its column.

Every function receives one *view* of the history, already restricted to events at or before each row's
cutoff (see `features.build`), and returns an Ibis aggregate (or, for `derived`, a row expression).
The views are:

- `transactions`: customer_id, cutoff, timestamp, amount, age_days [, quantity, category, channel]
- `purchase_days`: customer_id, cutoff, day, age_days, day_amount, gap_days — one row per day with a purchase
  (amount >= 0); day_amount is that day's purchases summed, gap_days the days since the previous purchase day
- `interactions`: customer_id, cutoff, timestamp, type, age_days [, value]
- `derived`: the assembled row of other features

`age_days` is whole calendar days from the event's date to the cutoff's date (0 = the cutoff's own day), so a
window of w days is `age_days < w`. Definitions are Ibis expressions, compiled to SQL for DuckDB and for
Spark (features.spark): one definition, every engine. Customer attributes and BTYD outputs are registered
here too but computed by the builder (a join and a model fit, not an aggregate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import ibis.expr.types as ir

WINDOWS = (30, 90, 180, 365)
INTERACTION_WINDOWS = (30, 90, 365)
INTERACTION_TYPES = (
    "support_ticket",
    "complaint",
    "campaign_sent",
    "campaign_click",
    "email_open",
    "login",
    "visit",
)
SOURCES = ("transactions", "purchase_days", "interactions", "derived", "customers", "btyd")


@dataclass(frozen=True)
class Feature:
    """One feature column: where it comes from, how it is computed, what a customer with no rows gets."""

    name: str
    source: str
    family: str
    fn: Callable[[ir.Table], ir.Value] | None
    fill: float | None = None  # value for an eligible customer with no rows in the source (counts, sums)
    requires: tuple[str, ...] = ()  # optional contract columns it needs
    description: str = ""


REGISTRY: dict[str, Feature] = {}


def _register(feature: Feature) -> None:
    if feature.name in REGISTRY:
        raise ValueError(f"feature {feature.name!r} is defined twice")
    if feature.source not in SOURCES:
        raise ValueError(f"feature {feature.name!r}: unknown source {feature.source!r}")
    REGISTRY[feature.name] = feature


def feature(
    source: str, family: str, fill: float | None = None, requires: tuple[str, ...] = ()
) -> Callable[[Callable[[ir.Table], ir.Value]], Callable[[ir.Table], ir.Value]]:
    """Register a function as the feature named after it."""

    def register(fn: Callable[[ir.Table], ir.Value]) -> Callable[[ir.Table], ir.Value]:
        doc = (fn.__doc__ or "").strip()
        _register(Feature(fn.__name__, source, family, fn, fill, requires, doc))
        return fn

    return register


def _purchase(t: ir.Table) -> ir.BooleanValue:
    return t.amount >= 0


# --- recency, tenure, counts, monetary (transactions) ----------------------------------------------


@feature("transactions", "recency")
def recency_days(t: ir.Table) -> ir.Value:
    """Days from the last purchase to the cutoff."""
    return t.age_days.min(where=_purchase(t))


@feature("transactions", "tenure")
def tenure_days(t: ir.Table) -> ir.Value:
    """Days from the first purchase to the cutoff."""
    return t.age_days.max(where=_purchase(t))


@feature("transactions", "frequency", fill=0)
def n_purchases(t: ir.Table) -> ir.Value:
    """Purchase rows (amount >= 0), all time."""
    return t.count(where=_purchase(t))


@feature("transactions", "monetary", fill=0)
def monetary_sum(t: ir.Table) -> ir.Value:
    """Total purchase amount, refunds excluded."""
    return t.amount.sum(where=_purchase(t))


@feature("transactions", "monetary")
def monetary_mean(t: ir.Table) -> ir.Value:
    """Mean purchase amount."""
    return t.amount.mean(where=_purchase(t))


@feature("transactions", "monetary")
def monetary_max(t: ir.Table) -> ir.Value:
    """Largest purchase amount."""
    return t.amount.max(where=_purchase(t))


@feature("transactions", "monetary")
def monetary_std(t: ir.Table) -> ir.Value:
    """Sample standard deviation of purchase amounts (null below two purchases)."""
    return t.amount.std(where=_purchase(t))


@feature("transactions", "monetary", fill=0)
def net_amount(t: ir.Table) -> ir.Value:
    """Purchases minus refunds, all time."""
    return t.amount.sum()


@feature("transactions", "refunds", fill=0)
def refund_count(t: ir.Table) -> ir.Value:
    """Refund rows (negative amounts)."""
    return t.count(where=t.amount < 0)


@feature("transactions", "refunds", fill=0)
def refund_amount(t: ir.Table) -> ir.Value:
    """Total refunded, as a positive amount."""
    return -t.amount.sum(where=t.amount < 0)


@feature("transactions", "diversity", fill=0, requires=("category",))
def n_categories(t: ir.Table) -> ir.Value:
    """Distinct categories bought."""
    return t.category.nunique(where=_purchase(t))


@feature("transactions", "diversity", fill=0, requires=("channel",))
def n_channels(t: ir.Table) -> ir.Value:
    """Distinct channels bought through."""
    return t.channel.nunique(where=_purchase(t))


def _window_count(w: int) -> Callable[[ir.Table], ir.Value]:
    def fn(t: ir.Table) -> ir.Value:
        return t.count(where=_purchase(t) & (t.age_days < w))

    fn.__name__ = f"purchases_{w}d"
    fn.__doc__ = f"Purchases in the last {w} days (the cutoff's day included)."
    return fn


def _window_sum(w: int) -> Callable[[ir.Table], ir.Value]:
    def fn(t: ir.Table) -> ir.Value:
        return t.amount.sum(where=_purchase(t) & (t.age_days < w))

    fn.__name__ = f"amount_{w}d"
    fn.__doc__ = f"Purchase amount in the last {w} days."
    return fn


for _w in WINDOWS:
    feature("transactions", "window", fill=0)(_window_count(_w))
    feature("transactions", "window", fill=0)(_window_sum(_w))


@feature("transactions", "trend", fill=0)
def trend_purchases_90d(t: ir.Table) -> ir.Value:
    """Purchases in the last 90 days minus purchases in the 90 days before."""
    recent = t.count(where=_purchase(t) & (t.age_days < 90))
    before = t.count(where=_purchase(t) & (t.age_days >= 90) & (t.age_days < 180))
    return recent - before


@feature("transactions", "trend", fill=0)
def trend_amount_90d(t: ir.Table) -> ir.Value:
    """Purchase amount in the last 90 days minus the amount in the 90 days before."""
    recent = t.amount.sum(where=_purchase(t) & (t.age_days < 90)).fill_null(0)
    before = t.amount.sum(where=_purchase(t) & (t.age_days >= 90) & (t.age_days < 180)).fill_null(0)
    return recent - before


# --- purchase days: frequency, inter-purchase time, first/last spend --------------------------------


@feature("purchase_days", "frequency", fill=0)
def frequency_days(d: ir.Table) -> ir.Value:
    """Distinct days with a purchase."""
    return d.count()


@feature("purchase_days", "inter_purchase")
def ipt_mean_days(d: ir.Table) -> ir.Value:
    """Mean days between consecutive purchase days (null below two)."""
    return d.gap_days.mean()


@feature("purchase_days", "inter_purchase")
def ipt_std_days(d: ir.Table) -> ir.Value:
    """Sample standard deviation of the days between purchase days (null below three)."""
    return d.gap_days.std()


@feature("purchase_days", "inter_purchase")
def ipt_last_days(d: ir.Table) -> ir.Value:
    """Days between the last two purchase days."""
    return d.gap_days.argmax(d.day)


@feature("purchase_days", "monetary")
def monetary_first(d: ir.Table) -> ir.Value:
    """Amount bought on the first purchase day."""
    return d.day_amount.argmin(d.day)


@feature("purchase_days", "monetary")
def monetary_last(d: ir.Table) -> ir.Value:
    """Amount bought on the last purchase day."""
    return d.day_amount.argmax(d.day)


# --- derived -------------------------------------------------------------------------------------


@feature("derived", "inter_purchase")
def recency_over_ipt(r: ir.Table) -> ir.Value:
    """Recency divided by the mean inter-purchase time: > 1 means overdue (null without a gap)."""
    return r.recency_days / r.ipt_mean_days.nullif(0)


# --- interactions, per type ------------------------------------------------------------------------


def _interaction_count(kind: str, w: int) -> Callable[[ir.Table], ir.Value]:
    def fn(t: ir.Table) -> ir.Value:
        return t.count(where=(t.type == kind) & (t.age_days < w))

    fn.__name__ = f"{kind}_{w}d"
    fn.__doc__ = f"{kind.replace('_', ' ').capitalize()} interactions in the last {w} days."
    return fn


def _interaction_recency(kind: str) -> Callable[[ir.Table], ir.Value]:
    def fn(t: ir.Table) -> ir.Value:
        return t.age_days.min(where=t.type == kind)

    fn.__name__ = f"days_since_{kind}"
    fn.__doc__ = f"Days since the last {kind.replace('_', ' ')} (null if none)."
    return fn


for _kind in INTERACTION_TYPES:
    for _w in INTERACTION_WINDOWS:
        feature("interactions", "interactions", fill=0)(_interaction_count(_kind, _w))
    feature("interactions", "interactions")(_interaction_recency(_kind))


# --- computed by the builder: static attributes and BTYD --------------------------------------------

_register(
    Feature(
        "signup_tenure_days",
        "customers",
        "tenure",
        None,
        requires=("signup_date",),
        description="Days from signup to the cutoff (null if the signup date is after it).",
    )
)
BTYD_FEATURES = {
    "btyd_expected_purchases": "BG/NBD expected purchase days in the horizon.",
    "btyd_p_alive": "BG/NBD probability that the customer is still active.",
    "btyd_p_no_purchase": "BG/NBD probability of no purchase in the horizon.",
    "btyd_expected_spend": "BG/NBD expected purchases x Gamma-Gamma expected spend per purchase day.",
}
for _name, _doc in BTYD_FEATURES.items():
    _register(Feature(_name, "btyd", "btyd", None, description=_doc))
