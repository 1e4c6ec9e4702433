"""RFM in one place: the RFM rank (a baseline and an input of the churn stacker) and the RFM segments.

- The rank: the mean of three percentile ranks, recency (longer = riskier), purchase days and spend (fewer,
  less = riskier), against a reference population. A ranking, not a probability. The churn model uses it as
  a stacking input (training.models), so it is a fitted object: its reference population ships with the
  model and one customer can be ranked online against it.
- The segments: a customer is "high" on an axis when strictly better than the population's median there;
  the three highs name one of eight segments (important-value ... general-win-back). Serving segments every
  scored customer against the medians of the population the model was fitted at (`RfmReference.from_rank`).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import numpy as np
import pandas as pd

# --- the rank ----------------------------------------------------------------------------------------------

RFM_AXES = {"recency_days": 1.0, "frequency_days": -1.0, "monetary_sum": -1.0}  # +1: larger is riskier
_FILL = {"recency_days": np.inf, "frequency_days": 0.0, "monetary_sum": 0.0}  # customers without purchases
MAX_REFERENCE = 10_001  # reference values kept per axis (quantiles beyond this many customers)
UNIQUE_FROM = 10_000  # rows from which `axes` looks each distinct value up once


@dataclass
class RfmRank:
    """Percentile ranks of recency, frequency and spend against a reference population, averaged."""

    references: dict[str, np.ndarray]  # sorted "riskiness" values per axis

    @classmethod
    def fit(cls, rows: pd.DataFrame) -> RfmRank:
        refs = {}
        for axis in RFM_AXES:
            v = np.sort(_risk(rows, axis))
            if len(v) > MAX_REFERENCE:
                v = np.quantile(v, np.linspace(0.0, 1.0, MAX_REFERENCE), method="inverted_cdf")
            refs[axis] = v
        return cls(refs)

    def axes(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each axis's percentile of riskiness in [0, 1]; ties share the middle of their rank range."""
        out = {}
        for axis, ref in self.references.items():
            x = _risk(rows, axis)
            # many rows: each distinct value looked up once (a million binary searches into the reference
            # took ~0.3 s an axis; recency and frequency hold a few thousand values), the same numbers
            x, back = np.unique(x, return_inverse=True) if len(x) > UNIQUE_FROM else (x, None)
            lo, hi = np.searchsorted(ref, x, "left"), np.searchsorted(ref, x, "right")
            rank = (lo + hi) / (2.0 * len(ref))
            out[axis] = rank if back is None else rank[back]
        return out

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """Higher = likelier to churn, in [0, 1]: the mean of the three axes."""
        return functools.reduce(operator.add, self.axes(rows).values()) / len(self.references)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [float(x) for x in v] for k, v in self.references.items()}

    @classmethod
    def from_dict(cls, raw: dict[str, list[float]]) -> RfmRank:
        return cls({k: np.asarray(v, dtype=np.float64) for k, v in raw.items()})


def _risk(rows: pd.DataFrame, axis: str) -> np.ndarray:
    v = rows[axis].astype("float64").fillna(_FILL[axis]).to_numpy()
    return np.where(np.isinf(v), np.finfo(np.float64).max, v) * RFM_AXES[axis]


# --- the segments ------------------------------------------------------------------------------------------

SEGMENTS: dict[tuple[bool, bool, bool], str] = {  # (R high, F high, M high) -> segment
    (True, True, True): "important-value",
    (True, False, True): "important-develop",
    (False, True, True): "important-retain",
    (False, False, True): "important-win-back",
    (True, True, False): "general-value",
    (True, False, False): "general-develop",
    (False, True, False): "general-retain",
    (False, False, False): "general-win-back",
}


@dataclass(frozen=True)
class RfmReference:
    """Medians of the scored population on each axis. A customer is "high" on an axis when strictly better
    than the median: more recent (fewer recency days), more purchase days, more spend. Never-bought customers
    (null recency) count as infinitely old."""

    recency_days: float
    frequency: float
    monetary: float

    @classmethod
    def fit(cls, rows: pd.DataFrame) -> RfmReference:
        r, f, m = _rfm_arrays(rows)
        if r.size == 0:
            raise ValueError("RFM reference: no rows to take medians of")
        return cls(float(np.median(r)), float(np.median(f)), float(np.median(m)))

    @classmethod
    def from_rank(cls, rank: RfmRank) -> RfmReference:
        """The medians of recency, purchase days and spend of the customers a model was fitted at, from the
        RFM rank it ships (`ScoringArtefact.churn.rfm`, stored as riskiness: frequency and spend negated):
        batch and online scoring segment against the same cut points."""
        refs = rank.references
        return cls(
            float(np.median(refs["recency_days"])),
            -float(np.median(refs["frequency_days"])),
            -float(np.median(refs["monetary_sum"])),
        )


def rfm_segment(
    recency_days: float | None, frequency: float | None, monetary: float | None, reference: RfmReference
) -> str:
    """The classic RFM segment of one customer against the population medians in `reference`."""
    row = pd.DataFrame(
        {"recency_days": [recency_days], "frequency_days": [frequency], "monetary_sum": [monetary]}
    )
    return str(rfm_segments(row, reference).iloc[0])


def rfm_segments(rows: pd.DataFrame, reference: RfmReference | None = None) -> pd.Series:
    """The RFM segment of every row (columns recency_days, frequency_days, monetary_sum), scored against
    `reference` or, by default, against the medians of `rows` themselves. Index follows `rows`."""
    if rows.empty:
        return pd.Series([], index=rows.index, dtype=object, name="rfm_segment")
    ref = reference if reference is not None else RfmReference.fit(rows)
    r, f, m = _rfm_arrays(rows)
    r_high, f_high, m_high = r < ref.recency_days, f > ref.frequency, m > ref.monetary
    names = _SEGMENT_BY_CODE[r_high * 4 + f_high * 2 + m_high.astype(np.int64)]  # one lookup per row
    return pd.Series(names, index=rows.index, dtype=object, name="rfm_segment")


_SEGMENT_BY_CODE = np.array(
    [SEGMENTS[(bool(c & 4), bool(c & 2), bool(c & 1))] for c in range(8)], dtype=object
)


def _rfm_arrays(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = {"recency_days", "frequency_days", "monetary_sum"} - set(rows.columns)
    if missing:
        raise ValueError(f"RFM segments need column(s) {sorted(missing)}")
    r = pd.to_numeric(rows["recency_days"], errors="raise").astype("float64").fillna(np.inf).to_numpy()
    f = pd.to_numeric(rows["frequency_days"], errors="raise").astype("float64").fillna(0.0).to_numpy()
    m = pd.to_numeric(rows["monetary_sum"], errors="raise").astype("float64").fillna(0.0).to_numpy()
    return r, f, m
