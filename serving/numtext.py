"""Python's own number texts for whole arrays at once, byte for byte: `repr(x)`, `round(x, places)`,
`f"{x:,.2f}"` and `f"{x:.0%}"`. Batch scoring writes a few million of them per run (each reason's value,
contribution and sentence), and one Python call per number cost more than the rest of the reasons together.

Each function computes the common case as arrays (Arrow's shortest round-trip digits; integer arithmetic on
the value scaled and rounded half to even) and hands every value it cannot vouch for to Python itself: values
near a rounding tie, outside the range where the array arithmetic is exact, or printed by Arrow in another
notation. The results are therefore always Python's (property tests: tests/unit/test_numtext.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_REPR_LOW, _REPR_HIGH = 1e-4, 1e16  # repr writes positional notation in [1e-4, 1e16), exponents elsewhere
_FIXED_HIGH = 1e9  # |x| * 100 < 1e11: its float error (< 1e-5) cannot hide a rounding tie 1e-4 away
_TIE = 1e-4  # scaled values closer than this to a half are rounded by Python itself


def reprs(values: np.ndarray) -> pa.StringArray:
    """`repr(float(x))` for each float64 `x` (nan, inf and -inf as repr writes them)."""
    x = np.ascontiguousarray(values, dtype=np.float64)
    text = pc.cast(pa.array(x), pa.string())
    a = np.abs(x)
    positional = (a >= _REPR_LOW) & (a < _REPR_HIGH)  # NaN compares False: handed to Python
    # Arrow's shortest digits are repr's; repr adds ".0" to whole numbers; Arrow may choose exponents
    plain = ~np.asarray(pc.match_substring(text, "e"), dtype=bool)
    whole = ~np.asarray(pc.match_substring(text, "."), dtype=bool)
    text = pc.if_else(pa.array(whole), pc.binary_join_element_wise(text, ".0", ""), text)
    return _python_where(text, ~(positional & plain), x, repr)


def rounded(values: np.ndarray, places: int) -> np.ndarray:
    """`round(float(x), places)` for each float64 `x`: the double nearest the value rounded half to even
    at `places` decimals of its exact binary value."""
    x = np.asarray(values, dtype=np.float64)
    scale = 10.0**places
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are handed to Python below
        scaled = x * scale
    k = np.rint(scaled)
    out = k / scale  # k and scale are exact integers: the division rounds correctly, as Python's does
    unsure = ~(np.abs(scaled) < 2.0**52 / 16) | _near_half(scaled)  # NaN and inf included
    if unsure.any():
        at = np.flatnonzero(unsure)
        out[at] = [round(v, places) for v in x[at].tolist()]
    return out


def fixed2(values: np.ndarray) -> pa.StringArray:
    """`f"{x:,.2f}".rstrip("0").rstrip(".")` for each float64 `x` (thousands separated, trailing zeros
    dropped: 1234.5 -> '1,234.5', 2.0 -> '2', -0.001 -> '-0')."""
    x = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are handed to Python below
        scaled = x * 100.0
    unsure = ~(np.abs(x) < _FIXED_HIGH) | _near_half(scaled)
    k = np.abs(np.rint(np.where(unsure, 0.0, scaled))).astype(np.int64)
    whole, cents = k // 100, k % 100
    sign = pc.if_else(pa.array(np.signbit(x)), "-", "")
    decimals = pc.if_else(
        pa.array(cents == 0),
        "",
        pc.if_else(
            pa.array(cents % 10 == 0),
            pc.binary_join_element_wise(".", _text(cents // 10), ""),
            pc.binary_join_element_wise(".", pc.utf8_lpad(_text(cents), 2, "0"), ""),
        ),
    )
    text = pc.binary_join_element_wise(sign, _thousands(whole), decimals, "")
    return _python_where(text, unsure, x, lambda v: f"{v:,.2f}".rstrip("0").rstrip("."))


def percent0(values: np.ndarray) -> pa.StringArray:
    """`f"{x:.0%}"` for each float64 `x`: Python multiplies the double by 100 and rounds that half to even."""
    x = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are handed to Python below
        scaled = x * 100.0
    unsure = ~(np.abs(scaled) < 2.0**52)
    k = np.rint(np.where(unsure, 0.0, scaled))
    sign = pc.if_else(pa.array(np.signbit(k)), "-", "")
    text = pc.binary_join_element_wise(sign, _text(np.abs(k).astype(np.int64)), "%", "")
    return _python_where(text, unsure, x, lambda v: f"{v:.0%}")


def _near_half(scaled: np.ndarray) -> np.ndarray:
    """Where the scaled value lies within _TIE of a half (or is not finite): its float error could move it
    across the tie, so only Python's exact decimal arithmetic may round it."""
    with np.errstate(invalid="ignore", over="ignore"):
        return ~(np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) >= _TIE)


def _text(k: np.ndarray) -> pa.StringArray:
    return pc.cast(pa.array(k, type=pa.int64()), pa.string())


def _thousands(whole: np.ndarray) -> pa.StringArray:
    """Non-negative integers below 10**9 with ',' between groups of three digits."""
    millions, thousands, units = whole // 1_000_000, whole // 1000 % 1000, whole % 1000
    pad = [pc.utf8_lpad(_text(g), 3, "0") for g in (thousands, units)]
    text = pc.if_else(
        pa.array(whole >= 1000), pc.binary_join_element_wise(_text(whole // 1000), pad[1], ","), _text(units)
    )
    return pc.if_else(
        pa.array(whole >= 1_000_000), pc.binary_join_element_wise(_text(millions), *pad, ","), text
    )


def _python_where(text: pa.Array, unsure: np.ndarray, x: np.ndarray, write: object) -> pa.StringArray:
    """`text` with the values at `unsure` written by Python (`write`, one call each)."""
    if not unsure.any():
        return text
    at = np.flatnonzero(unsure)
    out = np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)
    out[at] = [write(v) for v in x[at].tolist()]  # type: ignore[operator]
    return pa.array(out, type=pa.string())
