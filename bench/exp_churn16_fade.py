"""Scratch (issue 16, session 25): a generic "fading activity" input for churn, on exp_churn16_tune's cached
frames (the churn model's 8 origins and columns at H = 182), the shallow booster alone and as the pipeline
fits it (RFM stacker; its validation on the latest origin), holdout T.

`fade_llr` at a cutoff c: the log likelihood ratio of the customer's purchases, visits and logins in the 90
days before c under "activity fading linearly to 10 % towards a dropout at c + s" against "steady at the
customer's lifetime rate" (`activity_rate`: events a day since signup), maximised over s in {0, 30, 60}
days: a changepoint test, the slowdown the Bayes bound found worth about +0.002 (docs/training.md, "What the
data allow"). Also lifetime ticket and complaint counts and severity.

    .venv/bin/python bench/exp_churn16_fade.py 0
"""

import json
import sys

sys.path.insert(0, "bench")
sys.path.insert(0, ".")
import exp_churn16_tune as E
import numpy as np
import pandas as pd
import xgboost as xgb

from training import metrics
from training.models import Encoder, booster_params, fit_churn, split_latest


def main() -> None:
    seed = int(sys.argv[1])
    data = E.ROOT / "bench" / ".data" / f"synthetic-50000-seed{seed}"
    frame, rows, cols = E.frames(data)
    T = pd.Timestamp("2025-06-30 23:59:59.999999")
    rows = rows.assign(cutoff=T)
    tx = pd.read_parquet(
        data / "transactions.parquet", columns=["customer_id", "timestamp", "amount", "category"]
    )
    tx = tx[(tx.amount > 0) & (tx.category != "subscription")][["customer_id", "timestamp"]]
    ia = pd.read_parquet(data / "interactions.parquet", columns=["customer_id", "timestamp", "type"])
    ia = ia[ia.type.isin(["visit", "login"])][["customer_id", "timestamp"]]
    ev = pd.concat([tx, ia]).sort_values(["customer_id", "timestamp"])
    cust = pd.read_parquet(data / "customers.parquet", columns=["customer_id", "signup_date"]).set_index(
        "customer_id"
    )
    W = 90.0

    def lr(cutoffs: pd.DataFrame) -> pd.DataFrame:
        out = []
        for c, g in cutoffs.groupby("cutoff"):
            e = ev[ev.timestamp <= c]
            ids = g.customer_id
            e = e[e.customer_id.isin(ids)]
            age = (c - e.timestamp).dt.total_seconds().to_numpy() / 86400
            n = e.groupby("customer_id").size().reindex(ids, fill_value=0).to_numpy()
            tenure = ((c - cust.loc[ids, "signup_date"]).dt.total_seconds().to_numpy() / 86400).clip(min=1)
            r = n / tenure
            best = np.full(len(ids), -np.inf)
            for shift in (0.0, 30.0, 60.0):  # dropout at c + shift: the decay began W - shift days before c
                a = age + shift
                lg = np.where(a < W, np.log(0.1 + 0.9 * a / W), 0.0)
                s = (
                    pd.Series(lg, index=e.customer_id.to_numpy())
                    .groupby(level=0)
                    .sum()
                    .reindex(ids, fill_value=0)
                    .to_numpy()
                )
                lost = (
                    r * 0.9 * ((W - shift) - (W**2 - shift**2) / (2 * W))
                )  # expected events the decay removes before c
                best = np.maximum(best, s + lost)
            out.append(
                pd.DataFrame(
                    {"customer_id": ids.to_numpy(), "cutoff": c, "fade_llr": best, "activity_rate": r}
                )
            )
        return pd.concat(out)

    frame = frame.merge(lr(frame[["customer_id", "cutoff"]]), on=["customer_id", "cutoff"], how="left")
    rows = rows.merge(lr(rows[["customer_id", "cutoff"]]), on=["customer_id", "cutoff"], how="left")
    y = rows["churned"].to_numpy()
    print("corr with churn at T", np.corrcoef(rows.fade_llr, y)[0, 1], flush=True)
    sv = pd.read_parquet(data / "interactions.parquet", columns=["customer_id", "timestamp", "type", "value"])
    sv = sv[sv.type.isin(["support_ticket", "complaint"])]

    def life(cutoffs):
        out = []
        for c, g in cutoffs.groupby("cutoff"):
            e = sv[(sv.timestamp <= c) & sv.customer_id.isin(g.customer_id)]
            agg = pd.DataFrame(
                {
                    "life_complaints": (e.type == "complaint").groupby(e.customer_id).sum(),
                    "life_tickets": (e.type == "support_ticket").groupby(e.customer_id).sum(),
                    "life_severity": e.value.fillna(0).groupby(e.customer_id).sum(),
                }
            ).reindex(g.customer_id, fill_value=0)
            out.append(agg.reset_index().rename(columns={"index": "customer_id"}).assign(cutoff=c))
        return pd.concat(out)

    frame = frame.merge(life(frame[["customer_id", "cutoff"]]), on=["customer_id", "cutoff"], how="left")
    rows = rows.merge(life(rows[["customer_id", "cutoff"]]), on=["customer_id", "cutoff"], how="left")
    LIFE = ["life_complaints", "life_tickets", "life_severity"]
    late = split_latest(frame, E.H)[1]
    for name, use in (
        ("shallow", cols),
        ("+ fade_llr", [*cols, "fade_llr"]),
        ("+ activity_rate", [*cols, "activity_rate"]),
        ("+ lifetime service", [*cols, *LIFE]),
        ("+ fade_llr, activity_rate, lifetime service", [*cols, "fade_llr", "activity_rate", *LIFE]),
    ):
        enc = Encoder.fit(frame, use)
        d = enc.matrix(frame)
        d.set_label(frame["churned"].to_numpy(float))
        ms = xgb.train(booster_params("binary:logistic", E.SHALLOW, 0, 1), d, num_boost_round=400).predict(
            enc.matrix(rows)
        )
        # as the pipeline fits it: booster on the earlier origins, RFM stacker on the latest, refit on all
        model, validated = fit_churn(frame, E.H, use, E.SHALLOW, 0, 1)
        stacked = model.predict_label_horizon(rows)
        print(
            json.dumps(
                {
                    "seed": seed,
                    "variant": name,
                    "auc": round(metrics.roc_auc(y, ms), 5),
                    "brier": round(metrics.brier(y, ms), 5),
                    "stacked_val_auc": round(metrics.roc_auc(late["churned"].to_numpy(), validated), 5),
                    "stacked_val_logloss": round(metrics.logloss(late["churned"].to_numpy(), validated), 5),
                    "stacked_holdout_auc": round(metrics.roc_auc(y, stacked), 5),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
