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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from serving import scoring, store
from serving.schema import audit_table, score_runs_table
from training.artefact import ScoringArtefact
from training.rfm import RfmReference, rfm_segments
from training.tiers import assign_tiers
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
    prepare: Callable[[Served], object] | None = None  # run on a new version before it serves (its snapshot)
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
            served = Served(
                artefact, version, datetime.now(UTC).isoformat(), RfmReference.from_rank(artefact.churn.rfm)
            )
            if self.prepare is not None:
                self.prepare(served)
        except Exception as exc:  # any failure: keep serving what we have, and say why
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            return False
        with self._lock:
            self.current = served
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
        """GET /model's body: the served version, its inputs, horizons, tier thresholds, what its value
        measures (value_target), validation metrics and its time-to-churn spec (None: an older model, the
        curve fields are null); None before a version is loaded."""
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
            "value_model": art.value.kind,  # training.models.ValueModel
            "value_target": art.value_target.to_dict(),  # revenue or margin (with its costs-to-serve)
            "metrics": art.metrics,
            "time_to_churn": art.curve.to_dict() if art.curve is not None else None,  # None: no curve
        }


CHUNK = 50_000  # rows scored at a time while a snapshot loads (bounds the contributions matrix)


@dataclass(frozen=True)
class ModelInputs:
    """The snapshot scored by one model, in memory: per row the model inputs (`x`, the artefact's columns in
    order as float64, which reasons show), and everything serving.scoring.score_records derives from a row
    and the model alone, computed for all rows at once when the snapshot or the model changes: churn
    probability, value, value at risk, tier, RFM rank and segment, cold start, time to churn, and the
    reasons' columns and effects (XGBoost's pred_contribs, the costly part: ~0.1 ms a row for 300 trees,
    so never per request). `rows` keeps the frame instead for models whose inputs are not all numbers
    (text attributes), which are scored per request through serving.scoring."""

    served: Served
    run: object  # the store's run marker this was built at (StoreSnapshot)
    ids: list[str]  # row -> customer id
    index: dict[str, int]  # customer id -> row
    as_of: list[str]  # each row's snapshot as-of, as the store gives it
    x: np.ndarray  # (rows, scoring.reason_names): the model's inputs, the RFM rank, the contract's own
    rank: np.ndarray  # the churn model's RFM rank
    churn: np.ndarray
    value: np.ndarray
    at_risk: np.ndarray
    tier: np.ndarray  # tier names
    segment: np.ndarray  # RFM segment names
    cold: np.ndarray  # cold-start flags
    model: np.ndarray  # which model scored each row (training.contract: contract_hazard | purchase_silence)
    curve: np.ndarray  # (rows, serving.scoring.CURVE_COLUMNS) time to churn; NaN: undefined (null)
    top: np.ndarray  # (rows, reasons) reason_names index of each reason, largest |effect| first; -1: none
    effect: np.ndarray  # (rows, reasons) the effects on churn risk of those columns
    contribution: np.ndarray  # the effects as answers show them: round(effect, 6)
    rows: pd.DataFrame | None = None
    cache: dict[Any, Any] = field(default_factory=dict)  # serving.online's rendered reasons of this snapshot
    answers: list[str] = field(default_factory=list)  # serving.online's rendered answers, when all are kept

    @classmethod
    def build(
        cls, served: Served, rows: pd.DataFrame, run: object, cold_start_min_purchase_days: int, reasons: int
    ) -> ModelInputs:
        """Score every snapshot row once, with the arithmetic of serving.scoring (tested equal)."""
        art = served.artefact
        rows = rows.reset_index(drop=True)
        n, k = len(rows), len(art.columns)
        extra = art.contract_only_columns  # the contract model's own inputs, which its reasons may name
        ids = rows["customer_id"].astype(str).tolist() if n else []
        numeric = (
            not art.churn.encoder.categories
            and not (art.contract is not None and art.contract.encoder.categories)
            and set(art.columns + extra) <= set(rows.columns)
        )
        rank = art.churn.rfm.score(rows) if n else np.zeros(0)
        # one column per serving.scoring.reason_names: the model's inputs, the RFM rank, the contract's own
        x = (
            np.c_[
                rows[art.columns].to_numpy(dtype=np.float64, na_value=np.nan),
                rank,
                rows[extra].to_numpy(dtype=np.float64, na_value=np.nan).reshape(n, len(extra)),
            ]
            if n and numeric
            else np.zeros((0, k + 1 + len(extra)))
        )
        churn, value = np.zeros(len(x)), np.zeros(len(x))
        top, effect = np.full((len(x), reasons), -1, dtype=np.int16), np.zeros((len(x), reasons))
        for lo in range(0, len(x), CHUNK):
            part = slice(lo, lo + CHUNK)
            churn[part], value[part], top[part], effect[part] = _score_rows(
                art, x[part, :k], rank[part], reasons
            )
        if len(x):  # customers under contract: the reasons of their cancellation hazard
            contract, theirs = scoring.contract_effects(art, rows)
            if contract.any():
                order = np.argsort(-np.abs(theirs), axis=1, kind="stable")[:, :reasons]
                chosen = np.take_along_axis(theirs, order, axis=1)
                top[contract], effect[contract] = np.where(chosen == 0, -1, order), chosen
        churn, value = art.finish(rows, churn, value) if len(x) else (churn, value)  # contract model, levels
        curve_none = np.zeros((0, len(scoring.CURVE_COLUMNS)))  # scored per request (`rows`)
        return cls(
            served=served,
            run=run,
            ids=ids,
            index={cid: i for i, cid in enumerate(ids)},
            as_of=[str(v) for v in rows["as_of"]] if "as_of" in rows else [""] * n,
            x=np.ascontiguousarray(x),
            rank=rank,
            churn=churn,
            value=value,
            at_risk=churn * value,
            tier=assign_tiers(value, art.tiers),
            segment=rfm_segments(rows, served.rfm).to_numpy() if n else np.zeros(0, dtype=object),
            cold=scoring.cold_start(rows, cold_start_min_purchase_days) if n else np.zeros(0, dtype=bool),
            model=art.churn_models(rows) if n else np.zeros(0, dtype=object),
            curve=scoring.churn_curve(art, rows, churn) if numeric else curve_none,
            top=top,
            effect=effect,
            contribution=np.array([[round(e, 6) for e in row] for row in effect.tolist()]).reshape(
                effect.shape
            ),
            rows=None if numeric else rows,
        )


def _score_rows(
    art: ScoringArtefact, x: np.ndarray, rank: np.ndarray, reasons: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Churn probability, value, and the top reasons (columns, effects) of rows given as a float matrix:
    ScoringArtefact.score and serving.scoring.reasons without a frame (`inplace_predict` on the array)."""
    churn, value = art.churn, art.value
    x = np.ascontiguousarray(x)
    p = churn.from_parts(churn.booster.inplace_predict(x, predict_type="margin"), rank)
    pos = art.value_positions  # a churn model at H may have columns value does not (churn_keep_features)
    v = value.from_raw(value.raw_of(x if pos is None else np.ascontiguousarray(x[:, pos])))
    effects = np.c_[churn.shap_of(x) * churn.stack[0], churn.stack[1] * (rank - 0.5)]
    order = np.argsort(-np.abs(effects), axis=1, kind="stable")[:, :reasons]
    chosen = np.take_along_axis(effects, order, axis=1)
    return p, v, np.where(chosen == 0, -1, order).astype(np.int16), chosen


class StoreSnapshot:
    """The store's feature snapshot as `ModelInputs` of the served model. A model it holds nothing for is
    loaded before answering (the champion holder calls `prepare` before it swaps a new version in, so
    requests do not wait for that); a newer batch run logged in the store is loaded in the background
    while the previous snapshot keeps answering (its `as_of` says which), then swapped in whole.

    On a SQLite file the run log is read again only when the file (or its write-ahead log) changed, and at
    least every `recheck_s`; on other stores at every request (one small query)."""

    def __init__(
        self,
        eng: sa.Engine,
        cold_start_min_purchase_days: int,
        reasons: int,
        finish: Callable[[ModelInputs], None] | None = None,
        recheck_s: float = 2.0,
    ) -> None:
        self.eng = eng
        self.finish = finish  # run on each snapshot before it answers (serving.online.prerender)
        self.cold_days = cold_start_min_purchase_days
        self.reasons = reasons
        self.recheck_s = recheck_s
        database = eng.url.database if eng.dialect.name == "sqlite" else None
        self._files = [database, f"{database}-wal"] if database and database != ":memory:" else []
        self._stamp: tuple[tuple[int, int], ...] | None = None
        self._checked = 0.0
        self._run: object = None
        self._current: ModelInputs | None = None
        self._previous: ModelInputs | None = None
        self._lock = threading.Lock()
        self._loading: threading.Thread | None = None

    def current(self, served: Served) -> bool:
        """True when `inputs(served)` answers from memory without waiting."""
        held = self._current
        return held is not None and held.served is served

    def inputs(self, served: Served) -> ModelInputs:
        """The held snapshot of `served` (loaded now if there is none); a newer run starts loading."""
        held = self._current
        if held is None or held.served is not served:
            previous = self._previous  # a request that took the version before a swap
            return previous if previous is not None and previous.served is served else self.prepare(served)
        self._previous = None  # the new version answers: the old one's rows can go
        run = self._latest_run()
        if _erased_since(held.run, run):  # an erased customer is never answered again, not even once
            return self.prepare(served)
        if held.run != run and (self._loading is None or not self._loading.is_alive()):
            self._loading = threading.Thread(target=self.prepare, args=(served,), daemon=True)
            self._loading.start()
        return held

    def wait(self) -> None:
        """Until a snapshot loading in the background is swapped in."""
        loading = self._loading
        if loading is not None:
            loading.join()

    def prepare(self, served: Served) -> ModelInputs:
        """Load the store's latest snapshot for `served` now, unless it is held already."""
        with self._lock:
            run = self._latest_run()
            held = self._current
            if held is None or held.served is not served or held.run != run:
                rows = store.read_features(self.eng)
                held = ModelInputs.build(served, rows, run, self.cold_days, self.reasons)
                if self.finish is not None:
                    self.finish(held)
                if self._current is not None and self._current.served is not served:
                    self._previous = self._current
                self._current = held
                gc.freeze()  # held for long: kept out of full collections (the latency tail, facts.md)
        return held

    def _latest_run(self) -> object:
        if self._files:
            stamp = tuple(_stat(f) for f in self._files)
            now = time.monotonic()
            if stamp == self._stamp and now - self._checked < self.recheck_s:
                return self._run
            self._stamp, self._checked = stamp, now
        t, a = score_runs_table, audit_table
        forgotten = sa.select(sa.func.count()).select_from(a).where(a.c.action == "forget").scalar_subquery()
        try:
            with self.eng.connect() as con:
                query = sa.select(sa.func.max(t.c.id), sa.func.count(), forgotten)
                self._run = tuple(con.execute(query).one())  # runs logged, and erasures (serving.erasure)
        except sa.exc.DBAPIError:  # no store or no run log yet: no snapshot
            self._run = None
        return self._run


def _erased_since(held: object, now: object) -> bool:
    """True when customers were erased since the held snapshot was read (the run keys' erasure counts)."""
    return isinstance(held, tuple) and isinstance(now, tuple) and held[2] != now[2]


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)
