"""Contract-aware churn and calibrated levels on a small synthetic history (training.contract,
training.levels): subscribers are scored by their cancellation hazard, calibrated against what they did in a
later window; the artefact carries the model and still loads without it (older artefacts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from features.datasets import synthetic
from features.history import load_history
from training.artefact import ScoringArtefact
from training.config import TrainingConfig
from training.contract import CONTRACT, SILENCE
from training.pipeline import Backtest, backtest

CUSTOMERS, SEED = 3000, 3
CUTOFF, HORIZON = "2025-06-30", 182
# subscribers' mean predicted cancellation over H against the realised rate: relative tolerance. About 250
# subscribers are under contract at T, so the realised rate (~0.27) alone has a sampling sd of ~0.028 (~10 %
# relative): 25 % is 2.5 sd.
TOLERANCE = 0.25
SMALL = TrainingConfig(
    trials=1,
    xgboost={"n_estimators": 60, "learning_rate": 0.2, "max_depth": 2, "min_child_weight": 20},
    contract={"periods": 12},
)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Backtest:
    folder = tmp_path_factory.mktemp("synthetic") / "history"
    synthetic.write(folder, CUSTOMERS, seed=SEED)
    return backtest(load_history(folder), CUTOFF, HORIZON, SMALL)


def test_subscribers_are_scored_by_the_contract_model_and_calibrated(result: Backtest) -> None:
    art = result.trained.artefact
    assert art.contract is not None and art.contract.mode == "mixed"
    rows = result.trained.scoring_rows
    models = art.churn_models(rows)
    subscribers = rows["attr_is_subscriber"].fillna(False).astype(bool).to_numpy()
    assert (models == CONTRACT).tolist() == subscribers.tolist()  # per customer, by the attribute
    assert set(models[~subscribers]) == {SILENCE}
    by = result.metrics["by_model"]
    realised, predicted = by[f"{CONTRACT}_churn_rate"], by[f"{CONTRACT}_mean_probability"]
    assert by[f"{CONTRACT}_customers"] == subscribers.sum() > 150
    assert realised is not None and predicted is not None
    assert abs(predicted / realised - 1) <= TOLERANCE, (predicted, realised)
    # the purchase-silence model alone under-predicts them several-fold (the finding)
    silence = art.churn.predict(rows[subscribers])
    assert silence.mean() < 0.6 * realised


def test_levels_are_recalibrated_on_last_years_season(result: Backtest) -> None:
    lv = result.trained.artefact.levels
    assert lv is not None
    assert lv.info["origin"] == "2024-06-30" and lv.info["window"] == "seasonal"
    # on that window the recalibrated total is the realised one
    assert lv.info["recalibrated_value"] == pytest.approx(lv.info["realised_value"], rel=1e-9)
    assert lv.info["predicted_value"] < 0.8 * lv.info["realised_value"]  # the models alone: far too low
    # and at T it moves the aggregate the right way: without it the error would be larger
    assert result.truth is not None
    realised = result.truth["future_value"].sum()
    error = result.metrics["model"]["value_aggregate_error"]
    assert error == pytest.approx(result.predictions["predicted_value"].sum() / realised - 1)
    unscaled = result.trained.artefact.value.predict(result.trained.scoring_rows).sum() / realised - 1
    assert abs(error) < 0.10 < abs(unscaled)


def test_the_artefact_ships_the_contract_model_and_old_artefacts_still_score(
    result: Backtest, tmp_path: Path
) -> None:
    art = result.trained.artefact
    rows = result.trained.scoring_rows
    folder = art.save(tmp_path / "new")
    assert (folder / "contract.ubj").exists()
    again = ScoringArtefact.load(folder)
    np.testing.assert_allclose(again.score(rows)["churn_probability"], art.score(rows)["churn_probability"])
    assert again.levels == art.levels and again.contract is not None
    assert again.contract.level == art.contract.level  # type: ignore[union-attr]
    # an artefact written before contract models and levels: no keys, no booster; it scores as it did
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    (old / "contract.ubj").unlink()
    spec = json.loads((old / "scoring.json").read_text(encoding="utf-8"))
    del spec["contract"], spec["levels"]
    (old / "scoring.json").write_text(json.dumps(spec), encoding="utf-8")
    legacy = ScoringArtefact.load(old)
    assert legacy.contract is None and legacy.levels is None
    scored = legacy.score(rows)
    np.testing.assert_allclose(scored["churn_probability"], art.churn.predict(rows))
    np.testing.assert_allclose(scored["predicted_value"], art.value.predict(rows))
    assert set(scored["churn_model"]) == {SILENCE}
