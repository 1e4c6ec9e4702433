"""Batch scoring (`diamond score`): every eligible customer at `as_of` scored with the served model, written
as a Parquet score table and as the store's snapshot the service answers from. Wiring only."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.history import History
from serving import (
    alert_rules,
    alert_store,
    consent,
    delivery,
    erasure,
    monitoring,
    outbox,
    scoring,
    store,
    tier_store,
)
from serving.champion import Served
from serving.config import AlertConfig, ServingConfig

if TYPE_CHECKING:
    import sqlalchemy as sa

    from training.tracking import MlflowConfig


@dataclass
class BatchResult:
    scores: pd.DataFrame
    parquet: Path
    as_of: datetime
    version: str
    alerts: alert_store.SyncResult | None = None  # None: alerts off
    drift: monitoring.DriftResult | None = None  # None: drift watch off or no reference in the model
    delivery: delivery.DeliveryReport | None = None  # None: no endpoints configured


def score_history(
    history: History,
    as_of: datetime,
    served: Served,
    config: ServingConfig,
    mlcfg: MlflowConfig | None = None,
) -> BatchResult:
    """Score; apply tier hysteresis; write the Parquet table and the store snapshot; raise and de-duplicate
    alerts; watch drift (logged to MLflow when `mlcfg` is given); queue and deliver alerts. Each step is one
    transaction and safe to re-run for the same as_of, so a failed run can simply be run again; the previous
    snapshot stays until the new one is complete."""
    art = served.artefact
    eng = store.prepare(store.engine(config.store_url))  # refuses a store of another revision, writes nothing
    stopped = consent.no_contact(history, config.consent)  # a missing consent column: refused before work
    past = history.until(as_of)
    rows = erasure.without_erased(eng, art.feature_rows(past, as_of))  # erased customers stay erased
    scores = pd.DataFrame(
        scoring.score_records(art, rows, config.reasons, config.cold_start_min_purchase_days)
    )
    if scores.empty:
        raise ValueError(f"no customer is eligible at {as_of:%Y-%m-%d %H:%M}: nothing to score")
    order = list(config.tiers.order or art.tiers)
    rules = config.alert_rules(order)  # None: alerts are off
    tiered = tier_store.update_tiers(
        eng,
        as_of,
        scores[["customer_id"]].assign(tier_raw=scores["tier"]),
        order,
        config.tiers.demote_after,
    )
    tiered = tiered.set_index("customer_id").loc[scores["customer_id"]]
    scores = scores.assign(
        tier_raw=scores["tier"],
        tier=tiered["tier"].to_numpy(),
        previous_tier=tiered["previous_tier"].to_numpy(),
        as_of=as_of,
        model_version=served.version,
    )
    events = erasure.without_erased(eng, store.last_events(past))
    target = _write(scores, rows, served, config, eng, as_of, events)
    result = BatchResult(scores, target, as_of, served.version)
    if rules is not None:
        result.alerts = _raise_alerts(eng, scores, as_of, config, rules, stopped)
    result.drift = _watch_drift(eng, rows, scores, served, as_of, config, rules, mlcfg)
    if config.endpoints():
        result.delivery = deliver(eng, config)
    return result


def deliver(eng: sa.Engine, config: ServingConfig) -> delivery.DeliveryReport:
    return delivery.deliver_all(eng, config.endpoints(), config.webhooks)


def _write(
    scores: pd.DataFrame,
    rows: pd.DataFrame,
    served: Served,
    config: ServingConfig,
    eng: sa.Engine,
    as_of: datetime,
    events: pd.DataFrame,
) -> Path:
    table = scores.assign(reasons=[json.dumps(r) for r in scores["reasons"]])
    folder = Path(config.scores_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"scores_{as_of:%Y%m%dT%H%M%S}_v{served.version}.parquet"
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp)
    try:
        store.write_snapshot(
            eng,
            rows.drop(columns=["cutoff"]).assign(as_of=as_of, feature_set=served.artefact.feature_set),
            table,
            {
                "as_of": as_of.isoformat(),
                "model_version": served.version,
                "customers": len(scores),
                "parquet": str(target),
            },
            events,
        )
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
    return target


def _raise_alerts(
    eng: sa.Engine,
    scores: pd.DataFrame,
    as_of: datetime,
    config: ServingConfig,
    rules: AlertConfig,
    stopped: frozenset[str] | None,
) -> alert_store.SyncResult:
    """Alert rules over this run, synced with the open alerts; what needs notifying goes to the outbox for
    every endpoint (the webhook id carries alert id and version: retries and re-runs never duplicate)."""
    previous = dict(zip(scores["customer_id"], scores["previous_tier"], strict=True))
    readable = scores.assign(reasons=[_risk_reasons(r) for r in scores["reasons"]])
    candidates = alert_rules.evaluate(readable, rules, {k: v for k, v in previous.items() if v}, as_of)
    synced = alert_store.sync_alerts(eng, as_of, candidates, rules)
    consent.mark(eng, stopped or ())  # "do not contact" before anything is queued (serving.consent)
    _enqueue(eng, synced.notify, config)
    return synced


def _watch_drift(
    eng: sa.Engine,
    rows: pd.DataFrame,
    scores: pd.DataFrame,
    served: Served,
    as_of: datetime,
    config: ServingConfig,
    rules: AlertConfig | None,
    mlcfg: MlflowConfig | None,
) -> monitoring.DriftResult | None:
    """Drift of this run against the model's training population; a model-health alert goes to the outbox
    like any other (serving.monitoring)."""
    if not config.drift.enabled:
        return None
    found = monitoring.watch(
        eng, rows, scores, served.artefact, served.version, as_of, config.drift, rules, mlcfg
    )
    if found is not None:
        _enqueue(eng, found.alerts.notify, config)
    return found


def _enqueue(eng: sa.Engine, notify: list[tuple[int, int]], config: ServingConfig) -> None:
    """Queue each (alert id, version) for every endpoint; the webhook id carries both, so retries and
    re-runs never duplicate."""
    endpoints = config.endpoints()
    if endpoints and notify:
        for alert_id, version in notify:
            alert = alert_store.get_alert(eng, alert_id)
            if alert.get("do_not_contact"):
                continue
            payload = alert_rules.alert_payload(alert)
            for name in endpoints:
                outbox.enqueue(eng, name, payload, f"{alert_rules.webhook_id(alert_id, version)}-{name}")


def _risk_reasons(reasons: list[dict[str, Any]]) -> list[str]:
    """The sentences an agent acts on: what raises this customer's risk (else whatever matters most)."""
    raising = [r["text"] for r in reasons if r["contribution"] > 0]
    return raising or [r["text"] for r in reasons]
