"""Wiring: which step feeds which. No maths here (training.design, training.models, training.tuning,
training.tiers)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from features.build import (
    build_labels,
    build_scoring_rows,
    build_spine,
    end_of,
    parse_cutoff,
    parse_horizon,
)
from features.history import History
from features.sets import FeatureSet
from training import baselines, contract, design, drift, levels, metrics, segments, tiers, tuning
from training.artefact import ScoringArtefact
from training.config import ParityConfig, TrainingConfig
from training.contract import ContractModel
from training.curve import CurveSpec
from training.levels import Levels
from training.models import (
    ANY_VALUE,
    SPEND_OBJECTIVE,
    fit_churn,
    fit_value,
    hurdle_fits,
    split_latest,
    with_any_value,
)
from training.rfm import RfmRank

if TYPE_CHECKING:
    from training.registry import Decision
    from training.tracking import Logged, MlflowConfig


@dataclass
class Trained:
    """A scoring artefact and how it was made: what the tracking, the gate and the reports need."""

    artefact: ScoringArtefact
    origins: list[datetime]
    validation: dict[str, float]  # latest origin, label horizon: model and baselines (baseline_*)
    tuning: dict[str, float]
    params: dict[str, dict[str, Any]]  # churn / value (/ buyer: the value hurdle's classifier): XGBoost's
    validation_rows: pd.DataFrame  # the latest origin's rows with labels (the gate's window)
    # churn_probability (NaN when the churn model validates on its own window), predicted_value there
    validation_predictions: pd.DataFrame
    scoring_rows: pd.DataFrame  # every customer at the cutoff, model inputs (BTYD over H)
    bridge_rows: pd.DataFrame | None  # the same customers with BTYD over h (None when H <= h)
    training_rows: int
    seconds: dict[str, float] = field(default_factory=dict)
    segments: list[dict[str, Any]] = field(default_factory=list)  # quality by segment, validation window
    # a churn model at H validates on its own latest origin (H-day labels): those rows and its probabilities
    # there (None: it shares validation_rows)
    churn_validation_rows: pd.DataFrame | None = None
    churn_validation_probability: np.ndarray | None = None
    churn_origins: list[datetime] | None = None  # the churn model's own origins (None: `origins`)

    def churn_window(self) -> tuple[pd.DataFrame, np.ndarray]:
        """The churn model's validation rows (with labels) and its validation-stage probabilities there."""
        if self.churn_validation_rows is not None and self.churn_validation_probability is not None:
            return self.churn_validation_rows, self.churn_validation_probability
        return self.validation_rows, self.validation_predictions["churn_probability"].to_numpy()


@dataclass
class Backtest:
    trained: Trained
    horizon_days: int
    predictions: pd.DataFrame  # customer_id, churn_probability, predicted_value
    truth: pd.DataFrame | None = None  # customer_id, churned, future_value over (T, T + H]
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # model/baseline -> metrics
    segments: list[dict[str, Any]] = field(default_factory=list)  # quality by segment over (T, T + H]


def fit(history: History, cutoff: str | datetime, config: TrainingConfig) -> Trained:
    """Tune, fit and map both models using only what was known at `cutoff`."""
    clock: dict[str, float] = {}
    start = time.perf_counter()
    t = parse_cutoff(cutoff)
    target = config.value.spec()
    target.check(history)  # a margin target without margins is refused before anything is built
    big_h, h = config.horizon_days, min(config.label_horizon_days, config.horizon_days)
    fs = design.choose_feature_set(history, config.feature_set)
    columns = design.model_columns(fs, history.until(t), config.exclude_features)
    own = design.churn_design(
        history, t, h, big_h, config.churn_labels, config.churn_origins, config.min_history_days
    )
    h, origins = value_design(history, t, big_h, config, own)
    if own is not None and h == own[0]:  # both models learn H-day labels, at the same origins and columns
        known = history.until(t)
        columns = design.churn_columns(fs, known, config.exclude_features, config.churn_keep_features)
    frame = design.training_frame(history, t, origins, h, big_h, fs, target)
    rows, short = design.scoring_frames(history, t, h, big_h, fs)
    churn_h, churn_frame, churn_columns = h, frame, columns
    if own is not None and own[0] != h:  # the churn model alone learns H-day labels at its own origins
        churn_h = own[0]
        churn_frame = design.training_frame(history, t, own[1], churn_h, big_h, fs, target)
        churn_columns = design.churn_columns(
            fs, history.until(t), config.exclude_features, config.churn_keep_features
        )
    clock["features_s"] = time.perf_counter() - start

    tune_classifier = partial(  # one search set-up for churn and for the value hurdle's P(any value)
        tuning.tune_churn,
        start=config.xgboost.params(),
        search=config.search,
        trials=config.trials,
        timeout_s=config.timeout_s,
        seed=config.seed,
        n_jobs=config.n_jobs,
    )
    churn_tuned = tune_classifier(churn_frame, churn_h, churn_columns)
    hurdle = config.value_model == "hurdle" and hurdle_fits(frame, h)
    buyer_tuned = tune_classifier(with_any_value(frame), h, columns, label=ANY_VALUE) if hurdle else None
    value_tuned = tuning.tune_value(
        frame[frame["future_value"] > 0] if hurdle else frame,
        h,
        columns,
        config.xgboost.params(),
        config.search,
        (SPEND_OBJECTIVE,) if hurdle else config.value_objectives,
        config.trials,
        config.timeout_s,
        config.seed,
        config.n_jobs,
    )
    clock["tuning_s"] = time.perf_counter() - start - clock["features_s"]

    churn, churn_validated = fit_churn(
        churn_frame, churn_h, churn_columns, churn_tuned.params, config.seed, config.n_jobs
    )
    churn = dataclasses.replace(churn, rfm=RfmRank.fit(rows))  # ranks are within the population at T
    bridge = short if churn_h < big_h else None  # a churn model at H needs no map
    churn = dataclasses.replace(
        churn,
        horizon_map=design.churn_horizon_map(churn.predict_label_horizon(rows), rows, bridge),
        label_days=churn_h if churn_h != h else None,
    )
    value, value_validated = fit_value(
        frame,
        h,
        columns,
        value_tuned.params,
        config.seed,
        config.n_jobs,
        buyer_tuned.params if buyer_tuned is not None else None,
    )
    value = dataclasses.replace(
        value, horizon_map=design.value_horizon_map(value.predict_label_horizon(rows), rows, short)
    )
    thresholds = tiers.tier_thresholds(value.predict(rows), config.tiers)
    late = split_latest(frame, h)[1]
    churn_late = split_latest(churn_frame, churn_h)[1]
    started = time.perf_counter()
    booster_scores_contract = own is not None and config.contract.scorer == "auto"
    contract_model = None if booster_scores_contract else fit_contract(history, t, fs, columns, big_h, config)
    clock["contract_s"] = time.perf_counter() - started
    y, actual = late["churned"].to_numpy(), late["future_value"].to_numpy()
    validation = {
        **metrics.churn_metrics(churn_late["churned"].to_numpy(), churn_validated),
        **metrics.value_metrics(actual, value_validated),
        **_baseline_scores(late, h),
    }
    artefact = ScoringArtefact(  # its columns are the churn booster's (value's are the same or fewer)
        fs.key,
        churn_columns,
        t,
        h,
        big_h,
        churn,
        value,
        thresholds,
        validation,
        rows.attrs.get("btyd_params"),
    )
    artefact.curve = CurveSpec(history.churn)  # time to churn follows the history's churn definition
    artefact.value_target = target  # what predicted_value (and value at risk, tiers) measure
    artefact.contract = contract_model
    started = time.perf_counter()
    contract_mode = contract.contract_mode(history) if booster_scores_contract else None
    if not config.contract.enabled:
        contract_mode = None
    artefact.levels = fit_levels(history, t, fs, artefact, config, contract_mode)
    clock["levels_s"] = time.perf_counter() - started
    if artefact.levels is not None:  # tiers cut the final values
        artefact.tiers = tiers.tier_thresholds(
            artefact.score(rows)["predicted_value"].to_numpy(), config.tiers
        )
    artefact.drift_reference = drift.reference(
        drift.model_frame(rows, artefact.score(rows), churn_columns), churn.encoder.categories
    )
    clock["fit_s"] = time.perf_counter() - start - sum(clock.values())
    own_window = churn_h != h
    if own_window:  # value on its window, churn on its own (tiers there cut by the final value model)
        by_segment = merge_churn_quality(
            quality_by_segment(history, late, y, np.zeros(len(late)), actual, value_validated, config),
            quality_by_segment(
                history,
                churn_late,
                churn_late["churned"].to_numpy(),
                churn_validated,
                churn_late["future_value"].to_numpy(),
                value.predict_label_horizon(churn_late),
                config,
            ),
            config.parity,
        )
        churn_on_late = np.full(len(late), np.nan)  # the churn model's validation is churn_window()
    else:
        by_segment = quality_by_segment(history, late, y, churn_validated, actual, value_validated, config)
        churn_on_late = churn_validated
    return Trained(
        artefact,
        origins,
        validation,
        {
            **churn_tuned.summary("churn"),
            **value_tuned.summary("value"),
            **(buyer_tuned.summary("buyer") if buyer_tuned is not None else {}),
        },
        {
            "churn": churn_tuned.params,
            "value": value_tuned.params,
            **({"buyer": buyer_tuned.params} if buyer_tuned is not None else {}),
        },
        late,
        pd.DataFrame(
            {"churn_probability": churn_on_late, "predicted_value": value_validated}, index=late.index
        ),
        rows,
        short,
        len(frame),
        clock,
        by_segment,
        churn_late if own_window else None,
        churn_validated if own_window else None,
        own[1] if own is not None else None,
    )


def fit_contract(
    history: History,
    cutoff: datetime,
    fs: FeatureSet,
    columns: list[str],
    horizon_days: int,
    config: TrainingConfig,
) -> ContractModel | None:
    """The cancellation hazard of the customers under contract (training.contract), or None when the
    history has none (or `contract.enabled` is false)."""
    mode = contract.contract_mode(history)
    if mode is None or not config.contract.enabled:
        return None
    origins = contract.hazard_origins(history, cutoff, config.contract.periods, config.min_history_days)
    if not origins:
        return None
    frame = contract.person_periods(history, cutoff, origins, fs, mode)
    if frame.empty or frame["churned"].nunique() < 2:
        return None  # nobody under contract, or no cancellation yet: nothing to learn a hazard from
    hazard_cols = contract.hazard_columns(columns, fs)
    return contract.fit_hazard(frame, hazard_cols, mode, horizon_days, config.seed, config.n_jobs)


def fit_levels(
    history: History,
    cutoff: datetime,
    fs: FeatureSet,
    artefact: ScoringArtefact,
    config: TrainingConfig,
    contract_mode: str | None = None,
) -> Levels | None:
    """Recalibrate the artefact's levels on a complete window before `cutoff` (training.levels): the silence
    churn shift and the value factor returned, the contract model's level set on it. `contract_mode`
    (contractual | mixed; no contract model): the customers under contract, scored by the churn booster,
    get a shift of their own. None when no window is complete by `cutoff` (or `levels.window` is none)."""
    big_h = artefact.horizon_days
    origin = levels.calibration_origin(history, cutoff, big_h, config.min_history_days, config.levels.window)
    if origin is None:
        return None
    known = history.until(cutoff)
    rows = build_scoring_rows(known, origin, fs, big_h).to_pandas()
    if rows.empty:
        return None
    truth = build_labels(known, build_spine(known, [origin]), big_h, value=config.value.spec()).to_pandas()
    if not np.array_equal(truth["customer_id"].to_numpy(), rows["customer_id"].to_numpy()):
        raise RuntimeError("labels and calibration rows are not in the same customer order")
    y, actual = truth["churned"].to_numpy(), truth["future_value"].to_numpy(dtype=np.float64)
    dm = artefact.matrix(rows)
    p, v = artefact.churn.predict(rows, dm), artefact.value.predict(rows, artefact.value_matrix(rows, dm))
    bound = artefact.contract
    mask = bound.applies(rows) if bound is not None else np.zeros(len(rows), bool)
    held = contract.under_contract(rows, contract_mode) if contract_mode is not None else None
    info: dict[str, Any] = {
        "window": config.levels.window,
        "origin": f"{origin:%Y-%m-%d}",
        "customers": len(rows),
        "realised_value": float(actual.sum()),
        "predicted_value": float(v.sum()),
        "silence_customers": int((~mask).sum()),
        "silence_churn_rate": float(y[~mask].mean()) if (~mask).any() else None,
        "silence_mean_probability": float(p[~mask].mean()) if (~mask).any() else None,
    }
    if bound is not None and mask.any():
        sub = rows.loc[mask]
        survival = bound.survival(sub, level=1.0)
        bound.level = contract.fit_level(survival, y[mask])
        bound.info.update(
            calibration_origin=f"{origin:%Y-%m-%d}",
            calibration_customers=int(mask.sum()),
            calibration_cancellation_rate=float(y[mask].mean()),
            calibration_mean_probability_before=float(np.mean(1 - survival)),
        )
    # value on H-day labels trained on this window: a level only (training.levels)
    factor, slope = levels.fit_value_level(v, actual, slope=artefact.label_horizon_days < big_h)
    fitted = Levels(levels.fit_churn_shift(p[~mask], y[~mask]), factor, info, slope)
    if held is not None and contract_mode is not None and held.any():
        # under contract, scored by the booster: their own shift, pooled over the latest complete windows
        fitted.churn_shift = levels.fit_churn_shift(p[~held], y[~held])
        pooled_p, pooled_y, used = contract_windows(
            known, cutoff, fs, artefact, config, contract_mode, origin, (p[held], y[held])
        )
        fitted.contract_shift = levels.fit_churn_shift(pooled_p, pooled_y)
        fitted.contract_mode = contract_mode
        info.update(
            contract_windows=[f"{o:%Y-%m-%d}" for o in used],
            contract_customers=int(pooled_y.size),  # subscriber-windows pooled
            contract_churn_rate=float(pooled_y.mean()),
            contract_mean_probability=float(pooled_p.mean()),
            contract_window_customers=int(held.sum()),  # the levels' window alone
            contract_window_churn_rate=float(y[held].mean()),
            contract_window_mean_probability=float(p[held].mean()),
        )
    info["recalibrated_value"] = float(fitted.value(v).sum())
    return fitted


def contract_windows(
    known: History,
    cutoff: datetime,
    fs: FeatureSet,
    artefact: ScoringArtefact,
    config: TrainingConfig,
    mode: str,
    origin: datetime,
    at_origin: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, list[datetime]]:
    """The churn booster's P(churn) and the realised churn of the customers under contract, pooled over the
    latest `levels.contract_windows` complete H-windows before `cutoff` (training.levels.contract_origins),
    and the windows used; `at_origin` (the levels' own window's, already scored) is reused there."""
    big_h = artefact.horizon_days
    chosen = levels.contract_origins(
        known, cutoff, big_h, config.min_history_days, config.levels.contract_windows, origin
    )
    ps: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    used: list[datetime] = []
    for o in chosen:
        if o == origin:
            p, y = at_origin
        else:
            rows = build_scoring_rows(known, o, fs, big_h).to_pandas()
            if rows.empty:
                continue
            spine = build_spine(known, [o])
            truth = build_labels(known, spine, big_h, value=config.value.spec()).to_pandas()
            if not np.array_equal(truth["customer_id"].to_numpy(), rows["customer_id"].to_numpy()):
                raise RuntimeError("labels and calibration rows are not in the same customer order")
            held = contract.under_contract(rows, mode)
            if not held.any():
                continue
            p = artefact.churn.predict(rows, artefact.matrix(rows))[held]
            y = truth["churned"].to_numpy()[held]
        ps.append(np.asarray(p, dtype=np.float64))
        ys.append(np.asarray(y, dtype=np.float64))
        used.append(o)
    return np.concatenate(ps), np.concatenate(ys), used


def quality_by_segment(
    history: History,
    rows: pd.DataFrame,
    churned: object,
    probability: object,
    actual: object,
    predicted: object,
    config: TrainingConfig,
) -> list[dict[str, Any]]:
    """training.segments on one window: tiers from the window's predicted values, contract type, each
    categorical attribute; parity margins from training.yaml."""
    value = np.asarray(predicted, dtype=np.float64)
    labels = segments.segment_labels(rows, value, config.tiers, history.churn, config.parity.max_levels)
    return segments.segment_quality(
        labels, churned, probability, actual, value, config.parity, {"tier": list(config.tiers)}
    )


CHURN_KEYS = ("churn_rate", "mean_probability", "calibration_gap", "churn_auc", "churn_brier")


def merge_churn_quality(
    value_table: list[dict[str, Any]], churn_table: list[dict[str, Any]], parity: ParityConfig
) -> list[dict[str, Any]]:
    """One segment table from two windows: value metrics from the value model's, churn metrics (and
    `churn_customers`) from the churn model's (a churn model at H validates on an older origin); flags
    recomputed, the churn ones judged on the churn window's size. A segment the churn window lacks is left
    out."""
    churn = {(r["by"], r["segment"]): r for r in churn_table}
    out: list[dict[str, Any]] = []
    for r in value_table:
        c = churn.get((r["by"], r["segment"]))
        if c is not None:
            out.append({**r, **{k: c[k] for k in CHURN_KEYS}, "churn_customers": c["customers"]})
    whole = out[0] if out and out[0]["by"] == segments.ALL else None
    for r in out:
        if whole is None or r is whole:
            r["flags"] = []
            continue
        churn_part = {**r, "customers": r["churn_customers"], "value_error": None}  # judged on its own size
        value_part = {**r, "calibration_gap": 0.0}
        r["flags"] = segments.flags(churn_part, whole, parity, r["by"] != "tier") + segments.flags(
            value_part, whole, parity, judge_auc=False
        )
    return out


@dataclass
class TrainResult:
    trained: Trained
    logged: Logged  # run id, registered version, model URI
    decision: Decision


def train(
    history: History,
    config: TrainingConfig,
    mlcfg: MlflowConfig,
    cutoff: str | datetime | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> TrainResult:
    """`diamond train`: features -> tune -> fit -> log -> register a challenger -> gate -> report (logged on
    the run as report.html)."""
    from training import registry, report, tracking

    t = parse_cutoff(cutoff) if cutoff is not None else end_of(history)
    trained = fit(history, t, config)
    logged = tracking.log_training(
        trained, history.until(t).fingerprint(), config, mlcfg, run_name, tags=tags
    )
    registry.register_challenger(mlcfg, logged.version)

    def window(artefact: ScoringArtefact) -> pd.DataFrame:
        if (
            artefact.feature_set == trained.artefact.feature_set
            and artefact.horizon_days == config.horizon_days
        ):
            return trained.validation_rows
        return validation_window(history, t, config, artefact)

    decision = registry.decide(mlcfg, logged.version, window, config.gate)
    report.log_report(mlcfg, logged.run_id)
    return TrainResult(trained, logged, decision)


def value_design(
    history: History,
    cutoff: datetime,
    horizon_days: int,
    config: TrainingConfig,
    own: tuple[int, list[datetime]] | None,
) -> tuple[int, list[datetime]]:
    """The value model's label horizon and origins (its latest validates): the churn model's own H-day
    design `own` with `value_labels: full`, else h-day labels at the latest `origins` month ends."""
    if own is not None and config.value_labels == "full":
        return own
    h = min(config.label_horizon_days, horizon_days)
    return h, design.training_origins(history, cutoff, h, config.origins, config.min_history_days)


def validation_window(
    history: History, cutoff: datetime, config: TrainingConfig, artefact: ScoringArtefact
) -> pd.DataFrame:
    """The latest validation origin's rows with labels, built for `artefact`'s feature set and horizon, at
    the origin and label horizon a training with this config validates its value model on (`fit`); values
    measured as this training's config says (the gate compares both models on what is wanted now)."""
    big_h = artefact.horizon_days
    short = min(config.label_horizon_days, big_h)
    own = design.churn_design(
        history, cutoff, short, big_h, config.churn_labels, config.churn_origins, config.min_history_days
    )
    h, origins = value_design(history, cutoff, big_h, config, own)
    fs = design.choose_feature_set(history, artefact.feature_set)
    return design.training_frame(
        history, cutoff, origins[-1:], h, artefact.horizon_days, fs, config.value.spec()
    )


def backtest(
    history: History, cutoff: str | datetime, horizon: str | int, config: TrainingConfig
) -> Backtest:
    """Train with data <= cutoff, predict every eligible customer over (cutoff, cutoff + H], and score
    against what happened (when the history reaches that far) beside the RFM and BG/NBD baselines."""
    t, big_h = parse_cutoff(cutoff), parse_horizon(horizon)
    trained = fit(history, t, config.model_copy(update={"horizon_days": big_h}))
    scores = trained.artefact.score(trained.scoring_rows)
    preds = scores[["customer_id", "churn_probability", "predicted_value"]].reset_index(drop=True)
    models = scores["churn_model"].to_numpy()  # which churn model scored whom
    result = Backtest(trained, big_h, preds)
    if end_of(history) < t + timedelta(days=big_h):
        return result  # the future is not in the history: predictions only
    spine = pa.table(
        {"customer_id": preds["customer_id"], "cutoff": pa.array([t] * len(preds), pa.timestamp("us"))}
    )
    truth = build_labels(history, spine, big_h, value=trained.artefact.value_target).to_pandas()
    result.truth = truth[["customer_id", "churned", "future_value"]]
    if not np.array_equal(truth["customer_id"].to_numpy(), preds["customer_id"].to_numpy()):
        raise RuntimeError("labels and predictions are not in the same customer order")
    y, value = truth["churned"].to_numpy(), truth["future_value"].to_numpy()
    rows = trained.scoring_rows
    result.segments = quality_by_segment(
        history, rows, y, preds["churn_probability"], value, preds["predicted_value"], config
    )
    result.metrics = {
        "model": {
            **metrics.churn_metrics(y, preds["churn_probability"]),
            **metrics.value_metrics(value, preds["predicted_value"]),
        },
        "rfm": _rank_only(y, baselines.rfm_churn_score(rows), value, baselines.rfm_value(rows, big_h)),
        "by_model": by_churn_model(models, preds, y, value),
        "bgnbd": {
            **metrics.churn_metrics(y, baselines.btyd_churn(rows)),
            **metrics.value_metrics(value, baselines.btyd_value(rows)),
        },
    }
    return result


def by_churn_model(
    models: np.ndarray, preds: pd.DataFrame, churned: np.ndarray, value: np.ndarray
) -> dict[str, float | None]:
    """Per churn model (contract hazard, purchase silence): customers, mean P(churn) against the realised
    churn rate, and predicted against realised value: which model scored whom, and how level it was."""
    out: dict[str, float | None] = {}
    p, v = preds["churn_probability"].to_numpy(), preds["predicted_value"].to_numpy()
    for name in sorted(set(models.tolist())):
        m = models == name
        realised = float(value[m].sum())
        out[f"{name}_customers"] = float(m.sum())
        out[f"{name}_mean_probability"] = float(p[m].mean())
        out[f"{name}_churn_rate"] = float(churned[m].mean())
        out[f"{name}_value_error"] = float(v[m].sum() / realised - 1) if realised > 0 else None
    return out


def _baseline_scores(late: pd.DataFrame, horizon_days: int) -> dict[str, float]:
    """The baselines on the validation window (their BTYD columns look H ahead there, so only the
    rankings are comparable; levels are the model's)."""
    y, value = late["churned"].to_numpy(), late["future_value"].to_numpy()
    return {
        "baseline_rfm_churn_auc": metrics.roc_auc(y, baselines.rfm_churn_score(late)),
        "baseline_rfm_value_gini": metrics.normalized_gini(value, baselines.rfm_value(late, horizon_days)),
        "baseline_bgnbd_churn_auc": metrics.roc_auc(y, baselines.btyd_churn(late)),
        "baseline_bgnbd_value_gini": metrics.normalized_gini(value, baselines.btyd_value(late)),
    }


def _rank_only(
    y: np.ndarray, score: np.ndarray, value: np.ndarray, predicted: np.ndarray
) -> dict[str, float | None]:
    """A ranking has an AUC but no probability scores."""
    out: dict[str, float | None] = {**metrics.value_metrics(value, predicted)}
    out.update(churn_auc=metrics.roc_auc(y, score), churn_brier=None, churn_logloss=None)
    return out
