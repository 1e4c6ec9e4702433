"""Retention alert rules: which customers a run alerts on, when a live alert is notified again, and what a
notification says. Pure functions of scores, settings and times; serving.alert_store keeps the alerts.

`evaluate` turns a run's score table into candidate alerts: the rows that fire, and the rows that only hold
within the resolve margin (they keep a live alert from being auto-resolved but never open one). For a live
alert that fires again, `should_renotify` decides whether it is notified again (the cool-down, the
worsening margin, acknowledged and snoozed alerts), and `status_at` reopens an alert whose snooze has run
out. `alert_payload` is a notification's body; `webhook_id` its idempotency key in the outbox.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from core.clock import utc_naive
from serving import uplift_rank
from serving.config import AlertConfig
from training.tiers import DEFAULT_TIERS

MODEL_ID = "__model__"  # reserved customer id of model-level alerts (kind model-health, serving.monitoring)
CANDIDATE_COLUMNS = [
    "customer_id",
    "kind",
    "tier",
    "churn_probability",
    "predicted_value",
    "value_at_risk",
    "reasons",
    "playbook",
    "due_at",
    "fires",
    "priority",
]
LAPSE_COLUMNS = ["customer_id", "days_since_purchase", "past_value", "best_tier"]
"""What the win-back rule reads besides the scores (serving.winback.lapse): days since the last purchase
(NaN: never bought), net spend up to the run, the best tier at an earlier run (None: none recorded)."""


def priority(candidates: pd.DataFrame) -> np.ndarray:
    """The rank of each candidate alert without an uplift model, highest first: what the alert list, the
    capacity queues (serving.capacity), the notifications and the export are ordered by, stored as
    `alerts.priority`: serving.uplift_rank.priority (the one ranking function) with no model, the value at
    risk. A run with a gated uplift model passes its ranker to `evaluate` instead."""
    return uplift_rank.priority(candidates).to_numpy()


def evaluate(
    scores: pd.DataFrame,
    config: AlertConfig,
    previous_tiers: Mapping[str, str] | pd.Series | None,
    as_of: datetime | pd.Timestamp | str,
    lapse: pd.DataFrame | None = None,
    ranking: uplift_rank.Ranker | None = None,
) -> pd.DataFrame:
    """Candidate alerts of one run, ranked by `ranking` (serving.uplift_rank.ranker: uplift x value - cost
    with a gated uplift model; default `priority`, the value at risk), highest first; then customer_id, kind.
    `evaluate_at` without the rows."""
    return evaluate_at(scores, config, previous_tiers, as_of, lapse, ranking)[0]


def evaluate_at(
    scores: pd.DataFrame,
    config: AlertConfig,
    previous_tiers: Mapping[str, str] | pd.Series | None,
    as_of: datetime | pd.Timestamp | str,
    lapse: pd.DataFrame | None = None,
    ranking: uplift_rank.Ranker | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """(candidate alerts of one run, each candidate's row in `scores` by position): the candidates ranked by
    `ranking` (serving.uplift_rank.ranker: uplift x value - cost with a gated uplift model; default
    `priority`, the value at risk), highest first; then customer_id, kind. The rows let a batch run find
    each candidate's reasons without looking a million customer ids up.

    `scores`: customer_id, churn_probability, predicted_value, value_at_risk, reasons and the customer's tier:
    `tier` (after hysteresis, preferred) or else `tier_raw`. `previous_tiers`: customer_id -> tier at the
    last run, for `tier_drop` rules (customers without one never count as dropped). `lapse` (LAPSE_COLUMNS;
    needed by a win-back rule, refused missing): customers not in it are not lapsed.

    Rows with `fires` True are the alerts of this run. Rows with `fires` False only hold within the resolve
    margin (churn probability at least the threshold minus `resolve_margin`, the tier not promoted since the
    last run for `tier_drop` rules, the other conditions as they are): they keep a live alert from being
    auto-resolved but never open one. Columns: customer_id, kind, tier, churn_probability, predicted_value,
    value_at_risk, reasons, playbook (the rule's own, else the tier's), due_at (as_of + that playbook's
    hours), fires, priority.
    """
    if config.tiers is None:  # not bound to a model's tier names: the default names
        config = config.for_tiers(DEFAULT_TIERS)
    tiers = config.tiers or DEFAULT_TIERS
    when = utc_naive(as_of)
    s = _check_scores(scores, tiers)
    given = scores["reasons"].to_numpy(dtype=object) if "reasons" in scores else None
    rank = {name: i for i, name in enumerate(tiers)}
    level = _levels(s["tier"], rank)
    prev = _previous_levels(s["customer_id"], previous_tiers, rank)
    p = s["churn_probability"].to_numpy(dtype=np.float64, na_value=np.nan)
    tops = [r.top_k_value_at_risk for r in config.rules if r.top_k_value_at_risk is not None]
    position = _places(s, max(tops, default=0))
    days = past = best = None
    if any(r.win_back for r in config.rules):
        days, past, best = _lapse(s["customer_id"], lapse, rank)

    parts = []
    for rule in config.rules:
        fires = np.ones(len(s), dtype=bool)
        holds = np.ones(len(s), dtype=bool)
        if rule.min_tier is not None:
            ok = level <= rank[rule.min_tier]
            fires &= ok
            holds &= ok
        if rule.min_churn_probability is not None:
            fires &= p >= rule.min_churn_probability
            holds &= p >= rule.min_churn_probability - config.resolve_margin
        if rule.tier_drop is not None:
            known = ~np.isnan(prev)
            fires &= known & (level - prev >= rule.tier_drop)
            holds &= ~(known & (level < prev))
        if rule.top_k_value_at_risk is not None:
            ok = position < rule.top_k_value_at_risk
            fires &= ok
            holds &= ok
        if days is not None and past is not None and best is not None:  # the win-back rule's conditions
            if rule.lapsed_days is not None:
                ok = days >= rule.lapsed_days  # NaN (never bought): not lapsed
                fires &= ok
                holds &= ok
            if rule.min_past_value is not None:
                ok = past >= rule.min_past_value
                fires &= ok
                holds &= ok
            if rule.past_min_tier is not None:
                ok = best <= rank[rule.past_min_tier]
                fires &= ok
                holds &= ok
        holds |= fires
        part = s[holds].copy()
        part["_row"] = np.flatnonzero(holds)
        part["kind"] = rule.kind
        part["fires"] = fires[holds]
        parts.append(part)
    out = pd.concat(parts, ignore_index=True) if parts else s.iloc[:0].assign(_row=[], kind=[], fires=[])
    rows = out["_row"].to_numpy(dtype=np.int64)
    out["reasons"] = [reason_texts(given[i]) for i in rows] if given is not None else [[] for _ in rows]
    books = {t: b for t in tiers if (b := config.playbooks.get(t)) is not None}  # per tier, not per row
    at = pd.Index(list(tiers)).get_indexer(out["tier"])  # each row's tier by position; -1: none
    texts = [books[t].text if t in books else np.nan for t in tiers] + [np.nan]  # no playbook: NaN
    due = [when + timedelta(hours=books[t].due_within_hours) if t in books else None for t in tiers] + [None]
    out["playbook"] = pd.Series(np.array(texts, dtype=object)[at], index=out.index, dtype=object)
    out["due_at"] = pd.Series(np.array(due, dtype=object)[at], index=out.index, dtype=object)
    for rule in config.rules:  # a rule's own playbook, for every tier
        if rule.playbook is not None:
            mine = (out["kind"] == rule.kind).to_numpy()
            out.loc[mine, "playbook"] = rule.playbook.text
            out.loc[mine, "due_at"] = when + timedelta(hours=rule.playbook.due_within_hours)
    out["priority"] = (ranking or priority)(out) if len(out) else priority(out)
    out = out.iloc[candidate_order(out, s["customer_id"])].reset_index(drop=True)
    out["fires"] = out["fires"].astype(bool)
    return out[CANDIDATE_COLUMNS], out["_row"].to_numpy(dtype=np.int64)


def should_renotify(
    status: str,
    value_at_risk: float,
    notified_value_at_risk: float | None,
    last_notified_at: datetime | None,
    when: datetime,
    config: AlertConfig,
) -> bool:
    """Whether a live alert that fires again at `when` is notified again (a new version). Snoozed: never. An
    acknowledged alert (someone owns it): only when value at risk worsened by at least `renotify_margin` since
    the last notification. An open one: that, or once `cooldown_hours` have passed since it."""
    if status == "snoozed":
        return False
    last = notified_value_at_risk
    worse = value_at_risk > (last or 0.0) and (
        not last or value_at_risk - last >= config.renotify_margin * last
    )
    if status == "acknowledged":
        return worse
    cooled = last_notified_at is None or when - last_notified_at >= timedelta(hours=config.cooldown_hours)
    return cooled or worse


def status_at(status: str, snoozed_until: datetime | None, when: datetime) -> tuple[str, datetime | None]:
    """A live alert's (status, snoozed_until) at `when`: a snooze that has run out leaves it open again."""
    if status == "snoozed" and (snoozed_until is None or snoozed_until <= when):
        return "open", None
    return status, snoozed_until


def check_candidates(candidates: pd.DataFrame) -> None:
    """Refuse candidates with missing columns or a repeated (customer_id, kind), checked as columns."""
    need = set(CANDIDATE_COLUMNS) - {"fires", "priority"}
    missing = need - set(candidates.columns)
    if missing:
        raise ValueError(f"candidates lack column(s) {sorted(missing)}; build them with evaluate()")
    ids, kinds = as_text(candidates["customer_id"]), as_text(candidates["kind"])
    # each (customer_id, kind) as one integer: duplicated() on two text columns took seconds a million
    who, _ = pd.factorize(ids)
    what, distinct = pd.factorize(kinds)
    repeated = np.flatnonzero(pd.Series(who.astype(np.int64) * (len(distinct) + 1) + what).duplicated())
    if len(repeated):
        first = int(repeated[0])
        raise ValueError(
            f"candidates repeat (customer_id, kind), e.g. {[ids.iloc[first], kinds.iloc[first]]}"
        )


def as_text(column: pd.Series) -> pd.Series:
    """`column.astype(str)` as Python texts (object dtype, same index); a column of texts already is kept as
    it is (pandas' text dtype would copy a million of them into Arrow and back)."""
    if isinstance(column.dtype, pd.StringDtype):  # texts (or missing) already: converted once, not twice
        return pd.Series(column.to_numpy(dtype=object), index=column.index, dtype=object)
    if column.dtype == object and all(type(v) is str for v in column.to_numpy(dtype=object)):
        return column
    return pd.Series(column.astype(str).to_numpy(dtype=object), index=column.index, dtype=object)


def candidate_rows(candidates: pd.DataFrame) -> list[SimpleNamespace]:
    """The candidate rows (from `evaluate`, or serving.monitoring's model-health ones) as plain Python values
    (None, never NaN or NaT), refusing missing columns and repeated (customer_id, kind). Converted column
    by column, each distinct due time once."""
    check_candidates(candidates)
    fires = candidates["fires"] if "fires" in candidates else pd.Series(True, index=candidates.index)
    codes, distinct = pd.factorize(candidates["due_at"].to_numpy(dtype=object))  # missing: -1
    due = [utc_naive(v) for v in distinct] + [None]
    columns = zip(
        candidates["customer_id"].tolist(),
        candidates["kind"].tolist(),
        candidates["tier"].tolist(),
        candidates["churn_probability"].tolist(),
        candidates["predicted_value"].tolist(),
        candidates["value_at_risk"].tolist(),
        candidates["reasons"].tolist(),
        candidates["playbook"].tolist(),
        codes.tolist(),
        fires.tolist(),
        priorities(candidates).tolist(),
        strict=True,
    )
    return [
        SimpleNamespace(
            customer_id=str(who),
            kind=str(kind),
            tier=None if is_missing(tier) else str(tier),
            churn_probability=float(p),
            predicted_value=float(value),
            value_at_risk=float(at_risk),
            reasons=reason_texts(why),
            playbook=None if is_missing(book) else str(book),
            due_at=due[when],
            fires=bool(fire),
            priority=float(rank),
        )
        for who, kind, tier, p, value, at_risk, why, book, when, fire, rank in columns
    ]


def priorities(candidates: pd.DataFrame) -> np.ndarray:
    """The candidates' `priority` column, `priority` of them where it is missing (candidates built
    elsewhere, e.g. serving.monitoring's model-health ones)."""
    own = priority(candidates)
    if "priority" not in candidates:
        return own
    given = candidates["priority"].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(given), own, given)


def alert_payload(row: Mapping[str, Any] | pd.Series) -> dict[str, Any]:
    """The notification body for one stored alert (a `get_alert` dict or a `list_alerts` row), JSON-ready.
    The caller enqueues it in its outbox with webhook id f"alert-{alert_id}-v{version}"."""
    r = dict(row)
    reasons = r.get("reasons")
    if isinstance(reasons, str):
        reasons = json.loads(reasons)
    due = r.get("due_at")
    return {
        "alert_id": int(r["id"] if "id" in r else r["alert_id"]),
        "version": int(r["version"]),
        "customer_id": str(r["customer_id"]),
        "kind": r["kind"],
        "tier": None if is_missing(r.get("tier")) else r["tier"],
        "churn_probability": float(r["churn_probability"]),
        "predicted_value": float(r["predicted_value"]),
        "value_at_risk": float(r["value_at_risk"]),
        "reasons": list(reasons) if reasons is not None else [],
        "playbook": None if is_missing(r.get("playbook")) else r["playbook"],
        "due_at": None if is_missing(due) else pd.Timestamp(due).isoformat(),
    }


def webhook_id(alert_id: int, version: int) -> str:
    """The outbox's idempotency key for one notification of one alert version."""
    return f"alert-{alert_id}-v{version}"


# --- helpers ------------------------------------------------------------------------------------------------


def _check_scores(scores: pd.DataFrame, tiers: Sequence[str]) -> pd.DataFrame:
    tier_col = "tier" if "tier" in scores.columns else "tier_raw"
    need = {"customer_id", "churn_probability", "predicted_value", "value_at_risk", tier_col}
    missing = need - set(scores.columns)
    if missing:
        raise ValueError(f"scores lack column(s) {sorted(missing)}")
    s = pd.DataFrame(
        {
            "customer_id": scores["customer_id"].astype(str).to_numpy(dtype=object),
            "tier": scores[tier_col].to_numpy(dtype=object),
            "churn_probability": scores["churn_probability"].to_numpy(dtype=np.float64),
            "predicted_value": scores["predicted_value"].to_numpy(dtype=np.float64),
            "value_at_risk": scores["value_at_risk"].to_numpy(dtype=np.float64),
        }
    )
    if scores["customer_id"].isna().any() or s["customer_id"].duplicated().any():
        raise ValueError("scores: customer_id must be present and unique")
    unknown = sorted({str(x) for x in pd.unique(s["tier"].to_numpy(dtype=object))} - set(tiers))
    if unknown:
        raise ValueError(f"scores: {tier_col} {unknown} not among the tiers {list(tiers)}")
    return s


def candidate_order(out: pd.DataFrame, ids: pd.Series) -> np.ndarray:
    """The candidates' order: highest priority first (missing last), then customer_id, then kind, as a
    stable sort on the three gives. Where the scores' customer ids (`ids`, unique) are sorted, as a batch
    run's are, each candidate's row in them (`_row`) stands in for its id: no sort of a million texts."""
    if ids.is_monotonic_increasing:
        who = out["_row"].to_numpy(dtype=np.int64)
    else:
        who = pd.factorize(out["customer_id"], sort=True)[0]
    kind = pd.factorize(out["kind"], sort=True)[0]
    return np.lexsort((kind, who, -out["priority"].to_numpy(dtype=np.float64)))


def _places(s: pd.DataFrame, k: int) -> np.ndarray:
    """Each row's place by value at risk, largest first (missing last), then by customer_id: exact for the
    first `k` places, `k` for every other row (a top-k rule asks no more). Only the rows at or above the
    k-th largest value are sorted, not a million."""
    v = s["value_at_risk"].fillna(-np.inf).to_numpy(dtype=np.float64)
    n = len(v)
    position = np.full(n, k, dtype=np.int64)
    if k <= 0 or n == 0:
        return position
    near = np.flatnonzero(v >= np.partition(v, n - k)[n - k]) if k < n else np.arange(n)
    ranked = pd.DataFrame(
        {"_v": v[near], "customer_id": s["customer_id"].to_numpy(dtype=object)[near], "_at": near}
    ).sort_values(["_v", "customer_id"], ascending=[False, True], kind="stable")
    first = ranked["_at"].to_numpy()[:k]
    position[first] = np.arange(len(first))
    return position


def _previous_levels(
    ids: pd.Series, previous: Mapping[str, str] | pd.Series | None, rank: dict[str, int]
) -> np.ndarray:
    if previous is None:
        return np.full(len(ids), np.nan)
    prev = previous if isinstance(previous, pd.Series) else pd.Series(dict(previous), dtype=object)
    prev = prev.astype(object)
    # ids as text: mapped only when some is not (mapping a million took 0.5 s)
    if not all(type(k) is str for k in prev.index.to_numpy(dtype=object)):
        prev.index = prev.index.map(str)
    prev = prev[~prev.index.duplicated(keep="last")]  # a mapping's last word
    levels = pd.Series(_levels(prev, rank), index=prev.index)  # missing or unknown tiers: NaN
    return levels.reindex(ids.to_numpy(dtype=object)).to_numpy(dtype=np.float64, na_value=np.nan)


def _levels(tiers: pd.Series, rank: dict[str, int]) -> np.ndarray:
    """Each row's tier level (`rank`'s value: 0 the best), NaN for a missing or unknown tier; looked up by
    hash in one pass (Series.map called Python for each of a million rows)."""
    at = pd.Index(list(rank), dtype=object).get_indexer(tiers)
    levels = np.append(np.array(list(rank.values()), dtype=np.float64), np.nan)
    return levels[at]  # -1 (not found): the NaN at the end


def _lapse(
    ids: pd.Series, lapse: pd.DataFrame | None, rank: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Days since the last purchase, past value and the best earlier tier's level of each scored customer
    (NaN where unknown), for the win-back rule."""
    if lapse is None:
        raise ValueError("the win-back rule needs each customer's lapse (serving.winback.lapse): none given")
    missing = set(LAPSE_COLUMNS) - set(lapse.columns)
    if missing:
        raise ValueError(f"lapse lacks column(s) {sorted(missing)}")
    by = lapse.assign(customer_id=lapse["customer_id"].astype(str)).drop_duplicates(
        "customer_id", keep="last"
    )
    by = by.set_index("customer_id").reindex(ids.to_numpy(dtype=object))
    days = by["days_since_purchase"].to_numpy(dtype=np.float64, na_value=np.nan)
    past = by["past_value"].to_numpy(dtype=np.float64, na_value=np.nan)
    best = _levels(by["best_tier"], rank)
    return days, past, best


def reason_texts(value: Any) -> list[str]:
    """A candidate's `reasons` cell as a list of texts: None or NaN none, one text one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def is_missing(value: Any) -> bool:
    """None, NaT or a float NaN: what a candidate's cell holds for a missing value."""
    if value is None or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)
