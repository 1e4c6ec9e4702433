"""Time to churn (training.curve): hand-computed curves on
hand-built rows, and properties over any probability, recency and horizon: each curve is non-decreasing in
t, never above P(churn over H), and equal to it at H."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.curve import HORIZONS, CurveSpec, hazard_curve, lapse_curve

NAN = float("nan")


def _rows(recency: list[float], subscriber: list[object] | None = None) -> pd.DataFrame:
    rows = pd.DataFrame({"customer_id": [f"c{i}" for i in range(len(recency))], "recency_days": recency})
    if subscriber is not None:
        rows["attr_is_subscriber"] = subscriber
    return rows


def test_a_silent_churner_lapses_when_the_silence_reaches_the_horizon() -> None:
    """H = 273: bought 10 days ago -> lapses on day 263, past every point; 100 days ago -> day 173 (within
    180); 250 days ago -> day 23; 300 days ago -> lapsed already; no purchase -> undefined."""
    p = np.array([0.2, 0.5, 0.7, 0.9, 0.4])
    curve, days = lapse_curve(p, np.array([10.0, 100.0, 250.0, 300.0, NAN]), 273)
    expected = [
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.5],
        [0.7, 0.7, 0.7, 0.7],
        [0.9, 0.9, 0.9, 0.9],
    ]
    assert curve[:4].tolist() == expected
    assert np.isnan(curve[4]).all()
    assert days[:4].tolist() == [263.0, 173.0, 23.0, 0.0]
    assert np.isnan(days[4])


def test_the_lapse_curve_says_nothing_past_the_horizon_and_equals_p_at_it() -> None:
    """H = 90: the 90-day point is P(H) for everyone who bought; 180 days is past the model's horizon."""
    p = np.array([0.3, 0.6])
    curve, days = lapse_curve(p, np.array([0.0, 70.0]), 90)
    assert curve[:, :2].tolist() == [[0.0, 0.0], [0.6, 0.6]]  # R = 70 >= 90 - 30: lapses by day 20
    assert curve[:, 2].tolist() == [0.3, 0.6]
    assert np.isnan(curve[:, 3]).all()
    assert days.tolist() == [90.0, 20.0]


def test_a_zero_probability_has_no_days_to_churn() -> None:
    curve, days = lapse_curve(np.array([0.0]), np.array([300.0]), 273)
    assert curve.tolist() == [[0.0] * 4] and np.isnan(days[0])
    curve, days = hazard_curve(np.array([0.0]), 180)
    assert curve.tolist() == [[0.0] * 4] and np.isnan(days[0])


def test_cancellation_at_a_constant_hazard() -> None:
    """H = 180, P = 0.75: P(t) = 1 - 0.25 ** (t / 180); E[tau | tau <= H] = H (1/x - 1/(e^x - 1)),
    x = ln 4."""
    curve, days = hazard_curve(np.array([0.75]), 180)
    assert curve[0].tolist() == pytest.approx([1 - 0.25 ** (t / 180) for t in HORIZONS], abs=1e-15)
    x = math.log(4.0)
    assert days[0] == pytest.approx(180 * (1 / x - 1 / (math.exp(x) - 1)), rel=1e-12)
    lam = x / 180  # the same by integrating t f(t) over (0, H], f the exponential density
    grid = np.linspace(0, 180, 200_001)
    mean = np.trapezoid(grid * lam * np.exp(-lam * grid), grid) / 0.75
    assert days[0] == pytest.approx(mean, rel=1e-6)


def test_mixed_histories_use_each_rows_definition() -> None:
    rows = _rows([300.0, 300.0, 300.0], subscriber=["true", "False", None])
    curve, days = CurveSpec("mixed").apply(np.array([0.5, 0.5, 0.5]), rows, 180)
    hazard, hazard_days = hazard_curve(np.array([0.5]), 180)
    assert curve[0].tolist() == hazard[0].tolist() and days[0] == hazard_days[0]
    assert curve[1].tolist() == curve[2].tolist() == [0.5] * 4  # silence: lapsed already
    assert days[1:].tolist() == [0.0, 0.0]


def test_the_spec_round_trips_and_refuses_what_it_cannot_answer() -> None:
    spec = CurveSpec("contractual")
    assert CurveSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="horizons"):
        CurveSpec.from_dict({"churn": "contractual", "horizons": [7, 14]})
    with pytest.raises(ValueError, match="churn 'sometimes'"):
        CurveSpec("sometimes")


probability = st.floats(0.0, 1.0)
recency = st.one_of(st.floats(0.0, 2000.0), st.just(NAN))


@settings(max_examples=300, deadline=None)
@given(
    p=st.lists(probability, min_size=1, max_size=20),
    data=st.data(),
    horizon=st.integers(1, 800),
    churn=st.sampled_from(["non_contractual", "contractual", "mixed"]),
)
def test_every_curve_is_non_decreasing_below_p_and_p_at_the_horizon(
    p: list[float], data: st.DataObject, horizon: int, churn: str
) -> None:
    n = len(p)
    r = data.draw(st.lists(recency, min_size=n, max_size=n))
    sub = data.draw(st.lists(st.sampled_from(["true", "false", None, 1, 0]), min_size=n, max_size=n))
    probs = np.array(p)
    curve, days = CurveSpec(churn).apply(probs, _rows(r, sub), horizon)
    t = np.array(HORIZONS)
    assert np.isnan(curve[:, t > horizon]).all()  # nothing past the model's horizon
    within = curve[:, t <= horizon]
    defined = ~np.isnan(within)
    assert (defined == defined[:, :1]).all()  # a row has a curve or none
    w = np.where(defined, within, 0.0)
    assert (np.diff(w, axis=1) >= 0).all()
    assert (w <= probs[:, None] + 1e-15).all() and (w >= 0).all()
    if horizon in HORIZONS:
        at_h = curve[:, HORIZONS.index(horizon)]
        ok = ~np.isnan(at_h)
        assert at_h[ok] == pytest.approx(probs[ok], abs=1e-12)
    finite = days[np.isfinite(days)]
    assert ((finite >= 0) & (finite <= horizon)).all()


@settings(max_examples=100, deadline=None)
@given(p=st.lists(st.floats(1e-9, 1 - 1e-9), min_size=2, max_size=30), horizon=st.integers(1, 800))
def test_a_likelier_cancellation_comes_sooner(p: list[float], horizon: int) -> None:
    probs = np.sort(np.array(p))
    _, days = hazard_curve(probs, horizon)
    assert (np.diff(days) <= 1e-9 * horizon).all()
