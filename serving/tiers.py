"""Classic RFM segments."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

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
    names = [SEGMENTS[(bool(a), bool(b), bool(c))] for a, b, c in zip(r_high, f_high, m_high, strict=True)]
    return pd.Series(names, index=rows.index, dtype=object, name="rfm_segment")


def _rfm_arrays(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = {"recency_days", "frequency_days", "monetary_sum"} - set(rows.columns)
    if missing:
        raise ValueError(f"RFM segments need column(s) {sorted(missing)}")
    r = pd.to_numeric(rows["recency_days"], errors="raise").astype("float64").fillna(np.inf).to_numpy()
    f = pd.to_numeric(rows["frequency_days"], errors="raise").astype("float64").fillna(0.0).to_numpy()
    m = pd.to_numeric(rows["monetary_sum"], errors="raise").astype("float64").fillna(0.0).to_numpy()
    return r, f, m
