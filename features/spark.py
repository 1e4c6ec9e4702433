"""The Spark engine: the builder's own Ibis expressions (features.build: spine, features, labels), compiled to
Spark SQL and run over Parquet on any path Spark reads (local, HDFS, S3 through the usual connectors).

Nothing here defines a feature: `features.build` assembles the expressions from `features.definitions` and
this module only registers tables, runs SQL and handles the one step that is not SQL, BTYD. BG/NBD and
Gamma-Gamma are fitted on the driver from the distinct (x, t_x, T) and (x, m_x) rows of each cutoff with
their counts (the likelihood only needs each distinct row once), then applied row-wise on the executors by
the same `apply_btyd` the DuckDB engine uses. Timestamps are naive UTC (TIMESTAMP_NTZ, session zone UTC),
as in DuckDB, so both engines compute the same days and windows.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa

from core.config import parse, yaml_mapping
from features import build
from features.config import CONFIG_FILE, TABLE_NAMES, DatasetConfig
from features.definitions import BTYD_FEATURES
from features.engine import KEYS, Engine, cutoffs_table
from features.history import CONTRACT, HistoryError, Problem
from features.sets import DEFAULT_FEATURE_SET, FeatureSet, get_feature_set
from features.value import REVENUE, ValueTarget

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Session settings the engine relies on: naive UTC timestamps, Arrow transfer for the BTYD step.
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.timestampType": "TIMESTAMP_NTZ",
    "spark.sql.parquet.inferTimestampNTZ.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
}
_CASTS = {"id": "string", "timestamp": "timestamp_ntz", "number": "double", "text": "string"}


def session(
    master: str | None = None, app_name: str = "diamond", conf: dict[str, str] | None = None
) -> SparkSession:
    """The active SparkSession (spark-submit's, a Databricks cluster's) or a new one on `master`, with the
    settings the engine relies on (SESSION_CONF) applied either way."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    if (master or "").startswith("local"):  # local workers run this interpreter (it has Diamond installed)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in {**SESSION_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    for key, value in SESSION_CONF.items():  # an existing session keeps its own builder settings
        spark.conf.set(key, value)
    return spark


# --- the history on Spark ------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkHistory:
    """A customer history as Spark DataFrames typed to the contract (ids text, timestamps naive UTC,
    amounts double), read lazily from Parquet: nothing is collected to the driver."""

    spark: SparkSession
    transactions: DataFrame
    customers: DataFrame | None = None
    interactions: DataFrame | None = None
    cancellations: DataFrame | None = None
    as_of: datetime | None = None
    name: str = "history"
    churn: str = "non_contractual"

    def tables(self) -> dict[str, DataFrame]:
        return {n: t for n in TABLE_NAMES if (t := getattr(self, n)) is not None}

    def until(self, cutoff: datetime) -> SparkHistory:
        """The history as known at `cutoff` (as `History.until`): events with timestamp <= cutoff and
        recorded_at, where present, <= cutoff; customers signed up by then or without a signup date."""
        from pyspark.sql import functions as F

        stamp = F.lit(cutoff).cast("timestamp_ntz")

        def known(df: DataFrame, column: str) -> DataFrame:
            if column not in df.columns:
                return df
            keep = F.col(column) <= stamp
            if column == "signup_date":
                keep = keep | F.col(column).isNull()
            if "recorded_at" in df.columns:
                keep = keep & (F.col("recorded_at").isNull() | (F.col("recorded_at") <= stamp))
            return df.where(F.coalesce(keep, F.lit(False)))

        def known_if_any(df: DataFrame | None, column: str) -> DataFrame | None:
            return None if df is None else known(df, column)

        return replace(
            self,
            transactions=known(self.transactions, "timestamp"),
            customers=known_if_any(self.customers, "signup_date"),
            interactions=known_if_any(self.interactions, "timestamp"),
            cancellations=known_if_any(self.cancellations, "timestamp"),
            as_of=cutoff,
        )

    def event_range(self) -> tuple[datetime, datetime]:
        """First and last event timestamp over the event tables (one aggregation each)."""
        from pyspark.sql import functions as F

        bounds = [
            df.agg(F.min("timestamp"), F.max("timestamp")).collect()[0]  # one row: a global aggregation
            for name, df in self.tables().items()
            if name != "customers"
        ]
        firsts = [b[0] for b in bounds if b[0] is not None]
        lasts = [b[1] for b in bounds if b[1] is not None]
        if not firsts:
            raise ValueError(f"history {self.name}: no events")
        return min(firsts), max(lasts)

    def end(self) -> datetime:
        """The as-of date, or the last event when none was declared (as `build.end_of`)."""
        return self.as_of if self.as_of is not None else self.event_range()[1]


def load_history(
    spark: SparkSession, path: str, config: DatasetConfig | None = None, as_of: datetime | None = None
) -> SparkHistory:
    """Read a history folder of Parquet tables (`<path>/transactions.parquet`, a file or a folder of parts,
    and so on; names, columns and settings from `<path>/dataset.yaml` as for DuckDB) on any filesystem
    Spark reaches. Structure is checked here (tables, required columns, types that cast); row-level checks
    are `diamond data validate`'s job on the single-machine path."""
    root = path.rstrip("/")
    config = config or _read_config(spark, f"{root}/{CONFIG_FILE}")
    problems: list[Problem] = []
    frames: dict[str, DataFrame] = {}
    for name in TABLE_NAMES:
        file = config.table(name).file or f"{name}.parquet"
        full = f"{root}/{file}"
        if not _exists(spark, full):
            if name == "transactions":
                problems.append(
                    Problem(full, "not found (the Spark engine reads Parquet tables)", droppable=False)
                )
            continue
        if not file.endswith(".parquet") and not _is_dir(spark, full):
            problems.append(
                Problem(full, "the Spark engine reads Parquet; convert CSV first", droppable=False)
            )
            continue
        frame = _typed(spark.read.parquet(full), name, full, config, problems)
        if frame is not None:
            frames[name] = frame
    if problems:
        raise HistoryError(problems)
    return SparkHistory(
        spark,
        frames["transactions"],
        frames.get("customers"),
        frames.get("interactions"),
        frames.get("cancellations"),
        as_of=as_of or config.as_of,
        name=config.name,
        churn=config.churn,
    )


def _typed(
    df: DataFrame, name: str, file: str, config: DatasetConfig, problems: list[Problem]
) -> DataFrame | None:
    """The contract's columns renamed from the file's (dataset.yaml `columns`) and cast to their kinds;
    customers keep every other column as a static attribute."""
    from pyspark.sql import functions as F

    spec, renames = CONTRACT[name], config.table(name).columns
    cols, missing = [], False
    for column, kind in {**spec.required, **spec.optional}.items():
        source = renames.get(column, column)
        if source not in df.columns:
            if column in spec.required:
                problems.append(Problem(file, "required column is missing", column, droppable=False))
                missing = True
            continue
        cols.append(F.col(f"`{source}`").cast(_CASTS[kind]).alias(column))
    if missing:
        return None
    if spec.keeps_attributes:
        used = {renames.get(c, c) for c in (*spec.required, *spec.optional)}
        cols += [F.col(f"`{c}`") for c in df.columns if c not in used and c]
    return df.select(*cols)


def _read_config(spark: SparkSession, file: str) -> DatasetConfig:
    if not _exists(spark, file):
        return DatasetConfig()
    text = "\n".join(r.value for r in spark.read.text(file).collect())
    return parse(DatasetConfig, yaml_mapping(text, file), file)


def _fs_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    if jvm is None:
        raise RuntimeError("Spark's JVM is gone: the session was stopped")
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), p


def _exists(spark: SparkSession, path: str) -> bool:
    fs, p = _fs_path(spark, path)
    return bool(fs.exists(p))


def _is_dir(spark: SparkSession, path: str) -> bool:
    fs, p = _fs_path(spark, path)
    return bool(fs.getFileStatus(p).isDirectory())


# --- the engine ----------------------------------------------------------------------------------


class SparkEngine(Engine):
    """The history's DataFrames (and a spine) as temp views with names unique to this engine; runs the
    builder's expressions compiled to Spark SQL and returns lazy DataFrames."""

    def __init__(self, history: SparkHistory, spine: DataFrame | None = None) -> None:
        from ibis.backends.pyspark import Backend

        super().__init__()
        if getattr(ibis.options, "pyspark", None) is None:  # the compiler reads them; set on backend load
            Backend.register_options()
        self.spark = history.spark
        self._suffix = uuid.uuid4().hex[:10]
        for name, df in history.tables().items():
            self._register(name, df)
        if spine is not None:
            self._register("spine", spine.select(*KEYS))
            cuts = [r[0] for r in spine.select("cutoff").distinct().collect()]
            self._register("spine_cutoffs", self.spark.createDataFrame(cutoffs_table(sorted(cuts))))

    def _register(self, name: str, df: DataFrame) -> None:
        from ibis.backends.pyspark.datatypes import PySparkType

        view = f"diamond_{name}_{self._suffix}"
        df.createOrReplaceTempView(view)
        schema = ibis.schema({f.name: PySparkType.to_ibis(f.dataType, f.nullable) for f in df.schema.fields})
        self._declare(name, schema, view)

    def cutoffs(self, cutoffs: list[datetime]) -> ir.Table:
        self._register("cutoffs", self.spark.createDataFrame(cutoffs_table(cutoffs)))
        return self.table("cutoffs")

    def run(self, expr: ir.Table) -> DataFrame:
        return self.spark.sql(str(ibis.to_sql(expr, dialect="pyspark")))


# --- the builder on Spark ------------------------------------------------------------------------


def build_spine(history: SparkHistory, cutoffs: Sequence[str | datetime]) -> DataFrame:
    """`build.build_spine` on Spark (unordered)."""
    engine = SparkEngine(history)
    return engine.run(build.spine_expr(engine, build.parse_cutoffs(cutoffs)))


def build_features(
    history: SparkHistory,
    spine: DataFrame,
    feature_set: FeatureSet | str = DEFAULT_FEATURE_SET,
    horizon: str | int = "90d",
    btyd_params: dict[str, list[float]] | None = None,
) -> tuple[DataFrame, dict[str, dict[str, list[float]]]]:
    """`build.build_features` on Spark: the feature rows, and the BTYD parameters used per cutoff (what the
    DuckDB engine keeps in the table's metadata)."""
    fs = get_feature_set(feature_set) if isinstance(feature_set, str) else feature_set
    engine = SparkEngine(history, spine)
    expr, with_btyd = build.features_expr(engine, fs)
    df, fits = engine.run(expr), dict[str, dict[str, list[float]]]()
    if with_btyd:
        df, fits = _add_btyd(df, build.parse_horizon(horizon), btyd_params)
    return df.select(*KEYS, *build.resolve_columns(fs, history)), fits


def build_labels(
    history: SparkHistory,
    spine: DataFrame,
    horizon: str | int,
    churn: str | None = None,
    value: ValueTarget = REVENUE,
) -> DataFrame:
    """`build.build_labels` on Spark (a margin target needs the margin column; blanks are not counted)."""
    from pyspark.sql import functions as F

    horizon_days = build.parse_horizon(horizon)
    latest = spine.agg(F.max("cutoff")).collect()[0][0]  # one row: a global aggregation
    build.check_label_window(latest, horizon_days, history.end())
    engine = SparkEngine(history, spine)
    return engine.run(build.labels_expr(engine, horizon_days, churn or history.churn, value))


def build_training_set(
    history: SparkHistory,
    cutoffs: Sequence[str | datetime],
    horizon: str | int,
    feature_set: FeatureSet | str = DEFAULT_FEATURE_SET,
    churn: str | None = None,
    btyd_horizon: str | int | None = None,
    value: ValueTarget = REVENUE,
) -> tuple[DataFrame, dict[str, dict[str, list[float]]]]:
    """`build.build_training_set` on Spark: features and labels joined on (customer_id, cutoff)."""
    spine = build_spine(history, cutoffs).cache()
    features, fits = build_features(history, spine, feature_set, btyd_horizon or horizon)
    labels = build_labels(history, spine, horizon, churn, value)
    return features.join(labels, KEYS, "left"), fits


def build_scoring_rows(
    history: SparkHistory,
    cutoff: str | datetime,
    feature_set: FeatureSet | str = DEFAULT_FEATURE_SET,
    horizon: str | int = "90d",
    btyd_params: dict[str, list[float]] | None = None,
) -> tuple[DataFrame, dict[str, dict[str, list[float]]]]:
    """Feature rows for every customer eligible at one cutoff (`build.build_scoring_rows` on Spark)."""
    return build_features(history, build_spine(history, [cutoff]), feature_set, horizon, btyd_params)


def monthly_cutoffs(history: SparkHistory, horizon_days: int) -> list[datetime]:
    """`build.monthly_cutoffs` on Spark."""
    first, last = history.event_range()
    return build.month_end_cutoffs(first, history.as_of or last, horizon_days)


def write_training_set(df: DataFrame, path: str, fits: dict[str, dict[str, list[float]]]) -> None:
    """Parquet partitioned by cutoff date (`cutoff_date=YYYY-MM-DD/`; one folder per cutoff, so a cutoff
    can be rebuilt or read alone); re-writing a cutoff replaces only its folder. The BTYD fits go beside
    the parts as `_btyd_fits.json` (readers skip names starting with `_`)."""
    from pyspark.sql import functions as F

    out = df.withColumn("cutoff_date", F.date_format("cutoff", "yyyy-MM-dd"))
    out.write.mode("overwrite").partitionBy("cutoff_date").parquet(path)
    _write_text(df.sparkSession, f"{path.rstrip('/')}/_btyd_fits.json", json.dumps(fits))


def _write_text(spark: SparkSession, path: str, text: str) -> None:
    fs, p = _fs_path(spark, path)
    stream = fs.create(p, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


# --- BTYD ----------------------------------------------------------------------------------------


def _add_btyd(
    df: DataFrame, horizon_days: int, fixed: dict[str, list[float]] | None
) -> tuple[DataFrame, dict[str, dict[str, list[float]]]]:
    """Fit per cutoff on the driver from distinct summary rows with counts (or use `fixed`), then apply
    `build.apply_btyd` to each partition's Arrow batches."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    df = df.cache()
    x, tx, big_t, m = build.BTYD_SUMMARY
    bg = df.where(F.col(x).isNotNull()).groupBy("cutoff", x, tx, big_t).count().toArrow()
    gg = df.where((F.col(x) > 0) & (F.col(m) > 0)).groupBy("cutoff", x, m).count().toArrow()
    fits: dict[str, dict[str, list[float]]] = {}
    bg_cut, gg_cut = bg.column("cutoff").to_numpy(), gg.column("cutoff").to_numpy()
    for value in np.unique(bg_cut):
        sel, gsel = bg_cut == value, gg_cut == value
        weights = build.float_column(bg, "count")[sel]
        fit = build.fit_btyd(
            (
                build.float_column(bg, x)[sel],
                build.float_column(bg, tx)[sel],
                build.float_column(bg, big_t)[sel],
                weights,
            ),
            (
                build.float_column(gg, x)[gsel],
                build.float_column(gg, m)[gsel],
                build.float_column(gg, "count")[gsel],
            ),
            fixed,
        )
        if fit is not None:
            fits[str(value)] = fit
    fields = [f for f in df.schema.fields if f.name not in build.BTYD_SUMMARY]
    fields += [T.StructField(name, T.DoubleType(), True) for name in BTYD_FEATURES]
    schema = T.StructType(fields)
    names = schema.fieldNames()

    def apply(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            table = build.apply_btyd(pa.Table.from_batches([batch]), fits, horizon_days)
            yield from table.select(names).to_batches()

    return df.mapInArrow(apply, schema), fits
