"""Time to churn of customers under contract (training.contract `curve_from_hazards`, `expected_days`,
`ContractModel.curve`): the curve read from the cancellation hazard's own monthly hazards, hand-computed on
hand-built hazards, and properties over any hazards, horizon and level: non-decreasing in t, equal to P(cancel
within H) at H, and the expected days to churn inside (0, H]."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.contract import curve_from_hazards, expected_days, fit_hazard, survival_from_hazards
from training.curve import hazard_curve


def test_the_curve_multiplies_the_monthly_hazards_up_to_each_day() -> None:
    """Hazards 0.1 then 0.5 a month: by day 30, 0.1; by day 45, 1 - 0.9 sqrt(0.5); by day 60, 1 - 0.45."""
    h = np.array([[0.1, 0.5], [0.0, 0.0]])
    curve = curve_from_hazards(h, [15, 30, 45, 60], 30)
    expected = [1 - math.sqrt(0.9), 0.1, 1 - 0.9 * math.sqrt(0.5), 1 - 0.9 * 0.5]
    np.testing.assert_allclose(curve[0], expected, rtol=1e-12)
    assert curve[1].tolist() == [0.0] * 4
    # the level multiplies the cumulative hazard: S -> S ** 2
    np.testing.assert_allclose(curve_from_hazards(h, [60], 30, level=2.0)[0], [1 - 0.45**2], rtol=1e-12)


def test_expected_days_integrate_the_survival_within_each_month() -> None:
    """Hazards 0.1 then 0.5, H = 45 days: S(t) = 0.9 ** (t / 30) on the first month, then 0.9 * 0.5 **
    ((t - 30) / 30); E[T | T <= 45] = (integral of S over (0, 45] - 45 S(45)) / (1 - S(45)). A customer who
    cannot cancel has none (NaN)."""
    r1, r2 = -math.log(0.9) / 30, -math.log(0.5) / 30
    area = (1 - 0.9) / r1 + 0.9 * (1 - math.sqrt(0.5)) / r2
    s_h = 0.9 * math.sqrt(0.5)
    days = expected_days(np.array([[0.1, 0.5], [0.0, 0.0]]), 45, 30)
    assert days[0] == pytest.approx((area - 45 * s_h) / (1 - s_h), rel=1e-12)
    assert math.isnan(days[1])


def test_a_constant_monthly_hazard_gives_the_constant_hazard_curve() -> None:
    """The same hazard every month is the constant hazard of training.curve.hazard_curve, anchored at the
    same P(H): the same points and the same expected days."""
    h = np.full((3, 7), [[0.02], [0.1], [0.3]])
    p_h = 1 - survival_from_hazards(h, 182, 30)
    curve = curve_from_hazards(h, [30, 60, 90, 180], 30)
    const, const_days = hazard_curve(p_h, 182)
    np.testing.assert_allclose(curve, const, rtol=1e-10)
    np.testing.assert_allclose(expected_days(h, 182, 30), const_days, rtol=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0, 0.95), min_size=1, max_size=13),
    st.integers(1, 390),
    st.floats(0.2, 5.0),
)
def test_the_contract_curve_is_monotone_and_ends_at_p_over_h(
    hazards: list[float], horizon: int, level: float
) -> None:
    steps = math.ceil(horizon / 30)
    h = np.resize(np.asarray(hazards), steps)[None, :]
    days = sorted({*(t for t in (30, 60, 90, 180) if t < horizon), horizon})
    curve = curve_from_hazards(h, days, 30, level)[0]
    assert np.all(np.diff(curve) >= -1e-12)
    p_h = 1 - survival_from_hazards(h, horizon, 30, level)[0]
    assert curve[-1] == p_h  # the same arithmetic at H: exactly P(cancel within H)
    assert curve[0] >= 0.0 and curve[-1] <= 1.0
    expected = expected_days(h, horizon, 30, level)[0]
    if p_h > 1e-9:
        assert 0.0 <= expected <= horizon
    else:
        assert math.isnan(expected) or 0.0 <= expected <= horizon


def test_the_fitted_model_answers_its_curve_from_one_pass_of_its_hazards() -> None:
    """A booster fitted on person-periods: its curve at H is its P(cancel within H) (`predict`) for every
    row, the earlier points are `predict` at those days, and days past H are refused."""
    rng = np.random.default_rng(1)
    n = 3000
    tenure = rng.integers(0, 730, n).astype(float)
    churned = (rng.random(n) < np.where(tenure < 180, 0.2, 0.05)).astype(np.int8)  # early months riskier
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "cutoff": pd.Timestamp("2024-01-31"),
            "signup_tenure_days": tenure,
            "attr_is_subscriber": True,
            "churned": churned,
        }
    )
    model = fit_hazard(frame, ["signup_tenure_days"], "mixed", 182, seed=0, n_jobs=1)
    model.level = 1.2
    rows = frame.head(300)
    curve, days = model.curve(rows, [30, 60, 90, 180, 182])
    np.testing.assert_allclose(curve[:, -1], model.predict(rows), rtol=1e-12)
    for j, d in enumerate((30, 60, 90, 180)):
        np.testing.assert_allclose(curve[:, j], model.predict(rows, d), rtol=1e-12)
    assert np.all(np.diff(curve, axis=1) >= 0)
    assert np.all((days > 0) & (days < 182))
    # a young subscriber (riskier early months) cancels, if at all, sooner than a constant hazard says
    young = rows["signup_tenure_days"].to_numpy() < 30
    _, flat = hazard_curve(curve[:, -1], 182)
    assert young.any() and np.mean(days[young] < flat[young]) > 0.9
    with pytest.raises(ValueError, match="must lie in"):
        model.curve(rows, [30, 200])
