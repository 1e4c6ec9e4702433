"""Batch scoring (`diamond score`): every eligible customer at `as_of` scored with the served model, written
as a Parquet score table and as the store's snapshot the service answers from. Wiring only."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.history import History
from serving import scoring, store
from serving.config import ServingConfig
from serving.models import Served


@dataclass
class BatchResult:
    scores: pd.DataFrame
    parquet: Path
    as_of: datetime
    version: str


def score_history(history: History, as_of: datetime, served: Served, config: ServingConfig) -> BatchResult:
    """Score, then write the Parquet table and the store snapshot; a failure leaves the previous ones."""
    art = served.artefact
    rows = art.feature_rows(history.until(as_of), as_of)
    records = scoring.score_records(art, rows, config.reasons, config.cold_start_min_purchase_days)
    scores = pd.DataFrame(records)
    scores["as_of"] = as_of
    scores["model_version"] = served.version
    table = scores.assign(reasons=[json.dumps(r) for r in scores["reasons"]]) if len(scores) else scores
    folder = Path(config.scores_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"scores_{as_of:%Y%m%dT%H%M%S}_v{served.version}.parquet"
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp)
    try:
        store.write_snapshot(
            store.engine(config.store_url),
            rows.drop(columns=["cutoff"]).assign(as_of=as_of, feature_set=art.feature_set),
            table,
            {
                "as_of": as_of.isoformat(),
                "model_version": served.version,
                "customers": len(scores),
                "parquet": str(target),
            },
        )
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
    return BatchResult(scores, target, as_of, served.version)
