"""The value hurdle (training.models): P(any value over the label horizon) x E[value | any], on a hand-built
training frame whose answer is known: customers long silent never buy again, the others buy a known mean."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from training.models import ANY_VALUE, SPEND_OBJECTIVE, fit_value, hurdle_fits, with_any_value

PARAMS = {"n_estimators": 80, "learning_rate": 0.2, "max_depth": 2, "min_child_weight": 5.0}
H = 91
COLUMNS = ["recency_days", "noise"]


def _frame(seed: int = 0) -> pd.DataFrame:
    """Four origins 91+ days apart; half the customers silent for 400+ days (value 0), half active (recency
    under 60 days) who buy with probability 0.8 a Gamma(2, 50) amount (mean 100): expected value 80."""
    rng = np.random.default_rng(seed)
    out = []
    for origin in ("2024-01-31", "2024-05-31", "2024-09-30", "2025-01-31"):
        n = 400
        silent = np.arange(n) < n // 2
        recency = np.where(silent, rng.uniform(400, 900, n), rng.uniform(0, 60, n))
        buys = ~silent & (rng.random(n) < 0.8)
        amount = rng.gamma(2.0, 50.0, n)
        out.append(
            pd.DataFrame(
                {
                    "cutoff": pd.Timestamp(datetime.fromisoformat(origin)),
                    "recency_days": recency,
                    "noise": rng.normal(size=n),
                    "future_value": np.where(buys, amount, 0.0),
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def test_the_hurdle_is_the_classifier_times_the_spend_and_reaches_zero_for_the_silent() -> None:
    frame = _frame()
    assert hurdle_fits(frame, H)
    spend_params = {**PARAMS, "objective": SPEND_OBJECTIVE}
    model, validated = fit_value(frame, H, COLUMNS, spend_params, 0, 1, buyer_params=PARAMS)
    assert model.buyer is not None and model.objective == SPEND_OBJECTIVE
    late = frame[frame["cutoff"] == frame["cutoff"].max()]
    assert len(validated) == len(late)
    dm = model.encoder.matrix(late)
    p_any, spend = model.buyer.predict(dm), model.booster.predict(dm)
    assert ((p_any >= 0) & (p_any <= 1)).all() and (spend > 0).all()
    np.testing.assert_allclose(model.predict_label_horizon(late), p_any * spend, rtol=1e-6)
    x = late[model.encoder.columns].to_numpy(np.float64)
    np.testing.assert_allclose(model.raw_of(x), model.raw(dm), rtol=1e-6)  # the float-matrix path
    silent = late["recency_days"].to_numpy() > 300
    v = model.predict_label_horizon(late)
    assert v[silent].max() < 1.0  # never bought again: P(any) near 0
    assert 60 < v[~silent].mean() < 100  # 0.8 x 100
    # a single booster (no buyer) is the same call without buyer_params
    single, _ = fit_value(frame, H, COLUMNS, {**PARAMS, "objective": "count:poisson"}, 0, 1)
    assert single.buyer is None and isinstance(single.booster, xgb.Booster)
    np.testing.assert_allclose(single.raw_of(x), single.booster.predict(dm), rtol=1e-6)


def test_the_classifier_label_and_when_a_hurdle_cannot_be_validated() -> None:
    frame = _frame()
    labelled = with_any_value(frame)
    assert labelled[ANY_VALUE].tolist() == (frame["future_value"] > 0).astype(int).tolist()
    assert ANY_VALUE not in frame.columns  # a copy: the caller's frame is left alone
    everyone_buys = frame.assign(future_value=1.0)
    assert not hurdle_fits(everyone_buys, H)  # no row without value: nothing to classify
    nobody_buys = frame.assign(future_value=0.0)
    assert not hurdle_fits(nobody_buys, H)
    with pytest.raises(ValueError, match="time-based validation needs an origin"):
        hurdle_fits(frame[frame["cutoff"] == frame["cutoff"].max()], H)
