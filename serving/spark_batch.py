"""Batch scoring on Spark (`diamond score --engine spark`): the champion's scoring artefact applied to each
partition of the Spark-built feature rows with `mapInArrow`, writing the score table of `serving.batch` as
Parquet partitioned by as-of date. Wiring only: rows come from features.spark (the same builder), scores from
serving.scoring (the same code the single-machine path and the service run).

What stays on the single-machine path: tier hysteresis, the service's snapshot, alerts and webhooks all read
and write the serving store (one SQL database), so the Spark table carries the raw tier (`tier` equals
`tier_raw`, no `previous_tier`); docs/scale.md says how to feed a store from it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from features import spark as fsp
from serving import scoring
from serving.champion import Served
from serving.config import ServingConfig

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# The score table's columns as `serving.batch` writes them, less the hysteresis column `previous_tier`.
SCORE_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("churn_probability", pa.float64()),
        ("predicted_value", pa.float64()),
        ("horizon_days", pa.int64()),
        ("value_at_risk", pa.float64()),
        ("tier", pa.string()),
        ("rfm_segment", pa.string()),
        ("reasons", pa.string()),
        ("cold_start", pa.bool_()),
        ("churn_model", pa.string()),
        *((c, pa.float64()) for c in scoring.CURVE_COLUMNS),  # time to churn: null where undefined
        ("tier_raw", pa.string()),
        ("as_of", pa.timestamp("us")),
        ("model_version", pa.string()),
    ]
)


@dataclass
class SparkBatchResult:
    path: str
    as_of: datetime
    version: str
    customers: int
    tiers: dict[str, int]


def score_rows(rows: DataFrame, served: Served, config: ServingConfig, as_of: datetime) -> DataFrame:
    """The score table for Spark feature rows: each partition scored by `serving.scoring.score_records`."""
    from pyspark.sql.pandas.types import from_arrow_schema

    art, version = served.artefact, served.version
    top, cold = config.reasons, config.cold_start_min_purchase_days

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            frame = pa.Table.from_batches([batch]).to_pandas()
            if frame.empty:
                continue
            scores = pd.DataFrame(scoring.score_records(art, frame, top, cold))
            table = scores.assign(
                reasons=[json.dumps(r) for r in scores["reasons"]],
                tier_raw=scores["tier"],
                as_of=as_of,
                model_version=version,
            )
            yield from pa.Table.from_pandas(table, schema=SCORE_SCHEMA, preserve_index=False).to_batches()

    return rows.mapInArrow(score, from_arrow_schema(SCORE_SCHEMA))


def score_history(
    history: fsp.SparkHistory, as_of: datetime, served: Served, config: ServingConfig, out: str
) -> SparkBatchResult:
    """Build the rows at `as_of` on Spark, score them and write `out/as_of_date=YYYY-MM-DD/` (a re-run for
    the same day replaces that folder only)."""
    from pyspark.sql import functions as F

    art = served.artefact
    rows, _ = fsp.build_scoring_rows(
        history.until(as_of), as_of, art.feature_set, art.horizon_days, art.btyd_params
    )
    scores = score_rows(rows, served, config, as_of).withColumn(
        "as_of_date", F.date_format("as_of", "yyyy-MM-dd")
    )
    scores.write.mode("overwrite").partitionBy("as_of_date").parquet(out)
    written = (
        history.spark.read.parquet(out)
        .where(F.col("as_of_date") == f"{as_of:%Y-%m-%d}")
        .groupBy("tier")
        .count()
        .collect()
    )
    counts = Counter({r["tier"]: r["count"] for r in written})
    if not counts:
        raise ValueError(f"no customer is eligible at {as_of:%Y-%m-%d %H:%M}: nothing to score")
    return SparkBatchResult(out, as_of, served.version, sum(counts.values()), dict(counts))
