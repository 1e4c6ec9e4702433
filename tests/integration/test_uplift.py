"""The uplift model in a real MLflow store (training/uplift.py): logged with its metrics, registered as
versions of `<registered_model>-uplift` (never of the churn model), gated on later outcomes like the churn
champion, every decision in the promotions log, and loaded back as the champion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers.frames import known_effect
from training import registry, uplift
from training.tracking import MlflowConfig


def outcomes(n: int, seed: int, effect: float = 0.4) -> pd.DataFrame:
    """Half treated at random; P(saved) = 0.3, plus `effect` for treated customers of segment b."""
    return known_effect(n, seed, effect, value=False)


@pytest.fixture
def mlcfg(tmp_path: Path) -> MlflowConfig:
    return MlflowConfig().model_copy(
        update={
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifact_root": (tmp_path / "artifacts").as_uri(),
        }
    )


def test_register_gate_and_load_the_uplift_champion(mlcfg: MlflowConfig) -> None:
    later = outcomes(2000, 9)
    assert uplift.load_champion(mlcfg) is None  # no uplift model yet: rank by P x value

    good = uplift.fit(outcomes(3000, 1), "x", rounds=40)
    first = uplift.log(mlcfg, good, uplift.evaluate(good, later), {"judged_on": "test"})
    assert first.version == "1"
    client = mlcfg.client()
    assert client.get_registered_model(uplift.registered_name(mlcfg)).name == "diamond-uplift"
    assert client.get_run(first.run_id).data.metrics["qini"] == pytest.approx(
        uplift.evaluate(good, later)["qini"]
    )
    assert registry.alias_version(mlcfg, "diamond-uplift", registry.CHALLENGER) == "1"
    assert registry.alias_version(mlcfg, "diamond", registry.CHAMPION) is None  # the churn model untouched
    decided = uplift.decide(mlcfg, first.version, later, 0.0)
    assert decided.promoted and decided.reason == "promoted: there was no uplift champion"
    champion = uplift.load_champion(mlcfg)
    assert champion is not None and champion[0] == "1"
    assert np.allclose(champion[1].predict(later), good.predict(later))

    # a challenger that learned from outcomes without any effect ranks worse on the same later outcomes
    blind = uplift.fit(outcomes(3000, 2, effect=0.0), "x", rounds=40)
    second = uplift.log(mlcfg, blind, uplift.evaluate(blind, later), {})
    refused = uplift.decide(mlcfg, second.version, later, 0.0)
    assert not refused.promoted and refused.reason.startswith("refused: Qini gain over the uplift champion -")
    assert refused.scores["champion_qini"] > refused.scores["challenger_qini"]
    assert uplift.load_champion(mlcfg) is not None and uplift.load_champion(mlcfg)[0] == "1"  # type: ignore[index]
    assert client.get_model_version("diamond-uplift", "2").tags["gate"] == "refused"

    # a better one passes; a minimum gain it does not reach refuses it
    better = uplift.fit(outcomes(6000, 3), "x", rounds=40)
    third = uplift.log(mlcfg, better, uplift.evaluate(better, later), {})
    margin = uplift.evaluate(better, later)["qini"] - uplift.evaluate(good, later)["qini"]
    assert not uplift.decide(mlcfg, third.version, later, abs(margin) + 0.01).promoted
    # where the outcomes carry the value at risk, the model must also rank them better than P x value does:
    # a value at risk that puts segment b first is hard to beat
    ranked = later.assign(value_at_risk=(later["segment"] == "b") * 100.0 + later["x2"])
    assert uplift.baseline(ranked) is not None and uplift.baseline(ranked)["qini"] > 0.01  # type: ignore[index]
    vs_pxv = uplift.decide(mlcfg, third.version, ranked, 0.0)
    assert vs_pxv.scores["p_x_value_qini"] == pytest.approx(uplift.baseline(ranked)["qini"])  # type: ignore[index]
    assert vs_pxv.scores["p_x_value_qini"] > vs_pxv.scores["challenger_qini"] and not vs_pxv.promoted
    log = registry.promotion_log(mlcfg)
    assert [r["decision"] for r in log][1:] == ["refused", "refused", "promoted"]  # newest first
    assert all(r["note"].startswith("diamond-uplift version") for r in log)
