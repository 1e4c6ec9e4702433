"""serving.numtext writes Python's own number texts for whole arrays: every value, common or awkward, comes
out as Python's `repr`, `round`, `format` would write it (property tests against Python itself)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from serving import numtext

AWKWARD = [
    *(0.0, -0.0, 1.0, -2.0, 0.1, 0.5, 1.5, 2.5, 0.125, 0.375, -0.005, 0.005, 1e-4, 9.99e-5, 1e-5, 1.5e-7),
    *(999.995, 1000.0, 999999.995, 1e6, 1234567.891, 999999999.99, 1e9, 1e15, 1e16, 1.2345e16),
    123456789012.5,
    *(2.5e-310, 1e-300, 1e300, 0.30000000000000004, 1 / 3, 0.675, 1.005, 2.675, -1.0e-7, 0.0049999999999999),
    *(math.inf, -math.inf, math.nan, 5e-07, -5e-07, 4.9999999e-07, 0.0000005000001),
]
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e7, max_value=1e7),
    st.integers(min_value=-(10**9), max_value=10**9).map(lambda k: k / 1000),  # ties at 2 and 6 places
    st.integers(min_value=-(10**9), max_value=10**9).map(lambda k: k / 8),  # exact binary halves
    st.sampled_from(AWKWARD),
)


def fixed2_python(v: float) -> str:
    return f"{v:,.2f}".rstrip("0").rstrip(".")


def check(values: list[float]) -> None:
    x = np.array(values, dtype=np.float64)
    assert numtext.reprs(x).to_pylist() == [repr(v) for v in values]
    assert numtext.fixed2(x).to_pylist() == [fixed2_python(v) for v in values]
    assert numtext.percent0(x).to_pylist() == [f"{v:.0%}" for v in values]
    got = numtext.rounded(x, 6).tolist()
    want = [round(v, 6) for v in values]
    assert [repr(g) for g in got] == [repr(w) for w in want]  # repr tells -0.0 from 0.0, and nan from nan


def test_awkward_values_come_out_as_python_writes_them() -> None:
    check(AWKWARD)


def test_hand_computed_texts() -> None:
    x = np.array([1234.5, 2.0, -0.001, 1234567.125, 0.135, 12.3456])
    assert numtext.fixed2(x).to_pylist() == ["1,234.5", "2", "-0", "1,234,567.12", "0.14", "12.35"]
    assert numtext.reprs(x).to_pylist() == ["1234.5", "2.0", "-0.001", "1234567.125", "0.135", "12.3456"]
    assert numtext.percent0(np.array([0.125, 0.135, 1.0])).to_pylist() == ["12%", "14%", "100%"]


@settings(max_examples=300, deadline=None)
@given(st.lists(floats, min_size=1, max_size=50))
def test_every_float_comes_out_as_python_writes_it(values: list[float]) -> None:
    check(values)


def test_a_million_common_values_agree_with_python() -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.gamma(2.0, 300.0, 200_000), rng.standard_normal(200_000) * 0.3])
    check(x.tolist())
