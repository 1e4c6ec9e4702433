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
DERIVED = ("rate_365d", "rate_life", "cutoff_month")  # derive(): not in any feature set
BTYD = ("btyd_expected_purchases", "btyd_p_alive", "btyd_p_no_purchase", "btyd_expected_spend")
PEER = {"eta": 0.3, "max_depth": 6, "tree_method": "hist", "nthread": 1, "seed": 0}
SHALLOW = {
    "eta": 0.05, "max_depth": 3, "min_child_weight": 20, "subsample": 0.8, "tree_method": "hist",
    "nthread": 1, "seed": 0,
}  # fmt: skip


def columns(f: pd.DataFrame, btyd: bool = True, drop: tuple[str, ...] = ()) -> list[str]:
    skip = {"customer_id", "cutoff", *EXCLUDE, *DERIVED, *drop}
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


# --- session 11 (churn16c): column sets, capacity at more rows, blends of shallow and deep ---------------
V1 = set(get_feature_set("core_v1").features) | {"attr_segment", "attr_region", "attr_acquisition_channel",
    "attr_plan", "attr_age", "attr_is_subscriber", "attr_email_opt_in"}  # fmt: skip
V2_FAMILIES = {"interaction_value", "tickets", "complaints", "campaign_response", "engagement_trend",
    "category_preferences"}  # fmt: skip
INTERACTION_KINDS = (
    "support_ticket", "complaint", "campaign_sent", "campaign_click", "email_open", "login", "visit",
)  # fmt: skip


def family(name: str) -> tuple[str, ...]:
    from features.sets import CORE_V2_FAMILIES, CORE_V3_FAMILIES

    return {**CORE_V2_FAMILIES, **CORE_V3_FAMILIES}[name]


def cols_v1(
    f: pd.DataFrame, btyd: bool = True, add: tuple[str, ...] = (), drop: tuple[str, ...] = ()
) -> list[str]:
    """core_v1's model columns (the pipeline's default set) plus `add`, minus `drop`."""
    keep = V1 | set(add)
    base = [c for c in columns(f, btyd=btyd, drop=drop) if c in keep]
    return base + [c for c in add if c not in base]


def make_v1(params, rounds, k=8, btyd=True, add=(), drop=(), label="churned_182", h=H):
    def v(f, c):
        tr = f[f.cutoff.isin(origins_for(f, c, h, k))]
        cols = cols_v1(f, btyd=btyd, add=add, drop=drop)
        return fit(tr, label, cols, params, rounds), cols

    return v


def make_mix(parts, weights_):
    """Logit blend of several variants' probabilities at the same cutoff."""

    def v(f, c):
        z = 0.0
        for maker, w in zip(parts, weights_, strict=True):
            p = np.clip(predict_with(maker, f, c), 1e-6, 1 - 1e-6)
            z = z + w * np.log(p / (1 - p))
        return 1 / (1 + np.exp(-z))

    return v


def predict_with(maker, f, c):
    out = maker(f, c)
    if isinstance(out, np.ndarray):
        return out
    booster, cols = out
    return booster.predict(matrix(f[f.cutoff == c], cols))


def interactions_of(kind: str) -> tuple[str, ...]:
    return (f"{kind}_30d", f"{kind}_90d", f"{kind}_365d", f"days_since_{kind}")


PEER_V1 = make_v1(PEER, 100, k=4, btyd=False)
PEER_V1X = make_v1(PEER, 100, k=4, btyd=False, add=EXCLUDE)  # the peer on the churn model's wider columns
S8 = make_v1(SHALLOW, 400)
S11 = {
    "peer_v1": PEER_V1,
    "shallow_H8_v1": S8,
    "peer_v1+excluded": PEER_V1X,
    "peer_v1+age": make_v1(PEER, 100, k=4, btyd=False, add=("tenure_days", "signup_tenure_days")),
    "v1+excluded_nobtyd": make_v1(SHALLOW, 400, btyd=False, add=EXCLUDE),
    "v1+age": make_v1(SHALLOW, 400, add=("tenure_days", "signup_tenure_days")),
    "v1+age_d4": make_v1({**SHALLOW, "max_depth": 4}, 600, add=("tenure_days", "signup_tenure_days")),
    "v1+age_H12": make_v1(SHALLOW, 400, k=12, add=("tenure_days", "signup_tenure_days")),
    "v1+counts": make_v1(
        SHALLOW, 400, add=("n_purchases", "frequency_days", "purchases_180d", "purchases_365d")
    ),
    "v1+amounts": make_v1(SHALLOW, 400, add=("monetary_sum", "net_amount", "amount_180d", "amount_365d")),
    "v1+refunds": make_v1(SHALLOW, 400, add=("refund_count", "refund_amount")),
    "v1+excluded_H4": make_v1(SHALLOW, 400, k=4, add=EXCLUDE),
    "v1+excluded_H12": make_v1(SHALLOW, 400, k=12, add=EXCLUDE),
    "v1+excluded_d4": make_v1({**SHALLOW, "max_depth": 4}, 600, add=EXCLUDE),
    **{f"v1+{n}": make_v1(SHALLOW, 400, add=family(n)) for n in sorted(V2_FAMILIES | {"margin"})},
    "v1_nobtyd": make_v1(SHALLOW, 400, btyd=False),
    "v1_noattr": make_v1(SHALLOW, 400, drop=tuple(c for c in V1 if c.startswith("attr_"))),
    **{f"v1-{k_}": make_v1(SHALLOW, 400, drop=interactions_of(k_)) for k_ in INTERACTION_KINDS},
    "v1-monetary": make_v1(SHALLOW, 400, drop=("monetary_mean", "monetary_max", "monetary_std",
        "monetary_first", "monetary_last", "amount_30d", "amount_90d", "trend_amount_90d",
        "btyd_expected_spend")),
    "d4_H8_v1": make_v1({**SHALLOW, "max_depth": 4}, 600),
    "d5_H8_v1": make_v1({**SHALLOW, "max_depth": 5}, 600),
    "d6_H8_v1": make_v1({**SHALLOW, "max_depth": 6}, 600),
    "peer_H8_v1": make_v1(PEER, 100, k=8, btyd=False),
    "peer_H8_btyd_v1": make_v1(PEER, 100, k=8),
    "colsample05_H8_v1": make_v1({**SHALLOW, "colsample_bynode": 0.5}, 400),
    "shallow_H12_v1": make_v1(SHALLOW, 400, k=12),
    "blend_s8_peer_50": make_mix([S8, PEER_V1], [0.5, 0.5]),
    **{f"v1+{c}": make_v1(SHALLOW, 400, add=(c,)) for c in EXCLUDE},
    "v1+excluded": make_v1(SHALLOW, 400, add=EXCLUDE),
    "v1+rates": make_v1(SHALLOW, 400, add=("rate_365d", "rate_life")),
    "v1+rate_365d": make_v1(SHALLOW, 400, add=("rate_365d",)),
    "v1+cutoff_month": make_v1(SHALLOW, 400, add=("cutoff_month",)),
    "d4_H8_v1_900": make_v1({**SHALLOW, "max_depth": 4, "eta": 0.03}, 900),
    "shallow_H8_v1_800": make_v1({**SHALLOW, "eta": 0.03}, 800),
    "blend_s8_d6_50": make_mix([S8, make_v1({**SHALLOW, "max_depth": 6}, 600)], [0.5, 0.5]),
}  # fmt: skip

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
    **S11,
}


def predict(name, f, c):
    out = VARIANTS[name](f, c)
    if isinstance(out, np.ndarray):
        return out
    booster, cols = out
    rows = f[f.cutoff == c]
    return booster.predict(matrix(rows, cols))


def derive(f: pd.DataFrame) -> pd.DataFrame:
    """Columns the feature sets lack, built from cached ones: purchase rates that do not grow with age."""
    age = f["tenure_days"].clip(lower=1.0)
    f["rate_365d"] = f["purchases_365d"] / age.clip(upper=365.0)
    f["rate_life"] = f["n_purchases"] / age
    f["cutoff_month"] = pd.to_datetime(f["cutoff"]).dt.month.astype(float)
    return f


def run(f, names):
    f = derive(f.copy())
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
