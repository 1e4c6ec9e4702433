"""`diamond train`, `promote` and `models` against a real, temporary MLflow SQLite store: runs, metrics,
artefacts, registered versions, aliases, and the promotion gate both ways with its log."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import SMALL_TRAINING, run_diamond

# a deliberately weak model: one depth-1 booster over features with almost no signal
WEAK = {
    "trials": 1,
    "exclude_features": [
        *("recency_days", "tenure_days", "n_purchases", "frequency_days", "monetary_sum", "monetary_mean"),
        *("monetary_max", "monetary_std", "monetary_last", "net_amount", "purchases_30d", "amount_30d"),
        *("purchases_90d", "amount_90d", "purchases_180d", "amount_180d", "purchases_365d", "amount_365d"),
        *("ipt_mean_days", "ipt_std_days", "ipt_last_days", "recency_over_ipt", "btyd_expected_purchases"),
        *("btyd_p_alive", "btyd_p_no_purchase", "btyd_expected_spend", "trend_purchases_90d"),
        "trend_amount_90d",
    ],
    "xgboost": {"n_estimators": 50, "learning_rate": 0.05, "max_depth": 1, "min_child_weight": 20},
    "levels": SMALL_TRAINING["levels"],  # 2 pooled windows, as the small config (tests/helpers)
}
GOOD = {
    "trials": 2,
    "xgboost": {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 2, "min_child_weight": 20},
    "levels": SMALL_TRAINING["levels"],
}


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary tracking store; MLFLOW_TRACKING_URI overrides mlflow.yaml, as documented."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("DIAMOND_USER", "test-user")
    return tmp_path


def _config(folder: Path, name: str, settings: dict) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return str(path)


def test_train_logs_registers_and_gates_both_ways(store: Path, synthetic_champion: Path) -> None:
    from mlflow import MlflowClient

    # the session's synthetic history (1,500 customers, seed 0), read only: its own store is not used here
    history = synthetic_champion / "history"
    weak, good = _config(store, "weak", WEAK), _config(store, "good", GOOD)

    first = run_diamond("train", "--data", str(history), "--config", weak, cwd=store).stdout
    assert "registered diamond version 1" in first and "promoted: there was no champion" in first
    assert "mlflow ui --backend-store-uri sqlite:///" in first

    better = run_diamond("train", "--data", str(history), "--config", good, cwd=store).stdout
    assert "version 2" in better and "promoted: beats the champion" in better

    worse = run_diamond("train", "--data", str(history), "--config", weak, cwd=store).stdout
    assert "version 3" in worse and "refused: " in worse and "value Gini gain" in worse

    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias("diamond", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("diamond", "challenger").version) == "3"

    # the run of version 2: parameters, metrics, fingerprint, plots and the scoring artefact
    run_id = client.get_model_version("diamond", "2").run_id
    run = client.get_run(run_id)
    assert run.data.params["feature_set"] == "core_v1"
    assert run.data.tags["kind"] == "train" and len(run.data.tags["data_sha256"]) == 64
    for metric in ("churn_auc", "churn_brier", "value_gini", "baseline_rfm_churn_auc", "churn_tuning_trials"):
        assert metric in run.data.metrics
    assert 0.5 < run.data.metrics["churn_auc"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(run_id, "plots")}
    for plot in (
        "roc",
        "precision_recall",
        "calibration",
        "gain_lift",
        "value_deciles",
        "churn_contributions",
        "value_contributions",
        "value_buyer_contributions",  # the default hurdle's P(any value), beside E[value | any]
    ):
        assert f"plots/{plot}.png" in artifacts
    assert run.data.tags["value_model"] == "hurdle"
    assert {a.path for a in client.list_artifacts(run_id, "data")} == {"data/fingerprint.json"}

    # the champion's artefact loads from the registry alias and scores feature rows
    from features.build import build_scoring_rows
    from features.history import load_history
    from training.tracking import MlflowConfig, load_artefact

    artefact = load_artefact("models:/diamond@champion", MlflowConfig.load())
    rows = build_scoring_rows(
        load_history(history), artefact.cutoff, artefact.feature_set, artefact.horizon_days
    )
    scores = artefact.score(rows.to_pandas())
    assert len(scores) == rows.num_rows and scores["churn_probability"].between(0, 1).all()
    assert set(scores["tier"]) == {"diamond", "gold", "silver", "bronze"}

    listing = run_diamond("models", cwd=store).stdout
    assert "champion" in listing and "challenger" in listing and "promotion log" in listing
    assert listing.count("test-user") == 3  # one log entry per decision, with who
    assert "refused" in listing and "there was no champion" in listing

    forced = run_diamond(
        "promote", "--version", "3", "--data", str(history), "--force", "--note", "drill", cwd=store
    ).stdout
    assert "forced by test-user: drill" in forced
    assert str(client.get_model_version_by_alias("diamond", "champion").version) == "3"
    refused = run_diamond("promote", "--version", "2", "--data", str(history), cwd=store, check=False)
    assert refused.returncode == 0 and "promoted: beats the champion" in refused.stdout  # 2 beats 3 again
    audited = run_diamond("audit", "--action", "promote", cwd=store, env={"COLUMNS": "400"}).stdout
    assert "2 row(s)" in audited and "forced by test-user: drill" in audited  # the serving store's audit
    assert "promoted: beats the champion" in audited  # table: who, the version, the gate's reason
    shutil.rmtree(store)  # the store and its artifacts: nothing left behind
