"""Scratch (issue 16, session 13): model-based engagement inputs the plain peer lacks, on exp_churn16's rows.

At every month end C of the cached feature rows, with events at or before C only:
- `eng_p_alive`: BG/NBD P(alive) fitted on the *activity* days (purchase, visit or login days: every stream
  the generator thins before dropout), like btyd_p_alive on purchase days;
- `eng_unopened`: campaigns sent since the customer's last sign of life (activity, open or click);
- `eng_p_alive_mail`: eng_p_alive's odds times the likelihood ratio of those unopened campaigns,
  ((1 - q_alive) / (1 - q_gone))^n, with q_alive the population's open rate of campaigns sent before a later
  activity (the customer was alive) and q_gone that of campaigns sent over 180 days after the last activity.
Then exp_churn16's variants with these inputs added (not given to the peer).

    .venv/bin/python bench/exp_churn16_engage.py --customers 20000 --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import exp_churn16 as E  # noqa: E402

from features import btyd  # noqa: E402

ACTIVITY = ("visit", "login")
DAY = np.timedelta64(1, "D")


def engagement(data: Path, cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
    tx = pd.read_parquet(data / "transactions.parquet", columns=["customer_id", "timestamp", "amount"])
    it = pd.read_parquet(data / "interactions.parquet", columns=["customer_id", "timestamp", "type"])
    act = pd.concat(
        [
            tx.loc[tx.amount > 0, ["customer_id", "timestamp"]],
            it.loc[it.type.isin(ACTIVITY), ["customer_id", "timestamp"]],
        ]
    )
    act["day"] = act.timestamp.dt.floor("D")
    act = act.drop_duplicates(["customer_id", "day"])
    life = it.loc[it.type.isin(("email_open", "campaign_click")), ["customer_id", "timestamp"]]
    sent = it.loc[it.type == "campaign_sent", ["customer_id", "timestamp"]]
    opens = it.loc[it.type == "email_open", ["customer_id", "timestamp"]]
    out = []
    for c in cutoffs:
        a = act[act.timestamp <= c]
        g = a.groupby("customer_id").agg(first=("day", "min"), last=("day", "max"), n=("day", "size"),
                                         last_t=("timestamp", "max"))  # fmt: skip
        x = (g.n - 1).to_numpy(float)
        tx_ = ((g["last"] - g["first"]) / DAY).to_numpy(float)
        big_t = ((c.floor("D") - g["first"]) / DAY).to_numpy(float)
        p = btyd.fit_bgnbd(x, tx_ / 7, big_t / 7)
        g["eng_p_alive"] = btyd.bgnbd_p_alive(p, x, tx_ / 7, big_t / 7)
        # last sign of life: activity, open or click
        lf = life[life.timestamp <= c].groupby("customer_id").timestamp.max()
        last_life = pd.concat([g.last_t, lf]).groupby(level=0).max()
        s = sent[sent.timestamp <= c].merge(
            last_life.rename("ll"), left_on="customer_id", right_index=True, how="left"
        )
        unopened = s[(s.ll.isna()) | (s.timestamp > s.ll)].groupby("customer_id").size()
        # open rates: q_alive on campaigns sent before a later activity; q_gone on campaigns sent > 180 d
        # after the last activity (as of c)
        o = opens[opens.timestamp <= c].copy()
        s2 = sent[sent.timestamp <= c - pd.Timedelta(days=3)].copy()
        s2 = s2.merge(g.last_t.rename("la"), left_on="customer_id", right_index=True, how="left")
        key = s2.customer_id + "|" + s2.timestamp.dt.floor("D").astype(str)
        okey = set(o.customer_id + "|" + o.timestamp.dt.floor("D").astype(str)) | set(
            o.customer_id + "|" + (o.timestamp - pd.Timedelta(days=1)).dt.floor("D").astype(str)
        )
        s2["opened"] = key.isin(okey)
        alive = s2.la > s2.timestamp + pd.Timedelta(days=1)
        gone = s2.la.isna() | (s2.timestamp > s2.la + pd.Timedelta(days=180))
        q1, q0 = s2.opened[alive].mean(), s2.opened[gone].mean()
        g["eng_unopened"] = unopened.reindex(g.index).fillna(0.0)
        lr = np.log((1 - q1) / (1 - q0))
        pa_ = g.eng_p_alive.clip(1e-9, 1 - 1e-9)
        z = np.log(pa_ / (1 - pa_)) + g.eng_unopened * lr
        g["eng_p_alive_mail"] = 1 / (1 + np.exp(-z))
        g["eng_days_since_activity"] = (c - g.last_t) / DAY
        g["cutoff"] = c
        fitted = f"bgnbd r {p.r:.3f} alpha {p.alpha:.3f} a {p.a:.3f} b {p.b:.3f} q1 {q1:.3f} q0 {q0:.3f}"
        print(c.date(), fitted, flush=True)
        out.append(
            g[["cutoff", "eng_p_alive", "eng_unopened", "eng_p_alive_mail", "eng_days_since_activity"]]
        )
    return pd.concat(out).reset_index()


def service(data: Path, cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
    """Lifetime service events at each cutoff: complaints, tickets, tickets' summed log1p(0.08 x severity)."""
    it = pd.read_parquet(data / "interactions.parquet", columns=["customer_id", "timestamp", "type", "value"])
    it = it[it.type.isin(("support_ticket", "complaint"))]
    it["sev"] = np.where(it.type == "support_ticket", np.log1p(0.08 * it.value.fillna(0.0)), 0.0)
    out = []
    for c in cutoffs:
        e = it[it.timestamp <= c]
        g = e.groupby("customer_id").agg(
            life_complaints=("type", lambda t: float((t == "complaint").sum())),
            life_tickets=("type", lambda t: float((t == "support_ticket").sum())),
            life_ticket_sev=("sev", "sum"),
        )
        g["cutoff"] = c
        out.append(g)
    return pd.concat(out).reset_index()


def seasonal_clock(days: pd.Series, c: pd.Timestamp) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Operational time: the cumulative seasonal intensity per calendar day up to `c`, from activity per day
    known at c (log counts = linear trend + month-of-year + weekday effects, least squares; the trend is the
    growing base, dropped), the factors normalised to mean 1 over the days."""
    counts = days[days <= c].value_counts().sort_index()
    idx = pd.date_range(counts.index.min(), c.floor("D"), freq="D")
    n = counts.reindex(idx).fillna(0.0).to_numpy()
    t = np.arange(len(idx), dtype=float) / 365.0
    month = np.eye(12)[idx.month.to_numpy() - 1][:, 1:]
    wday = np.eye(7)[idx.day_of_week.to_numpy()][:, 1:]
    x = np.c_[np.ones(len(idx)), t, t**2, month, wday]
    ok = n > 0
    beta = np.linalg.lstsq(x[ok], np.log(n[ok]), rcond=None)[0]
    season = np.exp(np.c_[month, wday] @ beta[3:])
    season /= season.mean()
    return idx, np.cumsum(season)


def seasonal_alive(data: Path, cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
    """BG/NBD P(alive) on activity days (purchases, visits, logins) in operational time (seasonal_clock)."""
    tx = pd.read_parquet(data / "transactions.parquet", columns=["customer_id", "timestamp", "amount"])
    it = pd.read_parquet(data / "interactions.parquet", columns=["customer_id", "timestamp", "type"])
    act = pd.concat(
        [
            tx.loc[tx.amount > 0, ["customer_id", "timestamp"]],
            it.loc[it.type.isin(ACTIVITY), ["customer_id", "timestamp"]],
        ]
    )
    act["day"] = act.timestamp.dt.floor("D")
    act = act.drop_duplicates(["customer_id", "day"])
    pur = tx.loc[tx.amount > 0, ["customer_id", "timestamp"]].copy()
    pur["day"] = pur.timestamp.dt.floor("D")
    pur = pur.drop_duplicates(["customer_id", "day"])
    out = []
    for c in cutoffs:
        cols = {}
        for name, ev in (("eng_p_alive_season", act), ("btyd_p_alive_season", pur)):
            idx, clock = seasonal_clock(ev["day"], c)
            tau = pd.Series(clock, index=idx)
            g = ev[ev.timestamp <= c].groupby("customer_id").day.agg(["min", "max", "size"])
            g = g[g["min"] >= idx[0]]
            first, last = tau.reindex(g["min"]).to_numpy(), tau.reindex(g["max"]).to_numpy()
            x, tx_, big_t = (g["size"] - 1).to_numpy(float), last - first, clock[-1] - first
            p = btyd.fit_bgnbd(x, tx_ / 7, big_t / 7)
            cols[name] = pd.Series(btyd.bgnbd_p_alive(p, x, tx_ / 7, big_t / 7), index=g.index)
        g = pd.DataFrame(cols)
        g["cutoff"] = c
        out.append(g)
        print(c.date(), "seasonal", flush=True)
    return pd.concat(out).rename_axis("customer_id").reset_index()


LAM = np.geomspace(0.003, 6.0, 24)  # purchase days per week
MU = np.geomspace(1e-4, 1.0, 18)  # dropout hazard per week


def pareto_grid(x: np.ndarray, tx: np.ndarray, big_t: np.ndarray, h: float, iters: int = 150) -> tuple:
    """Pareto/NBD with a nonparametric mixing distribution: (lambda, mu) on a fixed log grid, the weights by
    EM (NPMLE) on the distinct (x, t_x, T) rows. While alive a customer buys as Poisson(lambda) and drops out
    at an exponential(mu) time, as the generator does (no BG/NBD 'dropout only after a purchase').
    Returns P(alive at T) and P(no purchase in (T, T + h]) per row; times in weeks."""
    lam, mu = np.meshgrid(LAM, MU, indexing="ij")
    lam, mu = lam.ravel(), mu.ravel()
    key = np.c_[x, tx, big_t]
    uniq, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    ux, utx, ut = uniq[:, 0:1], uniq[:, 1:2], uniq[:, 2:3]
    s = lam + mu
    log_alive = ux * np.log(lam) - s * ut
    gap = np.maximum(ut - utx, 1e-9)
    log_dead = ux * np.log(lam) + np.log(mu / s) - s * utx + np.log(-np.expm1(-s * gap))
    log_l = np.logaddexp(log_alive, log_dead)
    shift = log_l.max(axis=1, keepdims=True)
    like = np.exp(log_l - shift)
    w = np.full(len(lam), 1.0 / len(lam))
    for _ in range(iters):
        post = like * w
        post /= post.sum(axis=1, keepdims=True)
        w = (cnt[:, None] * post).sum(axis=0) / cnt.sum()
    den = like @ w
    alive = np.exp(log_alive - shift) @ w / den
    quiet = mu / s + lam / s * np.exp(-s * h)  # alive at T, no purchase in h (dropout may come first)
    no_buy = (np.exp(log_dead - shift) @ w + (np.exp(log_alive - shift) * quiet) @ w) / den
    return alive[inv], no_buy[inv]


def pareto(data: Path, cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
    """pareto_grid at each cutoff, on purchase days (on activity days, purchases, visits and logins, it
    scored as on purchase days in a one-cutoff check: single-input AUC 0.9386 against 0.9394)."""
    tx = pd.read_parquet(data / "transactions.parquet", columns=["customer_id", "timestamp", "amount"])
    pur = tx.loc[tx.amount > 0, ["customer_id", "timestamp"]]
    streams = {}
    for name, ev in (("pnbd", pur),):
        ev = ev.assign(day=ev.timestamp.dt.floor("D")).drop_duplicates(["customer_id", "day"])
        streams[name] = ev
    out = []
    for c in cutoffs:
        cols = {}
        for name, ev in streams.items():
            g = ev[ev.timestamp <= c].groupby("customer_id").day.agg(["min", "max", "size"])
            x = (g["size"] - 1).to_numpy(float)
            txw = ((g["max"] - g["min"]) / DAY).to_numpy(float) / 7
            tw = ((c.floor("D") - g["min"]) / DAY).to_numpy(float) / 7
            alive, no_buy = pareto_grid(x, txw, tw, E.H / 7)
            cols[f"{name}_p_alive"] = pd.Series(alive, index=g.index)
            cols[f"{name}_p_no_purchase"] = pd.Series(no_buy, index=g.index)
        g = pd.DataFrame(cols)
        g["cutoff"] = c
        out.append(g)
        print(c.date(), "pareto", flush=True)
    return pd.concat(out).rename_axis("customer_id").reset_index()


PNBD = ("pnbd_p_alive", "pnbd_p_no_purchase")


def _offset(rows: pd.DataFrame, column: str) -> np.ndarray:
    """logit of a model-based P(churn) input as the booster's base margin (0 where it is missing)."""
    p = rows[column].clip(1e-4, 1 - 1e-4)
    return np.log(p / (1 - p)).fillna(0.0).to_numpy()


def make_offset(column: str, add: tuple[str, ...] = ()):
    """The shallow booster on core_v1 columns (+ `add`), boosted from logit(`column`) instead of from 0."""

    def v(f, c):
        tr = f[f.cutoff.isin(E.origins_for(f, c, E.H, 8))]
        cols = E.cols_v1(f, add=add)
        dm = E.matrix(tr, cols)
        dm.set_label(tr["churned_182"].to_numpy(float))
        dm.set_base_margin(_offset(tr, column))
        booster = E.xgb.train({**E.SHALLOW, "objective": "binary:logistic"}, dm, 400)
        rows = f[f.cutoff == c]
        out = E.matrix(rows, cols)
        out.set_base_margin(_offset(rows, column))
        return booster.predict(out)

    return v


SEASON = ("eng_p_alive_season", "btyd_p_alive_season")
LIFE = ("life_complaints", "life_tickets", "life_ticket_sev")
NEW = ("eng_p_alive", "eng_unopened", "eng_p_alive_mail", "eng_days_since_activity")
E.VARIANTS.update(
    {
        "v1+eng_p_alive": E.make_v1(E.SHALLOW, 400, add=("eng_p_alive",)),
        "v1+eng_mail": E.make_v1(E.SHALLOW, 400, add=("eng_p_alive_mail",)),
        "v1+eng_both": E.make_v1(E.SHALLOW, 400, add=("eng_p_alive", "eng_p_alive_mail")),
        "v1+eng_all": E.make_v1(E.SHALLOW, 400, add=NEW),
        "v1+unopened": E.make_v1(E.SHALLOW, 400, add=("eng_unopened",)),
        "peer_v1+unopened": E.make_v1(E.PEER, 100, k=4, btyd=False, add=("eng_unopened",)),
        "v1+season": E.make_v1(E.SHALLOW, 400, add=SEASON),
        "v1+season+eng_all": E.make_v1(E.SHALLOW, 400, add=(*SEASON, *NEW)),
        "v1+pnbd": E.make_v1(E.SHALLOW, 400, add=PNBD),
        "v1+pnbd+eng_all": E.make_v1(E.SHALLOW, 400, add=(*PNBD, *NEW)),
        "peer_v1+pnbd": E.make_v1(E.PEER, 100, k=4, btyd=False, add=PNBD),
        "offset_pnbd": make_offset("pnbd_p_no_purchase"),
        "offset_pnbd+pnbd+eng_all": make_offset("pnbd_p_no_purchase", (*PNBD, *NEW)),
        "offset_btyd": make_offset("btyd_p_no_purchase"),
        "v1+life": E.make_v1(E.SHALLOW, 400, add=LIFE),
        "peer_v1+life": E.make_v1(E.PEER, 100, k=4, btyd=False, add=LIFE),
        "v1+life+eng_all": E.make_v1(E.SHALLOW, 400, add=(*LIFE, *NEW)),
        "peer_v1+eng_both": E.make_v1(E.PEER, 100, k=4, btyd=False, add=("eng_p_alive", "eng_p_alive_mail")),
    }
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--customers", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fs", default="core_v3")
    p.add_argument("--variants", nargs="*", default=None)
    a = p.parse_args()
    data = ROOT / "bench" / ".data" / f"synthetic-{a.customers}-seed{a.seed}"
    f = E.frames(data, a.fs, data.parent / f"exp16-{a.customers}-{a.seed}-{a.fs}.parquet")
    f["cutoff"] = pd.to_datetime(f["cutoff"])
    cache = data.parent / f"exp16e-{a.customers}-{a.seed}.parquet"
    if cache.exists():
        eng = pd.read_parquet(cache)
    else:
        eng = engagement(data, sorted(f["cutoff"].unique()))
        eng.to_parquet(cache)
    f = f.merge(eng, on=["customer_id", "cutoff"], how="left", validate="1:1")
    cache = data.parent / f"exp16life-{a.customers}-{a.seed}.parquet"
    if not cache.exists():
        service(data, sorted(f["cutoff"].unique())).to_parquet(cache)
    f = f.merge(pd.read_parquet(cache), on=["customer_id", "cutoff"], how="left", validate="1:1")
    cache = data.parent / f"exp16season-{a.customers}-{a.seed}.parquet"
    if not cache.exists():
        seasonal_alive(data, sorted(f["cutoff"].unique())).to_parquet(cache)
    f = f.merge(pd.read_parquet(cache), on=["customer_id", "cutoff"], how="left", validate="1:1")
    cache = data.parent / f"exp16pnbd-{a.customers}-{a.seed}.parquet"
    if not cache.exists():
        pareto(data, sorted(f["cutoff"].unique())).to_parquet(cache)
    f = f.merge(pd.read_parquet(cache), on=["customer_id", "cutoff"], how="left", validate="1:1")
    for c in LIFE:
        f[c] = f[c].fillna(0.0)
    E.run(
        f,
        a.variants or ["peer_v1", "shallow_H8_v1", *[k for k in E.VARIANTS if "eng" in k or "unopened" in k]],
    )


if __name__ == "__main__":
    main()
