"""The models at the target horizon (issue 16, `churn_labels: full`, `value_labels: full`) on a small
synthetic history: both learn H-day labels at the same month ends whose labels end by T, answer for H without
a bridge, ship their label horizon, and see nothing after T; with `value_labels: short` the churn model alone
learns them, at its own origins, and validates on its own window."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from features.build import build_labels, build_scoring_rows, build_spine
from features.datasets import synthetic
from features.history import History, load_history
from features.sets import get_feature_set
from serving.champion import _score_rows
from training.artefact import ScoringArtefact
from training.config import LevelsConfig, TrainingConfig
from training.models import P_EPS
from training.pipeline import backtest, fit_levels, validation_window
from training.tracking import churn_models_text, report_figures

CUSTOMERS, SEED = 3000, 3
T, HORIZON = datetime(2025, 6, 30, 23, 59, 59, 999999), 182
SMALL = TrainingConfig(
    trials=1,
    xgboost={"n_estimators": 60, "learning_rate": 0.2, "max_depth": 2, "min_child_weight": 20},
    churn_origins=4,
)
SHORT_VALUE = SMALL.model_copy(update={"value_labels": "short"})  # value on h-day labels, bridged to H


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    folder = tmp_path_factory.mktemp("synthetic") / "history"
    synthetic.write(folder, CUSTOMERS, seed=SEED)
    return load_history(folder)


def test_both_models_learn_h_day_labels_at_the_same_origins_and_nothing_after_the_cutoff_changes_them(
    history: History, tmp_path: Path
) -> None:
    assert SMALL.value_labels == "full"  # the default
    result = backtest(history, T, HORIZON, SMALL)
    trained, art = result.trained, result.trained.artefact
    assert art.label_horizon_days == HORIZON and art.churn.label_days is None  # both learned H: no override
    assert art.churn.horizon_map == (0.0, 1.0) and art.value.horizon_map == (0.0, 1.0)  # no bridge
    assert trained.bridge_rows is None
    origins = trained.origins
    assert trained.churn_origins == origins and len(origins) == 5  # four, plus one a full H before the latest
    assert all(o + timedelta(days=HORIZON) <= T for o in origins)  # every label known at T
    assert origins[-1] == datetime(2024, 11, 30, 23, 59, 59, 999999)
    # one validation window, H-day labels, for both models
    rows, p = trained.churn_window()
    assert rows is trained.validation_rows and (rows["cutoff"] == pd.Timestamp(origins[-1])).all()
    assert len(p) == len(rows) and not np.isnan(p).any()
    assert "churn_customers" not in trained.segments[0]
    assert 0.5 < trained.validation["churn_auc"] < 1.0 and trained.validation["value_gini"] > 0.5
    # `diamond promote` (and the gate, for a champion of another feature set) builds that same window
    _same_window(validation_window(history, T, SMALL, art), trained.validation_rows)
    assert result.metrics["model"]["churn_auc"] > result.metrics["bgnbd"]["churn_auc"]
    # both keep the customer's age (churn_keep_features): the same columns
    age = {"tenure_days", "signup_tenure_days"}
    assert age <= set(art.columns) and art.value.encoder.columns == art.columns
    assert SMALL.value_model == "hurdle" and art.value.buyer is not None  # P(any value) x E[value | any]
    assert trained.params["buyer"] and trained.tuning["buyer_tuning_trials"] == 1
    again = ScoringArtefact.load(art.save(tmp_path / "model"))
    assert again.label_horizon_days == HORIZON and again.churn.label_days is None
    assert again.value.buyer is not None
    scoring = trained.scoring_rows
    for column in ("churn_probability", "predicted_value"):
        np.testing.assert_allclose(again.score(scoring)[column], art.score(scoring)[column])
    # the history as known at T (every later event gone) gives the same predictions, bit for bit
    blind = backtest(history.until(T), T, HORIZON, SMALL)
    assert blind.truth is None
    pd.testing.assert_frame_equal(blind.predictions, result.predictions)


def test_with_short_value_labels_churn_alone_learns_h_day_labels_at_its_own_origins(
    history: History, tmp_path: Path
) -> None:
    result = backtest(history, T, HORIZON, SHORT_VALUE)
    trained, art = result.trained, result.trained.artefact
    assert art.churn.label_days == HORIZON and art.churn.horizon_map == (0.0, 1.0)  # no bridge
    assert art.label_horizon_days == 91 and art.value.horizon_map != (0.0, 1.0)  # value keeps h and its map
    origins = trained.churn_origins
    assert origins is not None and len(origins) == 5  # four, plus the one a full H before the latest
    assert all(o + timedelta(days=HORIZON) <= T for o in origins)  # every label known at T
    assert origins[-1] == datetime(2024, 11, 30, 23, 59, 59, 999999)
    # the churn model validates on its own latest origin, with H-day labels
    rows, p = trained.churn_window()
    assert len(rows) == len(p) and (rows["cutoff"] == pd.Timestamp(origins[-1])).all()
    assert 0.5 < trained.validation["churn_auc"] < 1.0
    assert trained.segments[0]["churn_customers"] == len(rows)
    assert trained.segments[0]["customers"] == len(trained.validation_rows)
    assert {"roc", "calibration", "value_deciles"} <= set(report_figures(trained))
    assert result.metrics["model"]["churn_auc"] > result.metrics["bgnbd"]["churn_auc"]
    # the churn model keeps the customer's age (churn_keep_features); value never sees it
    age = {"tenure_days", "signup_tenure_days"}
    assert age <= set(art.columns) and not age & set(art.value.encoder.columns)
    assert art.value_positions == [art.columns.index(c) for c in art.value.encoder.columns]
    # the artefact ships the churn model's label horizon and both column lists, and scores the same after
    # a round trip
    again = ScoringArtefact.load(art.save(tmp_path / "model"))
    assert again.churn.label_days == HORIZON
    assert again.columns == art.columns and again.value.encoder.columns == art.value.encoder.columns
    scoring = trained.scoring_rows
    for column in ("churn_probability", "predicted_value"):
        np.testing.assert_allclose(again.score(scoring)[column], art.score(scoring)[column])
    _same_window(validation_window(history, T, SHORT_VALUE, art), trained.validation_rows)  # h-day labels
    # the history as known at T (every later event gone) gives the same predictions, bit for bit
    blind = backtest(history.until(T), T, HORIZON, SHORT_VALUE)
    assert blind.truth is None
    pd.testing.assert_frame_equal(blind.predictions, result.predictions)


def _same_window(window: pd.DataFrame, rows: pd.DataFrame) -> None:
    """The same customers at the same origin with the same labels and model inputs."""
    columns = ["customer_id", "cutoff", "churned", "future_value", "recency_days", "btyd_p_alive"]
    mine, theirs = window[columns].reset_index(drop=True), rows[columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, theirs)


def test_the_churn_booster_at_h_scores_subscribers_with_a_level_of_their_own(history: History) -> None:
    assert SMALL.contract.scorer == "auto"  # the default
    result = backtest(history, T, HORIZON, SMALL)
    art = result.trained.artefact
    assert art.contract is None  # the booster learned the subscribers' H-day cancellations itself
    assert art.levels is not None and art.levels.contract_shift is not None
    assert art.levels.contract_mode == "mixed"
    rows = result.trained.scoring_rows
    sub = rows["attr_is_subscriber"].fillna(False).to_numpy(bool)
    # the score table, the API and the report say who was scored by what
    models = art.churn_models(rows)
    assert set(models[sub]) == {"contract_booster"} and set(models[~sub]) == {"purchase_silence"}
    assert art.score(rows)["churn_model"].tolist() == models.tolist()
    assert churn_models_text(art).startswith("churn booster on H-day cancellations for customers whose")
    assert f"{art.levels.contract_shift:+.3f} pooled over 12 windows)" in churn_models_text(art)
    assert result.truth is not None
    y = result.truth["churned"].to_numpy()
    p = result.predictions["churn_probability"].to_numpy()
    # their own shift: without it they would take the silence customers' one
    plain = art.churn.predict(rows)
    np.testing.assert_allclose(p[~sub], art.levels.churn(plain[~sub]))
    np.testing.assert_allclose(p[sub], art.levels.churn(plain[sub], np.ones(int(sub.sum()), dtype=bool)))
    assert art.levels.contract_shift != art.levels.churn_shift
    # their shift is fitted on their rows pooled over the 12 latest complete 182-day windows (December 2023
    # to November 2024; the levels' June window among them), not June alone
    info = art.levels.info
    assert info["contract_windows"][0] == "2023-12-31" and info["contract_windows"][-1] == "2024-11-30"
    assert len(info["contract_windows"]) == 12 and info["origin"] in info["contract_windows"]
    known = history.until(T)
    counts, churned = 0, 0.0
    for day in info["contract_windows"]:
        o = datetime.fromisoformat(day).replace(hour=23, minute=59, second=59, microsecond=999999)
        window = build_scoring_rows(known, o, get_feature_set(art.feature_set), HORIZON).to_pandas()
        held = window["attr_is_subscriber"].fillna(False).to_numpy(bool)
        labels = build_labels(known, build_spine(known, [o]), HORIZON).to_pandas()
        counts += int(held.sum())
        churned += float(labels["churned"].to_numpy()[held].sum())
        if day == info["origin"]:
            assert int(held.sum()) == info["contract_window_customers"]
            june_p = art.churn.predict(window)[held]
            june_rate = float(labels["churned"].to_numpy()[held].mean())
    assert info["contract_customers"] == counts > 5 * info["contract_window_customers"]
    assert info["contract_churn_rate"] == pytest.approx(churned / counts)
    # with levels.contract_windows 1, the levels' window alone: the shift that matches its rate
    one = SMALL.model_copy(update={"levels": LevelsConfig(contract_windows=1)})
    alone = fit_levels(history, T, get_feature_set(art.feature_set), art, one, "mixed")
    assert alone is not None and alone.info["contract_windows"] == [info["origin"]]
    assert alone.info["contract_churn_rate"] == pytest.approx(june_rate) == info["contract_window_churn_rate"]
    shifted = expit(logit(np.clip(june_p, P_EPS, 1 - P_EPS)) + alone.contract_shift)
    assert float(shifted.mean()) == pytest.approx(june_rate, abs=1e-6)
    assert alone.contract_shift != art.levels.contract_shift
    # subscribers' mean predicted cancellation near the realised rate (about 250 of them: 25 % relative is
    # 2.5 sampling sds, as in test_training_contract)
    assert abs(p[sub].mean() / y[sub].mean() - 1) < 0.25
    again = ScoringArtefact.load(art.save(Path(tempfile.mkdtemp()) / "model"))
    assert again.levels == art.levels
    np.testing.assert_allclose(again.score(rows)["churn_probability"], p)


def test_short_labels_keep_the_bridged_design(history: History, tmp_path: Path) -> None:
    config = SMALL.model_copy(update={"churn_labels": "short", "value_model": "single"})
    result = backtest(history, T, HORIZON, config)
    trained = result.trained
    assert trained.artefact.churn.label_days is None and trained.churn_origins is None
    assert trained.artefact.churn.horizon_map != (0.0, 1.0)  # BG/NBD bridge from h to H
    value = trained.artefact.value  # one booster of everybody's value, its objective searched
    assert (
        value.buyer is None and value.objective in config.value_objectives and "buyer" not in trained.params
    )
    again = ScoringArtefact.load(trained.artefact.save(tmp_path / "model"))
    assert again.value.buyer is None
    scoring = trained.scoring_rows
    np.testing.assert_allclose(
        again.score(scoring)["predicted_value"], trained.artefact.score(scoring)["predicted_value"]
    )
    rows, p = trained.churn_window()
    assert rows is trained.validation_rows and len(p) == len(rows)
    assert "churn_customers" not in trained.segments[0]


def test_the_float_matrix_path_scores_a_churn_model_with_columns_value_lacks(history: History) -> None:
    # transactions-only columns (rfm_v1: no text attributes): the served snapshot scores from one float
    # matrix of the churn booster's columns (serving.champion), value reads its own among them
    config = SHORT_VALUE.model_copy(update={"feature_set": "rfm_v1"})
    art = backtest(history, T, HORIZON, config).trained.artefact
    assert "tenure_days" in art.columns and "tenure_days" not in art.value.encoder.columns
    assert art.value.buyer is not None  # the hurdle's two boosters read value's columns from the matrix
    rows = build_scoring_rows(history.until(T), T, get_feature_set("rfm_v1"), HORIZON, art.btyd_params)
    frame = rows.to_pandas()
    x = frame[art.columns].to_numpy(dtype=np.float64, na_value=np.nan)
    p, v, _, _ = _score_rows(art, x, art.churn.rfm.score(frame), 3)
    p, v = art.finish(frame, p, v)
    scored = art.score(frame)
    np.testing.assert_allclose(p, scored["churn_probability"], rtol=1e-6)
    np.testing.assert_allclose(v, scored["predicted_value"], rtol=1e-6)
    assert np.ptp(v) > 0
