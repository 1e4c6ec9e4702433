"""`diamond uplift` and the uplift ranking of `diamond score` end to end through the CLI: a small retention
world run by `diamond simulate` leaves a real SQLite store (alerts, controls, mature outcomes, the runs'
score tables) and a real MLflow registry; `diamond uplift` rebuilds every run's inputs from the history and
the score tables, fits, registers `diamond-uplift` and gates it; the next `diamond score` ranks its alerts by
uplift x value - cost with the gated champion, and by value at risk while there is none (docs/effect.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from serving import alert_store, store
from tests.helpers import SMALL_TRAINING, run_diamond

COST = 5.0


def _config(tmp_path: Path, sim: Path, uplift: dict[str, object]) -> dict[str, str]:
    alerts = {
        "control_share": 0.5,
        "rules": [{"kind": "at-risk", "min_churn_probability": 0.3}],
        "playbooks": {
            t: {"text": "account manager call", "due_within_hours": 24, "cost": COST}
            for t in ("diamond", "gold", "silver", "bronze")
        },
        "uplift": uplift,
    }
    serving: dict[str, object] = {
        "store_url": f"sqlite:///{sim / 'diamond.db'}",
        "scores_dir": str(sim / "scores"),
        "alerts": alerts,
        "drift": {"enabled": False},
    }
    (tmp_path / "serving.yaml").write_text(yaml.safe_dump(serving), encoding="utf-8")
    (tmp_path / "training.yaml").write_text(yaml.safe_dump(SMALL_TRAINING), encoding="utf-8")
    mlflow = {
        "tracking_uri": f"sqlite:///{sim / 'mlflow.db'}",
        "artifact_root": (sim / "mlartifacts").as_uri(),
    }
    (tmp_path / "mlflow.yaml").write_text(yaml.safe_dump(mlflow), encoding="utf-8")
    return {
        "DIAMOND_SERVING_CONFIG": str(tmp_path / "serving.yaml"),
        "DIAMOND_MLFLOW_CONFIG": str(tmp_path / "mlflow.yaml"),
        "DIAMOND_STORE_URL": f"sqlite:///{sim / 'diamond.db'}",  # over the test session's own store
    }


def test_diamond_uplift_fits_from_the_store_and_score_ranks_by_the_gated_champion(tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    # no uplift fit during the simulation (too few outcomes): every run ranks by value at risk
    env = _config(tmp_path, sim, {"min_outcomes": 100_000})
    args = ("simulate", "--out", str(sim), "--customers", "1000", "--periods", "3", "--top-k", "20")
    run_diamond(*args, "--config", str(tmp_path / "training.yaml"), cwd=tmp_path, env=env)
    eng = store.engine(f"sqlite:///{sim / 'diamond.db'}")
    before = alert_store.list_alerts(eng, status=None)
    assert len(before) > 0
    assert before["priority"].tolist() == pytest.approx(before["value_at_risk"].tolist())

    # not enough outcomes for the configured minimum: nothing registered, said so
    refused = run_diamond("uplift", "--data", str(sim / "history"), cwd=tmp_path, env=env)
    assert "not enough mature outcomes yet" in " ".join(refused.stdout.split())

    # the minimum met; a gate that lets any Qini through (min_qini_gain -1): this test is about the wiring,
    # bench/bench_uplift.py about the quality. No shrinkage, so the model's own tau ranks.
    env = _config(tmp_path, sim, {"min_outcomes": 20, "min_qini_gain": -1.0, "prior_outcomes": 0})
    done = run_diamond("uplift", "--data", str(sim / "history"), "--json", cwd=tmp_path, env=env)
    fitted = json.loads(done.stdout)
    assert fitted is not None, done.stdout + done.stderr
    assert fitted["version"] == "1" and fitted["promoted"] and fitted["learned_from"] >= 20
    runs = sorted(pd.to_datetime(before["opened_at"]).unique())
    assert fitted["as_of"] == f"{pd.Timestamp(runs[-1]):%Y-%m-%d}"  # judged on the latest mature run
    from mlflow import MlflowClient

    uri = f"sqlite:///{sim / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # never the worker's global registry
    assert client.get_model_version("diamond-uplift", "1").tags["gate"] == "promoted"
    assert str(client.get_model_version_by_alias("diamond-uplift", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("diamond", "champion").version) == "1"  # churn untouched

    # the next score run ranks its alerts by the champion: tau x predicted value - cost
    scored = run_diamond("score", "--data", str(sim / "history"), cwd=tmp_path, env=env)
    assert scored.returncode == 0
    after = alert_store.list_alerts(eng, status=None)
    last = after["updated_at"].max()
    fresh = after[(after["updated_at"] == last) & after["status"].isin(["open", "queued"])]
    assert len(fresh) > 0
    from features.history import load_history
    from training import uplift
    from training.tracking import MlflowConfig

    mlcfg = MlflowConfig.load(tmp_path / "mlflow.yaml")
    found = uplift.load_champion(mlcfg)
    assert found is not None and found[0] == "1"
    model = found[1]
    from serving.champion import ChampionHolder

    holder = ChampionHolder(mlcfg, "champion")
    holder.refresh()
    assert holder.current is not None
    rows = holder.current.artefact.feature_rows(
        load_history(sim / "history"), pd.Timestamp(last).to_pydatetime()
    )
    inputs = fresh.drop(columns=["reasons"]).merge(
        rows.drop(columns=["cutoff"], errors="ignore"), on="customer_id", how="left"
    )
    expected = model.predict(inputs) * inputs["predicted_value"].to_numpy() - COST
    assert fresh["priority"].tolist() == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-6)
    assert fresh["priority"].to_numpy() != pytest.approx(fresh["value_at_risk"].to_numpy())
    # the score table of a run that is gone: refused naming it, nothing registered
    for table in (sim / "scores").glob("*.parquet"):
        table.unlink()
    gone = run_diamond("uplift", "--data", str(sim / "history"), cwd=tmp_path, env=env, check=False)
    assert gone.returncode != 0 and "score table of the run" in " ".join(gone.stderr.split())
    assert len(client.search_model_versions("name='diamond-uplift'")) == 1
