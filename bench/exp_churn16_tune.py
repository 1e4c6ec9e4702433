"""Scratch (issue 16, session 12): the pipeline's churn booster at H alone — its own origins, columns, Optuna
search and RFM stacker, as `training.pipeline.fit` builds them — under variants of the search (capacity) and
of the columns, tuned on the pipeline's validation origin only and judged on the holdout T. No value model,
no levels, no subscribers' shift: the holdout AUC is the stacked booster's, before levels.

    .venv/bin/python bench/exp_churn16_tune.py --customers 50000 --seed 0 --variants default wide
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.build import build_labels, monthly_cutoffs  # noqa: E402
from features.history import load_history  # noqa: E402
from training import design, metrics, tuning  # noqa: E402
from training.config import TrainingConfig  # noqa: E402
from training.models import Encoder, fit_churn, split_latest  # noqa: E402

H = 182
AGE = ("tenure_days", "signup_tenure_days")
KINDS = ("support_ticket", "complaint", "campaign_sent", "campaign_click", "email_open", "login", "visit")
BTYD = ("btyd_expected_purchases", "btyd_p_alive", "btyd_p_no_purchase", "btyd_expected_spend")
PNBD = ("pnbd_p_alive", "pnbd_p_no_purchase")
ENG = ("eng_p_alive", "eng_unopened", "eng_p_alive_mail", "eng_days_since_activity")
SHALLOW = {"n_estimators": 400, "learning_rate": 0.05, "max_depth": 3, "min_child_weight": 20.0,
           "subsample": 0.8, "colsample_bytree": 1.0, "reg_lambda": 1.0}  # fmt: skip


def frames(
    data: Path, count: int = 8, cutoff: str | None = None, prefix: str = "exp16tune"
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The churn model's training frame (its own `count` origins at H), the rows at T with their H-day truth
    (churned, future_value), its columns; T is `cutoff` or the last month end with H days after it. Cached in
    `bench/.data/<prefix>-...` (exp_value16.py uses its own prefix)."""
    name = f"{prefix}-{data.name}" + (f"-o{count}" if count != 8 else "") + (f"-{cutoff}" if cutoff else "")
    cache = data.parent / name
    if (cache / "frame.parquet").exists():
        cols = json.loads((cache / "columns.json").read_text())
        return pd.read_parquet(cache / "frame.parquet"), pd.read_parquet(cache / "rows.parquet"), cols
    history = load_history(str(data))
    t = datetime.fromisoformat(cutoff) if cutoff else monthly_cutoffs(history, H)[-1]
    config = TrainingConfig.load()
    fs = design.choose_feature_set(history, config.feature_set)
    own = design.churn_design(history, t, 91, H, "full", count, config.min_history_days)
    assert own is not None
    frame = design.training_frame(history, t, own[1], H, H, fs)
    cols = design.churn_columns(fs, history.until(t), config.exclude_features, config.churn_keep_features)
    rows, _ = design.scoring_frames(history, t, H, H, fs)
    spine = pa.table(
        {"customer_id": rows["customer_id"], "cutoff": pa.array([t] * len(rows), pa.timestamp("us"))}
    )
    truth = build_labels(history, spine, H).to_pandas()
    assert (truth["customer_id"].to_numpy() == rows["customer_id"].to_numpy()).all()
    rows["churned"] = truth["churned"].to_numpy()
    rows["future_value"] = truth["future_value"].to_numpy()
    cache.mkdir(exist_ok=True)
    frame.to_parquet(cache / "frame.parquet")
    rows.to_parquet(cache / "rows.parquet")
    (cache / "columns.json").write_text(json.dumps(cols))
    return frame, rows, cols


def run(
    frame: pd.DataFrame, rows: pd.DataFrame, cols: list[str], name: str, spec: dict[str, Any], data: Path
) -> dict:
    config = TrainingConfig.load()
    use = [c for c in cols if c not in spec.get("drop", ())] + list(spec.get("add", ()))
    t0 = time.perf_counter()
    if spec.get("peer"):
        return peer(frame, rows, use, name, t0, spec.get("origins", 4))
    if "topk" in spec:
        return topk(frame, rows, use, name, spec, t0)
    if "blend_deep" in spec:
        return blend_deep(frame, rows, use, name, spec, t0)
    if "fixed" in spec:
        params = spec["fixed"]
        tuned_loss, trials = float("nan"), 0
    else:
        search = {**config.search, **spec.get("search", {})}
        tune_frame = frames(data, spec["tune_origins"])[0] if "tune_origins" in spec else frame
        tuned = tuning.tune_churn(
            tune_frame, H, use, {**config.xgboost.params(), **spec.get("start", {})}, search,
            spec.get("trials", config.trials), 3600, config.seed, 1,
        )  # fmt: skip
        params, tuned_loss, trials = tuned.params, tuned.best_loss, tuned.trials
    params = {**params, "n_estimators": int(params["n_estimators"] * spec.get("scale_rounds", 1.0))}
    model, validated = fit_churn(frame, H, use, params, config.seed, 1)
    late = split_latest(frame, H)[1]
    y, p = rows["churned"].to_numpy(), model.predict_label_horizon(rows)
    sub = rows["attr_is_subscriber"].fillna(False).to_numpy(bool)
    return {
        "variant": name,
        "columns": len(use),
        "trials": trials,
        "tuning_logloss": round(tuned_loss, 5),
        "val_auc": round(metrics.roc_auc(late["churned"].to_numpy(), validated), 5),
        "holdout_auc": round(metrics.roc_auc(y, p), 5),
        "holdout_brier": round(metrics.brier(y, p), 5),
        "holdout_auc_nonsub": round(metrics.roc_auc(y[~sub], p[~sub]), 5),
        "params": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in params.items()},
        "seconds": round(time.perf_counter() - t0),
    }


def topk(
    frame: pd.DataFrame, rows: pd.DataFrame, use: list[str], name: str, spec: dict[str, Any], t0: float
) -> dict:
    """Session 13: the default search (its own seeded study, as training.tuning runs it), then the k best
    trials' stacked boosters averaged in logits, for each k in spec["topk"]; model minus peer on the rows at
    T with a paired bootstrap (the same customers resampled for both)."""
    import optuna

    from training.models import churn_validation_loss

    config = TrainingConfig.load()
    early, late = split_latest(frame, H)
    encoder = Encoder.fit(frame, use)
    space = tuning._space(config.search)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=config.seed))
    study.enqueue_trial(tuning._start(config.xgboost.params()), skip_if_exists=True)
    study.optimize(
        lambda t: churn_validation_loss(early, late, encoder, space(t), config.seed, 1),
        n_trials=config.trials,
    )
    done = sorted((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    y, yv = rows["churned"].to_numpy(), late["churned"].to_numpy()
    peer_p = peer_predict(frame, rows, use)
    logit_t, logit_v, out = (
        [],
        [],
        {"variant": name, "columns": len(use), "best_logloss": round(done[0].value, 5)},
    )
    for i, trial in enumerate(done[: max(spec["topk"])]):
        model, validated = fit_churn(frame, H, use, {**trial.params}, config.seed, 1)
        p = np.clip(model.predict_label_horizon(rows), 1e-7, 1 - 1e-7)
        v = np.clip(validated, 1e-7, 1 - 1e-7)
        logit_t.append(np.log(p / (1 - p)))
        logit_v.append(np.log(v / (1 - v)))
        if i + 1 in spec["topk"]:
            pt = 1 / (1 + np.exp(-np.mean(logit_t, 0)))
            pv = 1 / (1 + np.exp(-np.mean(logit_v, 0)))
            diff, se = paired_bootstrap(y, pt, peer_p)
            out[f"top{i + 1}"] = {
                "val_auc": round(metrics.roc_auc(yv, pv), 5),
                "val_logloss": round(metrics.logloss(yv, pv), 5),
                "holdout_auc": round(metrics.roc_auc(y, pt), 5),
                "holdout_brier": round(metrics.brier(y, pt), 5),
                "minus_peer": round(diff, 5),
                "bootstrap_se": round(se, 5),
            }
    out["peer_holdout_auc"] = round(metrics.roc_auc(y, peer_p), 5)
    out["seconds"] = round(time.perf_counter() - t0)
    return out


def paired_bootstrap(
    y: np.ndarray, p: np.ndarray, q: np.ndarray, n: int = 300, seed: int = 0
) -> tuple[float, float]:
    """AUC(p) - AUC(q) on all rows, and its standard error over `n` resamples of the same customers."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        diffs.append(metrics.roc_auc(y[i], p[i]) - metrics.roc_auc(y[i], q[i]))
    return float(metrics.roc_auc(y, p) - metrics.roc_auc(y, q)), float(np.std(diffs, ddof=1))


def peer_predict(frame: pd.DataFrame, rows: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """bench_model_quality's plain peer's P(churn) at T: library defaults, the latest 4 origins, no BTYD (nor
    any session-13 engagement input)."""
    import xgboost as xgb

    use = [c for c in cols if c not in (*BTYD, *ENG, *PNBD)]
    train = frame[frame["cutoff"].isin(sorted(frame["cutoff"].unique())[-4:])]
    encoder = Encoder.fit(train, use)
    dm = encoder.matrix(train)
    dm.set_label(train["churned"].to_numpy(np.float64))
    params = {"eta": 0.3, "max_depth": 6, "tree_method": "hist", "nthread": 1, "seed": 0}
    booster = xgb.train({**params, "objective": "binary:logistic"}, dm, 100)
    return np.asarray(booster.predict(encoder.matrix(rows)), dtype=np.float64)


def peer(
    frame: pd.DataFrame, rows: pd.DataFrame, cols: list[str], name: str, t0: float, origins: int = 4
) -> dict:
    """bench_model_quality's plain peer: library defaults, the latest `origins` origins (4 as the benchmark;
    8 = the churn model's own), the columns minus BTYD."""
    import xgboost as xgb

    use = [c for c in cols if c not in BTYD]
    train = frame[frame["cutoff"].isin(sorted(frame["cutoff"].unique())[-origins:])]
    encoder = Encoder.fit(train, use)
    dm = encoder.matrix(train)
    dm.set_label(train["churned"].to_numpy(np.float64))
    params = {"eta": 0.3, "max_depth": 6, "tree_method": "hist", "nthread": 1, "seed": 0}
    booster = xgb.train({**params, "objective": "binary:logistic"}, dm, 100)
    y, p = rows["churned"].to_numpy(), booster.predict(encoder.matrix(rows))
    return {"variant": name, "columns": len(use), "train_rows": len(train),
            "holdout_auc": round(metrics.roc_auc(y, p), 5), "holdout_brier": round(metrics.brier(y, p), 5),
            "seconds": round(time.perf_counter() - t0)}  # fmt: skip


def blend_deep(
    frame: pd.DataFrame, rows: pd.DataFrame, use: list[str], name: str, spec: dict[str, Any], t0: float
) -> dict:
    """Session 23: the shallow booster (spec["blend_deep"] parameters) blended in logits with a deep,
    untuned booster (the peer's parameters) trained on the same origins and columns (BTYD included), the
    weight chosen on the validation origin (both trained on the origins a full H before it), both refit on
    all 8 origins for T."""
    import xgboost as xgb

    config = TrainingConfig.load()
    model, validated = fit_churn(frame, H, use, spec["blend_deep"], config.seed, 1)
    early, late = split_latest(frame, H)
    encoder = Encoder.fit(frame, use)
    deep_params = {"eta": 0.3, "max_depth": 6, "tree_method": "hist", "nthread": 1, "seed": 0,
                   "objective": "binary:logistic", **spec.get("deep", {})}  # fmt: skip

    def deep(train: pd.DataFrame, at: pd.DataFrame) -> np.ndarray:
        dm = encoder.matrix(train)
        dm.set_label(train["churned"].to_numpy(np.float64))
        booster = xgb.train(deep_params, dm, spec.get("deep_rounds", 100))
        return np.asarray(booster.predict(encoder.matrix(at)), dtype=np.float64)

    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    yv, yt = late["churned"].to_numpy(), rows["churned"].to_numpy()
    dv, dt = deep(early, late), deep(frame, rows)
    mt = model.predict_label_horizon(rows)
    out = []
    for w in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5):
        pv = 1 / (1 + np.exp(-((1 - w) * logit(validated) + w * logit(dv))))
        pt = 1 / (1 + np.exp(-((1 - w) * logit(mt) + w * logit(dt))))
        out.append({"w": w, "val_logloss": round(metrics.logloss(yv, pv), 5),
                    "val_auc": round(metrics.roc_auc(yv, pv), 5),
                    "holdout_auc": round(metrics.roc_auc(yt, pt), 5),
                    "holdout_brier": round(metrics.brier(yt, pt), 5)})  # fmt: skip
    best = min(out, key=lambda r: r["val_logloss"])
    return {"variant": name, "chosen_w": best["w"], "rows": out, "seconds": round(time.perf_counter() - t0)}


def with_engagement(data: Path, frame: pd.DataFrame, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame and the rows at T with exp_churn16_engage's inputs, each at its own cutoff (cached)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from exp_churn16_engage import engagement, pareto

    cache = data.parent / f"exp16tune-{data.name}" / "engagement.parquet"
    t = pd.Timestamp(rows["cutoff"].iloc[0]) if "cutoff" in rows else None
    cuts = sorted({*pd.to_datetime(frame["cutoff"]).unique(), *([t] if t is not None else [])})
    if cache.exists():
        eng = pd.read_parquet(cache)
    else:
        eng = engagement(data, cuts)
        eng.to_parquet(cache)
    cache = cache.with_name("pareto.parquet")
    if not cache.exists():
        pareto(data, cuts).to_parquet(cache)
    eng = eng.merge(pd.read_parquet(cache), on=["customer_id", "cutoff"], how="outer", validate="1:1")
    out = []
    for f in (frame, rows):
        f = f.copy()
        key = pd.to_datetime(f["cutoff"])
        m = f.assign(_c=key).merge(eng.rename(columns={"cutoff": "_c"}), on=["customer_id", "_c"], how="left")
        out.append(m.drop(columns="_c"))
    return out[0], out[1]


def of_kind(kind: str) -> tuple[str, ...]:
    """One interaction type's columns: its counts over 30, 90 and 365 days and the days since the last."""
    return (f"{kind}_30d", f"{kind}_90d", f"{kind}_365d", f"days_since_{kind}")


VARIANTS: dict[str, dict[str, Any]] = {
    "peer": {"peer": True},
    "peer_8": {"peer": True, "origins": 8},  # session 23: the peer at the churn model's own origins
    "default": {},  # training.yaml's search, 20 trials: the pipeline's churn booster
    "fixed_shallow": {"fixed": SHALLOW},
    "wide": {"search": {"max_depth": (1, 6), "n_estimators": (50, 1500)}, "trials": 40},
    "deep_reg": {  # the peer's depth with Diamond's regularisation
        "search": {"max_depth": (4, 6), "min_child_weight": (20.0, 300.0), "reg_lambda": (1.0, 50.0)},
        "start": {"max_depth": 6, "min_child_weight": 50.0, "reg_lambda": 10.0}, "trials": 30,
    },
    "rounds_x2": {"scale_rounds": 2.0},
    "rounds_x4": {"scale_rounds": 4.0},
    "trials40": {"trials": 40},
    # tuned where its training rows match the final model's: 14 origins, the 8 a full H before the latest
    # train each trial (the default tunes on 2), then the chosen parameters refit on the usual 8 origins
    "matched": {"tune_origins": 14, "search": {"max_depth": (2, 6), "n_estimators": (50, 1200)}},
    "matched_default": {"tune_origins": 14},
    "nobtyd": {"drop": BTYD},
    "no_login_click": {  # the two drops whose validation loss was lowest at 20,000 (by < 0.0002)
        "drop": (*of_kind("login"), *of_kind("campaign_click"))
    },
    **{f"no_{k}": {"drop": of_kind(k)} for k in KINDS},
    # session 13: model-based engagement inputs (bench/exp_churn16_engage.py), not given to the peer
    "fixed_shallow+eng_p_alive": {"fixed": SHALLOW, "add": ("eng_p_alive",)},
    "fixed_shallow+eng_mail": {"fixed": SHALLOW, "add": ("eng_p_alive_mail",)},
    "fixed_shallow+eng_all": {"fixed": SHALLOW, "add": ENG},
    "eng_all": {"add": ENG},
    "fixed_shallow+pnbd": {"fixed": SHALLOW, "add": PNBD},
    "fixed_shallow+pnbd+eng_all": {"fixed": SHALLOW, "add": (*PNBD, *ENG)},
    "topk+pnbd+eng_all": {"topk": (1, 3, 5), "add": (*PNBD, *ENG)},
    "topk": {"topk": (1, 3, 5)},
    # session 23: the shallow booster blended with a deep untuned one on the same origins
    "blend_deep": {"blend_deep": SHALLOW},
    "blend_deep_reg": {"blend_deep": SHALLOW, "deep_rounds": 300,
                       "deep": {"eta": 0.1, "min_child_weight": 20.0, "subsample": 0.8}},
    "topk+eng_all": {"topk": (1, 3, 5), "add": ENG},
}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--customers", type=int, default=50000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    a = p.parse_args()
    data = ROOT / "bench" / ".data" / f"synthetic-{a.customers}-seed{a.seed}"
    frame, rows, cols = frames(data)
    if any("add" in VARIANTS[n] for n in a.variants):
        frame, rows = with_engagement(data, frame, rows)
    print(f"frame {len(frame):,} rows, {len(cols)} columns; rows at T {len(rows):,}", flush=True)
    for name in a.variants:
        out = run(frame, rows, cols, name, VARIANTS[name], data)
        print(json.dumps({"customers": a.customers, "seed": a.seed, **out}), flush=True)


if __name__ == "__main__":
    main()
