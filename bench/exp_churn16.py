"""Scratch harness (issue 16): churn model variants on cached feature frames, validation before the cutoff.

Builds (once, cached) feature rows at every month end of a synthetic history with 91- and 182-day labels,
then trains variants at a cutoff C on origins whose labels end by C and scores the customers at C.
Validation cutoffs end their H-day labels by the holdout cutoff T; the holdout is T itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.build import build_features, build_labels, build_spine, month_end_cutoffs  # noqa: E402
from features.history import load_history  # noqa: E402
from features.sets import get_feature_set  # noqa: E402
from training.metrics import logloss, roc_auc  # noqa: E402

H, SHORT = 182, 91


# ---------------------------------------------------------------------------------------------------
EXCLUDE = (
    "tenure_days", "signup_tenure_days", "n_purchases", "frequency_days", "monetary_sum", "net_amount",
    "refund_count", "refund_amount", "purchases_180d", "amount_180d", "purchases_365d", "amount_365d",
)  # fmt: skip
BTYD = ("btyd_expected_purchases", "btyd_p_alive", "btyd_p_no_purchase", "btyd_expected_spend")
PEER = {"eta": 0.3, "max_depth": 6, "tree_method": "hist", "nthread": 1, "seed": 0}
SHALLOW = {
    "eta": 0.05, "max_depth": 3, "min_child_weight": 20, "subsample": 0.8, "tree_method": "hist",
    "nthread": 1, "seed": 0,
}  # fmt: skip


def columns(f: pd.DataFrame, btyd: bool = True, drop: tuple[str, ...] = ()) -> list[str]:
    skip = {"customer_id", "cutoff", *EXCLUDE, *drop}
    out = [c for c in f.columns if c not in skip and not c.startswith(("churned_", "value_"))]
    return [c for c in out if btyd or c not in BTYD]


def matrix(f: pd.DataFrame, cols: list[str]) -> xgb.DMatrix:
    x = f[cols].copy()
    for c in cols:
        if x[c].dtype == object or isinstance(x[c].dtype, pd.StringDtype) or x[c].dtype == bool:
            x[c] = x[c].astype("category") if x[c].dtype != bool else x[c].astype(float)
    return xgb.DMatrix(x, enable_categorical=True, nthread=2)


def origins_for(f: pd.DataFrame, c: pd.Timestamp, h: int, k: int) -> list[pd.Timestamp]:
    cuts = sorted(f["cutoff"].unique())
    ok = [o for o in cuts if o + pd.Timedelta(days=h) <= c]
    return ok[-k:]


def fit(train: pd.DataFrame, label: str, cols: list[str], params: dict, rounds: int, w=None) -> xgb.Booster:
    dm = matrix(train, cols)
    dm.set_label(train[label].to_numpy(float))
    if w is not None:
        dm.set_weight(w)
    return xgb.train({**params, "objective": "binary:logistic"}, dm, rounds)


def weights(train: pd.DataFrame, half_life_months: float | None) -> np.ndarray | None:
    if not half_life_months:
        return None
    age = (train["cutoff"].max() - train["cutoff"]).dt.days / 30.4
    return np.power(0.5, age / half_life_months).to_numpy()


def frames(data: Path, fs_key: str, out: Path) -> pd.DataFrame:
    if out.exists():
        return pd.read_parquet(out)
    history = load_history(str(data))
    fs = get_feature_set(fs_key)
    first = datetime(2023, 1, 1)
    cuts = month_end_cutoffs(first, datetime(2025, 12, 31, 23, 59, 59), H, 240)
    spine = build_spine(history, cuts)
    t0 = time.perf_counter()
    feats = build_features(history, spine, fs, H).to_pandas()
    print(f"features {len(feats):,} rows in {time.perf_counter() - t0:.0f} s", flush=True)
    for h in (SHORT, H):
        lab = build_labels(history, spine, h).to_pandas()
        assert (lab["customer_id"].to_numpy() == feats["customer_id"].to_numpy()).all()
        feats[f"churned_{h}"] = lab["churned"].to_numpy()
        feats[f"value_{h}"] = lab["future_value"].to_numpy()
    feats.to_parquet(out)
    return feats


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--customers", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fs", default="core_v3")
    p.add_argument("--variants", nargs="*", default=None)
    a = p.parse_args()
    data = ROOT / "bench" / ".data" / f"synthetic-{a.customers}-seed{a.seed}"
    f = frames(data, a.fs, data.parent / f"exp16-{a.customers}-{a.seed}-{a.fs}.parquet")
    run(f, a.variants)


def peer(f, c):
    tr = f[f.cutoff.isin(origins_for(f, c, H, 4))]
    cols = columns(f, btyd=False)
    return fit(tr, "churned_182", cols, PEER, 100), cols


def make_h(params, rounds, k=4, btyd=True, hl=None, drop=()):
    def v(f, c):
        tr = f[f.cutoff.isin(origins_for(f, c, H, k))]
        cols = columns(f, btyd=btyd, drop=drop)
        return fit(tr, "churned_182", cols, params, rounds, weights(tr, hl)), cols

    return v


def make_short(params, rounds, k=5, btyd=True):
    def v(f, c):
        tr = f[f.cutoff.isin(origins_for(f, c, SHORT, k))]
        cols = columns(f, btyd=btyd)
        return fit(tr, "churned_91", cols, params, rounds), cols

    return v


def make_bag(params, rounds, k=8, seeds=(0, 1, 2)):
    """Several boosters on the same rows, seeds (and so subsamples) apart, their probabilities averaged."""

    def v(f, c):
        tr = f[f.cutoff.isin(origins_for(f, c, H, k))]
        cols = columns(f)
        rows = matrix(f[f.cutoff == c], cols)
        bag = {**params, "colsample_bytree": 0.8}
        return np.mean(
            [fit(tr, "churned_182", cols, {**bag, "seed": s}, rounds).predict(rows) for s in seeds], 0
        )

    return v


RECENCY = ("recency_days", "ipt_last_days", "recency_over_ipt", "days_since_visit", "days_since_login")


def make_mono(params, rounds, k=8):
    """Churn may only rise with the recency-like columns (a monotone constraint on each)."""

    def v(f, c):
        tr = f[f.cutoff.isin(origins_for(f, c, H, k))]
        cols = columns(f)
        mono = "(" + ",".join("1" if c in RECENCY else "0" for c in cols) + ")"
        return fit(tr, "churned_182", cols, {**params, "monotone_constraints": mono}, rounds), cols

    return v


def make_blend(weight_short, k_short=5, k=8):
    """Logit blend of the 182-day booster and a 91-day one (more recent origins): a ranking, not a level."""

    def v(f, c):
        rows = f[f.cutoff == c]
        out = []
        for maker in (make_h(SHALLOW, 400, k=k), make_short(SHALLOW, 400, k=k_short)):
            booster, cols = maker(f, c)
            p = np.clip(booster.predict(matrix(rows, cols)), 1e-6, 1 - 1e-6)
            out.append(np.log(p / (1 - p)))
        z = (1 - weight_short) * out[0] + weight_short * out[1]
        return 1 / (1 + np.exp(-z))

    return v


VARIANTS = {
    "peer": peer,
    "peer_btyd": make_h(PEER, 100),
    "shallow_H4": make_h(SHALLOW, 400),
    "shallow_H4_nobtyd": make_h(SHALLOW, 400, btyd=False),
    "shallow_H8": make_h(SHALLOW, 400, k=8),
    "shallow_H12_hl6": make_h(SHALLOW, 400, k=12, hl=6),
    "shallow_h5": make_short(SHALLOW, 400),
    "d4_H8": make_h({**SHALLOW, "max_depth": 4}, 600, k=8),
    "shallow_H8_hl6": make_h(SHALLOW, 400, k=8, hl=6),
    "shallow_H8_bag3": make_bag(SHALLOW, 400),
    "shallow_H8_mono": make_mono(SHALLOW, 400),
    "blend_h5_H8_30": make_blend(0.3),
    "blend_h5_H8_50": make_blend(0.5),
}


def predict(name, f, c):
    out = VARIANTS[name](f, c)
    if isinstance(out, np.ndarray):
        return out
    booster, cols = out
    rows = f[f.cutoff == c]
    return booster.predict(matrix(rows, cols))


def run(f, names):
    f = f.copy()
    f["cutoff"] = pd.to_datetime(f["cutoff"])
    cuts = sorted(f["cutoff"].unique())
    hold = cuts[-1]
    val = [c for c in cuts if c + pd.Timedelta(days=H) <= hold][-3:]
    print("validation", [str(c.date()) for c in val], "holdout", hold.date(), flush=True)
    for name in names or VARIANTS:
        t0 = time.perf_counter()
        res = []
        for c in [*val, hold]:
            rows = f[f.cutoff == c]
            y = rows["churned_182"].to_numpy()
            p = predict(name, f, c)
            sub = rows["attr_is_subscriber"].fillna(False).to_numpy(bool)
            res.append((roc_auc(y, p), logloss(y, np.clip(p, 1e-6, 1 - 1e-6)), roc_auc(y[~sub], p[~sub])))
        v = np.mean([r[0] for r in res[:-1]])
        vl = np.mean([r[1] for r in res[:-1]])
        print(
            f"{name:24s} val AUC {v:.4f} ll {vl:.4f} | "
            + " ".join(f"{r[0]:.4f}" for r in res[:-1])
            + f" | holdout AUC {res[-1][0]:.4f} ll {res[-1][1]:.4f} nonsub {res[-1][2]:.4f}"
            + f"  ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
