"""The champion holder: the scoring artefact behind a registry alias (`champion` by default), loaded once and
swapped when the alias moves. The service, `diamond score` and the demo each hold one.

If a newly promoted version fails to load, the last good one keeps serving and `status()` says so.

Beside it, what the served model needs of the latest batch snapshot, held in memory (`ModelInputs`): each
snapshot customer's model inputs as one float matrix, and what depends on the row alone (RFM rank and
segment, cold start, as-of), computed once per model and snapshot. `StoreSnapshot` keeps it current: it
rebuilds when the served model changes or a new batch run lands in the store, so a by-id request is a
dictionary lookup and a few array operations instead of a store query and per-request frames.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from serving import scoring, store
from serving.schema import score_runs_table
from training.artefact import ScoringArtefact
from training.rfm import rfm_segments
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
                self.mlcfg.client()
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


@dataclass(frozen=True)
class ModelInputs:
    """The snapshot rows of one model, in memory. `x` holds the model inputs (the artefact's columns, in
    order, as float64: the values a reason shows too); `rows` keeps the frame only for models whose inputs
    are not all numbers (text attributes), which are scored through the frame path (serving.scoring)."""

    served: Served
    run: object  # the store's run marker this was built at (StoreSnapshot)
    ids: list[str]  # row -> customer id
    index: dict[str, int]  # customer id -> row
    x: np.ndarray
    rank: np.ndarray  # the churn model's RFM rank of each row
    segment: np.ndarray  # RFM segment names
    cold: np.ndarray  # cold-start flags
    as_of: list[str]  # each row's snapshot as-of, as the store gives it
    rows: pd.DataFrame | None = None

    @classmethod
    def build(cls, served: Served, rows: pd.DataFrame, run: object, cold_start_min_purchase_days: int) -> ModelInputs:
        """Everything per row that does not need the boosters, computed once for the whole snapshot."""
        art = served.artefact
        rows = rows.reset_index(drop=True)
        ids = rows["customer_id"].astype(str).tolist()
        numeric = not art.churn.encoder.categories and set(art.columns) <= set(rows.columns)
        if rows.empty:
            empty = np.zeros(0)
            return cls(served, run, [], {}, np.zeros((0, len(art.columns))), empty, empty, empty, [])
        x = rows[art.columns].to_numpy(dtype=np.float64, na_value=np.nan) if numeric else np.zeros((0, 0))
        return cls(
            served=served,
            run=run,
            ids=ids,
            index={cid: i for i, cid in enumerate(ids)},
            x=np.ascontiguousarray(x),
            rank=art.churn.rfm.score(rows),
            segment=rfm_segments(rows, served.rfm).to_numpy(),
            cold=scoring.cold_start(rows, cold_start_min_purchase_days),
            as_of=[str(v) for v in rows["as_of"]] if "as_of" in rows else [""] * len(rows),
            rows=None if numeric else rows,
        )


class StoreSnapshot:
    """The store's feature snapshot as `ModelInputs` of the served model, rebuilt when the model changes or
    a batch run is logged (a new snapshot, or one put back). On a SQLite file the run log is read again only
    when the file (or its write-ahead log) changed, and at least every `recheck_s`; on other stores, at
    every request (one small query). The request that finds a new snapshot waits for it to load; requests
    never see half of one."""

    def __init__(self, eng: sa.Engine, cold_start_min_purchase_days: int, recheck_s: float = 2.0) -> None:
        self.eng = eng
        self.cold_days = cold_start_min_purchase_days
        self.recheck_s = recheck_s
        database = eng.url.database if eng.dialect.name == "sqlite" else None
        self._files = [database, f"{database}-wal"] if database and database != ":memory:" else []
        self._stamp: tuple[tuple[int, int], ...] | None = None
        self._checked = 0.0
        self._run: object = None
        self._current: ModelInputs | None = None
        self._lock = threading.Lock()

    def current(self, served: Served) -> bool:
        """True when `inputs(served)` would answer from memory, without loading anything."""
        held = self._current
        return held is not None and held.served is served and held.run == self._latest_run()

    def inputs(self, served: Served) -> ModelInputs:
        run = self._latest_run()
        current = self._current
        if current is not None and current.served is served and current.run == run:
            return current
        with self._lock:
            current = self._current
            if current is None or current.served is not served or current.run != run:
                rows = read_snapshot(self.eng)
                current = ModelInputs.build(served, rows, run, self.cold_days)
                self._current = current
                gc.freeze()  # the rows held for long: kept out of full collections (a latency tail)
        return current

    def _latest_run(self) -> object:
        if self._files:
            stamp = tuple(_stat(f) for f in self._files)
            now = time.monotonic()
            if stamp == self._stamp and now - self._checked < self.recheck_s:
                return self._run
            self._stamp, self._checked = stamp, now
        t = score_runs_table
        try:
            with self.eng.connect() as con:
                self._run = tuple(con.execute(sa.select(sa.func.max(t.c.id), sa.func.count())).one())
        except sa.exc.DBAPIError:  # no store or no run log yet: no snapshot
            self._run = None
        return self._run


def read_snapshot(eng: sa.Engine) -> pd.DataFrame:
    """The whole feature snapshot, read as `store.read_rows` reads a few of its rows (the same values and
    types); an empty frame before the first batch run."""
    try:
        with eng.connect() as con:
            result = con.execute(sa.text(f"SELECT * FROM {store.FEATURES}"))
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    except sa.exc.DBAPIError as exc:  # no snapshot yet
        if "no such table" in str(exc) or "does not exist" in str(exc):
            return pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
        raise


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)
