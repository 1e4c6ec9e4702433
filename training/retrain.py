"""`diamond retrain`: retrain when the model has gone stale; safe to run from cron or any scheduler.

Reasons to train, in order: `--force`; drift (the latest batch run raised a model-health alert on the
current champion, when `retrain.on_drift`); the schedule (the newest registered version is
`retrain.every_days` old or more, or there is no champion). Without a reason it does nothing and says why.
The drift comes in as a value (serving.monitoring.latest_drift, read by diamond.flows.retrain): training
never imports serving.

Idempotent: a run is tagged `retrain_reason` beside its `data_sha256`; a drift or schedule retrain on data
that already had one for the same reason is skipped (the challenger was trained and gated then; training
again on the same data would only repeat it). `--force` always trains.

One at a time: the whole run (reading the drift, deciding, training: diamond.flows.retrain) holds an
exclusive, non-blocking OS lock (core.locks, `exclusive`) on a lock file next to the tracking store
(`$DIAMOND_RETRAIN_LOCK` overrides the path); a second run while one holds it exits at once, cleanly, saying
which process holds it since when. The OS releases the lock when the holder exits, even if it is killed, so
a crash never leaves a stale lock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import locks
from training.config import RetrainConfig

if TYPE_CHECKING:
    from training.config import TrainingConfig
    from training.pipeline import TrainResult
    from training.tracking import MlflowConfig

LOCK_ENV = "DIAMOND_RETRAIN_LOCK"
LOCK_NAME = "retrain.lock"


class Busy(RuntimeError):
    """Another retrain holds the lock."""


@dataclass(frozen=True)
class Signals:
    """What the decision looks at: the registry, and the latest drift (read by the caller from the serving
    store: serving.monitoring.latest_drift)."""

    champion: str | None
    newest_version: str | None
    newest_age_days: float | None  # None: nothing registered yet
    drift: dict[str, Any] | None  # serving.monitoring.latest_drift (None: no batch run measured drift)


@dataclass
class Outcome:
    trained: bool
    message: str
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (kind, in words)
    result: TrainResult | None = None  # when trained


def reasons(signals: Signals, settings: RetrainConfig, force: bool = False) -> list[tuple[str, str]]:
    """Pure: why to retrain now, strongest first: (kind, sentence) with kind force, drift or schedule."""
    out: list[tuple[str, str]] = []
    if force:
        out.append(("force", "forced (--force)"))
    d = signals.drift
    if settings.on_drift and d and d.get("alert") and d.get("model_version") == signals.champion:
        out.append(
            (
                "drift",
                f"drift on champion version {signals.champion} at {d['as_of']:%Y-%m-%d %H:%M}: "
                f"max PSI {d['max_psi']:.3f} ({d['worst']}), {d['over']} column(s) >= {d['psi_alert']:g}",
            )
        )
    every = settings.every_days
    if signals.champion is None:
        out.append(("schedule", "no champion yet"))
    elif every is not None and signals.newest_age_days is not None and signals.newest_age_days >= every:
        out.append(
            (
                "schedule",
                f"the newest version ({signals.newest_version}) is {signals.newest_age_days:.1f} days old "
                f"(schedule: every {every:g} days)",
            )
        )
    return out


def quiet_reason(signals: Signals, settings: RetrainConfig) -> str:
    """Pure: why nothing needs doing, in words."""
    parts = [f"champion version {signals.champion}"]
    if signals.newest_age_days is not None:
        every = settings.every_days
        schedule = f"every {every:g} days" if every is not None else "off"
        parts.append(
            f"newest version {signals.newest_version} is {signals.newest_age_days:.1f} days old "
            f"(schedule: {schedule})"
        )
    d = signals.drift
    if d is None:
        parts.append("no drift measured yet")
    elif d.get("model_version") != signals.champion:
        parts.append(f"the latest drift was measured on version {d['model_version']}, not the champion")
    else:
        state = "alert raised" if d["alert"] else "under the threshold"
        off = "" if settings.on_drift else ", retrain on drift is off"
        parts.append(f"latest drift max PSI {d['max_psi']:.3f} ({d['worst']}), {state}{off}")
    return "no retrain needed: " + "; ".join(parts)


def lock_path(mlcfg: MlflowConfig) -> Path:
    """$DIAMOND_RETRAIN_LOCK, else `retrain.lock` beside a SQLite tracking store, else in ./.diamond."""
    if env := os.environ.get(LOCK_ENV):
        return Path(env)
    uri = mlcfg.tracking_uri
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / LOCK_NAME
    return Path(".diamond").resolve() / LOCK_NAME


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the retrain lock on `path` for the block, or raise Busy at once naming the holder."""
    try:
        with locks.exclusive(path):
            yield
    except locks.Held as held:
        raise Busy(f"another retrain is running ({held.holder}); nothing done") from None


def read_signals(mlcfg: MlflowConfig, drift: dict[str, Any] | None, now: datetime | None = None) -> Signals:
    """The champion and the newest version's age (registry), beside the latest drift the caller passes in."""
    from mlflow.exceptions import MlflowException

    from training import registry

    client = mlcfg.client()
    try:
        found = list(client.search_model_versions(f"name = '{mlcfg.registered_model}'"))
    except MlflowException:
        found = []
    newest = max(found, key=lambda v: int(v.version), default=None)
    age = None
    if newest is not None:
        created = datetime.fromtimestamp(newest.creation_timestamp / 1000, UTC)
        age = ((now or datetime.now(UTC)) - created).total_seconds() / 86400
    return Signals(
        registry.champion_version(mlcfg),
        str(newest.version) if newest is not None else None,
        age,
        drift,
    )


def previous_run(mlcfg: MlflowConfig, sha256: str, kind: str) -> str | None:
    """The id of a training run on this exact data for this reason, if there is one."""
    client = mlcfg.client()
    runs = client.search_runs(
        [mlcfg.experiment_id(client)],
        filter_string=f"tags.data_sha256 = '{sha256}' and tags.retrain_reason = '{kind}'",
        max_results=1,
    )
    return str(runs[0].info.run_id) if runs else None


def run(
    data: Path,
    config: TrainingConfig,
    mlcfg: MlflowConfig,
    drift: dict[str, Any] | None,
    force: bool = False,
    cutoff: str | None = None,
) -> Outcome:
    """Decide on the registry and `drift`, and train a challenger through training.pipeline.train (log,
    register, gate, report) when there is a reason. Run it under `exclusive(lock_path(mlcfg))`, with the drift
    read under the same lock (diamond.flows.retrain does both)."""
    signals = read_signals(mlcfg, drift)
    why = reasons(signals, config.retrain, force)
    if not why:
        return Outcome(False, quiet_reason(signals, config.retrain))
    from features.build import end_of, parse_cutoff
    from features.history import load_history
    from training.pipeline import train

    history = load_history(data)
    t = parse_cutoff(cutoff) if cutoff else end_of(history)
    sha = history.until(t).fingerprint()["sha256"]
    kind, text = why[0]
    if kind != "force" and (done := previous_run(mlcfg, sha, kind)):
        return Outcome(
            False,
            f"already retrained on this data (sha256 {sha[:12]}) for {kind}: run {done}; "
            f"nothing done ({text})",
            why,
        )
    result = train(
        history,
        config,
        mlcfg,
        t,
        run_name=f"retrain ({kind}) {t:%Y-%m-%d}",
        tags={"retrain_reason": kind, "retrain_why": "; ".join(w for _, w in why)[:5000]},
    )
    return Outcome(True, f"retrained: {'; '.join(w for _, w in why)}", why, result)
