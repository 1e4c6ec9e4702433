"""Value tiers that do not flap: the hysteresis rule over the model's raw tiers, run after run. Pure.

The model cuts tiers afresh every run (training.tiers.assign_tiers), so a customer near a cut point would
bounce between gold and silver from one run to the next. CRM teams act on tiers (an account manager per
diamond customer), so a promotion is applied at once but a demotion only after `demote_after` consecutive
runs below the current tier. serving.tier_store keeps the state between runs and applies this rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

RESULT_COLUMNS = ["customer_id", "tier", "tier_raw", "runs_below", "changed", "previous_tier"]


def apply_hysteresis(
    previous: pd.DataFrame | None, current: pd.DataFrame, order: Sequence[str], demote_after: int
) -> pd.DataFrame:
    """Each current customer's tier after this run: a better raw tier promotes at once; a worse one only
    demotes after `demote_after` consecutive runs below the current tier (to the latest raw tier); a run at or
    above the current tier resets the counter. New customers take their raw tier.

    `previous`: customer_id, tier, runs_below (the stored state); `current`: customer_id, tier_raw. Returns
    customer_id, tier, tier_raw, runs_below, changed, previous_tier in `current`'s row order; `changed` is
    False for new customers (their previous_tier is missing). Customers only in `previous` are not returned.
    """
    check_settings(order, demote_after)
    return hysteresis_of(previous, check_current(current, order), order, demote_after)


def hysteresis_of(
    previous: pd.DataFrame | None, cur: pd.DataFrame, order: Sequence[str], demote_after: int
) -> pd.DataFrame:
    """`apply_hysteresis` for raw tiers `check_current` has checked already (a batch run checks them once,
    before its transaction)."""
    if previous is None or previous.empty:  # everyone is new: nothing to join
        none = pd.Series(np.full(len(cur), None, dtype=object), index=cur.index, dtype=object)
        merged = cur.assign(previous_tier=none, prev_runs=np.nan)
    else:
        # one row per customer on both sides (checked): no validation pass over a million ids again
        merged = cur.merge(_check_previous(previous, order), on="customer_id", how="left", sort=False)

    raw_level = _levels(merged["tier_raw"], order)
    prev_level = _levels(merged["previous_tier"], order)
    prev_runs = merged["prev_runs"].to_numpy(dtype=np.float64, na_value=np.nan)
    new = np.isnan(prev_level)
    below = ~new & (raw_level > prev_level)
    runs = np.where(below, np.nan_to_num(prev_runs) + 1, 0).astype(np.int64)
    demote = below & (runs >= demote_after)
    runs[demote] = 0
    keep = below & ~demote
    raw = merged["tier_raw"].to_numpy(dtype=object)
    before = merged["previous_tier"].to_numpy(dtype=object, na_value=None)
    tier = np.where(keep, before, raw)
    text = {  # held as Python text, as result_frame gives it (not converted to Arrow's and back)
        "customer_id": merged["customer_id"].to_numpy(dtype=object),
        "tier": tier,
        "tier_raw": raw,
        "previous_tier": before,
    }
    columns = {c: pd.Series(v, dtype=object) for c, v in text.items()}
    columns.update(runs_below=pd.Series(runs), changed=pd.Series(~new & (tier != before)))
    return result_frame(pd.DataFrame(columns))


def check_settings(order: Sequence[str], demote_after: int) -> None:
    """Refuse a tier order that is empty or repeats a name, or a demote_after below one whole run."""
    _check_order(order)
    _check_demote_after(demote_after)


def check_current(current: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """This run's raw tiers, checked: customer_id and tier_raw, one row per customer, every tier_raw in
    `order`, a fresh index. ValueError says what is wrong."""
    missing = {"customer_id", "tier_raw"} - set(current.columns)
    if missing:
        raise ValueError(f"current scores lack column(s) {sorted(missing)}")
    cur = current[["customer_id", "tier_raw"]].reset_index(drop=True)
    _check_ids(cur, "current scores")
    unknown = sorted(set(pd.unique(cur["tier_raw"].dropna())) - set(order)) + (
        ["<null>"] if cur["tier_raw"].isna().any() else []
    )
    if unknown:
        raise ValueError(f"current scores: tier_raw {unknown} not among the tiers {list(order)}")
    return cur


def result_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` as `apply_hysteresis` returns it: RESULT_COLUMNS in order, text columns with None for missing,
    runs_below whole numbers, changed booleans, a fresh index."""
    out = frame[RESULT_COLUMNS].copy()
    for col in ("customer_id", "tier", "tier_raw", "previous_tier"):
        out[col] = _nullable(out[col])
    out["runs_below"] = out["runs_below"].astype(np.int64)
    out["changed"] = out["changed"].astype(bool)
    return out.reset_index(drop=True)


# --- helpers -----------------------------------------------------------------------------------------------


def _check_previous(previous: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    missing = {"customer_id", "tier", "runs_below"} - set(previous.columns)
    if missing:
        raise ValueError(f"previous tiers lack column(s) {sorted(missing)}")
    prev = previous[["customer_id", "tier", "runs_below"]].reset_index(drop=True)
    _check_ids(prev, "previous tiers")
    unknown = sorted(set(pd.unique(prev["tier"].dropna())) - set(order))
    if unknown:
        raise ValueError(
            f"previous tiers: {unknown} not among the tiers {list(order)}; renamed tiers need a reset"
        )
    return prev.rename(columns={"tier": "previous_tier", "runs_below": "prev_runs"})


def _levels(tiers: pd.Series, order: Sequence[str]) -> np.ndarray:
    """Each row's place in `order` (0 the best) as a float, NaN for a missing tier; one hash lookup of the
    column (Series.map called Python for each of a million rows)."""
    try:  # Arrow's text (pandas' str columns) looked up as it is, without a Python string per row
        at = pc.index_in(pa.array(tiers, from_pandas=True), value_set=pa.array(list(order), pa.string()))
        return at.to_numpy(zero_copy_only=False).astype(np.float64)  # a missing or unknown tier: NaN
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # not text: by Python value
        found = pd.Index(list(order), dtype=object).get_indexer(tiers.to_numpy(dtype=object))
        return np.where(found >= 0, found, np.nan).astype(np.float64)


def _check_ids(frame: pd.DataFrame, what: str) -> None:
    ids = frame["customer_id"]
    if ids.isna().any():
        raise ValueError(f"{what}: {int(ids.isna().sum())} row(s) without a customer_id")
    if _increasing(ids):
        return  # sorted, as a batch run has them: no id can repeat (hashing a million ids took 0.3 s)
    dup = ids[ids.duplicated()]
    if not dup.empty:
        raise ValueError(f"{what}: customer_id repeated, e.g. {list(dup.unique()[:5])}")


def _increasing(ids: pd.Series) -> bool:
    """Is every id greater than the one before it (so none repeats)?"""
    if len(ids) < 2:
        return True
    try:
        values = pa.array(ids, from_pandas=True)
        return bool(pc.all(pc.greater(values[1:], values[:-1])).as_py())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # mixed types
        return False


def _check_order(order: Sequence[str]) -> None:
    if isinstance(order, str) or len(order) == 0:
        raise ValueError(f"tier order must be a non-empty list of tier names, best first; got {order!r}")
    if len(set(order)) != len(order):
        raise ValueError(f"tier order repeats a name: {list(order)}")


def _check_demote_after(demote_after: int) -> None:
    if int(demote_after) != demote_after or demote_after < 1:
        raise ValueError(f"demote_after must be a whole number of runs >= 1, got {demote_after!r}")


def _nullable(column: pd.Series) -> pd.Series:
    """Text with None for missing (pandas 3 would infer its str dtype, whose missing value is NaN)."""
    return column.astype(object).where(column.notna(), None)
