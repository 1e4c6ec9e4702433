"""Distribution drift: a reference distribution learned at training time and the population stability
index (PSI) of a later population against it. Pure functions of frames; nothing here reads or writes.

The reference is taken on the champion's own rows at its training cutoff T (every customer eligible at T,
the model inputs, plus the two scores the model gives them) and ships inside the scoring artefact, so a
batch run compares like with like without reading the training data again:

- a numeric column gets bin edges at its 10 %, 20 %, ..., 90 % quantiles (linear interpolation, repeated
  edges dropped, so a constant column has one bin and a 0/1 column two); bin i holds values in
  (edge[i-1], edge[i]], the first bin everything up to edge[0], the last everything above the last edge;
- a categorical column gets one bin per category seen at T and an `other` bin for categories it never saw;
- nulls (and NaN) are always a bin of their own, last.

PSI = sum over bins of (actual - expected) * ln(actual / expected), with each proportion floored at
EPSILON = 1e-4 first, so a bin empty on one side counts as a large but finite shift instead of infinity
(floored proportions are not renormalised). Rules of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a
shift worth acting on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

BINS = 10  # quantile bins per numeric column
EPSILON = 1e-4  # floor on each bin's proportion before the log ratio
SCORES = ("churn_probability", "predicted_value")  # the model's outputs, watched beside its inputs

Reference = dict[str, dict[str, Any]]  # column -> {"kind", "edges" | "categories", "proportions", "n"}


def model_frame(rows: pd.DataFrame, scores: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """The frame drift is measured on: the model inputs of `rows` and the scores the model gave them."""
    inputs = rows[list(columns)].reset_index(drop=True)
    return pd.concat([inputs, scores[list(SCORES)].reset_index(drop=True)], axis=1)


def reference(frame: pd.DataFrame, categorical: Iterable[str] = (), bins: int = BINS) -> Reference:
    """The reference distribution of every column of `frame`; `categorical` columns are binned by category,
    the others by quantile edges. An empty frame has no reference."""
    if frame.empty:
        raise ValueError("no rows to learn a drift reference from")
    cats = set(categorical)
    out: Reference = {}
    for name in frame.columns:
        col = frame[name]
        if name in cats:
            levels = sorted({str(v) for v in col.dropna()})
            spec: dict[str, Any] = {"kind": "categorical", "categories": levels}
        else:
            values = _numbers(col, name)
            present = values[~np.isnan(values)]
            qs = np.quantile(present, np.arange(1, bins) / bins) if present.size else np.array([])
            spec = {"kind": "numeric", "edges": [float(x) for x in np.unique(qs)]}
        spec["proportions"] = [float(p) for p in proportions(col, spec)]
        spec["n"] = len(col)
        out[str(name)] = spec
    return out


def proportions(values: pd.Series, spec: Mapping[str, Any]) -> np.ndarray:
    """The share of `values` in each bin of a reference entry (its bins, then the null bin last)."""
    n = len(values)
    if spec["kind"] == "categorical":
        levels = list(spec["categories"])
        index = {c: i for i, c in enumerate(levels)}
        text = values.astype("object")
        missing = text.isna().to_numpy()
        codes = text[~missing].astype(str).map(index).fillna(len(levels)).to_numpy(dtype=np.int64)
        counts = np.append(np.bincount(codes, minlength=len(levels) + 1), missing.sum())  # other, null
    else:
        x = _numbers(values, str(values.name))
        edges = np.asarray(spec["edges"], dtype=np.float64)
        missing = np.isnan(x)
        where = np.searchsorted(edges, x[~missing], side="left")  # x <= edge[i] lands in bin i
        counts = np.append(np.bincount(where, minlength=len(edges) + 1), missing.sum())
    counts = counts.astype(np.float64)
    return counts / n if n else counts


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, epsilon: float = EPSILON) -> float:
    """Population stability index of `actual` proportions against `expected` ones (same bins)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    if e.shape != a.shape:
        raise ValueError(f"expected and actual need the same bins, got {e.shape} and {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def compare(ref: Reference, frame: pd.DataFrame) -> dict[str, float]:
    """PSI of every reference column present in `frame`, worst first. A column the frame lacks is an error:
    the scoring rows always carry every model input."""
    missing = sorted(set(ref) - set(frame.columns))
    if missing:
        raise ValueError(f"rows lack column(s) {missing} of the drift reference")
    out = {name: psi(spec["proportions"], proportions(frame[name], spec)) for name, spec in ref.items()}
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _numbers(values: pd.Series, name: str) -> np.ndarray:
    try:
        return pd.to_numeric(values, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"drift: column {name!r} is not numeric and not categorical: {exc}") from None
