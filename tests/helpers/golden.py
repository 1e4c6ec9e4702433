"""Batch scoring's golden runs: the same small histories scored with the same two models, run after run, so
that a faster implementation can be held to the numbers the earlier one stored (tests/fixtures/batch_golden,
made by tests/fixtures/make_batch_golden.py; tests/integration/test_batch_golden.py compares).

Each case is a model (a scoring artefact saved in the fixture folder), a history and a list of as-of dates;
`run_case` scores them in order into a fresh SQLite store and `dump` reads back every table, the Parquet score
tables and the frames `score_history` returned, without what depends on the wall clock or the folder."""

from __future__ import annotations

import gzip
import json
import math
import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from features.history import History
from serving.batch import score_history
from serving.champion import Served
from serving.config import ServingConfig
from tests.helpers.events import stored_events
from training.artefact import ScoringArtefact
from training.rfm import RfmReference

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "batch_golden"
WALL_CLOCK = {"created_at", "applied_at", "parquet"}  # columns that depend on when or where a run happened
TOLERANCE = 1e-9
VALUE_TOLERANCE = 1e-6
"""For predicted values and what is made of them (VALUE_COLUMNS): the reference computed the value model's
horizon map in float32, where numpy's power differs by one float32 ulp (~1e-7) between CPUs with and without
AVX-512; it is float64 since (training.models.ValueModel.from_raw)."""
VALUE_COLUMNS = frozenset({"predicted_value", "value_at_risk", "priority", "notified_value_at_risk"})
CPU_DEPENDENT = {"table_drift": {"psi"}, "table_drift_runs": {"max_psi", "worst"}}
"""Not compared: PSI bins values by the reference's quantile edges, which sit on values many customers share
(CDNOW's tied histories); a CPU without AVX-512 computes those a ulp apart (numpy's float64 exp and log, the
float32 power above), moving a whole tie across an edge. Which rows were watched and whether drift was
flagged (`over`, `alert`) are still compared; training.drift's own tests hold the PSI arithmetic."""


@dataclass(frozen=True)
class Case:
    name: str  # folder under GOLDEN: model/ (the artefact) and the dumps
    as_of: tuple[str, ...]  # runs in this order (a repeated date re-runs it)


CDNOW = Case("cdnow", ("1997-09-30", "1997-12-31", "1997-12-31", "1998-03-31"))
SYNTHETIC = Case("synthetic", ("2025-09-30", "2025-12-31", "2025-12-31"))
SYNTHETIC_CUSTOMERS, SYNTHETIC_SEED = 600, 3


def cdnow_sample(history: History) -> History:
    """Every eighth CDNOW customer (numeric id divisible by 8): about 2,950 customers, all their rows."""
    tx = history.transactions
    keep = pc.equal(pc.bit_wise_and(pc.cast(tx.column("customer_id"), pa.int64()), 7), 0)
    return replace(history, transactions=tx.filter(keep))


def serving_config(work: Path) -> ServingConfig:
    """The repository's serving.yaml (alerts and drift on, no webhook endpoints) with a store and score folder
    in `work` and a top-k rule small enough to fire on a small history."""
    raw = yaml.safe_load((ROOT / "serving.yaml").read_text(encoding="utf-8"))
    raw["webhooks"]["endpoints"] = []
    raw["alerts"]["rules"][2]["top_k_value_at_risk"] = 40
    (work / "serving.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = ServingConfig.load(work / "serving.yaml")  # the environment may name another store: not here
    return config.model_copy(
        update={"store_url": f"sqlite:///{work / 'diamond.db'}", "scores_dir": str(work / "scores")}
    )


def served(model: Path) -> Served:
    art = ScoringArtefact.load(model)
    return Served(art, "1", "2026-01-01T00:00:00+00:00", RfmReference.from_rank(art.churn.rfm))


def run_case(case: Case, history: History, model: Path, work: Path) -> dict[str, pd.DataFrame]:
    """Score `history` at each as_of of `case` into a fresh store in `work`; return `dump`'s tables plus
    the last run's returned scores (`run`, reasons as JSON text) and its Parquet table (`parquet`). Earlier
    runs live on in the tables (score and tier history, alerts)."""
    config = serving_config(work)
    champion = served(model)
    out: dict[str, pd.DataFrame] = {}
    for day in case.as_of:
        result = score_history(history, datetime.fromisoformat(day), champion, config)
        text = [r if isinstance(r, str) else json.dumps(r) for r in result.scores["reasons"]]
        out["run"] = result.scores.assign(reasons=text).reset_index(drop=True)
        out["parquet"] = pd.read_parquet(result.parquet)
    out.update(dump(work / "diamond.db"))
    return out


def dump(path: Path) -> dict[str, pd.DataFrame]:
    """Every table of a SQLite store as stored (SQLite's own values), rows in a stable order, wall-clock
    columns left out."""
    con = sqlite3.connect(path)
    try:
        names = [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = {}
        for name in sorted(names):
            if name == "alembic_version":
                continue
            frame = pd.read_sql_query(f'SELECT * FROM "{name}"', con)
            if name == "recent_events":
                frame = _per_event(frame)
            if name in ("feature_snapshot", "score_snapshot") and "batch" in frame.columns:
                frame = _per_customer(frame)
            frame = frame.drop(columns=[c for c in frame.columns if c in WALL_CLOCK])
            out[f"table_{name}"] = _sorted(frame)
        return out
    finally:
        con.close()


def _per_event(packed: pd.DataFrame) -> pd.DataFrame:
    """The store's recent events (parts of Arrow IPC: store.packed_event_batches) as the one-row-per-event
    table the fixtures were saved from: customer_id, timestamp (as the per-event rows stored it: text),
    kind, amount, detail; missing values as SQLite gave them (None)."""
    frame = stored_events(packed)
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S.%f")
    return frame.astype(object).where(frame.notna(), None)


def _per_customer(packed: pd.DataFrame) -> pd.DataFrame:
    """The store's feature or score snapshot (parts of Arrow IPC: store.pack_features, store._ScoreParts) as
    the one-row-per-customer table the fixtures were saved from; missing values as SQLite gave them (None)."""
    parts = [pa.ipc.open_stream(b).read_all() for b in packed.sort_values("part")["batch"]]
    frame = pa.concat_tables(parts).to_pandas()
    return frame.astype(object).where(frame.notna(), None)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("customer_id", "as_of", "kind", "timestamp", "name", "detail") if c in frame.columns]
    keys = keys or list(frame.columns)
    text = frame[keys].astype(str)
    order = text.sort_values(keys, kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def save(frames: dict[str, pd.DataFrame], folder: Path) -> None:
    """Each frame as gzipped JSON (values as SQLite and pandas gave them; NaN as null), one file a frame."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        records = [{k: _plain(v) for k, v in r.items()} for r in frame.to_dict("records")]
        body = json.dumps({"columns": list(frame.columns), "rows": records}) + "\n"
        (folder / f"{name}.json.gz").write_bytes(gzip.compress(body.encode("utf-8"), 9, mtime=0))


def load(folder: Path) -> dict[str, dict[str, Any]]:
    """What `save` wrote, by frame name."""
    return {
        p.name.removesuffix(".json.gz"): json.loads(gzip.decompress(p.read_bytes()))
        for p in sorted(folder.glob("*.json.gz"))
    }


def _plain(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def differences(
    expected: dict[str, Any], actual: pd.DataFrame, where: str, tied: set[tuple[str, str]] = frozenset()
) -> list[str]:
    """What differs between a saved frame and a new one: columns, row count, then values (numbers to
    TOLERANCE, relative or absolute; JSON text compared parsed). Rows of recent events in `tied`
    (`tied_events`) are compared on customer_id, timestamp and kind."""
    got = {
        "columns": list(actual.columns),
        "rows": [{k: _plain(v) for k, v in r.items()} for r in actual.to_dict("records")],
    }
    if got["columns"] != expected["columns"]:
        return [f"{where}: columns {got['columns']} != {expected['columns']}"]
    if len(got["rows"]) != len(expected["rows"]):
        return [f"{where}: {len(got['rows'])} rows != {len(expected['rows'])}"]
    out = []
    for i, (a, e) in enumerate(zip(got["rows"], expected["rows"], strict=True)):
        loose = where == "table_recent_events" and (e["customer_id"], e["timestamp"]) in tied
        for col in expected["columns"]:
            if loose and col not in ("customer_id", "timestamp", "kind"):
                continue
            if col in CPU_DEPENDENT.get(where, ()):
                continue
            if not same(a[col], e[col], col):
                out.append(f"{where} row {i} {col}: {a[col]!r} != {e[col]!r}")
                if len(out) >= 10:
                    return out
    return out


def tied_events(history: History) -> set[tuple[str, str]]:
    """(customer_id, timestamp as stored) of purchases that share their time with another purchase of the
    customer (CDNOW's same-day orders). Which of them the reference kept among a customer's 10 latest
    events was not determined; with them, recent events are compared on customer, time and kind only."""
    tx = history.transactions.select(["customer_id", "timestamp"]).to_pandas()
    counts = tx.groupby(["customer_id", "timestamp"]).size()
    tied = counts[counts > 1].index
    return {(str(c), pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")) for c, t in tied}


def same(a: Any, e: Any, key: str | None = None) -> bool:
    """Equal, numbers to TOLERANCE (relative or absolute; VALUE_TOLERANCE under a VALUE_COLUMNS name), JSON
    text by its parsed content."""
    if isinstance(a, bool) or isinstance(e, bool):
        return bool(a) == bool(e) if isinstance(a, bool | int) and isinstance(e, bool | int) else a == e
    if isinstance(a, int | float) and isinstance(e, int | float):
        tol = VALUE_TOLERANCE if key in VALUE_COLUMNS else TOLERANCE
        return math.isclose(a, e, rel_tol=tol, abs_tol=TOLERANCE)
    if isinstance(a, str) and isinstance(e, str) and a[:1] in "[{" and e[:1] in "[{":
        try:
            return same(json.loads(a), json.loads(e), key)
        except json.JSONDecodeError:
            return a == e
    if isinstance(a, list) and isinstance(e, list):
        return len(a) == len(e) and all(same(x, y, key) for x, y in zip(a, e, strict=True))
    if isinstance(a, dict) and isinstance(e, dict):
        return a.keys() == e.keys() and all(same(a[k], e[k], k) for k in a)
    return bool(a == e)
