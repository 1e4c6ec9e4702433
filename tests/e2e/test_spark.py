"""The Spark engine in local mode (`local[2]`): the same definitions give the same training sets and scores as
DuckDB (float tolerance 1e-9), distributed XGBoost trains sanely, and `--engine spark` works from the CLI.

One SparkSession for the module (starting a JVM costs ~10 s); histories are real Parquet folders."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from features import build
from features import spark as fsp
from features.datasets import synthetic
from features.history import HistoryError, load_history
from tests.helpers import SMALL_TRAINING, run_diamond

CUTOFFS = ["2024-06-30", "2024-12-31", "2025-06-30"]
TOL = 1e-9
# Short runs on small data: the JVM's first JIT tier alone and its serial collector spend far less CPU than
# the defaults (this file took about 30 % less time); the results are the same.
SHORT_RUN_JVM = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}


@pytest.fixture(scope="module")
def spark():
    session = fsp.session(
        "local[2]",
        conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.driver.memory": "1g",
            "spark.sql.adaptive.enabled": "true",
            **SHORT_RUN_JVM,
        },
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "history"
    synthetic.write(out, 1500, 7)
    return out


def _frame(table: pa.Table) -> pd.DataFrame:
    drop = [c for c in ("cutoff_date", "as_of_date") if c in table.column_names]
    keys = [k for k in ("cutoff", "customer_id") if k in table.column_names]
    return table.drop(drop).to_pandas().sort_values(keys).reset_index(drop=True)


def assert_same_rows(expected: pa.Table, got: pa.Table) -> None:
    """Same columns in the same order, same rows (by key), numbers within 1e-9, everything else equal."""
    a, b = _frame(expected), _frame(got)
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b) > 0
    for column in a.columns:
        x, y = a[column], b[column]
        if column == "reasons":  # JSON that quotes feature values: compared as data, numbers within 1e-9
            for r, q in zip(x, y, strict=True):
                _same_reasons(json.loads(r), json.loads(q))
        elif pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x):
            x, y = x.astype("float64").to_numpy(), y.astype("float64").to_numpy()
            close = np.isclose(x, y, rtol=TOL, atol=TOL, equal_nan=True)
            assert close.all(), (
                f"{column}: {(~close).sum()} rows differ, first {x[~close][:3]} vs {y[~close][:3]}"
            )
        else:
            assert x.isna().tolist() == y.isna().tolist(), column
            assert x[x.notna()].astype(str).tolist() == y[y.notna()].astype(str).tolist(), column


def _same_reasons(expected: list[dict], got: list[dict]) -> None:
    assert [(r["feature"], r["direction"]) for r in expected] == [(r["feature"], r["direction"]) for r in got]
    for r, q in zip(expected, got, strict=True):
        assert np.isclose(r["contribution"], q["contribution"], rtol=0, atol=1.01e-6)  # rounded to 1e-6
        if isinstance(r["value"], float):
            assert np.isclose(r["value"], q["value"], rtol=TOL, atol=TOL)
        else:
            assert r["value"] == q["value"]


@pytest.fixture(scope="module")
def spark_training_set(spark, synth: Path):
    """The synthetic history's training set at CUTOFFS built on Spark, and its BTYD fits."""
    got, fits = fsp.build_training_set(fsp.load_history(spark, str(synth)), CUTOFFS, "90d")
    return got.cache(), fits


def test_training_set_equals_duckdb_row_for_row(spark_training_set, synth: Path, tmp_path: Path) -> None:
    expected = build.build_training_set(load_history(synth), CUTOFFS, "90d")
    got, fits = spark_training_set
    out = str(tmp_path / "train")
    fsp.write_training_set(got, out, fits)

    written = pq.read_table(out)  # the partitioned dataset as any Parquet reader sees it
    assert sorted({p.name for p in Path(out).iterdir() if p.is_dir()}) == [
        f"cutoff_date={c}" for c in CUTOFFS
    ]
    assert_same_rows(expected, written)
    assert set(expected.column_names) >= {"churned", "future_value", "btyd_p_alive", "attr_plan"}
    # eligibility: the same (customer, cutoff) pairs, and labels were not all one value
    assert expected.num_rows == written.num_rows
    assert 0 < pa.compute.mean(written.column("churned")).as_py() < 1
    # BTYD: the parameters fitted from distinct rows with counts are the DuckDB fit, bit for bit
    assert fits == build.btyd_fits(expected)
    assert len(fits) == len(CUTOFFS)


def test_core_v2_features_equal_duckdb_row_for_row(spark, synth: Path) -> None:
    """core_v2's new views (interaction days, click conversions, category spend) compile to Spark SQL and
    give DuckDB's numbers."""
    history = load_history(synth)
    expected = build.build_features(history, build.build_spine(history, CUTOFFS), "core_v2")
    shistory = fsp.load_history(spark, str(synth))
    got, _ = fsp.build_features(shistory, fsp.build_spine(shistory, CUTOFFS), "core_v2")
    assert_same_rows(expected, got.toArrow())
    for name in ("support_ticket_value_last", "campaign_conversion_rate", "category_entropy"):
        assert expected.column(name).null_count < expected.num_rows  # the synthetic history feeds them


@pytest.fixture(scope="module")
def hand_built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Late-recorded events, refunds, same-day purchases, a cancellation and contractual churn."""
    folder = tmp_path_factory.mktemp("hand") / "h"
    folder.mkdir()
    ts = pa.timestamp("us")
    pq.write_table(
        pa.table(
            {
                "customer_id": ["a", "a", "a", "b", "b", "c", "d"],
                "timestamp": pa.array(
                    [
                        datetime(2024, 1, 5, 10),
                        datetime(2024, 1, 5, 18),
                        datetime(2024, 3, 1),
                        datetime(2024, 2, 1),
                        datetime(2024, 4, 2),
                        datetime(2024, 1, 20),
                        datetime(2024, 3, 30),
                    ],
                    ts,
                ),
                "amount": [10.0, 5.5, -3.0, 20.0, 7.25, 12.0, 1.0],
                "recorded_at": pa.array([None, None, None, None, None, datetime(2024, 4, 10), None], ts),
            }
        ),
        folder / "transactions.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "customer_id": ["b"],
                "timestamp": pa.array([datetime(2024, 4, 15)], ts),
            }
        ),
        folder / "cancellations.parquet",
    )
    (folder / "dataset.yaml").write_text(
        yaml.safe_dump({"churn": "contractual", "as_of": "2024-07-31"}), encoding="utf-8"
    )
    return folder


def test_spine_and_labels_of_a_hand_built_history(spark, hand_built: Path) -> None:
    folder = hand_built
    cuts = ["2024-03-31", "2024-04-30"]
    expected = build.build_training_set(load_history(folder), cuts, "60d", "rfm_v1")
    got, _ = fsp.build_training_set(fsp.load_history(spark, str(folder)), cuts, "60d", "rfm_v1")
    result = got.toArrow()
    assert_same_rows(expected, result)
    pairs = sorted(
        zip(result.column("cutoff").to_pylist(), result.column("customer_id").to_pylist(), strict=True)
    )
    churned = dict(
        zip(
            zip(result.column("cutoff").to_pylist(), result.column("customer_id").to_pylist(), strict=True),
            result.column("churned").to_pylist(),
            strict=True,
        )
    )
    assert churned[(datetime(2024, 3, 31, 23, 59, 59, 999999), "b")] == 1  # cancels 04-15, inside (T, T+60d]
    assert churned[(datetime(2024, 3, 31, 23, 59, 59, 999999), "a")] == 0  # contractual: no cancellation
    # c is known only from 2024-04-10 (recorded late); b cancelled on 2024-04-15 so is gone at 04-30
    assert [(f"{t:%m-%d}", c) for t, c in pairs] == [
        ("03-31", "a"),
        ("03-31", "b"),
        ("03-31", "d"),
        ("04-30", "a"),
        ("04-30", "c"),
        ("04-30", "d"),
    ]


def test_structural_errors_name_the_file_and_column(spark, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    pq.write_table(pa.table({"customer_id": ["a"], "amount": [1.0]}), folder / "transactions.parquet")
    with pytest.raises(HistoryError, match=r"transactions\.parquet: column 'timestamp': required column"):
        fsp.load_history(spark, str(folder))
    with pytest.raises(HistoryError, match=r"transactions\.parquet: not found"):
        fsp.load_history(spark, str(tmp_path / "nowhere"))


@pytest.fixture(scope="module")
def champion(synth: Path, tmp_path_factory: pytest.TempPathFactory):
    """A small model trained and promoted by the real CLI on the synthetic history."""
    from serving.champion import ChampionHolder
    from training.tracking import MlflowConfig

    work = tmp_path_factory.mktemp("champion")
    config = work / "training.yaml"
    config.write_text(yaml.safe_dump({**SMALL_TRAINING, "origins": 2}), encoding="utf-8")
    run_diamond("train", "--data", str(synth), "--config", str(config), cwd=work)
    holder = ChampionHolder(MlflowConfig.load(), "champion")
    holder.refresh()
    assert holder.current is not None, holder.last_error
    return holder.current


def test_spark_batch_scores_equal_duckdb_batch_scores(spark, synth: Path, champion, tmp_path: Path) -> None:
    from serving import batch, spark_batch
    from serving.config import ServingConfig

    config = ServingConfig.load()
    config = type(config)(
        **{**config.__dict__, "scores_dir": str(tmp_path / "scores"), "alerts": {}, "webhooks": {}},
    )
    as_of = datetime(2025, 9, 30, 23, 59, 59)
    duck = batch.score_history(load_history(synth), as_of, champion, config)
    expected = pq.read_table(duck.parquet).drop(["previous_tier"])
    out = str(tmp_path / "spark-scores")
    result = spark_batch.score_history(fsp.load_history(spark, str(synth)), as_of, champion, config, out)
    got = pq.read_table(out)
    assert [p.name for p in Path(out).iterdir() if p.is_dir()] == ["as_of_date=2025-09-30"]
    assert_same_rows(expected, got)
    assert result.customers == expected.num_rows
    assert sum(result.tiers.values()) == expected.num_rows and len(result.tiers) > 1


def test_xgboost_spark_trains_close_to_one_machine(spark_training_set) -> None:
    import xgboost as xgb
    from pyspark.sql import functions as F

    from training.models import booster_params
    from training.spark_train import train_booster_spark

    rows, _ = spark_training_set
    train = rows.where(F.col("cutoff") < datetime(2025, 1, 1))
    held = rows.where(F.col("cutoff") > datetime(2025, 1, 1)).toPandas()
    columns = ["recency_days", "frequency_days", "monetary_mean", "purchases_90d", "btyd_p_alive"]
    params = {"n_estimators": 40, "learning_rate": 0.2, "max_depth": 2, "min_child_weight": 5}
    booster = train_booster_spark(train, columns, "churned", "binary:logistic", params, num_workers=2)
    local_rows = train.toPandas()
    local_dm = xgb.DMatrix(local_rows[columns].astype(float), label=local_rows["churned"])
    local = xgb.train(booster_params("binary:logistic", params, 0, 1), local_dm, num_boost_round=40)
    held_dm = xgb.DMatrix(held[columns].astype(float))
    auc_spark = roc_auc_score(held["churned"], booster.predict(held_dm))
    auc_local = roc_auc_score(held["churned"], local.predict(held_dm))
    assert auc_spark > 0.65, auc_spark
    assert abs(auc_spark - auc_local) < 0.02, (auc_spark, auc_local)


def test_cli_features_build_with_engine_spark_matches_duckdb(
    hand_built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {
        "engine": "duckdb",
        "spark": {
            "master": "local[2]",
            "conf": {"spark.sql.shuffle.partitions": 2, "spark.ui.enabled": "false", **SHORT_RUN_JVM},
        },
    }
    (tmp_path / "engine.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    monkeypatch.setenv("DIAMOND_ENGINE_CONFIG", str(tmp_path / "engine.yaml"))
    args = ["features", "build", "--data", str(hand_built), "--cutoffs", "2024-03-31,2024-04-30"]
    args += ["--horizon", "60d", "--feature-set", "rfm_v1"]
    run_diamond(*args, "--out", str(tmp_path / "duck.parquet"))
    run_diamond(*args, "--out", str(tmp_path / "spark"), "--engine", "spark")
    assert_same_rows(pq.read_table(tmp_path / "duck.parquet"), pq.read_table(tmp_path / "spark"))
    fits = json.loads((tmp_path / "spark" / "_btyd_fits.json").read_text(encoding="utf-8"))
    assert fits == build.btyd_fits(pq.read_table(tmp_path / "duck.parquet"))  # rfm_v1: none fitted


def test_cli_refuses_an_unknown_engine(synth: Path, tmp_path: Path) -> None:
    done = run_diamond(
        "features",
        "build",
        "--data",
        str(synth),
        "--out",
        str(tmp_path / "x"),
        "--engine",
        "flink",
        check=False,
    )
    assert done.returncode == 2
    assert "engine 'flink': expected one of duckdb, spark" in done.stderr
    assert not (tmp_path / "x").exists()
