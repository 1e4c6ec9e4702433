"""training.treeshap: TreeSHAP of a booster of stumps in numpy is XGBoost's pred_contribs, bit for bit, on
rows with missing values, ties at thresholds and both branches; anything that is not stumps is left to
XGBoost (None)."""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from training.treeshap import Stumps


def _data(seed: int, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).round(1)  # repeated values: rows land exactly on thresholds
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * 0.5 + rng.normal(size=n) > 0).astype(float)
    return x, y


def _booster(depth: int, seed: int = 0, objective: str = "binary:logistic") -> xgb.Booster:
    x, y = _data(seed)
    params = {"max_depth": depth, "eta": 0.3, "objective": objective, "nthread": 1, "seed": seed}
    return xgb.train(params, xgb.DMatrix(x, label=y, feature_names=[f"f{i}" for i in range(6)]), 60)


def test_stumps_give_xgboosts_contributions_bit_for_bit() -> None:
    booster = _booster(depth=1)
    stumps = Stumps.of(booster)
    assert stumps is not None and len(stumps.feature) > 0
    x, _ = _data(seed=1)
    theirs = booster.predict(xgb.DMatrix(x), pred_contribs=True, validate_features=False)[:, :-1]
    mine = stumps.contributions(x)
    assert mine.dtype == np.float32 and mine.shape == theirs.shape
    assert np.array_equal(mine, theirs)
    # every input's contributions and the bias add up to the margin (what SHAP values are)
    margin = booster.predict(xgb.DMatrix(x), output_margin=True, validate_features=False)
    bias = booster.predict(xgb.DMatrix(x), pred_contribs=True, validate_features=False)[:, -1]
    assert np.allclose(mine.sum(axis=1) + bias, margin, atol=1e-5)


def test_a_regression_booster_of_stumps_too() -> None:
    booster = _booster(depth=1, objective="reg:squarederror")
    stumps = Stumps.of(booster)
    x, _ = _data(seed=2)
    assert stumps is not None
    theirs = booster.predict(xgb.DMatrix(x), pred_contribs=True, validate_features=False)[:, :-1]
    assert np.array_equal(stumps.contributions(x), theirs)


def test_deeper_trees_are_left_to_xgboost() -> None:
    assert Stumps.of(_booster(depth=2)) is None
