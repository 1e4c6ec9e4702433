"""Batch scoring (`diamond score`): every eligible customer at `as_of` scored with the served model, written
as a Parquet score table and as the store's snapshot the service answers from. Wiring only."""

from __future__ import annotations

import gc
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.history import History
from serving import (
    alert_rules,
    alert_store,
    capacity,
    consent,
    control,
    delivery,
    erasure,
    monitoring,
    scoring,
    store,
    tier_store,
    uplift_rank,
    winback,
)
from serving.champion import Served
from serving.config import AlertConfig, ServingConfig

if TYPE_CHECKING:
    import sqlalchemy as sa

    from training.artefact import ScoringArtefact
    from training.tracking import MlflowConfig


SCORE_ROW = "score_row"  # the candidates' column (`evaluate_rules`) naming each one's row in the score table


@dataclass
class BatchResult:
    scores: pd.DataFrame
    parquet: Path
    as_of: datetime
    version: str
    alerts: alert_store.SyncResult | None = None  # None: alerts off
    drift: monitoring.DriftResult | None = None  # None: drift watch off or no reference in the model
    delivery: delivery.DeliveryReport | None = None  # None: no endpoints configured
    uplift_version: str | None = None  # the uplift champion that ranked the alerts; None: value at risk


def score_history(
    history: History,
    as_of: datetime,
    served: Served,
    config: ServingConfig,
    mlcfg: MlflowConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> BatchResult:
    """Score; apply tier hysteresis; write the Parquet table and the store snapshot; raise and de-duplicate
    alerts; watch drift (logged to MLflow when `mlcfg` is given); queue and deliver alerts. Each step is one
    transaction and safe to re-run for the same as_of, so a failed run can simply be run again; the previous
    snapshot stays until the new one is complete."""
    with _no_gc_pauses():
        try:
            return _score_history(history, as_of, served, config, mlcfg, progress or _silent)
        finally:
            store.settle()  # the snapshot's write-ahead log copied into the store file meanwhile


def _score_history(
    history: History,
    as_of: datetime,
    served: Served,
    config: ServingConfig,
    mlcfg: MlflowConfig | None,
    step: Callable[[str], None],
) -> BatchResult:
    art = served.artefact
    # refuses a store of another revision, writes nothing
    eng = store.prepare(store.engine(config.store_url, store.BATCH_CACHE_MIB))
    stopped = consent.no_contact(history, config.consent)  # a missing consent column: refused before work
    past = _known_at(history, as_of)
    # the recent events (erased customers stay erased) are ranked, packed and written into their new table
    # by a thread while DuckDB computes the feature rows; the snapshot's transaction swaps them in. Both
    # run on one DuckDB thread: the feature rows in one part (features.engine), since two would share that
    # thread's core (1M customers: 73.1 / 77.6 s a run in two parts against 70.6 / 70.1 s in one; with the
    # events in parts, 13.1-15.3 s for the feature rows in two parts, 13.5-14.5 s in one)
    staging = _Staging(eng, store.packed_event_batches(past, threads=1, keep=erasure.eraser(eng)))
    effects: _Effects | None = None
    try:
        rows = erasure.without_erased(eng, art.feature_rows(past, as_of, parts=1))  # erased stay erased
        step("feature rows")
        if rows.empty:
            raise ValueError(f"no customer is eligible at {as_of:%Y-%m-%d %H:%M}: nothing to score")
        # the scores by two threads, half the rows each, while the recent events' thread ends its inserts;
        # then the reasons (TreeSHAP and their words) by a thread of their own, beside everything else up
        # to the snapshot (the tiers and the alert rules, one core's work otherwise)
        scored = _score_in_halves(art, rows)
        effects = _Effects(art, rows, config.reasons)
        events = staging.wait()  # before the score table's Python, which would hold the thread back
        scores = scoring.score_table(
            art, rows, config.cold_start_min_purchase_days, served.rfm, scored=scored
        )
        step("scores")
        order = list(config.tiers.order or art.tiers)
        rules = config.alert_rules(order)  # None: alerts are off
        tiered = tier_store.update_tiers(
            eng,
            as_of,
            scores[["customer_id"]].assign(tier_raw=scores["tier"]),
            order,
            config.tiers.demote_after,
        )
        tiered = _aligned(tiered, scores["customer_id"])
        scores = scores.assign(
            tier_raw=scores["tier"],
            tier=tiered["tier"].to_numpy(),
            previous_tier=tiered["previous_tier"].to_numpy(),
            as_of=as_of,
            model_version=served.version,
        )
        step("tiers")
        # the alert rules read the scores and tiers only: evaluated now, beside TreeSHAP, and synced with
        # the stored alerts once the snapshot is in (the alerts' step, as before)
        found = _candidates(eng, scores, past, rows, as_of, rules, mlcfg) if rules is not None else None
        if found is not None:
            step("alert rules")
        made: dict[str, Any] = {}
        shap = effects  # the thread's chunks (`effects` is None only before it starts)

        def chunks() -> Iterator[pd.DataFrame]:  # asked for by the snapshot once the features are written
            parts = []
            for a, b, why in shap.worded():
                parts.append(why)
                yield scoring.with_reasons(scores.iloc[a:b], why)
            made["why"] = scoring.Reasons.concat(parts)
            made["scores"] = scoring.with_reasons(scores, made["why"])

        target = _write(scores, chunks, made, rows, served, config, eng, as_of, events)
        scores, why = made["scores"], made["why"]
    except BaseException:  # staged recent events no snapshot took are not left behind
        staging.abandon()
        raise
    finally:
        if effects is not None:
            effects.stop()  # no thread outlives the run
    step("reasons, score table, snapshot and recent events")
    result = BatchResult(scores, target, as_of, served.version)
    if rules is not None and found is not None:
        result.uplift_version, candidates = found
        result.alerts = _raise_alerts(eng, scores, why, as_of, config, rules, stopped, candidates)
        step("alerts")
    result.drift = _watch_drift(eng, rows, scores, served, as_of, config, rules, mlcfg)
    step("drift")
    if config.endpoints():
        result.delivery = deliver(eng, config)
        step("webhooks")
    return result


def _score_in_halves(art: ScoringArtefact, rows: pd.DataFrame) -> pd.DataFrame:
    """`art.score(rows)` by two threads, each on half of the rows: XGBoost's prediction is thread-safe and
    lets go of the GIL, and every row's numbers are its own (the boosters' and the fitted maps'), so the
    halves give the whole's numbers exactly, on both cores."""
    half = len(rows) // 2
    if not half:
        return art.score(rows, art.matrix(rows))
    with ThreadPoolExecutor(2, thread_name_prefix="diamond-scores") as pool:
        parts = list(
            pool.map(lambda part: art.score(part, art.matrix(part)), (rows.iloc[:half], rows.iloc[half:]))
        )
    return pd.concat(parts)


def _aligned(tiered: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """`tiered`'s rows in the order of `ids`: as they come (update_tiers keeps its input's order), else
    looked up by customer_id (883k text ids looked up took a second for nothing)."""
    mine = tiered["customer_id"].to_numpy(dtype=object)
    if len(mine) == len(ids) and (mine == ids.to_numpy(dtype=object)).all():
        return tiered
    return tiered.set_index("customer_id").loc[ids]


def _known_at(history: History, as_of: datetime) -> History:
    """`history.until(as_of)`, without copying the tables when no row is dated after as_of (scoring at the
    history's end, the usual run: a million customers' events would otherwise be held twice)."""
    stamp = pa.scalar(as_of, pa.timestamp("us"))
    for table in history.tables().values():
        for column in ("timestamp", "recorded_at", "signup_date"):
            if column in table.column_names:
                latest = pc.max(table.column(column))
                if latest.is_valid and pc.greater(pc.cast(latest, pa.timestamp("us")), stamp).as_py():
                    return history.until(as_of)
    return replace(history, as_of=as_of)


class _Staging:
    """The run's recent events written into their new table (store.stage_events) by a thread of their own,
    where the store lets readers and other writers wait for nothing (store.can_stage: PostgreSQL, a SQLite
    file in WAL mode); elsewhere (an in-memory SQLite) they go to the snapshot's transaction as frames,
    made beside its inserts (store.write_snapshot)."""

    def __init__(self, eng: sa.Engine, frames: Iterator[pd.DataFrame]) -> None:
        self._eng, self._frames = eng, frames
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if store.can_stage(eng):
            self._thread = threading.Thread(target=self._run, name="diamond-stage-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            store.stage_events(self._eng, self._frames, self._stop)
        except BaseException as exc:  # raised in the run's thread by `wait`
            self._error = exc
        finally:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()  # the generator's DuckDB connections, closed in the thread that opened them

    def wait(self) -> Iterable[pd.DataFrame] | store.Staged:
        """What `store.write_snapshot` takes as the events: STAGED once the thread has written them (its
        error raised here), or the frames themselves."""
        if self._thread is None:
            return self._frames
        self._thread.join()
        if self._error is not None:
            raise self._error
        return store.STAGED

    def abandon(self) -> None:
        """The run failed: stop the thread (its transaction rolls back) or drop what it committed."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        if self._error is None:
            store.drop_staged(self._eng)  # nothing to drop once a snapshot swapped them in


class _Effects:
    """Each row's reasons (`scoring.reason_effects`, then `scoring.reasons_of`), in chunks: by a thread of
    its own from the start, TreeSHAP and the wording alike, so that the run's own thread meanwhile scores,
    applies the tiers and writes (SQLite's inserts and Arrow let go of the GIL); `worded` gives the chunks
    in order, and its caller computes a chunk no one has started rather than wait. Each row's effects and
    reasons are its own: chunking changes no number and no text."""

    CHUNK = 50_000

    def __init__(self, art: ScoringArtefact, rows: pd.DataFrame, top: int) -> None:
        self._art, self._rows, self._top = art, rows, top
        self._parts = [(a, min(a + self.CHUNK, len(rows))) for a in range(0, len(rows), self.CHUNK)]
        self._done: list[scoring.Reasons | None] = [None] * len(self._parts)
        self._next = 0
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="diamond-reasons", daemon=True)
        self._thread.start()

    def _take(self) -> int | None:
        with self._changed:
            if self._next >= len(self._parts):
                return None
            self._next += 1
            return self._next - 1

    def _word(self, i: int) -> None:
        a, b = self._parts[i]
        rows = self._rows.iloc[a:b]
        found = scoring.reasons_of(self._art, rows, scoring.reason_effects(self._art, rows), self._top)
        with self._changed:
            self._done[i] = found
            self._changed.notify_all()

    def _work(self) -> None:
        try:
            while (i := self._take()) is not None:
                self._word(i)
        except BaseException as exc:  # raised in the run's thread by `worded`
            with self._changed:
                self._error = exc
                self._changed.notify_all()

    def worded(self) -> Iterator[tuple[int, int, scoring.Reasons]]:
        """(first row, end row, their reasons) of every chunk, in row order; while the next is not ready the
        caller words a chunk no one has started, else waits. Between two chunks it does what it likes with
        the one given (the run writes it)."""
        for nxt in range(len(self._parts)):
            while True:
                with self._changed:
                    if self._error is not None:
                        raise self._error
                    found = self._done[nxt]
                    mine = self._take() if found is None else None
                    if found is None and mine is None:
                        self._changed.wait()
                        continue
                    self._done[nxt] = None
                if found is not None:
                    break
                if mine is not None:
                    self._word(mine)
            a, b = self._parts[nxt]
            yield a, b, found
        self._thread.join()

    def stop(self) -> None:
        """No chunk is started any more; the one under way is waited for."""
        with self._changed:
            self._next = len(self._parts)
        self._thread.join()


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """No cyclic garbage collection inside a run: a million customers' rows are millions of live objects,
    and every collection walked them all again, many times a second (the run makes no cycles to collect)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _silent(step: str) -> None:
    """No one watches the steps."""


def deliver(eng: sa.Engine, config: ServingConfig) -> delivery.DeliveryReport:
    return delivery.deliver_all(eng, config.endpoints(), config.webhooks)


def _write(
    scores: pd.DataFrame,
    chunks: Callable[[], Iterator[pd.DataFrame]],
    made: dict[str, Any],
    rows: pd.DataFrame,
    served: Served,
    config: ServingConfig,
    eng: sa.Engine,
    as_of: datetime,
    events: Iterable[pd.DataFrame] | store.Staged,
) -> Path:
    """The snapshot's transaction: the feature snapshot, the score history, then the score snapshot chunk by
    chunk as `chunks()` gives its rows with reasons, and the run log. Each chunk, once converted to Arrow
    for the snapshot, goes on to the Parquet score table by a thread (Parquet's encoding lets go of the
    GIL); the transaction commits once the file is complete."""
    folder = Path(config.scores_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"scores_{as_of:%Y%m%dT%H%M%S}_v{served.version}.parquet"
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")  # unique per run
    pool = ThreadPoolExecutor(1, thread_name_prefix="diamond-score-table")
    writing: list[Future[None]] = []
    writer: dict[str, pq.ParquetWriter] = {}  # opened by the first chunk, in the pool's thread
    complete: list[bool] = []

    def each(chunk: pa.Table) -> None:
        writing.append(pool.submit(_write_parquet, chunk, tmp, writer))

    def table() -> Iterator[pd.DataFrame]:
        yield from chunks()  # reasons are JSON text (scoring.with_reasons)
        complete.append(True)

    def written() -> None:
        if not complete:
            raise RuntimeError("the score table was not written: its rows never all came")
        for part in writing:
            part.result()  # its error, raised here, rolls the snapshot back
        pool.submit(_close_parquet, writer, tmp, made["scores"]).result()

    try:
        store.write_snapshot(
            eng,
            rows.drop(columns=["cutoff"]).assign(as_of=as_of, feature_set=served.artefact.feature_set),
            store.LateScores(scores, table, written, each),
            {
                "as_of": as_of.isoformat(),
                "model_version": served.version,
                "customers": len(scores),
                "parquet": str(target),
            },
            events,
        )
    except BaseException:  # nothing half-written is left behind, even on Ctrl-C
        pool.shutdown(wait=True)  # the file is not written on after it is gone
        if "file" in writer:
            with suppress(Exception):  # the run's own error is the one raised
                writer.pop("file").close()
        tmp.unlink(missing_ok=True)
        raise
    pool.shutdown(wait=True)
    os.replace(tmp, target)
    return target


def _write_parquet(chunk: pa.Table, path: Path, writer: dict[str, pq.ParquetWriter]) -> None:
    """One chunk of the score table appended to its Parquet file at `path` (opened by the first, with its
    schema: every chunk has the score snapshot's)."""
    if "file" not in writer:
        writer["file"] = pq.ParquetWriter(path, chunk.schema)
    writer["file"].write_table(chunk)


def _close_parquet(writer: dict[str, pq.ParquetWriter], path: Path, whole: pd.DataFrame) -> None:
    """The Parquet file complete: closed, or written empty (the columns of `whole`) when no row came."""
    if "file" in writer:
        writer.pop("file").close()
    else:
        pq.write_table(pa.Table.from_pandas(whole.iloc[:0], preserve_index=False), path)


def _candidates(
    eng: sa.Engine,
    scores: pd.DataFrame,
    past: History,
    rows: pd.DataFrame,
    as_of: datetime,
    rules: AlertConfig,
    mlcfg: MlflowConfig | None,
) -> tuple[str | None, pd.DataFrame]:
    """(the uplift champion's version or None, this run's candidate alerts): `evaluate_rules` with each
    customer's lapse (serving.winback) for a win-back rule, ranked by the uplift champion when one is gated
    (serving.uplift_rank), else by value at risk. Reads only."""
    lapse = winback.lapse(eng, past, as_of) if any(r.win_back for r in rules.rules) else None
    costs = {t: float(b.cost or 0.0) for t, b in rules.playbooks.items() if b is not None}  # none: 0
    own = {r.kind: float(r.playbook.cost or 0.0) for r in rules.rules if r.playbook is not None}
    version, ranking = uplift_rank.champion_ranker(mlcfg, rows, costs, own)
    return version, evaluate_rules(scores, as_of, rules, lapse, ranking)


def evaluate_rules(
    scores: pd.DataFrame,
    as_of: datetime,
    rules: AlertConfig,
    lapse: pd.DataFrame | None = None,
    ranking: uplift_rank.Ranker | None = None,
) -> pd.DataFrame:
    """The alert rules on a run's score table (its tiers after hysteresis and `previous_tier`), as
    serving.alert_rules.evaluate, with each candidate's row in the score table (SCORE_ROW): reasons in
    words are looked up later, by row, for the alerts that need them."""
    previous = pd.Series(scores["previous_tier"].to_numpy(), index=scores["customer_id"].to_numpy())
    given = scores.drop(columns="reasons", errors="ignore")
    found, at = alert_rules.evaluate_at(given, rules, previous, as_of, lapse, ranking)
    return found.assign(**{SCORE_ROW: at})


def _raise_alerts(
    eng: sa.Engine,
    scores: pd.DataFrame,
    why: scoring.Reasons,
    as_of: datetime,
    config: ServingConfig,
    rules: AlertConfig,
    stopped: frozenset[str] | None,
    candidates: pd.DataFrame,
) -> alert_store.SyncResult:
    """This run's candidate alerts (`_candidates`) synced with the open alerts; what needs notifying goes
    to the outbox for every endpoint (the webhook id carries alert id and version: retries and re-runs
    never duplicate). Reasons in words are looked up for the alerts that need them."""
    candidates, _ = control.hold_out(eng, as_of, candidates, rules)  # controls never alert (serving.control)
    at = candidates[SCORE_ROW].to_numpy(dtype=np.int64)  # each candidate's row in the score table
    synced = alert_store.sync_alerts(
        eng, as_of, candidates.drop(columns=SCORE_ROW), rules, reasons=lambda rows: why.risk_texts(at[rows])
    )
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
    """Queue each (alert id, version) for every endpoint (serving.capacity.enqueue): in `notify`'s order,
    highest priority first; alerts of customers who may not be contacted are left out."""
    capacity.enqueue(eng, notify, config)
