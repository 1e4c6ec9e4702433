"""The contract model's hazard arithmetic and the level recalibration (training.contract, training.levels), on
hand-built numbers and frames whose answers are worked out by hand."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from features.history import history_from_frames
from training.contract import (
    CONTRACT,
    SILENCE,
    ContractModel,
    fit_hazard,
    fit_level,
    survival_from_hazards,
    under_contract,
)
from training.levels import (
    Levels,
    calibration_origin,
    contract_origins,
    fit_churn_shift,
    fit_value_factor,
    fit_value_level,
)
from training.models import Encoder


def test_survival_multiplies_period_hazards_and_weights_the_last_period_by_its_fraction() -> None:
    h = np.array([[0.1, 0.2], [0.0, 0.5]])
    # 45 days of 30-day periods: the whole first period, half the second
    s = survival_from_hazards(h, 45, 30)
    np.testing.assert_allclose(s, [0.9 * math.sqrt(0.8), math.sqrt(0.5)])
    # the level multiplies the cumulative hazard: S -> S ** level
    np.testing.assert_allclose(survival_from_hazards(h, 45, 30, level=2.0), s**2)
    np.testing.assert_allclose(survival_from_hazards(h, 60, 30), [0.9 * 0.8, 0.5])


def test_the_level_matches_the_realised_cancellation_rate() -> None:
    # 1 - 0.5 ** c = 0.75  =>  c = 2
    assert fit_level(np.array([0.5, 0.5]), np.array([1, 1, 1, 0])) == pytest.approx(2.0, abs=1e-5)
    # already calibrated: 1 - mean S = 0.25 on S = (0.5, 1 - 1e-6): c = 1 up to the clip
    assert fit_level(np.array([0.75, 0.75]), np.array([1, 0, 0, 0])) == pytest.approx(1.0, abs=1e-5)
    # beyond the bounds: clipped; nothing to fit: 1
    assert fit_level(np.array([0.99]), np.array([1])) == 5.0
    assert fit_level(np.array([]), np.array([])) == 1.0


def test_churn_shift_and_value_factor_are_solved_by_hand() -> None:
    # mean(sigmoid(logit 0.5 + a)) = 0.75  =>  a = logit(0.75) = ln 3
    shift = fit_churn_shift(np.array([0.5, 0.5]), np.array([1, 1, 1, 0]))
    assert shift == pytest.approx(math.log(3), abs=1e-6)
    assert fit_churn_shift(np.array([]), np.array([])) == 0.0
    assert fit_value_factor(np.array([1.0, 1.0]), np.array([3.0, 1.0])) == 2.0
    assert fit_value_factor(np.array([1.0]), np.array([100.0])) == 4.0  # clipped at the bound
    assert fit_value_factor(np.array([0.0]), np.array([5.0])) == 1.0  # nothing predicted: left alone
    lv = Levels(math.log(3), 2.0)
    np.testing.assert_allclose(lv.churn(np.array([0.5])), [0.75])
    np.testing.assert_allclose(lv.value(np.array([10.0])), [20.0])
    assert Levels.from_dict(json.loads(json.dumps(lv.to_dict()))) == lv


def test_the_value_level_keeps_a_slope_only_where_its_factor_matches_the_total() -> None:
    pred = np.repeat(np.arange(1.0, 11.0), 10)  # ten equal-count bins, one value each
    # realised = predicted ** 1.2: the slope is 1.2 and the factor 1
    factor, slope = fit_value_level(pred, pred**1.2)
    assert slope == pytest.approx(1.2) and factor == pytest.approx(1.0)
    # a pure level when asked (a window the value model trained on): realised total / predicted total
    assert fit_value_level(pred, pred**1.2, slope=False) == (pytest.approx(np.sum(pred**1.2) / 550.0), 1.0)
    # realised = 0.2 * predicted ** 1.4: the factor for that slope, 0.2, is below its bound (0.25); a clipped
    # factor would predict the window's total 1.25x too high, so the slope is dropped for a pure level
    actual = 0.2 * pred**1.4
    factor, slope = fit_value_level(pred, actual)
    assert slope == 1.0 and factor == pytest.approx(actual.sum() / pred.sum())
    assert factor * pred.sum() == pytest.approx(actual.sum())


def test_who_is_under_contract() -> None:
    rows = pd.DataFrame({"attr_is_subscriber": [True, False, None], "x": [1, 2, 3]})
    assert under_contract(rows, "mixed").tolist() == [True, False, False]
    text = pd.DataFrame({"attr_is_subscriber": ["true", "False", None]})
    assert under_contract(text, "mixed").tolist() == [True, False, False]
    assert under_contract(rows, "contractual").tolist() == [True, True, True]
    assert under_contract(rows, None).tolist() == [False, False, False]
    assert under_contract(rows.drop(columns="attr_is_subscriber"), "mixed").tolist() == [False] * 3


def _person_periods(n: int = 4000, rate: float = 0.1) -> pd.DataFrame:
    """n person-periods, a constant one-period cancellation rate, tenure spread over two years."""
    rng = np.random.default_rng(0)
    churned = np.zeros(n, dtype=np.int8)
    churned[: int(n * rate)] = 1
    rng.shuffle(churned)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "cutoff": pd.Timestamp("2024-01-31"),
            "signup_tenure_days": rng.integers(0, 730, n).astype(float),
            "attr_is_subscriber": True,
            "churned": churned,
        }
    )


def test_a_constant_hazard_gives_the_geometric_probability_over_h() -> None:
    frame = _person_periods()
    model = fit_hazard(frame, ["signup_tenure_days"], "mixed", 60, seed=0, n_jobs=1)
    assert model.tenure_column == "signup_tenure_days"
    rows = frame.head(200)
    h = model.hazards(rows)
    assert h.shape == (200, 2)
    assert h.mean() == pytest.approx(0.1, abs=0.02)
    # two 30-day periods: 1 - (1 - h1)(1 - h2), about 1 - 0.9 ** 2 = 0.19
    p = model.predict(rows)
    np.testing.assert_allclose(p, 1 - (1 - h[:, 0]) * (1 - h[:, 1]))
    assert p.mean() == pytest.approx(0.19, abs=0.03)
    # monotone in the horizon, and the level moves it the way the cumulative hazard says
    assert np.all(model.predict(rows, days=90) >= p)
    model.level = 2.0
    np.testing.assert_allclose(model.predict(rows), 1 - ((1 - h[:, 0]) * (1 - h[:, 1])) ** 2)


def test_the_contract_model_round_trips_through_its_spec(tmp_path: Path) -> None:
    frame = _person_periods(1000)
    model = fit_hazard(frame, ["signup_tenure_days"], "mixed", 91, seed=0, n_jobs=1)
    model.level = 1.3
    model.booster.save_model(tmp_path / "b.ubj")
    booster = xgb.Booster()
    booster.load_model(tmp_path / "b.ubj")
    again = ContractModel.from_dict(json.loads(json.dumps(model.to_dict())), booster)
    np.testing.assert_allclose(again.predict(frame.head(50)), model.predict(frame.head(50)))
    assert again.encoder == Encoder(["signup_tenure_days"], {})
    assert again.info["person_periods"] == 1000
    assert CONTRACT != SILENCE


def _end(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 23, 59, 59, 999999)


def test_the_calibration_window_is_an_earlier_years_season() -> None:
    days = pd.date_range("2023-01-01", "2025-06-30", freq="7D")
    history = history_from_frames(
        pd.DataFrame({"customer_id": "a", "timestamp": days, "amount": 10.0}), as_of=_end(2025, 6, 30)
    )
    t = _end(2025, 6, 30)
    # (o, o + 182 d] must end by T: 2024-12-31 + 182 d is 2025-07-01, so the latest such month end is
    # 2024-11-30; T's month a year before: 2024-06-30
    assert calibration_origin(history, t, 182, 60, "seasonal") == _end(2024, 6, 30)
    assert calibration_origin(history, t, 182, 60, "latest") == _end(2024, 11, 30)
    assert calibration_origin(history, t, 182, 60, "none") is None
    # 400 days: June two years before (T - 400 d is 2024-05-26)
    assert calibration_origin(history, t, 400, 60, "seasonal") == _end(2023, 6, 30)
    # 800 days: T - 800 d is 2023-04-21 and the first month end with 60 days of history 2023-03-31: no
    # June window, so none, or with the fallback the latest complete one
    assert calibration_origin(history, t, 800, 60, "seasonal") is None
    assert calibration_origin(history, t, 800, 60, "seasonal_or_latest") == _end(2023, 3, 31)
    assert calibration_origin(history, t, 182, 60, "seasonal_or_latest") == _end(2024, 6, 30)
    # nothing complete at all
    assert calibration_origin(history, _end(2023, 6, 30), 182, 60, "seasonal") is None
    with pytest.raises(ValueError, match="levels window 'yearly'"):
        calibration_origin(history, t, 182, 60, "yearly")


def test_the_subscribers_shift_pools_the_latest_complete_windows_and_the_levels_window() -> None:
    days = pd.date_range("2023-01-01", "2025-06-30", freq="7D")
    history = history_from_frames(
        pd.DataFrame({"customer_id": "a", "timestamp": days, "amount": 10.0}), as_of=_end(2025, 6, 30)
    )
    t, june = _end(2025, 6, 30), _end(2024, 6, 30)
    # the latest complete 182-day window starts 2024-11-30 (above); three back: September to November,
    # and the levels' June window beside them
    assert contract_origins(history, t, 182, 60, 3, june) == [
        june,
        _end(2024, 9, 30),
        _end(2024, 10, 31),
        _end(2024, 11, 30),
    ]
    # twelve back (December 2023 to November 2024) already hold June: no duplicate
    twelve = contract_origins(history, t, 182, 60, 12, june)
    assert len(twelve) == 12 and twelve[0] == _end(2023, 12, 31) and twelve[-1] == _end(2024, 11, 30)
    assert june in twelve
    # at 400 days the levels' window (June 2023, above) is older than the latest complete ones (the latest
    # month end 400 days before T is 2024-04-30): it is added to them
    june23 = _end(2023, 6, 30)
    assert contract_origins(history, t, 400, 60, 2, june23) == [june23, _end(2024, 3, 31), _end(2024, 4, 30)]
    # 1: the levels' window alone, as before the pooling
    assert contract_origins(history, t, 182, 60, 1, june) == [june]
    with pytest.raises(ValueError, match="contract_windows 0"):
        contract_origins(history, t, 182, 60, 0, june)
