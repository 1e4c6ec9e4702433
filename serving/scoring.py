"""From feature rows to what a CRM system and a retention agent read: probability, value, value at risk,
tier, RFM segment, the top reasons in words, a cold-start flag. Pure functions of a scoring artefact and
rows; the encodings, thresholds and maps all come from the artefact (training.artefact).

Everything is computed as columns over all rows at once (`score_frame`): batch scoring runs it on a million
customers, the service on the few of one request (`score_records`). The top reasons of every row come from
one stable argsort of XGBoost's pred_contribs; each sentence is formatted once per distinct value, and each
row's reasons are written as JSON text column by column, exactly as `json.dumps` writes the list of dicts."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb

from features.definitions import REGISTRY
from serving import numtext
from training.artefact import ScoringArtefact
from training.curve import HORIZONS
from training.rfm import RfmReference, rfm_segments

RFM_REASON = "rfm_rank"
CURVE_COLUMNS = [*(f"churn_{t}d" for t in HORIZONS), "days_to_churn"]
"""Time to churn (training.curve): P(churned by t days) for each t, and the expected days to churn given
churn within the horizon; null where undefined (past H, no purchase) and for models without a curve."""
SCORE_COLUMNS = [
    "customer_id",
    "churn_probability",
    "predicted_value",
    "horizon_days",
    "value_at_risk",
    "tier",
    "rfm_segment",
    "reasons",
    "cold_start",
    "churn_model",
    *CURVE_COLUMNS,
]
"""The score table's columns (`score_frame`); `reasons` is the JSON text of the list of reason dicts;
`churn_model` says which model scored the customer: `contract_hazard` (a customer under contract, by the
cancellation hazard, training.contract), `contract_booster` (under contract, by the churn booster that learned
H-day cancellations, with a level of their own: training.yaml `contract.scorer`) or `purchase_silence`
(everybody else, and every customer of a model trained before the contract model)."""


@dataclass(frozen=True)
class Reasons:
    """The top reasons of every row as (rows, top) arrays, largest |effect| first. A slot whose effect is
    0 is empty (`filled` False, text ''). `rows_json` is each row's reasons as one JSON text, as
    `json.dumps(list of reason dicts)` writes it (the reason dicts' own texts are not kept: a million
    rows' would take a gigabyte)."""

    filled: np.ndarray  # bool
    contribution: np.ndarray  # float64: the signed effect rounded to 6 places (> 0: raises churn risk)
    text: np.ndarray  # object: the sentence
    rows_json: np.ndarray  # object: one JSON text per row

    @staticmethod
    def concat(parts: Sequence[Reasons]) -> Reasons:
        """The reasons of consecutive row chunks as one (each row's reasons are its own)."""
        return Reasons(
            np.concatenate([p.filled for p in parts]),
            np.concatenate([p.contribution for p in parts]),
            np.concatenate([p.text for p in parts]),
            np.concatenate([p.rows_json for p in parts]),
        )

    def risk_texts(self, rows: np.ndarray | None = None) -> list[list[str]]:
        """The sentences an agent acts on, for every row or the positions `rows`: the reasons that raise
        the customer's risk, else whatever matters most."""
        idx = np.arange(len(self.filled)) if rows is None else np.asarray(rows, dtype=np.int64)
        filled = self.filled[idx].tolist()
        raising = (self.filled[idx] & (self.contribution[idx] > 0)).tolist()
        out = []
        for f, r, t in zip(filled, raising, self.text[idx].tolist(), strict=True):
            picked = [x for x, keep in zip(t, r, strict=True) if keep]
            out.append(picked or [x for x, keep in zip(t, f, strict=True) if keep])
        return out


def reason_names(artefact: ScoringArtefact) -> list[str]:
    """What a reason can name, in the order of the effect columns: the model's columns, the RFM rank, then
    the contract model's own inputs (`ScoringArtefact.contract_only_columns`)."""
    return [*artefact.columns, RFM_REASON, *artefact.contract_only_columns]


def contract_effects(artefact: ScoringArtefact, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The rows the contract model scores (a mask) and their effects on churn risk, one column per
    `reason_names`: TreeSHAP contributions to the logit of their cancellation hazard
    (training.contract.ContractModel.contributions); the RFM rank, which that model does not use, 0. A
    customer's reasons then explain the number shown: the hazard's for those under contract."""
    names = reason_names(artefact)
    mask = artefact.contract.applies(rows) if artefact.contract is not None else np.zeros(len(rows), bool)
    effects = np.zeros((int(mask.sum()), len(names)))
    if artefact.contract is not None and mask.any():
        where = {name: j for j, name in enumerate(names)}
        columns = [where[c] for c in artefact.contract.encoder.columns]
        effects[:, columns] = artefact.contract.contributions(rows.loc[mask])
    return mask, effects


def top_reasons(
    artefact: ScoringArtefact, rows: pd.DataFrame, top: int, dm: xgb.DMatrix | None = None
) -> Reasons:
    """Per customer, the `top` inputs that move churn risk most (`reason_effects`), in words
    (`reasons_of`)."""
    return reasons_of(artefact, rows, reason_effects(artefact, rows, dm), top)


def reason_effects(
    artefact: ScoringArtefact, rows: pd.DataFrame, dm: xgb.DMatrix | None = None
) -> np.ndarray:
    """(rows, `reason_names`) effects on churn risk: for the purchase-silence model, XGBoost's pred_contribs
    on the booster margin scaled by the stacker's weight, plus the RFM rank's own term; for customers under
    contract, the contract hazard's own contributions (`contract_effects`). The costly part of the reasons
    (TreeSHAP), and nearly all of it outside Python: batch scoring runs it beside its store writes."""
    contribs = artefact.churn.shap(rows, dm) * artefact.churn.stack[0]
    rfm_effect = artefact.churn.stack[1] * (artefact.churn.rfm.score(rows) - 0.5)  # vs a middling customer
    names = reason_names(artefact)
    effects = np.c_[contribs, rfm_effect, np.zeros((len(rows), len(names) - len(artefact.columns) - 1))]
    del contribs
    contract, theirs = contract_effects(artefact, rows)
    if contract.any():
        effects[contract] = theirs
    return effects


REASON_ROWS = 100_000  # rows whose reasons are written at a time: Arrow's texts of a million rows at once
# (each reason's, joined, then each row's) took over a gigabyte more at the peak


def reasons_of(artefact: ScoringArtefact, rows: pd.DataFrame, effects: np.ndarray, top: int) -> Reasons:
    """The `top` reasons of each row from its `reason_effects`: largest |effect| first (equal ones: the
    earlier column first); zero effects are left out. Written REASON_ROWS rows at a time (each row's
    reasons are its own)."""
    if len(rows) <= REASON_ROWS:
        return _reasons_of(artefact, rows, effects, top)
    return Reasons.concat(
        [
            _reasons_of(artefact, rows.iloc[a : a + REASON_ROWS], effects[a : a + REASON_ROWS], top)
            for a in range(0, len(rows), REASON_ROWS)
        ]
    )


def _reasons_of(artefact: ScoringArtefact, rows: pd.DataFrame, effects: np.ndarray, top: int) -> Reasons:
    names = reason_names(artefact)
    rank = artefact.churn.rfm.score(rows)
    order = _top_columns(np.abs(effects), top)
    chosen = np.take_along_axis(effects, order, axis=1)
    filled = chosen != 0
    text = np.full(order.shape, "", dtype=object)
    rounded = np.zeros(order.shape, dtype=np.float64)
    places, items = [], []
    for j in np.unique(order[filled]).tolist():
        r, c = np.nonzero((order == j) & filled)
        name = names[j]
        raw = rank[r] if name == RFM_REASON else _column(rows[name], r)
        codes, value, shown = _value_texts(name, raw)
        prefix, suffix = _sentence(name)
        up = chosen[r, c] > 0
        text[r, c] = _sentences(prefix, suffix, shown, codes, up)
        exact = numtext.rounded(chosen[r, c], 6)  # Python's rounding, as json.dumps saw it
        rounded[r, c] = exact
        # each reason's JSON object text, joined column by column in Arrow (no Python text per reason)
        raises = pa.array(up)
        items.append(
            pc.binary_join_element_wise(
                f'{{"feature": {json.dumps(name)}, "value": ',
                pc.take(value, codes),
                pc.if_else(raises, _RAISES_ITEM, _LOWERS_ITEM),
                numtext.reprs(exact),
                f', "text": "{_escape(prefix)}',
                pc.take(_escaped(shown), codes),
                pc.if_else(raises, _escape(suffix[True]) + '"}', _escape(suffix[False]) + '"}'),
                "",
            )
        )
        places.append(r * top + c)
    return Reasons(filled, rounded, text, _rows_json(filled, places, items))


def _top_columns(size: np.ndarray, top: int) -> np.ndarray:
    """Per row, the columns of the `top` largest values, largest first, ties to the earlier column: a
    stable descending sort's first `top`, found by `top` passes of argmax (which takes the first maximum)."""
    size = size.copy()
    rows = np.arange(len(size))
    order = np.empty((len(size), min(top, size.shape[1])), dtype=np.int64)
    for k in range(order.shape[1]):
        order[:, k] = np.argmax(size, axis=1)
        size[rows, order[:, k]] = -np.inf  # taken: below every |effect|
    return order


def _value_texts(name: str, raw: np.ndarray) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """Codes of the distinct values (as `_value` reads them), and per distinct value its JSON text (as
    json.dumps writes it) and its text in the sentence (`_shown`). Numbers are written as arrays
    (serving.numtext, Python's own texts), anything else by Python, once per distinct value."""
    if raw.dtype != np.float64:
        codes, uniques = pd.factorize(pd.Series(raw, dtype=object), use_na_sentinel=False)
        values = [_value(v) for v in uniques]
        json_texts = pa.array([_json_value(v) for v in values], type=pa.string())
        return codes, json_texts, pa.array([_shown(name, v) for v in values], type=pa.string())
    codes, bits = pd.factorize(raw.view(np.int64))  # by bits: -0.0 and 0.0 stay distinct as they print
    x = np.asarray(bits).view(np.float64)
    missing = pa.array(np.isnan(x))  # _value reads NaN as None: null in JSON, "none" in words
    finite = np.isfinite(x)
    json_texts = pc.if_else(
        pa.array(finite),
        numtext.reprs(np.where(finite, x, 0.0)),
        pc.if_else(missing, "null", pc.if_else(pa.array(x > 0), "Infinity", "-Infinity")),
    )
    shown = numtext.percent0(x) if name == RFM_REASON else pc.if_else(missing, "none", numtext.fixed2(x))
    return codes, json_texts, shown


def _escaped(shown: pa.Array) -> pa.Array:
    """`_escape` of each text: numbers and most words need nothing (checked in Arrow), the rest Python."""
    plain = pc.and_(pc.string_is_ascii(shown), pc.utf8_is_printable(shown))
    plain = pc.and_(plain, pc.invert(pc.or_(pc.match_substring(shown, '"'), pc.match_substring(shown, "\\"))))
    if pc.all(plain).as_py() in (True, None):
        return shown
    texts = shown.to_pylist()
    return pa.array([t if ok else _escape(t) for t, ok in zip(texts, plain.to_pylist(), strict=True)])


def _sentences(
    prefix: str, suffix: dict[bool, str], shown: pa.Array, codes: np.ndarray, up: np.ndarray
) -> np.ndarray:
    """prefix + shown[code] + suffix[up] for each reason, one text object per distinct sentence: values are
    shown rounded, so a million rows' reasons repeat themselves, and a copy of each per row took about half
    a gigabyte for as long as the run."""
    encoded = pc.dictionary_encode(shown)
    words = encoded.dictionary.to_pylist()
    key = np.asarray(encoded.indices, dtype=np.int64)[codes] * 2 + up
    distinct, which = np.unique(key, return_inverse=True)
    made = [prefix + words[k // 2] + suffix[bool(k % 2)] for k in distinct.tolist()]
    return np.array(made, dtype=object)[which.reshape(-1)]


def _rows_json(filled: np.ndarray, places: list[np.ndarray], items: list[pa.Array]) -> np.ndarray:
    """Each row's reasons as one JSON text, `json.dumps(list of reason dicts)`: the reasons' JSON object
    texts (`items`, at flat positions row * top + slot in `places`) joined row by row in Arrow."""
    at = np.concatenate(places) if places else np.zeros(0, dtype=np.int64)
    flat = pa.concat_arrays(items) if items else pa.array([], type=pa.string())
    flat = flat.take(pa.array(np.argsort(at, kind="stable")))  # row by row, each row's slots in order
    offsets = np.zeros(len(filled) + 1, dtype=np.int32)
    np.cumsum(filled.sum(axis=1), out=offsets[1:])
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), flat), ", ")
    out = pc.binary_join_element_wise("[", joined, "]", "").to_numpy(zero_copy_only=False)
    return np.asarray(out, dtype=object)


_RAISES_ITEM = ', "direction": "raises churn risk", "contribution": '
_LOWERS_ITEM = ', "direction": "lowers churn risk", "contribution": '


def reasons(
    artefact: ScoringArtefact, rows: pd.DataFrame, top: int, dm: xgb.DMatrix | None = None
) -> list[list[dict[str, Any]]]:
    """`top_reasons` as one list of reason dicts per row (feature, value, direction, contribution, text)."""
    if rows.empty:
        return []
    return [json.loads(t) for t in top_reasons(artefact, rows, top, dm).rows_json.tolist()]


def complete_rows(artefact: ScoringArtefact, rows: pd.DataFrame) -> pd.DataFrame:
    """Inline histories may leave out a table the model uses (no interactions sent: the customer has none).
    Its columns then get what the feature code gives a customer without rows in that table: the feature's
    fill (0 for counts and sums) or null; attributes not sent are null."""
    missing = [c for c in (*artefact.columns, *artefact.contract_only_columns) if c not in rows.columns]
    if not missing:
        return rows
    fills = {}
    for c in missing:
        feature = REGISTRY.get(c)
        fills[c] = feature.fill if feature is not None and feature.fill is not None else np.nan
    return rows.assign(**fills)


def score_frame(
    artefact: ScoringArtefact,
    rows: pd.DataFrame,
    top: int,
    cold_start_min_purchase_days: int,
    reference: RfmReference | None = None,
) -> tuple[pd.DataFrame, Reasons]:
    """The score table of `rows` (SCORE_COLUMNS, one row per input row, in order, a fresh index) and the
    reasons behind it as arrays. `reference` is the RFM segments' reference of the model
    (`RfmReference.from_rank(artefact.churn.rfm)`), which a service computes once per model."""
    if rows.empty:
        empty = np.zeros((0, top), dtype=bool)
        none = Reasons(empty, empty.astype(np.float64), empty.astype(object), np.zeros(0, dtype=object))
        return pd.DataFrame({c: [] for c in SCORE_COLUMNS}), none
    dm = artefact.matrix(rows)
    frame = score_table(artefact, rows, cold_start_min_purchase_days, reference, dm)
    why = top_reasons(artefact, rows, top, dm)
    return with_reasons(frame, why), why


def score_table(
    artefact: ScoringArtefact,
    rows: pd.DataFrame,
    cold_start_min_purchase_days: int,
    reference: RfmReference | None = None,
    dm: xgb.DMatrix | None = None,
    scored: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """`score_frame`'s table without the reasons (`reasons` None until `with_reasons`): the scores, tiers,
    segments, cold start and time to churn of non-empty `rows`; `scored` is `artefact.score(rows)` when the
    caller has it already."""
    if scored is None:
        scored = artefact.score(rows, dm if dm is not None else artefact.matrix(rows))
    segments = rfm_segments(rows, reference or RfmReference.from_rank(artefact.churn.rfm)).to_numpy()
    n = len(rows)
    frame = pd.DataFrame(
        {
            "customer_id": pd.Series(rows["customer_id"].astype(str).to_numpy(dtype=object), dtype=object),
            "churn_probability": scored["churn_probability"].to_numpy(dtype=np.float64),
            "predicted_value": scored["predicted_value"].to_numpy(dtype=np.float64),
            "horizon_days": np.full(n, artefact.horizon_days, dtype=np.int64),
            "value_at_risk": scored["value_at_risk"].to_numpy(dtype=np.float64),
            "tier": pd.Series(scored["tier"].astype(str).to_numpy(dtype=object), dtype=object),
            "rfm_segment": pd.Series(segments, dtype=object),
            "reasons": pd.Series(np.full(n, None, dtype=object), dtype=object),
            "cold_start": cold_start(rows, cold_start_min_purchase_days),
            "churn_model": pd.Series(scored["churn_model"].to_numpy(dtype=object), dtype=object),
        }
    )
    curve = churn_curve(artefact, rows, frame["churn_probability"].to_numpy())
    for j, name in enumerate(CURVE_COLUMNS):
        frame[name] = curve[:, j]
    return frame


def with_reasons(frame: pd.DataFrame, why: Reasons) -> pd.DataFrame:
    """`frame` (`score_table`'s rows, in order) with each row's reasons as JSON text."""
    if len(why.rows_json) != len(frame):
        raise ValueError(f"{len(why.rows_json)} rows of reasons for {len(frame)} scores")
    out = frame.copy(deep=False)
    out["reasons"] = pd.Series(why.rows_json, dtype=object, index=frame.index)  # plain objects, no Arrow copy
    return out


def churn_curve(artefact: ScoringArtefact, rows: pd.DataFrame, probability: np.ndarray) -> np.ndarray:
    """(rows, CURVE_COLUMNS) as floats: the artefact's time-to-churn curve of the rows' P(churn over H) and
    the expected days to churn; all NaN for a model without a curve."""
    out = np.full((len(rows), len(CURVE_COLUMNS)), np.nan)
    curve = artefact.churn_curve(rows, probability) if len(rows) else None
    if curve is not None:
        out[:, :-1], out[:, -1] = curve
    return out


def cold_start(rows: pd.DataFrame, min_purchase_days: int) -> np.ndarray:
    """Too little history to trust the scores: no purchase at all, or fewer distinct purchase days than
    `min_purchase_days`."""
    days = rows["frequency_days"] if "frequency_days" in rows else pd.Series(0, index=rows.index)
    purchase_days = days.fillna(0).to_numpy()  # frequency_days counts distinct purchase days, the first too
    bought = rows["recency_days"].notna().to_numpy() if "recency_days" in rows else np.zeros(len(rows), bool)
    return np.asarray(~bought | (purchase_days < min_purchase_days), dtype=bool)


def score_records(
    artefact: ScoringArtefact,
    rows: pd.DataFrame,
    top: int,
    cold_start_min_purchase_days: int,
    reference: RfmReference | None = None,
) -> list[dict[str, Any]]:
    """One dict per row: the full answer for a customer (`score_frame`'s columns, reasons as a list of
    dicts)."""
    if rows.empty:
        return []
    frame, _ = score_frame(artefact, rows, top, cold_start_min_purchase_days, reference)
    columns = {c: frame[c].tolist() for c in SCORE_COLUMNS}
    columns["reasons"] = [json.loads(t) for t in columns["reasons"]]
    for c in CURVE_COLUMNS:  # undefined: null in JSON, not NaN
        columns[c] = [None if v != v else v for v in columns[c]]
    return [dict(zip(SCORE_COLUMNS, values, strict=True)) for values in zip(*columns.values(), strict=True)]


# --- reasons in words ---------------------------------------------------------------------------------------


def _column(column: pd.Series, positions: np.ndarray) -> np.ndarray:
    """The values at `positions` as a row read gives them to `_value`: float64 for numbers (NaN missing),
    else objects; a row read gives numpy booleans, which `_value` writes as text ('True', 'False')."""
    if pd.api.types.is_bool_dtype(column.dtype):
        values = column.to_numpy(dtype=object, na_value=None)[positions]
        return np.array([None if v is None else str(bool(v)) for v in values], dtype=object)
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)[positions]
    return column.to_numpy(dtype=object)[positions]


def _value(v: Any) -> float | str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    if isinstance(v, int | float | np.integer | np.floating):
        return float(v)
    return str(v)


def _sentence(name: str) -> tuple[str, dict[bool, str]]:
    """The words before and after a reason's value, by whether it raises risk."""
    if name == RFM_REASON:
        prefix = "Recency, frequency and spend rank at "
        return prefix, {up: f" of customers by risk: {_effect(up)} churn risk." for up in (True, False)}
    feature = REGISTRY.get(name.removeprefix("attr_"))
    what = feature.description.rstrip(".") if feature and feature.description else name.replace("_", " ")
    return f"{what}: ", {up: f" — {_effect(up)} churn risk." for up in (True, False)}


def words(name: str, value: Any, raises: bool) -> str:
    """One reason in words, as the batch reasons write it (online answers render theirs one by one)."""
    prefix, suffix = _sentence(name)
    return prefix + _shown(name, value) + suffix[raises]


def _effect(raises: bool) -> str:
    return "raises" if raises else "lowers"


def _shown(name: str, value: Any) -> str:
    if name == RFM_REASON:
        return f"{value:.0%}"
    if value is None:
        return "none"
    return f"{value:,.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def _escape(text: str) -> str:
    """`text` as it appears inside a JSON string written by json.dumps (ASCII, escapes)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text  # numbers and most words: nothing to escape
    return json.dumps(text)[1:-1]


def _json_value(value: float | str | None) -> str:
    """A reason's value as json.dumps writes it (a finite float is its repr)."""
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return json.dumps(value)
