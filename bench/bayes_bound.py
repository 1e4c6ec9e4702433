"""The best churn and value predictions reachable from the data alone (issue 16): a Bayes predictor.

The benchmark's oracle knows every latent (purchase rate, hazard, frailty) and whether a silent customer has
already dropped out; no model can know those. This predictor knows only what a model could, plus the
generator's equations and population priors: each customer's attributes and events at or before T. It
integrates the latents out by importance sampling, per customer:

- purchase-rate multiplier g ~ Gamma(0.9, 0.9) (proposal: a two-part Gamma mixture near the posterior);
- hazard noise u ~ Gamma(2, 0.5) (its prior);
- dropout d after the last observed activity t0 (T for subscribers, who have not cancelled), drawn from the
  hazard process (past tickets and complaints multiply it; after T future ones too, at a frailty drawn from
  its posterior), weighted by P(d > t0);
- weights: the likelihood of purchases and visits (Poisson in g, thinned before d), logins, the decay of
  every event in the 90 days before d, tickets and complaints (frailty integrated out: negative binomial in
  the exposure to min(d, T)), and campaign opens and clicks (0.32 / 0.28 while active, 0.04 / 0.05 after);
- spend: the Gamma-Gamma posterior of the customer's amount scale and the posterior of the favourite
  category from the categories bought.

P(churn) and E[value] over (T, T + H] are then the oracle's own label arithmetic
(``bench_model_quality.outcomes``) under each draw. Ranking by the true posterior maximises the expected AUC,
so this row is, up to Monte Carlo noise and the approximations named in ``bayes``, the best churn AUC any
model can reach on these histories. ``bench_model_quality.py`` scores it as the row ``bayes``.

Its CLI scores what each kind of evidence is worth (the row without it), on the benchmark's cached frames:

    .venv/bin/python bench/bayes_bound.py --seed 0 --limit 12000

(frames: ``bench_model_quality.py --child backtest --data bench/.data/synthetic-50000-seed0 --horizon 182
--result bench/.data/mq-frame-seed0.parquet``).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy.special import gammaln

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_model_quality as Q  # noqa: E402

from features.datasets import synthetic as S  # noqa: E402
from training import metrics  # noqa: E402

A0 = S._RATE_SHAPE
# campaign outcome likelihoods (none, open only, open and click) while active / after dropout
P_ACTIVE = np.array([1 - S._OPEN_P[1], S._OPEN_P[1] * (1 - S._CLICK_P[1]), S._OPEN_P[1] * S._CLICK_P[1]])
P_GONE = np.array([1 - S._OPEN_P[0], S._OPEN_P[0] * (1 - S._CLICK_P[0]), S._OPEN_P[0] * S._CLICK_P[0]])
LLR = np.log(P_GONE / P_ACTIVE)


def _pad(groups: pd.Series, index: np.ndarray, fill: float) -> np.ndarray:
    """Per-customer lists -> a (customers, longest) array padded with `fill`."""
    lists = groups.reindex(index)
    width = max(1, int(lists.map(lambda x: len(x) if isinstance(x, np.ndarray) else 0).max()))
    out = np.full((len(index), width), fill)
    for i, x in enumerate(lists):
        if isinstance(x, np.ndarray) and len(x):
            out[i, : len(x)] = x
    return out


def observed(folder: Path, ids: pd.Series, t: float) -> SimpleNamespace:
    """What a model could see at T, per customer, plus the generator's known multipliers."""
    cols = ["customer_id", "timestamp"]
    c = pd.read_parquet(folder / "customers.parquet").set_index("customer_id").loc[ids]
    ia = pd.read_parquet(folder / "interactions.parquet", columns=[*cols, "type", "value"])
    tx = pd.read_parquet(folder / "transactions.parquet", columns=[*cols, "amount", "category"])
    ia = ia.assign(day=Q._days(ia["timestamp"]))
    ia = ia[(ia["day"] <= t) & ia["customer_id"].isin(ids)]
    tx = tx.assign(day=Q._days(tx["timestamp"]))
    tx = tx[(tx["day"] <= t) & (tx["amount"] > 0) & (tx["category"] != "subscription")]
    tx = tx[tx["customer_id"].isin(ids)]

    sub = c["is_subscriber"].to_numpy(bool)
    business = (c["segment"] == "business").to_numpy()
    age = c["age"].to_numpy(np.float64, na_value=np.nan)
    young = np.nan_to_num(age, nan=99) < 30
    senior = np.nan_to_num(age, nan=0) >= 60
    region = c["region"].map({r: i for i, r in enumerate(S.REGIONS)}).to_numpy(int)
    acq = c["acquisition_channel"].map({r: i for i, r in enumerate(S.ACQUISITION)}).to_numpy(int)
    plan = c["plan"].map({p: i for i, p in enumerate(S.PLANS)}).fillna(0).to_numpy(int)
    opt_in = c["email_opt_in"].to_numpy(bool)
    rate_mult = (
        np.where(business, 1.3, 1.0)
        * S._REGION_RATE[region]
        * S._ACQ_RATE[acq]
        * np.where(young, 0.9, 1.0)
        * np.where(sub, 0.5, 1.0)
    )
    hazard_static = (
        np.where(business, 0.7, 1.0)
        * S._REGION_HAZARD[region]
        * S._ACQ_HAZARD[acq]
        * np.where(young, 1.25, np.where(senior, 0.85, 1.0))
        * np.where(opt_in, 1.0, 1.15)
        * np.where(sub, S._SUB_HAZARD * S._PLAN_HAZARD[plan], S._BASE_HAZARD)
    )
    signup_s = ((c["signup_date"] - pd.Timestamp(S.START)) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    signup = signup_s / 86_400
    pos = pd.Series(np.arange(len(ids)), index=ids.to_numpy())

    times = {
        "purchase": tx[["customer_id", "day"]],
        "visit": ia.loc[ia["type"] == "visit", ["customer_id", "day"]],
        "login": ia.loc[ia["type"] == "login", ["customer_id", "day"]],
    }
    counts = {
        k: v.groupby("customer_id").size().reindex(ids, fill_value=0).to_numpy() for k, v in times.items()
    }
    service = ia[ia["type"].isin(["support_ticket", "complaint"])].sort_values(["customer_id", "day"])
    logm = np.where(
        service["type"] == "complaint",
        np.log(S._COMPLAINT_MULT),
        np.log1p(S._TICKET_MULT_PER_SEVERITY * service["value"].fillna(0)),
    )
    service = service.assign(logm=logm)
    last = pd.concat([*times.values(), service[["customer_id", "day"]]])
    t_last = last.groupby("customer_id")["day"].max().reindex(ids).to_numpy()
    t_last = np.where(np.isnan(t_last), signup, np.maximum(t_last, signup))
    t0 = np.where(sub, t, t_last)  # eligible subscribers have not cancelled by T

    # int_signup^t0 of the hazard multiplier (past tickets and complaints, capped), and its value at t0
    n_service = service.groupby("customer_id").size().reindex(ids, fill_value=0).to_numpy()
    integral = t0 - signup
    log_final = np.zeros(len(ids))
    for cid, g in service.groupby("customer_id"):
        i = pos[cid]
        cum = np.minimum(np.cumsum(g["logm"].to_numpy()), Q.LOG_CAP)
        day = g["day"].to_numpy()
        edges = np.concatenate((day, [t0[i]]))
        integral[i] = (day[0] - signup[i]) + float(np.sum(np.exp(cum) * np.diff(edges)))
        log_final[i] = cum[-1]

    # recent decaying events (only those within DD days before t_last or later can be within DD of d)
    recent = pd.concat(times.values())
    recent = recent.assign(i=recent["customer_id"].map(pos).to_numpy())
    recent = recent[recent["day"] > t_last[recent["i"].to_numpy()] - Q.DD]
    recent_days = _pad(recent.groupby("customer_id")["day"].apply(np.asarray), ids.to_numpy(), np.nan)

    # campaigns sent at or before T - 2 days (so their opens are visible), with their outcome 0 / 1 / 2
    sent = ia[(ia["type"] == "campaign_sent") & (ia["day"] <= t - 2)][["customer_id", "day", "value"]]
    opened = ia.loc[ia["type"] == "email_open", ["customer_id", "value"]].assign(o=1)
    clicked = ia.loc[ia["type"] == "campaign_click", ["customer_id", "value"]].assign(k=1)
    sent = sent.merge(opened, on=["customer_id", "value"], how="left")
    sent = sent.merge(clicked, on=["customer_id", "value"], how="left")
    outcome = sent["o"].fillna(0).to_numpy(int) + sent["k"].fillna(0).to_numpy(int)
    sent = sent.assign(llr=LLR[outcome])
    camp_day = _pad(sent.groupby("customer_id")["day"].apply(np.asarray), ids.to_numpy(), np.inf)
    camp_llr = _pad(sent.groupby("customer_id")["llr"].apply(np.asarray), ids.to_numpy(), 0.0)

    # spend: the Gamma-Gamma posterior of the customer's scale and of the favourite category
    spend_mult = np.where(business, 2.5, 1.0) * S._REGION_SPEND[region] * np.where(senior, 1.15, 1.0)
    cat = tx["category"].map({k: j for j, k in enumerate(S.CATEGORIES)}).to_numpy(int)
    i_tx = tx["customer_id"].map(pos).to_numpy()
    x = tx["amount"].to_numpy() / (spend_mult[i_tx] * S._CAT_SPEND[cat])
    sum_x = np.bincount(i_tx, weights=x, minlength=len(ids))
    n_buy = np.bincount(i_tx, minlength=len(ids))
    inv_nu = (S._SPEND_GAMMA + sum_x) / (S._SPEND_Q + S._SPEND_P * n_buy - 1)  # E[1 / nu | amounts]
    n_cat = np.zeros((len(ids), len(S._CAT_P)))
    np.add.at(n_cat, (i_tx, cat), 1.0)
    log_mix = np.log(0.45 * S._CAT_P)
    log_post = (
        np.log(S._CAT_P) + (n_cat @ log_mix)[:, None] + n_cat * (np.log(0.55 + 0.45 * S._CAT_P) - log_mix)
    )
    post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    cat_factor = post @ (0.55 * S._CAT_SPEND + 0.45 * (S._CAT_P @ S._CAT_SPEND))
    amount = S._SPEND_P * inv_nu * spend_mult * cat_factor * (1 - S._REFUND_P)

    ticket_c = np.where(business, 1.5, 1.0) * np.where(sub, 1.3, 1.0)
    plan_fee = np.where(sub, S._PLAN_FEE[plan], 0.0)
    return SimpleNamespace(
        sub=sub,
        signup=signup,
        signup_s=signup_s,
        rate_mult=rate_mult,
        hazard_static=hazard_static,
        n_gv=counts["purchase"] + counts["visit"],
        rate_g=S._BASE_RATE * rate_mult + S._VISIT_PER_PURCHASE * S._BASE_RATE * np.where(sub, 2.0, 1.0),
        login_rate=np.where(sub, S._LOGIN_RATE, 0.0),
        t0=t0,
        integral=integral,
        log_final=log_final,
        n_service=n_service,
        service_rate=(S._TICKET_RATE + S._COMPLAINT_RATE) * ticket_c,
        ticket_c=ticket_c,
        recent=recent_days,
        camp_day=camp_day,
        camp_llr=camp_llr,
        target=np.where(opt_in, S._CAMPAIGN_TARGET_P, 0.0) * np.where(business, 0.7, 1.0),
        plan_fee=plan_fee,
        amount=amount,
    )


def _log_gamma_pdf(x: np.ndarray, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """log density of Gamma(shape a, rate b) at x."""
    return a * np.log(b) - gammaln(a) + (a - 1) * np.log(x) - b * x


def bayes(
    o: SimpleNamespace,
    t: float,
    h: int,
    draws: int,
    seed: int,
    block: int = 400,
    ignore: frozenset[str] = frozenset(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(churn over (T, T + H]), E[value over (T, T + H]] per customer and the effective sample size of
    its weights.

    Approximations: purchase and visit times are taken at their recorded second (the generator draws the
    day's decay, then redraws the hour); campaign-driven purchases are treated as ordinary ones in the
    likelihood; opens of campaigns sent in the last two days before T are ignored. `ignore` drops evidence to
    see what it is worth: "campaigns" (opens and clicks), "decay" (the slowdown before dropout), "service"
    (tickets and complaints: their hazard multipliers and their stop at dropout)."""
    rng = np.random.default_rng(seed)
    delays = Q.delay_cdf(rng)
    end = t + h + Q.DD + 1
    n = len(o.sub)
    churn, value, ess = np.ones(n), np.zeros(n), np.zeros(n)
    season, flat = Q.SEASON, Q.FLAT_RATE
    for lo in range(0, n, block):
        i = np.arange(lo, min(lo + block, n))
        m = len(i)

        def col(x: np.ndarray, i: np.ndarray = i) -> np.ndarray:
            return x[i][:, None]

        # g: half the draws from the posterior with exposure to T, half with exposure to the last activity
        a = col(o.n_gv) + A0
        exp_t = season.cum(np.full(m, t))[0] - season.cum(o.signup[i])[0]
        exp_l = season.cum(o.t0[i])[0] - season.cum(o.signup[i])[0]
        exp_l = np.where(o.sub[i], exp_t, exp_l)
        b_t = A0 + o.rate_g[i] * exp_t
        b_l = A0 + o.rate_g[i] * exp_l
        half = draws // 2
        g = np.concatenate(
            (
                rng.gamma(a, 1 / b_t[:, None], (m, half)),
                rng.gamma(a, 1 / b_l[:, None], (m, draws - half)),
            ),
            axis=1,
        )
        g = np.maximum(g, 1e-12)
        log_q = np.logaddexp(_log_gamma_pdf(g, a, b_t[:, None]), _log_gamma_pdf(g, a, b_l[:, None]))
        log_q -= np.log(2)
        lw = _log_gamma_pdf(g, A0, np.full((m, 1), A0)) - log_q
        u = rng.gamma(2.0, 0.5, (m, draws))
        hz = col(o.hazard_static) * np.clip(g * col(o.rate_mult), 0.2, 5.0) ** -0.25 * u
        integral, log_final = col(o.integral), col(o.log_final)
        if "service" in ignore:
            integral, log_final = col(o.t0) - col(o.signup), np.zeros((m, 1))
        lw -= hz * integral  # P(d > t0)
        e = -np.log1p(-(np.arange(draws) + rng.random((m, draws))) / draws)
        d = col(o.t0) + e / (hz * np.exp(log_final))
        alive = d > t
        if alive.any():  # memoryless at T: redraw from T with future tickets at a posterior frailty
            f = rng.gamma(
                col(o.n_service) + 0.6, 1.0 / (0.6 + col(o.service_rate) * (t - col(o.signup))), (m, draws)
            )
            rows = SimpleNamespace(
                hazard=hz[alive],
                log_mult=np.broadcast_to(log_final, (m, draws))[alive],
                tick_rate=(S._TICKET_RATE * col(o.ticket_c) * f)[alive],
                comp_rate=(S._COMPLAINT_RATE * col(o.ticket_c) * f)[alive],
            )
            d[alive] = Q.future_dropouts(rng, rows, t, end, 1)[:, 0]  # type: ignore[arg-type]
        top = np.minimum(d, t)
        sig = np.broadcast_to(col(o.signup), (m, draws))
        # purchases and visits: g^n exp(-g rate int season x decay); logins: exp(-rate int decay)
        keep = 0.0 if "decay" in ignore else 1.0
        expo = season.cum(top)[0] - season.cum(sig)[0] - keep * season.lost(sig, top, d)
        lw += col(o.n_gv) * np.log(g) - g * col(o.rate_g) * expo
        lw -= col(o.login_rate) * (top - sig - keep * flat.lost(sig, top, d))
        if "decay" not in ignore:
            left = (d[:, :, None] - o.recent[i][:, None, :]) / Q.DD  # nan pads -> nan -> dropped
            decay = np.where(left < 1.0, Q.FLOOR + (1 - Q.FLOOR) * np.maximum(left, 0.0), 1.0)
            lw += np.nansum(np.where(np.isnan(left), 0.0, np.log(decay)), axis=2)
        if "service" not in ignore:  # tickets and complaints: the frailty integrated out
            lw -= (col(o.n_service) + 0.6) * np.log(0.6 + col(o.service_rate) * (top - sig))
        if "campaigns" not in ignore:  # campaigns sent after dropout are answered at the churned rates
            after = o.camp_day[i][:, None, :] >= d[:, :, None]
            lw += (after * o.camp_llr[i][:, None, :]).sum(axis=2)

        w = np.exp(lw - lw.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        ess[i] = 1.0 / (w**2).sum(axis=1)
        rows_c = SimpleNamespace(
            lam=(g * o.rate_mult[i][:, None] * S._BASE_RATE).ravel(),
            target=np.repeat(o.target[i], draws),
            signup=np.repeat(o.signup[i], draws),
            sub=np.repeat(o.sub[i], draws),
            fees=np.repeat(Q.fee_days(o.signup_s[i], t, h), draws, axis=0),
            amount=np.repeat(o.amount[i], draws),
            fee=np.repeat(o.plan_fee[i], draws),
        )
        p, v = Q.outcomes(rows_c, d.reshape(-1, 1), t, h, delays)  # type: ignore[arg-type]
        churn[i] = (w * p.reshape(m, draws)).sum(axis=1)
        value[i] = (w * v.reshape(m, draws)).sum(axis=1)
    return churn, value, ess


EVIDENCE = ((), ("campaigns",), ("decay",), ("service",), ("campaigns", "decay", "service"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--horizon", type=int, default=182)
    parser.add_argument("--cutoff", default="2025-06-30T23:59:59.999999", help="the frame's T")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None, help="score the first N customers only")
    args = parser.parse_args()
    data = ROOT / "bench" / ".data"
    folder = data / f"synthetic-{args.customers}-seed{args.seed}"
    frame = pd.read_parquet(data / f"mq-frame-seed{args.seed}.parquet").iloc[: args.limit]
    t = (datetime.fromisoformat(args.cutoff) - S.START) / timedelta(days=1)
    o = observed(folder, frame["customer_id"], t)
    y, value, sub = frame["churned"].to_numpy(), frame["future_value"].to_numpy(), o.sub
    rows = {
        "model": (frame["churn_probability"].to_numpy(), frame["predicted_value"].to_numpy()),
        "peer": (frame["peer_churn_probability"].to_numpy(), frame["peer_predicted_value"].to_numpy()),
    }
    for ignore in EVIDENCE:
        start = time.perf_counter()
        p, v, ess = bayes(o, t, args.horizon, args.draws, args.seed, ignore=frozenset(ignore))
        name = "bayes" + "".join(f" - {x}" for x in ignore)
        rows[name] = (p, v)
        print(f"{name}: {time.perf_counter() - start:.0f} s, ESS median {np.median(ess):.0f}", flush=True)
    print(f"seed {args.seed}, {len(frame):,} customers, {args.draws} draws")
    print("| predictor | churn AUC | subscribers | others | value Gini |\n|---|---:|---:|---:|---:|")
    for name, (p, v) in rows.items():
        auc = [metrics.roc_auc(y[g], p[g]) for g in (np.ones_like(sub), sub, ~sub)]
        cells = " | ".join(f"{a:.4f}" for a in auc)
        print(f"| {name} | {cells} | {metrics.normalized_gini(value, v):.4f} |")


if __name__ == "__main__":
    main()
