"""Distributed XGBoost for training sets too large for one machine (`xgboost.spark`): one booster trained by
`num_workers` Spark tasks over a Spark-built training set (features.spark). Optional: the default pipeline
trains on one machine (training.models); this returns the same kind of `xgboost.Booster`, with the same
parameters (training.models.booster_params), so it can stand in for the single-machine fit. Inputs are
numeric columns (counts, sums, days, BTYD); categorical attributes must be encoded first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import xgboost as xgb

from training.models import booster_params

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def train_booster_spark(
    train: DataFrame,
    columns: list[str],
    label: str,
    objective: str,
    params: dict[str, Any],
    seed: int = 0,
    num_workers: int = 2,
) -> xgb.Booster:
    """Fit one booster on `train` (a Spark DataFrame with `columns` and `label`) across `num_workers` tasks;
    nulls are XGBoost's missing values, negative future values are clipped at 0 as on one machine."""
    from pyspark.sql import functions as F
    from xgboost.spark import SparkXGBClassifier, SparkXGBRegressor

    label_col = F.col(label).cast("double")
    if label == "future_value":
        label_col = F.greatest(label_col, F.lit(0.0))
    frame = train.select(*[F.col(c).cast("double").alias(c) for c in columns], label_col.alias("label"))
    xgb_params = booster_params(objective, params, seed, 1)
    rounds = int(params.get("n_estimators", 300))
    xgb_params.pop("nthread")
    estimator_cls: type[SparkXGBClassifier | SparkXGBRegressor]
    if objective == "binary:logistic":  # the classifier sets its own (binary) objective
        estimator_cls = SparkXGBClassifier
        xgb_params.pop("objective")
    else:
        estimator_cls = SparkXGBRegressor
    estimator = estimator_cls(
        features_col=columns,
        label_col="label",
        num_workers=num_workers,
        n_estimators=rounds,
        missing=float("nan"),
        **{k: v for k, v in xgb_params.items() if k != "seed"},
        random_state=seed,
    )
    return estimator.fit(frame).get_booster()
