"""The registry: aliases `champion` and `challenger`, the promotion gate and the promotion log.

A new training run registers a version and points `challenger` at it. The gate scores the challenger and
the champion on the same rows, the latest validation window (label horizon), and promotes only when the
challenger's churn ROC-AUC and value Gini gain at least the configured minimums and its Brier score is no
worse than allowed (training.yaml `gate`). The champion may have trained on that window, which favours it:
the gate errs towards keeping what works. Every decision, automatic or forced, is a run in the
`<experiment>-promotions` MLflow experiment (who, when, versions, metrics, why), so the log lives in the
same store as the models. Nothing is promoted by file path or by the deprecated stages.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from training import metrics
from training.artefact import ScoringArtefact
from training.config import GateConfig
from training.tracking import MlflowConfig, load_artefact

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION, CHALLENGER = "champion", "challenger"
Window = Callable[[ScoringArtefact], pd.DataFrame]  # rows with labels for an artefact's feature set


@dataclass
class Decision:
    promoted: bool
    challenger: str
    champion: str | None  # the champion before the decision
    reason: str
    scores: dict[str, float] = field(default_factory=dict)  # challenger_* and champion_* on the window
    who: str = ""
    when: str = ""


def window_scores(artefact: ScoringArtefact, rows: pd.DataFrame) -> dict[str, float]:
    """The gate's metrics of one artefact on labelled rows, at the label horizon."""
    y, value = rows["churned"].to_numpy(), rows["future_value"].to_numpy()
    p = artefact.churn.predict_label_horizon(rows)
    return {
        "churn_auc": metrics.roc_auc(y, p),
        "churn_brier": metrics.brier(y, p),
        "value_gini": metrics.normalized_gini(value, artefact.value.predict_label_horizon(rows)),
    }


def passes_gate(
    challenger: dict[str, float], champion: dict[str, float], gate: GateConfig
) -> tuple[bool, str]:
    """Pure: does the challenger beat the champion by the configured margins? And why (in words)."""
    auc_gain = challenger["churn_auc"] - champion["churn_auc"]
    gini_gain = challenger["value_gini"] - champion["value_gini"]
    brier_up = challenger["churn_brier"] - champion["churn_brier"]
    failures = []
    if auc_gain < gate.min_churn_auc_gain:
        failures.append(f"churn AUC gain {auc_gain:+.4f} < {gate.min_churn_auc_gain:+.4f}")
    if gini_gain < gate.min_value_gini_gain:
        failures.append(f"value Gini gain {gini_gain:+.4f} < {gate.min_value_gini_gain:+.4f}")
    if brier_up > gate.max_brier_increase:
        failures.append(f"churn Brier worse by {brier_up:+.4f} > {gate.max_brier_increase:+.4f}")
    summary = f"AUC {auc_gain:+.4f}, Gini {gini_gain:+.4f}, Brier {brier_up:+.4f}"
    if failures:
        return False, "refused: " + "; ".join(failures) + f" ({summary})"
    return True, f"promoted: beats the champion on the latest validation window ({summary})"


def register_challenger(mlcfg: MlflowConfig, version: str) -> None:
    mlcfg.client().set_registered_model_alias(mlcfg.registered_model, CHALLENGER, version)


def champion_version(mlcfg: MlflowConfig) -> str | None:
    return _alias(mlcfg.client(), mlcfg.registered_model, CHAMPION)


def decide(
    mlcfg: MlflowConfig,
    version: str,
    window: Window,
    gate: GateConfig,
    force: bool = False,
    note: str = "",
) -> Decision:
    """Apply the gate to `version` (or force it), move the aliases, and log the decision."""
    client = mlcfg.client()
    name = mlcfg.registered_model
    client.get_model_version(name, version)  # fails clearly for an unknown version
    champion = _alias(client, name, CHAMPION)
    decision = Decision(False, version, champion, "", who=_who(), when=datetime.now(UTC).isoformat())
    if champion == version:
        decision.reason = f"version {version} is already the champion"
    elif champion is None:
        decision.promoted, decision.reason = True, "promoted: there was no champion"
    else:
        challenger = load_artefact(f"models:/{name}/{version}", mlcfg)
        incumbent = load_artefact(f"models:/{name}/{champion}", mlcfg)
        mine, theirs = (
            window_scores(challenger, window(challenger)),
            window_scores(incumbent, window(incumbent)),
        )
        decision.scores = {
            **{f"challenger_{k}": v for k, v in mine.items()},
            **{f"champion_{k}": v for k, v in theirs.items()},
        }
        decision.promoted, decision.reason = passes_gate(mine, theirs, gate)
        if force and not decision.promoted:
            decision.promoted, decision.reason = (
                True,
                f"forced by {decision.who}: {note or 'no reason given'}",
            )
            decision.reason += f" (gate said {passes_gate(mine, theirs, gate)[1]})"
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        if _alias(client, name, CHALLENGER) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, version, "gate", "promoted" if decision.promoted else "refused")
    _log(mlcfg, client, decision, note)
    return decision


def promotion_log(mlcfg: MlflowConfig) -> list[dict[str, Any]]:
    """Every gate decision, newest first."""
    client = mlcfg.reader()
    found = client.get_experiment_by_name(f"{mlcfg.experiment}-promotions")
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000
    )
    return [{**r.data.params, **{k: round(v, 4) for k, v in r.data.metrics.items()}} for r in runs]


def versions(mlcfg: MlflowConfig) -> list[dict[str, Any]]:
    """Registered versions, newest first, with their aliases and validation metrics."""
    client = mlcfg.reader()
    name = mlcfg.registered_model
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(str(v), []).append(alias)
    out = []
    for mv in client.search_model_versions(f"name='{name}'"):
        m = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
        out.append(
            {
                "version": str(mv.version),
                "aliases": ",".join(sorted(by_version.get(str(mv.version), []))),
                "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).strftime(
                    "%Y-%m-%d %H:%M"
                ),
                "feature_set": mv.tags.get("feature_set", ""),
                "gate": mv.tags.get("gate", ""),
                "churn_auc": m.get("churn_auc"),
                "churn_brier": m.get("churn_brier"),
                "value_gini": m.get("value_gini"),
                "run_id": mv.run_id,
            }
        )
    return sorted(out, key=lambda r: int(r["version"]), reverse=True)


def alias_version(mlcfg: MlflowConfig, name: str, alias: str) -> str | None:
    """The version of registered model `name` behind `alias`, or None (also for an unknown model)."""
    return _alias(mlcfg.client(), name, alias)


def log_decision(mlcfg: MlflowConfig, decision: Decision, note: str = "") -> None:
    """A gate decision as a run in `<experiment>-promotions` (also used by training.uplift's gate)."""
    _log(mlcfg, mlcfg.client(), decision, note)


def _alias(client: MlflowClient, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _who() -> str:
    try:
        return os.environ.get("DIAMOND_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _log(mlcfg: MlflowConfig, client: MlflowClient, decision: Decision, note: str) -> None:
    run = client.create_run(
        mlcfg.experiment_id(client, f"{mlcfg.experiment}-promotions"),
        run_name=f"v{decision.challenger} {'promoted' if decision.promoted else 'refused'}",
    )
    params = {
        "decision": "promoted" if decision.promoted else "refused",
        "challenger": decision.challenger,
        "champion_before": decision.champion or "",
        "who": decision.who,
        "when": decision.when,
        "reason": decision.reason[:5000],
        "note": note[:500],
    }
    for k, v in params.items():
        client.log_param(run.info.run_id, k, v)
    for k, score in decision.scores.items():
        client.log_metric(run.info.run_id, k, score)
    client.set_terminated(run.info.run_id)
