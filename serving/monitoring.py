"""Drift watch: each batch scoring run compares its population with the champion's training population.

The PSI of every model input and of both scores against the reference that ships in the artefact
(training.drift) is stored in the serving store (tables `drift` and `drift_runs`, one set per as_of and model
version; re-running a run replaces its own rows), logged to MLflow as a run of the `<experiment>-monitoring`
experiment tagged with the model version, and judged against `drift:` in serving.yaml. When it crosses the
threshold a model-health alert is raised in the ordinary alerts table: customer_id `__model__` (reserved),
kind `model-health`, the worst columns in its reasons, the same one-live-alert rule, cool-down and outbox
delivery as customer alerts; it resolves itself (resolved_by `auto`) at the first run back under threshold.

`assess` and `health_candidates` are pure; the rest reads and writes the store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.clock import utc_naive, utc_now
from serving import alert_rules, alert_store
from serving.config import AlertConfig, DriftConfig
from serving.schema import drift_runs_table, drift_table
from training import drift

if TYPE_CHECKING:
    from training.artefact import ScoringArtefact
    from training.tracking import MlflowConfig

KIND = "model-health"
PLAYBOOK = "check the data feed; if the population really moved, `diamond retrain` (retrains on drift)"


@dataclass(frozen=True)
class Assessment:
    """One run's drift: PSI of every column (worst first), and whether it calls for a model-health alert."""

    psi: dict[str, float]
    watched: list[str]  # columns that count towards the alert
    over: list[str]  # watched columns at or over psi_alert, worst first
    alert: bool
    reasons: list[str] = field(default_factory=list)  # the worst drifted columns, in words

    @property
    def worst(self) -> tuple[str, float]:
        name = next(iter(c for c in self.psi if c in self.watched))
        return name, self.psi[name]


@dataclass
class DriftResult:
    assessment: Assessment
    alerts: alert_store.SyncResult
    mlflow_run_id: str | None = None


def assess(psi: Mapping[str, float], config: DriftConfig) -> Assessment:
    """Pure: which watched columns crossed `psi_alert`, and does that raise the alert (at least
    `min_features` model inputs, or any score)."""
    ordered = dict(sorted(psi.items(), key=lambda kv: (-kv[1], kv[0])))
    watched = [
        c
        for c in ordered
        if ("scores" in config.watch and c in drift.SCORES)
        or ("features" in config.watch and c not in drift.SCORES)
    ]
    over = [c for c in watched if ordered[c] >= config.psi_alert]
    inputs_over = [c for c in over if c not in drift.SCORES]
    alert = len(inputs_over) >= config.min_features or any(c in drift.SCORES for c in over)
    reasons = [
        f"{'score' if c in drift.SCORES else 'feature'} {c}: PSI {ordered[c]:.3f} >= {config.psi_alert:g}"
        for c in over[: config.top]
    ]
    if len(over) > config.top:
        reasons.append(f"and {len(over) - config.top} more column(s) over the threshold")
    return Assessment(ordered, watched, over, alert, reasons)


def health_candidates(assessment: Assessment, as_of: datetime) -> pd.DataFrame:
    """Pure: the model-health alert candidate of one run (no row when it does not fire, which resolves a
    live one), in serving.alert_rules' candidate shape."""
    rows = []
    if assessment.alert:
        rows.append(
            {
                "customer_id": alert_rules.MODEL_ID,
                "kind": KIND,
                "tier": None,
                "churn_probability": 0.0,
                "predicted_value": 0.0,
                "value_at_risk": 0.0,
                "reasons": assessment.reasons,
                "playbook": PLAYBOOK,
                "due_at": None,
                "fires": True,
            }
        )
    return pd.DataFrame(rows, columns=alert_rules.CANDIDATE_COLUMNS)


def watch(
    engine: Engine,
    rows: pd.DataFrame,
    scores: pd.DataFrame,
    artefact: ScoringArtefact,
    version: str,
    as_of: datetime,
    config: DriftConfig,
    alert_config: AlertConfig | None = None,
    mlcfg: MlflowConfig | None = None,
) -> DriftResult | None:
    """Measure, store, log and alert on one batch run's drift. None when the model ships no reference (one
    trained before drift references existed)."""
    if artefact.drift_reference is None:
        return None
    psi = drift.compare(artefact.drift_reference, drift.model_frame(rows, scores, artefact.columns))
    found = assess(psi, config)
    record(engine, found, version, as_of, len(scores), config)
    synced = raise_health(engine, found, as_of, alert_config)
    run_id = log_to_mlflow(mlcfg, found, version, as_of, config) if mlcfg is not None else None
    return DriftResult(found, synced, run_id)


def raise_health(
    engine: Engine, found: Assessment, as_of: datetime, alert_config: AlertConfig | None = None
) -> alert_store.SyncResult:
    """Open, update or auto-resolve the model-health alert (cool-down and re-notification as configured for
    customer alerts; the defaults when alerts are off)."""
    return alert_store.sync_alerts(
        engine,
        as_of,
        health_candidates(found, utc_naive(as_of)),
        alert_config or AlertConfig(),
        model=True,
    )


def record(
    engine: Engine, found: Assessment, version: str, as_of: datetime, customers: int, config: DriftConfig
) -> None:
    """Replace this (as_of, version)'s drift rows and summary, in one transaction."""
    when = utc_naive(as_of)
    worst, top = found.worst
    with engine.begin() as conn:
        for t in (drift_table, drift_runs_table):
            conn.execute(sa.delete(t).where(t.c.as_of == when, t.c.model_version == version))
        conn.execute(
            sa.insert(drift_table),
            [
                {
                    "as_of": when,
                    "model_version": version,
                    "name": name,
                    "kind": "score" if name in drift.SCORES else "feature",
                    "psi": value,
                    "watched": name in found.watched,
                }
                for name, value in found.psi.items()
            ],
        )
        conn.execute(
            sa.insert(drift_runs_table).values(
                as_of=when,
                model_version=version,
                created_at=utc_now(),
                customers=customers,
                max_psi=top,
                worst=worst,
                over=len(found.over),
                psi_alert=config.psi_alert,
                alert=found.alert,
                reasons=json.dumps(found.reasons),
            )
        )


def latest_drift(engine: Engine) -> dict[str, Any] | None:
    """The most recent scoring run's drift (for the dashboard and `diamond retrain`): its summary (as_of,
    model_version, max_psi, worst, over, psi_alert, alert, reasons) and `psi`, one row per column worst
    first (name, kind, psi, watched). None before the first run with a drift reference."""
    if not sa.inspect(engine).has_table(drift_runs_table.name):
        return None
    with engine.connect() as conn:
        run = (
            conn.execute(sa.select(drift_runs_table).order_by(drift_runs_table.c.created_at.desc()).limit(1))
            .mappings()
            .first()
        )
        if run is None:
            return None
        t = drift_table
        psi = (
            conn.execute(
                sa.select(t.c.name, t.c.kind, t.c.psi, t.c.watched)
                .where(t.c.as_of == run["as_of"], t.c.model_version == run["model_version"])
                .order_by(t.c.psi.desc(), t.c.name)
            )
            .mappings()
            .all()
        )
    return {**dict(run), "reasons": json.loads(run["reasons"]), "psi": [dict(r) for r in psi]}


def log_to_mlflow(
    mlcfg: MlflowConfig, found: Assessment, version: str, as_of: datetime, config: DriftConfig
) -> str:
    """One run in the `<experiment>-monitoring` experiment: psi_<column> metrics, max_psi and over, the
    threshold as params, tagged with the model version and as_of."""
    from mlflow.entities import Metric, Param

    client = mlcfg.client()
    stamp = int(utc_now().timestamp() * 1000)
    run = client.create_run(
        mlcfg.experiment_id(client, f"{mlcfg.experiment}-monitoring"),
        run_name=f"drift {as_of:%Y-%m-%d %H:%M} v{version}",
        tags={
            "model_version": version,
            "as_of": utc_naive(as_of).isoformat(),
            "alert": str(found.alert).lower(),
        },
    )
    worst, top = found.worst
    metrics = [Metric(f"psi_{_metric_name(k)}", float(v), stamp, 0) for k, v in found.psi.items()]
    metrics += [Metric("max_psi", float(top), stamp, 0), Metric("over", float(len(found.over)), stamp, 0)]
    params = [
        Param("psi_alert", str(config.psi_alert)),
        Param("min_features", str(config.min_features)),
        Param("watch", ",".join(config.watch)),
        Param("worst", worst),
    ]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def _metric_name(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces: anything else becomes _."""
    return re.sub(r"[^\w\-./ ]", "_", name)
