"""From feature rows to what a CRM system and a retention agent read: probability, value, value at risk,
tier, RFM segment, the top reasons in words, a cold-start flag. Pure functions of a scoring artefact and
rows; the encodings, thresholds and maps all come from the artefact (training.artefact)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from features.definitions import REGISTRY
from training.artefact import ScoringArtefact
from training.rfm import RfmReference, rfm_segments

RFM_REASON = "rfm_rank"


def reasons(
    artefact: ScoringArtefact, rows: pd.DataFrame, top: int, dm: xgb.DMatrix | None = None
) -> list[list[dict[str, Any]]]:
    """Per customer, the `top` inputs that move churn risk most, from XGBoost's pred_contribs on the
    booster margin scaled by the stacker's weight, plus the RFM rank's own term. Largest |effect| first."""
    if rows.empty:
        return []
    contribs = artefact.churn.contributions(rows, dm)[:, :-1] * artefact.churn.stack[0]
    rank = artefact.churn.rfm.score(rows)
    rfm_effect = artefact.churn.stack[1] * (rank - 0.5)  # relative to a middling customer
    names = [*artefact.columns, RFM_REASON]
    effects = np.c_[contribs, rfm_effect]
    out = []
    for i in range(len(rows)):
        order = np.argsort(-np.abs(effects[i]), kind="stable")[:top]
        items = []
        for j in order:
            if effects[i, j] == 0:
                continue
            name = names[j]
            value = float(rank[i]) if name == RFM_REASON else _value(rows.iloc[i][name])
            items.append(
                {
                    "feature": name,
                    "value": value,
                    "direction": "raises churn risk" if effects[i, j] > 0 else "lowers churn risk",
                    "contribution": round(float(effects[i, j]), 6),
                    "text": _words(name, value, effects[i, j] > 0),
                }
            )
        out.append(items)
    return out


def complete_rows(artefact: ScoringArtefact, rows: pd.DataFrame) -> pd.DataFrame:
    """Inline histories may leave out a table the model uses (no interactions sent: the customer has none).
    Its columns then get what the feature code gives a customer without rows in that table: the feature's
    fill (0 for counts and sums) or null; attributes not sent are null."""
    missing = [c for c in artefact.columns if c not in rows.columns]
    if not missing:
        return rows
    fills = {}
    for c in missing:
        feature = REGISTRY.get(c)
        fills[c] = feature.fill if feature is not None and feature.fill is not None else np.nan
    return rows.assign(**fills)


def score_records(
    artefact: ScoringArtefact,
    rows: pd.DataFrame,
    top: int,
    cold_start_min_purchase_days: int,
    reference: RfmReference | None = None,
) -> list[dict[str, Any]]:
    """One dict per row: the full answer for a customer. `reference` is the RFM segments' reference of the
    model (`RfmReference.from_rank(artefact.churn.rfm)`), which a service computes once per model rather than
    per request."""
    if rows.empty:
        return []
    dm = artefact.matrix(rows)
    scored = artefact.score(rows, dm)
    why = reasons(artefact, rows, top, dm)
    segments = rfm_segments(rows, reference or RfmReference.from_rank(artefact.churn.rfm)).to_numpy()
    cold = cold_start(rows, cold_start_min_purchase_days)
    records = []
    for i, (_, s) in enumerate(scored.iterrows()):
        records.append(
            {
                "customer_id": str(s["customer_id"]),
                "churn_probability": float(s["churn_probability"]),
                "predicted_value": float(s["predicted_value"]),
                "horizon_days": artefact.horizon_days,
                "value_at_risk": float(s["value_at_risk"]),
                "tier": str(s["tier"]),
                "rfm_segment": str(segments[i]),
                "reasons": why[i],
                "cold_start": bool(cold[i]),
            }
        )
    return records


def cold_start(rows: pd.DataFrame, min_purchase_days: int) -> np.ndarray:
    """Each row's cold-start flag: no purchase yet, or fewer purchase days than `min_purchase_days`."""
    days = rows["frequency_days"] if "frequency_days" in rows else pd.Series(0, index=rows.index)
    repeat = days.fillna(0).to_numpy() + 1  # purchase days = repeat days + the first
    bought = rows["recency_days"].notna().to_numpy() if "recency_days" in rows else np.zeros(len(rows), bool)
    return np.asarray(~bought | (repeat < min_purchase_days), dtype=bool)


def _value(v: Any) -> float | str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    if isinstance(v, int | float | np.integer | np.floating):
        return float(v)
    return str(v)


def _words(name: str, value: Any, raises: bool) -> str:
    effect = "raises" if raises else "lowers"
    if name == RFM_REASON:
        return f"Recency, frequency and spend rank at {value:.0%} of customers by risk: {effect} churn risk."
    feature = REGISTRY.get(name.removeprefix("attr_"))
    what = feature.description.rstrip(".") if feature and feature.description else name.replace("_", " ")
    shown = (
        "none"
        if value is None
        else (f"{value:,.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else value)
    )
    return f"{what}: {shown} — {effect} churn risk."
