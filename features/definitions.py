"""Feature definitions: each a pure function of the point-in-time events at a cutoff, named after its column.

Every function receives one *view* of the history, already restricted to events at or before each row's
cutoff (see `features.build`), and returns an Ibis aggregate (or, for `derived`, a row expression).
The views are:

- `transactions`: customer_id, cutoff, timestamp, amount, age_days [, quantity, category, channel]
- `purchase_days`: customer_id, cutoff, day, age_days, day_amount, gap_days — one row per day with a purchase
  (amount >= 0); day_amount is that day's purchases summed, gap_days the days since the previous purchase day
- `interactions`: customer_id, cutoff, timestamp, type, age_days [, value]
- `interaction_days`: customer_id, cutoff, type, day, age_days, n, gap_days [, value_mean] — one row per day
  with an interaction of that type; value_mean is the mean of that day's non-null values, gap_days the days
  since the previous day with the same type
- `click_days`: customer_id, cutoff, day, age_days, converted — one row per day with a campaign click;
  converted when a purchase day falls on it or within CONVERSION_DAYS after it (purchases seen at the cutoff)
- `category_spend`: customer_id, cutoff, category, spend, first_age_days — one row per category bought
  (purchases with a category): its purchase amount and the age of its first purchase
- `derived`: the assembled row of other features; `requires` names the features a derived one reads

`age_days` is whole calendar days from the event's date to the cutoff's date (0 = the cutoff's own day), so a
window of w days is `age_days < w`. Definitions are Ibis expressions, compiled to SQL for DuckDB and for
Spark (features.spark): one definition, every engine. Customer attributes and BTYD outputs are registered
here too but computed by the builder (a join and a model fit, not an aggregate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import ibis
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
# core_v2: types whose `value` is a score or a measure (severity, satisfaction, pages viewed). Campaign rows
# are left out: their value identifies the campaign in the synthetic history and in many CRMs.
VALUE_TYPES = ("support_ticket", "complaint", "login", "visit")
# customer-initiated engagement (not service contacts, not what we send)
ENGAGEMENT_TYPES = ("email_open", "campaign_click", "login", "visit")
CONVERSION_DAYS = 7  # a campaign click converts when a purchase follows on its day or in the 7 days after
REPEAT_CONTACT_DAYS = 7  # a ticket within 7 days of the previous one: the first contact did not resolve it
SOURCES = (
    "transactions",
    "purchase_days",
    "category_spend",
    "interactions",
    "interaction_days",
    "click_days",
    "derived",
    "customers",
    "btyd",
)
# the contract table each source is computed from (its `requires` columns are looked up there)
SOURCE_TABLES = {
    "purchase_days": "transactions",
    "category_spend": "transactions",
    "interaction_days": "interactions",
    "click_days": "interactions",
    "derived": "transactions",
    "btyd": "transactions",
}


@dataclass(frozen=True)
class Feature:
    """One feature column: where it comes from, how it is computed, what a customer with no rows gets."""

    name: str
    source: str
    family: str
    fn: Callable[[ir.Table], ir.Value] | None
    fill: float | None = None  # value for an eligible customer with no rows in the source (counts, sums)
    requires: tuple[str, ...] = ()  # optional contract columns it needs (derived: the features it reads)
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


# --- core_v2: interaction values --------------------------------------------------------------------


def _value_mean(kind: str) -> Callable[[ir.Table], ir.Value]:
    def fn(t: ir.Table) -> ir.Value:
        return t.value.mean(where=t.type == kind)

    fn.__name__ = f"{kind}_value_mean"
    fn.__doc__ = f"Mean `value` (score) of {kind.replace('_', ' ')} interactions, all time (null if none)."
    return fn


def _value_last(kind: str) -> Callable[[ir.Table], ir.Value]:
    def fn(d: ir.Table) -> ir.Value:
        return d.value_mean.argmax(d.day, where=(d.type == kind) & d.value_mean.notnull())

    fn.__name__ = f"{kind}_value_last"
    fn.__doc__ = (
        f"Latest `value` of {kind.replace('_', ' ')} interactions: the mean value on the last day that "
        "carried one (null if none)."
    )
    return fn


for _kind in VALUE_TYPES:
    feature("interactions", "interaction_value", requires=("value",))(_value_mean(_kind))
    feature("interaction_days", "interaction_value", requires=("value",))(_value_last(_kind))


# --- core_v2: support tickets (the contract has no ticket id or close time: see docs/features.md) -------


def _ticket_day(d: ir.Table) -> ir.BooleanValue:
    return d.type == "support_ticket"


@feature("interaction_days", "tickets", fill=0)
def support_ticket_repeat_365d(d: ir.Table) -> ir.Value:
    """Ticket days in the last 365 days within 7 days of the previous ticket day (repeat contacts)."""
    return d.count(where=_ticket_day(d) & (d.gap_days <= REPEAT_CONTACT_DAYS) & (d.age_days < 365))


@feature("interaction_days", "tickets")
def support_ticket_gap_last_days(d: ir.Table) -> ir.Value:
    """Days between the last two ticket days (null below two)."""
    return d.gap_days.argmax(d.day, where=_ticket_day(d))


@feature("interaction_days", "tickets")
def support_ticket_first_days(d: ir.Table) -> ir.Value:
    """Days since the first support ticket (how long the customer has needed support; null if never)."""
    return d.age_days.max(where=_ticket_day(d))


# --- core_v2: complaints against purchases -------------------------------------------------------------


@feature("derived", "complaints", requires=("days_since_complaint", "recency_days"))
def complaint_after_last_purchase(r: ir.Table) -> ir.Value:
    """1 when the last complaint came on or after the last purchase day (or there is no purchase), else 0."""
    after = ibis.ifelse(r.recency_days.isnull(), True, r.days_since_complaint <= r.recency_days)
    return ibis.ifelse(r.days_since_complaint.isnull(), False, after).cast("int64")


# --- core_v2: campaign response ------------------------------------------------------------------------


@feature("interactions", "campaign_response")
def campaign_click_rate(t: ir.Table) -> ir.Value:
    """Campaign clicks per campaign sent, all time (null if none sent)."""
    sent = t.count(where=t.type == "campaign_sent")
    return t.count(where=t.type == "campaign_click") / sent.nullif(0)


@feature("interactions", "campaign_response")
def campaign_open_rate(t: ir.Table) -> ir.Value:
    """E-mail opens per campaign sent, all time (null if none sent)."""
    sent = t.count(where=t.type == "campaign_sent")
    return t.count(where=t.type == "email_open") / sent.nullif(0)


@feature("click_days", "campaign_response", fill=0)
def campaign_conversions_365d(c: ir.Table) -> ir.Value:
    """Click days in the last 365 days followed by a purchase on that day or in the 7 days after."""
    return c.count(where=c.converted & (c.age_days < 365))


@feature("click_days", "campaign_response")
def campaign_conversion_rate(c: ir.Table) -> ir.Value:
    """Share of click days followed by a purchase within 7 days, all time (null without clicks)."""
    return c.converted.cast("float64").mean()


# --- core_v2: engagement trend -------------------------------------------------------------------------


def _engaged(t: ir.Table, lo: int, hi: int) -> ir.Value:
    return t.count(where=t.type.isin(ENGAGEMENT_TYPES) & (t.age_days >= lo) & (t.age_days < hi))


@feature("interactions", "engagement_trend", fill=0)
def engagement_90d(t: ir.Table) -> ir.Value:
    """Engagement events (e-mail opens, campaign clicks, logins, visits) in the last 90 days."""
    return _engaged(t, 0, 90)


@feature("interactions", "engagement_trend", fill=0)
def engagement_trend_90d(t: ir.Table) -> ir.Value:
    """Engagement events in the last 90 days minus those in the 90 days before."""
    return _engaged(t, 0, 90) - _engaged(t, 90, 180)


@feature("interactions", "engagement_trend")
def engagement_recent_share_180d(t: ir.Table) -> ir.Value:
    """Share of the last 180 days' engagement events that fell in the last 90 (null if none)."""
    return _engaged(t, 0, 90) / _engaged(t, 0, 180).nullif(0)


# --- core_v2: category preferences (no vocabulary: nothing fitted, nothing to ship) ----------------------


@feature("category_spend", "category_preferences", requires=("category",))
def top_category_share(c: ir.Table) -> ir.Value:
    """Share of purchase spend in the customer's top category (null without positive spend)."""
    return c.spend.max() / c.spend.sum().nullif(0)


@feature("category_spend", "category_preferences", requires=("category",))
def category_entropy(c: ir.Table) -> ir.Value:
    """Shannon entropy (nats) of the spend shares over categories: 0 = one category (null without spend)."""
    total = c.spend.sum().nullif(0)
    s_log_s = ibis.ifelse(c.spend > 0, c.spend * c.spend.ln(), 0.0).sum()
    return total.ln() - s_log_s / total


@feature("category_spend", "category_preferences", fill=0, requires=("category",))
def new_categories_90d(c: ir.Table) -> ir.Value:
    """Categories first bought in the last 90 days."""
    return c.count(where=c.first_age_days < 90)


# --- core_v3: margin (transactions with the optional `margin` column; features.value) -------------------


def _margined_purchase(t: ir.Table) -> ir.BooleanValue:
    return _purchase(t) & t.margin.notnull()


@feature("transactions", "margin", requires=("margin",))
def margin_rate(t: ir.Table) -> ir.Value:
    """Margin per unit of purchase amount, all time, over purchases with a margin (null without positive
    spend): how profitable what the customer buys is."""
    amount = t.amount.sum(where=_margined_purchase(t))
    return t.margin.sum(where=_margined_purchase(t)) / amount.nullif(0)


@feature("transactions", "margin", requires=("margin",))
def margin_mean(t: ir.Table) -> ir.Value:
    """Mean margin of a purchase, all time (null without a purchase with a margin)."""
    return t.margin.mean(where=_margined_purchase(t))


@feature("transactions", "margin", fill=0, requires=("margin",))
def margin_90d(t: ir.Table) -> ir.Value:
    """Margin of the purchases in the last 90 days (the cutoff's day included)."""
    return t.margin.sum(where=_margined_purchase(t) & (t.age_days < 90))


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
