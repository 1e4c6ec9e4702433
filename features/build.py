"""The one builder: spines of (customer, cutoff) rows in, point-in-time features and labels out.

Training sets and batch scoring call the same `build_features`; they differ only in the cutoffs and in
whether labels are attached. Features at cutoff T see only events with timestamp <= T (and recorded_at <= T
where a table has it); labels see only (T, T + horizon]. Definitions (features.definitions) are Ibis
expressions; `spine_expr`, `features_expr` and `labels_expr` assemble them over an `Engine`'s tables, and
the engine compiles and runs them: DuckDB over the history's Arrow tables (features.engine), Spark in
features.spark.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa

from features import btyd
from features.config import parse_as_of
from features.definitions import BTYD_FEATURES, REGISTRY, SOURCE_TABLES, Feature
from features.engine import KEYS, DuckDBEngine, Engine
from features.history import History
from features.sets import DEFAULT_FEATURE_SET, FeatureSet, FeatureSetError, get_feature_set
from features.value import MARGIN_COLUMN, REVENUE, ValueTarget, ValueTargetError

LABELS = ["churned", "future_value"]
BTYD_UNIT_DAYS = 7.0  # BG/NBD and Gamma-Gamma are fitted in weeks, as in the literature
# churn: mixed — customers whose attribute of this name is true churn by cancellation, the rest by silence
CONTRACT_ATTRIBUTE = "is_subscriber"
BTYD_META = b"diamond.btyd_fits"
BTYD_SUMMARY = ("_btyd_x", "_btyd_tx", "_btyd_T", "_btyd_m")  # the per-row inputs the BTYD step reads
# the views whose features are aggregates per (customer, cutoff), joined to the spine in this order
AGGREGATED_SOURCES = (
    "transactions", "purchase_days", "category_spend", "interactions", "interaction_days", "click_days"
)  # fmt: skip


# --- parsing -------------------------------------------------------------------------------------


def parse_horizon(value: str | int | timedelta) -> int:
    """Horizon in whole days from '90d', '13w' or an int of days."""
    if isinstance(value, timedelta):
        return value.days
    if isinstance(value, int):
        days = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([dw]?)\s*", str(value))
        if not match:
            raise ValueError(f"horizon {value!r}: expected days like '90d' or weeks like '13w'")
        days = int(match.group(1)) * (7 if match.group(2) == "w" else 1)
    if days <= 0:
        raise ValueError(f"horizon {value!r}: must be at least one day")
    return days


def parse_cutoff(value: str | datetime) -> datetime:
    """A cutoff timestamp; a bare date means the end of that day, so that day's events are seen."""
    parsed = parse_as_of(value, f"cutoff {value!r}")
    if parsed is None:
        raise ValueError("a cutoff is required")
    return parsed


def end_of(history: History) -> datetime:
    """The history's as-of date, or its last event when none was declared."""
    if history.as_of is not None:
        return history.as_of
    last = [pa.compute.max(t.column("timestamp")).as_py() for t in _event_tables(history).values()]
    return max(x for x in last if x is not None)


def monthly_cutoffs(history: History, horizon_days: int, min_history_days: int = 90) -> list[datetime]:
    """Month ends from the first with `min_history_days` of history to the last whose label window
    (T, T + horizon] ends by the as-of date."""
    first = min(
        pa.compute.min(t.column("timestamp")).as_py() for t in _event_tables(history).values() if t.num_rows
    )
    return month_end_cutoffs(first, end_of(history), horizon_days, min_history_days)


def month_end_cutoffs(
    first: datetime, end: datetime, horizon_days: int, min_history_days: int = 90
) -> list[datetime]:
    """Month ends from `first` + `min_history_days` to the last whose label window ends by `end`."""
    start, last = first + timedelta(days=min_history_days), end - timedelta(days=horizon_days)
    cutoffs: list[datetime] = []
    year, month = start.year, start.month
    while True:
        nxt = datetime(year + (month == 12), month % 12 + 1, 1)
        cutoff = nxt - timedelta(microseconds=1)
        if cutoff > last:
            return cutoffs
        if cutoff >= start:
            cutoffs.append(cutoff)
        year, month = nxt.year, nxt.month


# --- the builder ---------------------------------------------------------------------------------


def build_spine(history: History, cutoffs: Iterable[str | datetime]) -> pa.Table:
    """(customer_id, cutoff) for every customer eligible at each cutoff: first event (purchase,
    interaction or signup) at or before T, and no cancellation at or before T."""
    engine = DuckDBEngine(history, exact=True)
    return engine.run(spine_expr(engine, parse_cutoffs(cutoffs)).order_by(["cutoff", "customer_id"]))


def parse_cutoffs(cutoffs: Iterable[str | datetime]) -> list[datetime]:
    """Sorted distinct cutoffs; at least one."""
    cutoff_list = sorted({parse_cutoff(c) for c in cutoffs})
    if not cutoff_list:
        raise ValueError("at least one cutoff is required")
    return cutoff_list


def spine_expr(engine: Engine, cutoffs: list[datetime]) -> ir.Table:
    """The spine as an expression over the engine's tables (see `build_spine`)."""
    cut = engine.cutoffs(cutoffs)
    firsts = [
        engine.table(name).select("customer_id", first=_known_at(engine.table(name)))
        for name in ("transactions", "interactions")
        if engine.has(name)
    ]
    if engine.has("customers") and "signup_date" in engine.table("customers").columns:
        c = engine.table("customers")
        firsts.append(c.filter(c.signup_date.notnull()).select("customer_id", first=c.signup_date))
    events = ibis.union(*firsts) if len(firsts) > 1 else firsts[0]
    first = events.group_by("customer_id").aggregate(first=events.first.min())
    pairs = first.cross_join(cut).filter(lambda t: t.first <= t.cutoff)
    if engine.has("cancellations"):
        x = engine.table("cancellations")
        cancelled = x.group_by("customer_id").aggregate(cancelled_at=_known_at(x).min())
        pairs = pairs.left_join(cancelled, "customer_id").filter(
            lambda t: t.cancelled_at.isnull() | (t.cancelled_at > t.cutoff)
        )
    return pairs.select("customer_id", "cutoff")


def resolve_columns(feature_set: FeatureSet | str, history: Any) -> list[str]:
    """The set's columns that this history can feed: families whose tables or columns are absent are
    left out (absent, not zeros pretending to be data); attributes become attr_<column>. `history` is a
    History or anything with `tables()` whose tables have column names (a Spark history)."""
    fs = get_feature_set(feature_set) if isinstance(feature_set, str) else feature_set
    columns = table_columns(history)
    return [f.name for f in _available(fs, columns)] + _attribute_columns(fs, columns)


def table_columns(history: Any) -> dict[str, list[str]]:
    """Column names of each table present: Arrow tables (`column_names`) or Spark DataFrames (`columns`)."""
    out = {}
    for name, t in history.tables().items():
        out[name] = list(t.column_names if isinstance(t, pa.Table) else t.columns)
    return out


def build_features(
    history: History,
    spine: pa.Table,
    feature_set: FeatureSet | str = DEFAULT_FEATURE_SET,
    horizon: str | int = "90d",
    btyd_params: dict[str, list[float]] | None = None,
    parts: int | None = None,
) -> pa.Table:
    """Feature rows for each (customer_id, cutoff) of the spine, in the spine's order of cutoff then id.

    BG/NBD and Gamma-Gamma are fitted per cutoff on that cutoff's customers, and the fitted parameters are
    kept in the table's schema metadata (`btyd_fits`); `btyd_params` (`{"bgnbd": [r, alpha, a, b],
    "gamma_gamma": [p, q, v]}`, as a model ships them) applies given parameters instead of fitting, so one
    customer scored online gets the numbers the batch got. `parts`: the query's parts by customer (None:
    the engine's default, features.engine)."""
    fs = get_feature_set(feature_set) if isinstance(feature_set, str) else feature_set
    engine = DuckDBEngine(history, spine, parts=parts)
    expr, with_btyd = features_expr(engine, fs)
    table = engine.run(expr.order_by(["cutoff", "customer_id"]))
    if with_btyd:
        table = _add_btyd(table, parse_horizon(horizon), btyd_params)
    return table.select([*KEYS, *resolve_columns(fs, history)])


def features_expr(engine: Engine, fs: FeatureSet) -> tuple[ir.Table, bool]:
    """Every SQL-computable feature of `fs` for each spine row, as one expression over the engine's tables,
    and whether BTYD is wanted (then the expression carries the `_btyd_*` summary columns the BTYD step
    reads and drops)."""
    feats = _available(fs, engine.columns())
    by_source: dict[str, list[Feature]] = {}
    for f in feats:
        by_source.setdefault(f.source, []).append(f)

    s = engine.table("spine")
    row = s
    views = engine.views()
    for source in AGGREGATED_SOURCES:
        wanted = by_source.get(source, [])
        needs_btyd = source == "purchase_days" and bool(by_source.get("btyd"))
        if source not in views or not (wanted or needs_btyd):
            continue
        view = views[source]
        metrics = {f.name: f.fn(view) for f in wanted if f.fn is not None}
        if needs_btyd:
            metrics.update(_btyd_summary(view))
        agg = view.group_by(KEYS).aggregate(**metrics)
        row = row.left_join(agg, KEYS).select(row, *[agg[m] for m in metrics])
        fills = {f.name: row[f.name].fill_null(f.fill) for f in wanted if f.fill is not None}
        if fills:
            row = row.mutate(**fills)
    if engine.has("customers"):
        row = _join_customers(engine, row, fs, by_source.get("customers", []))
    derived = {f.name: f.fn(row) for f in by_source.get("derived", []) if f.fn is not None}
    if derived:
        row = row.mutate(**derived)
    return row, bool(by_source.get("btyd"))


def build_labels(
    history: History,
    spine: pa.Table,
    horizon: str | int,
    churn: str | None = None,
    value: ValueTarget = REVENUE,
) -> pa.Table:
    """churned and future_value for each spine row, from events in (T, T + horizon] only.

    non_contractual: churned = no purchase (amount >= 0) in the window; contractual: a cancellation in the
    window; mixed: contractual for customers whose `is_subscriber` attribute is true. future_value follows
    `value` (features.value): revenue = net amount (refunds negative) in the window; margin = the
    transactions' margin in the window minus the cost-to-serve of the interactions in it."""
    horizon_days = parse_horizon(horizon)
    check_label_window(pa.compute.max(spine.column("cutoff")).as_py(), horizon_days, end_of(history))
    value.check(history)
    engine = DuckDBEngine(history, spine)
    expr = labels_expr(engine, horizon_days, churn or history.churn, value)
    return engine.run(expr.order_by(["cutoff", "customer_id"]))


def check_label_window(latest: datetime | None, horizon_days: int, end: datetime) -> None:
    """Refuse a cutoff whose label window (T, T + horizon] ends after the history."""
    if latest is not None and latest + timedelta(days=horizon_days) > end:
        raise ValueError(
            f"cutoff {latest:%Y-%m-%d} + {horizon_days}d ends after the history "
            f"({end:%Y-%m-%d}): its labels are incomplete; "
            "use an earlier cutoff or a shorter horizon"
        )


def labels_expr(engine: Engine, horizon_days: int, churn: str, value: ValueTarget = REVENUE) -> ir.Table:
    """churned and future_value for each spine row as one expression (see `build_labels`)."""
    s, cuts = engine.table("spine"), engine.table("spine_cutoffs")

    def window(events: ir.Table) -> ir.Table:  # events in (T, T + horizon] for each cutoff T
        j = events.cross_join(cuts)
        return j.filter(
            (j.timestamp > j.cutoff) & (j.timestamp <= j.cutoff + ibis.interval(days=horizon_days))
        )

    fut = window(engine.table("transactions"))
    if value.is_margin and MARGIN_COLUMN not in fut.columns:
        raise ValueTargetError(f"value.target: margin needs a '{MARGIN_COLUMN}' column on transactions")
    agg = fut.group_by(KEYS).aggregate(
        future_purchases=fut.count(where=fut.amount >= 0),
        value=(fut[MARGIN_COLUMN] if value.is_margin else fut.amount).sum(),
    )
    row = s.left_join(agg, KEYS).select(s, agg.future_purchases, agg.value)
    costs = value.costs() if value.is_margin else {}
    if costs and engine.has("interactions"):  # profit: what serving the customer cost in the window
        fi = window(engine.table("interactions"))
        cost = fi.type.cases(*costs.items(), else_=0.0)
        iagg = fi.group_by(KEYS).aggregate(cost=cost.sum())
        row = row.left_join(iagg, KEYS).select(
            row.customer_id,
            row.cutoff,
            row.future_purchases,
            value=row.value.fill_null(0.0) - iagg.cost.fill_null(0.0),
        )
    if churn in ("contractual", "mixed"):
        if not engine.has("cancellations"):
            raise ValueError(f"churn: {churn} needs a cancellations table, and this history has none")
        fx = window(engine.table("cancellations"))
        cagg = fx.group_by(KEYS).aggregate(cancels=fx.count())
        row = row.left_join(cagg, KEYS).select(row, cagg.cancels)
    if churn == "mixed":
        c = engine.table("customers") if engine.has("customers") else None
        if c is None or CONTRACT_ATTRIBUTE not in c.columns:
            raise ValueError(f"churn: mixed needs a customers attribute '{CONTRACT_ATTRIBUTE}'")
        row = row.left_join(c, "customer_id").select(row, sub=c[CONTRACT_ATTRIBUTE])
    silent = row.future_purchases.fill_null(0) == 0
    if churn == "contractual":
        churned = row.cancels.fill_null(0) > 0
    elif churn == "mixed":
        churned = ibis.ifelse(_truthy(row.sub), row.cancels.fill_null(0) > 0, silent)
    else:
        churned = silent
    return row.select(
        "customer_id", "cutoff", churned=churned.cast("int8"), future_value=row.value.fill_null(0.0)
    )


def build_training_set(
    history: History,
    cutoffs: Sequence[str | datetime],
    horizon: str | int,
    feature_set: FeatureSet | str = DEFAULT_FEATURE_SET,
    churn: str | None = None,
    btyd_horizon: str | int | None = None,
    value: ValueTarget = REVENUE,
) -> pa.Table:
    """Features and labels for every customer eligible at each cutoff, stacked. The BTYD feature columns
    look `btyd_horizon` ahead (default: the label horizon); future_value follows `value`."""
    spine = build_spine(history, cutoffs)
    features = build_features(history, spine, feature_set, btyd_horizon or horizon)
    labels = build_labels(history, spine, horizon, churn, value)
    return features.append_column("churned", labels.column("churned")).append_column(
        "future_value", labels.column("future_value")
    )


def build_scoring_rows(
    history: History,
    cutoff: str | datetime,
    feature_set: FeatureSet | str = DEFAULT_FEATURE_SET,
    horizon: str | int = "90d",
    btyd_params: dict[str, list[float]] | None = None,
    parts: int | None = None,
) -> pa.Table:
    """Feature rows for every customer eligible at one cutoff: the same builder as training, no labels."""
    return build_features(history, build_spine(history, [cutoff]), feature_set, horizon, btyd_params, parts)


def check_columns(expected: Sequence[str], rows: pa.Table, feature_set: str) -> None:
    """Refuse rows whose feature columns differ from what a model was trained on."""
    got = [c for c in rows.column_names if c not in (*KEYS, *LABELS)]
    if got != list(expected):
        missing = [c for c in expected if c not in got]
        extra = [c for c in got if c not in expected]
        raise FeatureSetError(
            f"rows do not match feature set {feature_set} the model was trained on: "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}"
            + ("" if missing or extra else " (same columns, different order)")
        )


# --- internals -----------------------------------------------------------------------------------


def _known_at(table: ir.Table) -> ir.Value:
    """When an event was known: its timestamp, or its recorded_at if later (eligibility is point-in-time)."""
    if "recorded_at" not in table.columns:
        return table.timestamp
    return ibis.greatest(table.timestamp, table.recorded_at.fill_null(table.timestamp))


def _event_tables(history: History) -> dict[str, pa.Table]:
    return {n: t for n, t in history.tables().items() if n != "customers"}


def _available(fs: FeatureSet, columns: dict[str, list[str]]) -> list[Feature]:
    out: list[Feature] = []
    for name in fs.features:
        if name not in REGISTRY:
            raise FeatureSetError(f"feature set {fs.key} names unregistered feature {name!r}")
        f = REGISTRY[name]
        present = columns.get(SOURCE_TABLES.get(f.source, f.source))
        if present is None:
            continue
        if f.source == "derived":  # reads other features of the set, listed before it
            if any(r not in {g.name for g in out} for r in f.requires):
                continue
        elif any(c not in present for c in f.requires):
            continue
        out.append(f)
    return out


def _attribute_columns(fs: FeatureSet, columns: dict[str, list[str]]) -> list[str]:
    if not fs.attributes or "customers" not in columns:
        return []
    return [f"attr_{c}" for c in columns["customers"] if c not in ("customer_id", "signup_date")]


def _join_customers(engine: Engine, row: ir.Table, fs: FeatureSet, feats: list[Feature]) -> ir.Table:
    """Static attributes as attr_<column>, and signup tenure: the customers table joined to each row."""
    c = engine.table("customers")
    attrs = _attribute_columns(fs, engine.columns())
    want_signup = any(f.name == "signup_tenure_days" for f in feats)
    if not attrs and not want_signup:
        return row
    cols: dict[str, ir.Value] = {a: c[a.removeprefix("attr_")] for a in attrs}
    if want_signup:
        days = row.cutoff.date().delta(c.signup_date.date(), unit="day")
        cols["signup_tenure_days"] = ibis.ifelse(days >= 0, days, ibis.null().cast(days.type()))
    return row.left_join(c, "customer_id").select(row, **cols)


def _btyd_summary(d: ir.Table) -> dict[str, ir.Value]:
    """Per customer and cutoff: x (repeat purchase days), t_x and T in days, mean repeat-day spend."""
    x = d.count() - 1
    return {
        "_btyd_x": x,
        "_btyd_tx": d.age_days.max() - d.age_days.min(),
        "_btyd_T": d.age_days.max(),
        "_btyd_m": (d.day_amount.sum() - d.day_amount.argmin(d.day)) / x.nullif(0),
    }


def _add_btyd(table: pa.Table, horizon_days: int, fixed: dict[str, list[float]] | None = None) -> pa.Table:
    """Fit BG/NBD and Gamma-Gamma per cutoff on that cutoff's customers (data <= T only), or apply `fixed`
    parameters, and add the four BTYD features; the parameters used go to the schema metadata."""
    x, tx, big_t, m = (float_column(table, c) for c in BTYD_SUMMARY)
    cut = table.column("cutoff").to_numpy()
    fits = {}
    for value in np.unique(cut):
        sel = (cut == value) & ~np.isnan(x)
        if sel.any():
            fit = fit_btyd((x[sel], tx[sel], big_t[sel], None), (x[sel], m[sel], None), fixed)
            if fit is not None:
                fits[str(value)] = fit
    return apply_btyd(table, fits, horizon_days)


def fit_btyd(
    bg: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None],
    gg: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    fixed: dict[str, list[float]] | None = None,
) -> dict[str, list[float]] | None:
    """One cutoff's BTYD parameters: BG/NBD from (x, t_x days, T days, weights) and Gamma-Gamma from
    (x, m_x, weights) of the customers with purchases; weights count identical rows (None: one each), so an
    engine may hand over distinct rows with counts and get the same fit. None when BG/NBD cannot be fitted
    (no repeat purchases yet); no "gamma_gamma" key when Gamma-Gamma cannot. `fixed` is returned as is."""
    x, tx, big_t, w = bg
    try:
        if fixed:
            params = btyd.BGNBDParams(*fixed["bgnbd"])
        else:
            params = btyd.fit_bgnbd(x, tx / BTYD_UNIT_DAYS, big_t / BTYD_UNIT_DAYS, w)
    except (ValueError, KeyError, TypeError):
        return None
    fit = {"bgnbd": [params.r, params.alpha, params.a, params.b]}
    xg, mg, wg = gg
    mg = np.nan_to_num(mg, nan=0.0)
    rows = (xg > 0) & (mg > 0)  # Gamma-Gamma needs positive spend (CDNOW has $0 repeat days)
    try:
        if fixed:
            gamma = btyd.GammaGammaParams(*fixed["gamma_gamma"])
        else:
            gamma = btyd.fit_gamma_gamma(xg[rows], mg[rows], None if wg is None else wg[rows])
        fit["gamma_gamma"] = [gamma.p, gamma.q, gamma.v]
    except (ValueError, KeyError, TypeError):
        pass
    return fit


def apply_btyd(table: pa.Table, fits: dict[str, dict[str, list[float]]], horizon_days: int) -> pa.Table:
    """Replace the `_btyd_*` summary columns by the four BTYD features, each row computed with its cutoff's
    parameters (`fits`, keyed by the cutoff as numpy prints it); rows without a fit or without purchases
    get nulls. Row-wise, so it runs on any slice of rows (a Spark partition) with the same result. The fits
    go to the schema metadata."""
    x, tx, big_t, m = (float_column(table, c) for c in BTYD_SUMMARY)
    tx, big_t = tx / BTYD_UNIT_DAYS, big_t / BTYD_UNIT_DAYS
    cut = table.column("cutoff").to_numpy()
    out = {name: np.full(table.num_rows, np.nan) for name in BTYD_FEATURES}
    h = horizon_days / BTYD_UNIT_DAYS
    for value in np.unique(cut):
        fit = fits.get(str(value))
        sel = (cut == value) & ~np.isnan(x)
        if fit is None or not sel.any():
            continue
        xs, ts, bt = x[sel], tx[sel], big_t[sel]
        params = btyd.BGNBDParams(*fit["bgnbd"])
        exp = btyd.bgnbd_expected_purchases(params, xs, ts, bt, h)
        out["btyd_expected_purchases"][sel] = exp
        out["btyd_p_alive"][sel] = btyd.bgnbd_p_alive(params, xs, ts, bt)
        out["btyd_p_no_purchase"][sel] = btyd.bgnbd_p_no_purchase(params, xs, ts, bt, h)
        if "gamma_gamma" in fit:
            ms = np.nan_to_num(m[sel], nan=0.0)
            gg = btyd.GammaGammaParams(*fit["gamma_gamma"])
            # E[M | x, m_x] is defined for m_x = 0 too; the validator wants m_x > 0, so clip (effect < 1e-10)
            spend = btyd.gamma_gamma_expected_spend(gg, xs, np.where(xs > 0, np.maximum(ms, 1e-12), 0.0))
            out["btyd_expected_spend"][sel] = exp * spend
    keep = [c for c in table.column_names if c not in BTYD_SUMMARY]
    result = table.select(keep)
    for name, values in out.items():
        result = result.append_column(name, pa.array(values, pa.float64(), mask=np.isnan(values)))
    return result.replace_schema_metadata({**(result.schema.metadata or {}), BTYD_META: json.dumps(fits)})


def btyd_fits(table: pa.Table) -> dict[str, dict[str, list[float]]]:
    """The BTYD parameters each cutoff's rows were computed with: {cutoff: {"bgnbd": [...], ...}}."""
    raw = (table.schema.metadata or {}).get(BTYD_META)
    return json.loads(raw) if raw else {}


def float_column(table: pa.Table, column: str) -> np.ndarray:
    """A column as float64 numpy, nulls as NaN."""
    return table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)


def _truthy(value: ir.Value) -> ir.BooleanValue:
    if value.type().is_boolean():
        return value.fill_null(False)
    return value.cast("string").lower().isin(["true", "1", "yes", "y", "t"]).fill_null(False)


def summarise(table: pa.Table) -> dict[str, Any]:
    """Rows, customers, cutoffs and label rates of a built table: what the CLI prints."""
    out: dict[str, Any] = {
        "rows": table.num_rows,
        "customers": len(pa.compute.unique(table.column("customer_id"))),
        "cutoffs": len(pa.compute.unique(table.column("cutoff"))),
        "feature_columns": len([c for c in table.column_names if c not in (*KEYS, *LABELS)]),
    }
    if "churned" in table.column_names and table.num_rows:
        out["churn_rate"] = round(pa.compute.mean(table.column("churned")).as_py(), 4)
        out["mean_future_value"] = round(pa.compute.mean(table.column("future_value")).as_py(), 2)
    return out
