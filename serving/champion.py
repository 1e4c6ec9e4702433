"""The champion holder: the scoring artefact behind a registry alias (`champion` by default), loaded once and
swapped when the alias moves. The service, `diamond score` and the demo each hold one.

If a newly promoted version fails to load, the last good one keeps serving and `status()` says so.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from training.artefact import ScoringArtefact
from training.rfm import RfmReference
from training.tracking import MlflowConfig, load_artefact


@dataclass
class Served:
    artefact: ScoringArtefact
    version: str
    loaded_at: str
    rfm: RfmReference  # the RFM segment cut points, computed once per model (not per request)


@dataclass
class ChampionHolder:
    """The version behind `alias` (`current`), the last load error, and what GET /readyz and /model show."""

    mlcfg: MlflowConfig
    alias: str = "champion"
    current: Served | None = None
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def uri(self) -> str:
        return f"models:/{self.mlcfg.registered_model}@{self.alias}"

    def refresh(self) -> bool:
        """Load the alias's version if it differs from the one served. True when a new version loaded."""
        try:
            version = str(
                self.mlcfg.reader()  # a missing or empty tracking store is an error, never created
                .get_model_version_by_alias(self.mlcfg.registered_model, self.alias)
                .version
            )
            if self.current is not None and self.current.version == version:
                self.last_error = None  # the store answered again: an earlier outage is over
                return False
            artefact = load_artefact(f"models:/{self.mlcfg.registered_model}/{version}", self.mlcfg)
        except Exception as exc:  # any failure: keep serving what we have, and say why
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            return False
        with self._lock:
            self.current = Served(
                artefact, version, datetime.now(UTC).isoformat(), RfmReference.from_rank(artefact.churn.rfm)
            )
            self.last_error = None
        return True

    def status(self) -> dict[str, Any]:
        """GET /readyz's body: ready once a version is loaded; the last load error, if any."""
        served = self.current
        return {
            "ready": served is not None,
            "model_uri": self.uri,
            "version": served.version if served else None,
            "feature_set": served.artefact.feature_set if served else None,
            "loaded_at": served.loaded_at if served else None,
            "last_error": self.last_error,
            "serving_last_good": bool(served and self.last_error),
        }

    def describe(self) -> dict[str, Any] | None:
        """GET /model's body: the served version, its inputs, horizons, tier thresholds and validation
        metrics; None before a version is loaded."""
        served = self.current
        if served is None:
            return None
        art = served.artefact
        return {
            "version": served.version,
            "model_uri": self.uri,
            "feature_set": art.feature_set,
            "columns": art.columns,
            "cutoff": art.cutoff.isoformat(),
            "horizon_days": art.horizon_days,
            "label_horizon_days": art.label_horizon_days,
            "tiers": art.tiers,
            "value_objective": art.value.objective,
            "metrics": art.metrics,
        }
