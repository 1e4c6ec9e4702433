"""Contract-aware churn and calibrated levels on a small synthetic history (training.contract,
training.levels): subscribers are scored by their cancellation hazard, calibrated against what they did in a
later window; the artefact carries the model and still loads without it (older artefacts)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.datasets import synthetic
from features.history import load_history
from serving import scoring
from serving.api import Score
from serving.champion import ModelInputs, Served
from serving.config import ServingConfig
from serving.online import by_id
from training.artefact import ScoringArtefact
from training.config import TrainingConfig
from training.contract import CONTRACT, SILENCE
from training.curve import hazard_curve
from training.pipeline import Backtest, backtest
from training.rfm import RfmReference

CUSTOMERS, SEED = 3000, 3
CUTOFF, HORIZON = "2025-06-30", 182
# subscribers' mean predicted cancellation over H against the realised rate: relative tolerance. About 250
# subscribers are under contract at T, so the realised rate (~0.27) alone has a sampling sd of ~0.028 (~10 %
# relative): 25 % is 2.5 sd.
TOLERANCE = 0.25
SMALL = TrainingConfig(
    trials=1,
    xgboost={"n_estimators": 60, "learning_rate": 0.2, "max_depth": 2, "min_child_weight": 20},
    contract={"periods": 12, "scorer": "hazard"},
    churn_labels="short",  # the bridged silence model beside the hazard (H-day churn: elsewhere)
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


def test_subscribers_get_their_hazards_curve_and_reasons_everybody_else_keeps_theirs(
    result: Backtest,
) -> None:
    """The score table says which model scored whom; a subscriber's time to churn is read from the contract
    model's monthly hazards (non-decreasing, P(cancel within H) at H) and their reasons from its TreeSHAP
    contributions; everybody else's curve and reasons are what the purchase-silence model alone gives."""
    art = result.trained.artefact
    assert art.contract is not None and art.curve is not None
    rows = result.trained.scoring_rows.reset_index(drop=True)
    frame, _ = scoring.score_frame(art, rows, 3, 2)
    contract = art.contract.applies(rows)
    assert contract.sum() > 150
    assert frame["churn_model"].tolist() == art.churn_models(rows).tolist()
    assert set(frame.loc[contract, "churn_model"]) == {CONTRACT}
    assert set(frame.loc[~contract, "churn_model"]) == {SILENCE}
    # the curve of a subscriber: the hazard's, up to 180 days, and P(churn over H) at H = 182
    subs = rows[contract]
    points, days = art.contract.curve(subs, [30, 60, 90, 180, HORIZON])
    curve = frame.loc[contract, ["churn_30d", "churn_60d", "churn_90d", "churn_180d"]].to_numpy()
    np.testing.assert_allclose(curve, points[:, :4], rtol=1e-12)
    np.testing.assert_allclose(points[:, -1], frame.loc[contract, "churn_probability"], rtol=1e-12)
    assert np.all(np.diff(curve, axis=1) >= 0) and np.all(curve[:, -1] <= points[:, -1])
    np.testing.assert_allclose(frame.loc[contract, "days_to_churn"], days, rtol=1e-12)
    assert np.all((days > 0) & (days < HORIZON))
    # not the constant hazard any more (the shape is the model's), though anchored at the same P(H)
    flat, _ = hazard_curve(points[:, -1], HORIZON)
    assert np.abs(curve - flat[:, :4]).max() > 1e-3
    # everybody else: exactly what the artefact without its contract model gives
    silent = replace(art, contract=None)
    before, _ = scoring.score_frame(silent, rows, 3, 2)
    keep = ["reasons", "churn_30d", "churn_60d", "churn_90d", "churn_180d", "days_to_churn"]
    pd.testing.assert_frame_equal(
        frame.loc[~contract, keep].reset_index(drop=True), before.loc[~contract, keep].reset_index(drop=True)
    )
    # a subscriber's reasons: the hazard's inputs and their contributions, never the silence model's RFM rank
    contribs = art.contract.contributions(subs)
    columns = art.contract.encoder.columns
    for i, text in enumerate(frame.loc[contract, "reasons"].tolist()[:200]):
        reasons = json.loads(text)
        assert reasons and all(r["feature"] in columns for r in reasons)
        shown = [r["contribution"] for r in reasons]
        expected = sorted(contribs[i].tolist(), key=lambda c: -abs(c))[: len(reasons)]
        assert shown == pytest.approx([round(c, 6) for c in expected], abs=1e-9)
        assert all((r["direction"] == "raises churn risk") == (r["contribution"] > 0) for r in reasons)
    named = {r["feature"] for t in frame.loc[contract, "reasons"] for r in json.loads(t)}
    assert scoring.RFM_REASON not in named


def test_the_by_id_and_inline_answers_carry_which_model_scored_the_customer(result: Backtest) -> None:
    """POST /score's two paths: a snapshot customer by id (serving.champion.ModelInputs, the served
    snapshot's rows) and the same rows through the batch path give the same model, curve and reasons."""
    art = result.trained.artefact
    rows = result.trained.scoring_rows.reset_index(drop=True).assign(as_of=CUTOFF)
    served = Served(art, "3", "now", RfmReference.from_rank(art.churn.rfm))
    config = ServingConfig()
    inputs = ModelInputs.build(served, rows, None, config.cold_start_min_purchase_days, config.reasons)
    contract = art.contract.applies(rows)  # type: ignore[union-attr]
    ids = [
        *rows.loc[contract, "customer_id"].astype(str)[:5],
        *rows.loc[~contract, "customer_id"].astype(str)[:5],
    ]
    answers = {k: json.loads(v) for k, v in by_id(served, inputs, ids, config).items()}
    records = {
        r["customer_id"]: r
        for r in scoring.score_records(
            art, rows[rows["customer_id"].astype(str).isin(ids)], config.reasons, 2
        )
    }
    for cid in ids:
        mine, batch = answers[cid], records[cid]
        Score.model_validate(mine)
        assert mine["churn_model"] == batch["churn_model"]
        assert mine["churn_probability"] == pytest.approx(batch["churn_probability"], rel=1e-9)
        for c in scoring.CURVE_COLUMNS:
            assert (mine[c] is None) == (batch[c] is None), c
            assert mine[c] is None or mine[c] == pytest.approx(batch[c], rel=1e-9), c
        assert [r["feature"] for r in mine["reasons"]] == [r["feature"] for r in batch["reasons"]]
    assert {answers[c]["churn_model"] for c in ids[:5]} == {CONTRACT}
    assert {answers[c]["churn_model"] for c in ids[5:]} == {SILENCE}


@pytest.fixture(scope="module")
def numeric(tmp_path_factory: pytest.TempPathFactory) -> Backtest:
    """The same kind of history with numeric and boolean attributes only: the served snapshot is then
    scored as one float matrix (serving.champion's fast path), not per request."""
    folder = tmp_path_factory.mktemp("numeric") / "history"
    synthetic.write(folder, 2000, seed=SEED)
    history = load_history(folder)
    assert history.customers is not None
    kept = history.customers.select(["customer_id", "signup_date", "age", "is_subscriber", "email_opt_in"])
    return backtest(replace(history, customers=kept), CUTOFF, HORIZON, SMALL)


def test_the_fast_by_id_path_answers_subscribers_as_the_batch_path_does(numeric: Backtest) -> None:
    """By id from the snapshot held as arrays (probability, curve, which model, reasons rendered from the
    arrays): the numbers and words of serving.scoring for customers under contract and the others."""
    art = numeric.trained.artefact
    assert art.contract is not None and not art.churn.encoder.categories
    rows = numeric.trained.scoring_rows.reset_index(drop=True).assign(as_of=CUTOFF)
    for c in rows.columns:  # as the store's snapshot gives booleans back: 0 and 1 (both paths show numbers)
        if pd.api.types.is_bool_dtype(rows[c].dtype):
            rows[c] = rows[c].astype(np.int64)
    served = Served(art, "4", "now", RfmReference.from_rank(art.churn.rfm))
    config = ServingConfig(reasons=12)  # deep enough to reach the hazard's own input for some customers
    inputs = ModelInputs.build(served, rows, None, config.cold_start_min_purchase_days, config.reasons)
    assert inputs.rows is None  # the fast path
    names = scoring.reason_names(art)
    assert art.contract_only_columns == ["signup_tenure_days"] == names[len(art.columns) + 1 :]
    np.testing.assert_array_equal(inputs.x[:, -1], rows["signup_tenure_days"].to_numpy(dtype=np.float64))
    contract = art.contract.applies(rows)
    assert 20 < contract.sum() < len(rows)
    ids = rows["customer_id"].astype(str).tolist()
    answers = {k: json.loads(v) for k, v in by_id(served, inputs, ids, config).items()}
    records = {r["customer_id"]: r for r in scoring.score_records(art, rows, config.reasons, 2)}
    tenure_named = False
    assert all(len(a["reasons"]) > 3 for a in answers.values())
    for cid in ids:
        mine, batch = answers[cid], records[cid]
        Score.model_validate(mine)
        assert mine["churn_model"] == batch["churn_model"]
        for c in ("churn_probability", "predicted_value", *scoring.CURVE_COLUMNS):
            assert (mine[c] is None) == (batch[c] is None), c
            assert mine[c] is None or mine[c] == pytest.approx(batch[c], rel=1e-9, abs=1e-12), c
        assert [(r["feature"], r["text"]) for r in mine["reasons"]] == [
            (r["feature"], r["text"]) for r in batch["reasons"]
        ]
        for m, b in zip(mine["reasons"], batch["reasons"], strict=True):
            assert m["contribution"] == pytest.approx(b["contribution"], abs=1e-9)
        tenure_named |= any(r["feature"] == "signup_tenure_days" for r in mine["reasons"])
    assert {answers[c]["churn_model"] for c, k in zip(ids, contract, strict=True) if k} == {CONTRACT}
    assert {answers[c]["churn_model"] for c, k in zip(ids, contract, strict=True) if not k} == {SILENCE}
    assert tenure_named  # a hazard input the silence model does not use, shown from the arrays
