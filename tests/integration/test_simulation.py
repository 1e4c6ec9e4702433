"""`diamond simulate` end to end on a small retention world (features/datasets/world.py): the real command,
the real batch runs into a real SQLite store, a real MLflow store. What the store recorded must be what the
world's potential outcomes say happened: each treated alert's outcome is its outcome with the action, each
control's its outcome without (so the world acted on exactly the treated), and the true effect the command
reports is the sum of the exact individual effects. Pure parts: tests/unit/test_world.py."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from serving import outcomes, store
from tests.helpers import SMALL_TRAINING, run_diamond

ALERTS = {
    "control_share": 0.5,
    "rules": [{"kind": "at-risk", "min_churn_probability": 0.3}],
    "playbooks": {t: {"text": "account manager call", "due_within_hours": 24, "cost": 5} for t in
                  ("diamond", "gold", "silver", "bronze")},
    "uplift": {"min_outcomes": 20},
}  # fmt: skip


def test_simulate_acts_on_the_treated_and_the_store_agrees_with_the_potential_outcomes(
    tmp_path: Path,
) -> None:
    (tmp_path / "serving.yaml").write_text(
        yaml.safe_dump({"alerts": ALERTS, "drift": {"enabled": False}}), encoding="utf-8"
    )
    (tmp_path / "training.yaml").write_text(yaml.safe_dump(SMALL_TRAINING), encoding="utf-8")
    env = {"DIAMOND_SERVING_CONFIG": str(tmp_path / "serving.yaml")}
    out = tmp_path / "sim"
    args = ("simulate", "--out", str(out), "--customers", "1000", "--periods", "3", "--top-k", "20")
    args += ("--capacity", "40")  # the team works the 40 alerts of highest priority in each run
    done = run_diamond(*args, "--config", str(tmp_path / "training.yaml"), cwd=tmp_path, env=env)
    assert "estimated vs true effect" in done.stdout and "uplift at" in done.stdout

    summary = json.loads((out / "simulation.json").read_text(encoding="utf-8"))
    [fit] = summary["uplift"]  # fitted once: on run 1's outcomes, judged on run 2's, at run 3
    ranked_last = "uplift v1" if fit["promoted"] else "p x value"  # promoted only if it beats P x value
    assert [r["ranked_by"] for r in summary["runs"]] == ["p x value", "p x value", ranked_last]
    assert fit["promoted"] == (fit["qini"] >= fit["p_x_value_qini"])
    assert all(r["worked"] == min(r["alerts"], 40) and r["controls"] > 0 for r in summary["runs"])
    assert any(r["alerts"] > 40 for r in summary["runs"])  # somebody was left unworked

    # the store, read here, against the world's potential outcomes
    stored = outcomes.read(store.engine(f"sqlite:///{out / 'diamond.db'}"))
    assert stored["mature"].all() and set(stored["outcome"]) <= {"saved", "lost"}
    pot = pd.read_parquet(out / "potential_outcomes.parquet")
    got = stored.assign(opened_at=pd.to_datetime(stored["opened_at"])).merge(
        pot.assign(opened_at=pd.to_datetime(pot["opened_at"])),
        on=["customer_id", "opened_at"],
        validate="1:1",
    )
    assert len(got) == len(stored) == len(pot)
    treated, held = got[got["arm"] == "treated"], got[got["arm"] == "control"]
    assert not held["acted"].any() and treated["acted"].sum() == sum(r["worked"] for r in summary["runs"])
    worked, unworked = treated[treated["acted"]], treated[~treated["acted"]]
    assert (worked["outcome"] == "saved").astype(float).tolist() == worked["saved_if_treated"].tolist()
    assert worked["value_after"].tolist() == pytest.approx(worked["value_if_treated"].tolist())
    assert (unworked["outcome"] == "saved").astype(float).tolist() == unworked["saved_if_not"].tolist()
    assert (held["outcome"] == "saved").astype(float).tolist() == held["saved_if_not"].tolist()
    assert held["value_after"].tolist() == pytest.approx(held["value_if_not"].tolist())
    # somebody was really kept, and nobody lost by a call
    assert pot["effect_saved"].min() >= 0 and worked["effect_saved"].sum() > 0

    # the truth it reports is the sum of the exact effects of the alerts worked (an alert nobody worked had
    # none); the estimate's interval holds it
    overall = next(r for r in summary["truth"] if r["run"] == "(all)")
    assert overall["true_saved"] == worked["effect_saved"].sum()
    assert overall["true_value"] == pytest.approx(worked["effect_value"].sum())
    assert (overall["treated"], overall["control"]) == (len(treated), len(held))
    assert overall["estimated_low"] <= overall["true_saved"] <= overall["estimated_high"]
    assert overall["saved_within"]

    # the uplift model: fitted on run 1, judged on run 2, a version of its own registered model
    assert fit["version"] == "1" and fit["learned_from"] > 20
    from mlflow import MlflowClient

    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # never the worker's global registry
    assert client.get_model_version("diamond-uplift", "1").tags["gate"] == (
        "promoted" if fit["promoted"] else "refused"
    )
    assert str(client.get_model_version_by_alias("diamond", "champion").version) == "1"  # churn model

    # too many periods for the world: refused before anything is made
    refused = run_diamond(
        "simulate", "--out", str(tmp_path / "nope"), "--periods", "40", cwd=tmp_path, env=env, check=False
    )
    assert refused.returncode == 2 and "end after the world" in " ".join(refused.stderr.split())
    assert not (tmp_path / "nope").exists()
    share = run_diamond(
        "simulate",
        "--out",
        str(tmp_path / "nope"),
        "--control-share",
        "1.5",
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert share.returncode == 2 and "--control-share must be in [0, 1), got 1.5" in " ".join(
        share.stderr.split()
    )
    assert not (tmp_path / "nope").exists()
