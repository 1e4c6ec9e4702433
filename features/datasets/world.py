"""A retention world: synthetic customers whose futures respond to retention actions with a known effect.

The world exists to check Diamond's retention loop (docs/effect.md, Simulation): Diamond scores the history,
raises alerts, the world applies a retention action (an account-manager call) to the customers alerted and
treated, and the history goes on. Every customer's whole future is drawn once from the seed (common random
numbers), independent of any action; an action only changes which of those drawn events happen. So for any
set of actions the world gives the history that follows, and for one customer the future with and without
an action comes from the same draws: both potential outcomes are known and the true individual effect is
exact, not estimated.

Per customer (vectorised numpy):

* static attributes: segment (consumer or business, ~25 % business), region, engagement (latent: engaged
  customers visit often, the others rarely; seen through the ``visit`` interactions);
* signup: 30 % in the first 90 days (the launch base), the rest uniform over the whole world (a steady
  flow of newcomers: each run has young customers);
* a dropout hazard h (per day) from signup, lower for business and engaged customers, changed only by
  complaints and actions (below); the dropout time D solves H(D) = E with E ~ Exp(1) drawn once;
* purchases: a Poisson stream of candidate times over the whole world at rate lambda, with amounts drawn
  once (Gamma-Gamma spend); the customer makes those before D. Visits alike at the engagement rate;
* complaints: a Poisson stream of candidate times (made while the customer is still there); each multiplies
  the hazard by COMPLAINT_FACTOR, so most churn follows complaints, seen in the ``complaint`` interactions;
* a retention action at time a multiplies the hazard after a by ``1 - effect``, where ``effect`` depends on
  segment and engagement (``EFFECTS``) and is 0 for disengaged consumers: nothing moves them. Actions
  compose (two calls: ``(1 - effect)^2``). A customer gone before a is not brought back. D is recomputed from
  the same E by inverting the piecewise-linear cumulative hazard, so an action changes nothing at or before
  its own time (events at or before a are identical with and without it).

Nothing decays before the dropout (that would let a later action change earlier events): churn shows as
silence, as in the BTYD models, and is foreshadowed by complaints. The history follows the contract with
``churn: non_contractual``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from features.datasets.tables import (
    INTERACTIONS_SCHEMA,
    TRANSACTIONS_SCHEMA,
    contract_schema,
    fixed_width_ids,
    fresh_sibling,
    replace_dir,
    timestamps,
)

__all__ = [
    "ACTION_DELAY",
    "COMPLAINT_FACTOR",
    "EFFECTS",
    "END",
    "EXPECTED_COLUMNS",
    "START",
    "World",
    "actions_frame",
]

START: datetime = datetime(2023, 1, 1)
"""The world's first instant (naive, UTC): nobody signs up before it."""
END: datetime = datetime(2026, 12, 31, 23, 59, 59)
"""The world's last instant: nothing is drawn after it, so every history and outcome window must end by it."""
ACTION_DELAY = timedelta(seconds=1)
"""An action for an alert opened by a run at as_of T starts at T + 1 s: the run saw everything up to T."""

EFFECTS: dict[tuple[str, bool], float] = {
    ("business", True): 0.75,
    ("business", False): 0.45,
    ("consumer", True): 0.55,
    ("consumer", False): 0.0,
}
"""The share of the dropout hazard an action removes, by (segment, engaged)."""

EXPECTED_COLUMNS = [
    "expected_saved_if_treated",
    "expected_saved_if_not",
    "expected_value_if_treated",
    "expected_value_if_not",
]
"""What `World.expected` gives per customer: P(saved) and mean value after, with and without the action."""

_DAY = 86_400.0
_MAX_COMPLAINTS = (
    4  # future complaints followed in `World.expected` (after 4 more the hazard is 15^4 x: gone)
)
_END_S = (END - START).total_seconds() + 1.0  # events at float seconds t < _END_S
_LAUNCH_SHARE, _LAUNCH_DAYS = 0.3, 90.0  # 30 % sign up in the first 90 days, the rest over the whole world
_BASE_HAZARD = 1.0 / 800.0
_COMPLAINT_RATE = 1.0 / 250.0  # per day
COMPLAINT_FACTOR = 15.0
"""The dropout hazard is multiplied by this after each complaint: most churn follows complaints."""
_BASE_RATE = 0.02  # purchases per day of an average customer
_RATE_SHAPE = 4.0
_SPEND_P, _SPEND_Q, _SPEND_GAMMA = 4.0, 3.0, 22.5  # mean spend 45 (as features.datasets.synthetic)
_VISIT_RATE = {True: 0.12, False: 0.015}  # per day, by engaged
_ENGAGED_P = 0.45
_BUSINESS_P = 0.25
_REGIONS = ("north", "south", "east", "west")
OFFICE_MARGIN, HOME_MARGIN = 0.25, 0.35  # margin rates of the two categories (the margin column)
CUSTOMERS_SCHEMA = contract_schema("customers", ("customer_id", "signup_date", "segment", "region"))


def actions_frame(customer_ids: list[str] | pd.Series, at: list[datetime] | pd.Series) -> pd.DataFrame:
    """Actions as the world reads them: one row per action, customer_id and the time it starts."""
    return pd.DataFrame({"customer_id": pd.Series(customer_ids, dtype=object), "at": pd.to_datetime(at)})


@dataclass(frozen=True)
class World:
    """Every customer's latent state and whole drawn future; `history` and `dropout` apply actions to it."""

    n_customers: int
    seed: int
    ids: np.ndarray  # customer ids, str
    business: np.ndarray
    engaged: np.ndarray
    region: np.ndarray  # codes into _REGIONS
    signup: np.ndarray  # float seconds since START
    hazard: np.ndarray  # per day, before any action
    exposure: np.ndarray  # E ~ Exp(1): the cumulative hazard at which the customer leaves
    effect: np.ndarray  # share of the hazard an action removes (EFFECTS)
    purchase_rate: np.ndarray  # per day
    mean_spend: np.ndarray
    buy_c: np.ndarray  # candidate purchases: customer index, float seconds, amount (sorted by customer, time)
    buy_t: np.ndarray
    buy_amount: np.ndarray
    visit_c: np.ndarray  # candidate visits: customer index, float seconds
    visit_t: np.ndarray
    complaint_c: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # candidate complaints
    complaint_t: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def draw(cls, n_customers: int, seed: int = 0) -> World:
        """Draw the world of `n_customers` from `seed`: the same pair always gives the same world."""
        if n_customers < 1:
            raise ValueError(f"n_customers must be at least 1, got {n_customers}")
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(17,)))
        m = n_customers
        business = rng.random(m) < _BUSINESS_P
        engaged = rng.random(m) < _ENGAGED_P
        region = rng.integers(0, len(_REGIONS), m)
        launch = rng.random(m) < _LAUNCH_SHARE  # the launch base, then a steady flow of newcomers
        u = rng.random(m)
        signup = np.floor(np.where(launch, u * _LAUNCH_DAYS * _DAY, u * (_END_S - 1.0)))
        hazard = (
            _BASE_HAZARD
            * rng.gamma(3.0, 1.0 / 3.0, m)
            * np.where(business, 0.7, 1.0)
            * np.where(engaged, 0.7, 1.0)
        )
        exposure = rng.exponential(1.0, m)
        effect = np.select(
            [business & engaged, business, engaged],
            [EFFECTS[("business", True)], EFFECTS[("business", False)], EFFECTS[("consumer", True)]],
            EFFECTS[("consumer", False)],
        )
        lam = _BASE_RATE * rng.gamma(_RATE_SHAPE, 1.0 / _RATE_SHAPE, m) * np.where(business, 1.3, 1.0)
        nu = rng.gamma(_SPEND_Q, 1.0 / _SPEND_GAMMA, m)
        spend_mult = np.where(business, 2.5, 1.0)
        buy_c, buy_t = _poisson(rng, lam, signup)
        amount = np.maximum(
            np.round(rng.gamma(_SPEND_P, 1.0, len(buy_c)) / nu[buy_c] * spend_mult[buy_c], 2), 0.5
        )
        visit_rate = np.where(engaged, _VISIT_RATE[True], _VISIT_RATE[False])
        visit_c, visit_t = _poisson(rng, visit_rate, signup)
        complaint_c, complaint_t = _poisson(rng, np.full(m, _COMPLAINT_RATE), signup)
        width = max(6, len(str(m)))
        ids = np.array([f"C{i:0{width}d}" for i in range(1, m + 1)], dtype=object)
        return cls(
            n_customers, seed, ids, business, engaged, region, signup, hazard, exposure, effect, lam,
            _SPEND_P / nu * spend_mult, buy_c, buy_t, amount, visit_c, visit_t, complaint_c, complaint_t,
        )  # fmt: skip

    # -- actions -> dropout --------------------------------------------------------------------------------

    def index(self, customer_ids: pd.Series | list[str]) -> np.ndarray:
        """Positions of these customer ids (ValueError naming the first unknown one)."""
        pos = pd.Index(self.ids).get_indexer(pd.Series(customer_ids, dtype=object).astype(str))
        if (pos < 0).any():
            bad = pd.Series(customer_ids, dtype=object).astype(str)[pos < 0].iloc[0]
            raise ValueError(f"actions: customer_id {bad!r} is not a customer of this world")
        return pos

    def dropout(self, actions: pd.DataFrame | None = None) -> np.ndarray:
        """Each customer's dropout time (float seconds since START) under `actions` (customer_id, at): the
        hazard, multiplied by COMPLAINT_FACTOR at each complaint and by 1 - effect at each action, is
        integrated from signup until it reaches the customer's exposure E. Events after the dropout (or an
        action before the signup) change nothing."""
        ev_c, ev_t = [self.complaint_c], [self.complaint_t]
        ev_m = [np.full(len(self.complaint_c), COMPLAINT_FACTOR)]
        if actions is not None and len(actions):
            pos = self.index(actions["customer_id"])
            at = _seconds(actions["at"])
            born = at >= self.signup[pos]  # an action before a customer signs up reaches nobody
            ev_c.append(pos[born])
            ev_t.append(at[born])
            ev_m.append(1.0 - self.effect[pos[born]])
        c_all, t_all, m_all = np.concatenate(ev_c), np.concatenate(ev_t), np.concatenate(ev_m)
        order = np.lexsort((t_all, c_all))
        c_all, t_all, m_all = c_all[order], t_all[order], m_all[order]
        rank = np.arange(len(c_all)) - np.searchsorted(c_all, c_all)  # 0 for each customer's first event
        t_prev = self.signup.copy()
        rate = self.hazard.copy()
        left = self.exposure.copy()  # cumulative hazard still to spend
        out = np.full(self.n_customers, np.nan)
        for k in range(int(rank.max()) + 1 if len(rank) else 0):
            sel = rank == k
            c, a, mult = c_all[sel], t_all[sel], m_all[sel]
            alive = np.isnan(out[c])
            c, a, mult = c[alive], a[alive], mult[alive]
            mass = rate[c] * (a - t_prev[c]) / _DAY
            gone = left[c] <= mass
            out[c[gone]] = t_prev[c[gone]] + left[c[gone]] / rate[c[gone]] * _DAY
            go = ~gone
            left[c[go]] -= mass[go]
            t_prev[c[go]] = a[go]
            rate[c[go]] *= mult[go]
        todo = np.isnan(out)
        with np.errstate(divide="ignore"):
            out[todo] = t_prev[todo] + left[todo] / rate[todo] * _DAY  # rate 0: never leaves (inf)
        return out

    def state(self, actions: pd.DataFrame | None, at: datetime) -> tuple[np.ndarray, np.ndarray]:
        """Each customer's state at `at` under `actions`: whether they are there (signed up, not gone) and
        their dropout hazard per day then (the drawn hazard, x COMPLAINT_FACTOR per complaint made and x
        (1 - effect) per action taken, both before `at` and before the dropout)."""
        now = (at - START).total_seconds()
        d = self.dropout(actions)
        alive = (self.signup <= now) & (d > now)
        rate = self.hazard.copy()
        made = (self.complaint_t < np.minimum(d[self.complaint_c], now)) & (
            self.complaint_t >= self.signup[self.complaint_c]
        )
        rate *= COMPLAINT_FACTOR ** np.bincount(self.complaint_c[made], minlength=self.n_customers)
        if actions is not None and len(actions):
            pos = self.index(actions["customer_id"])
            at_s = _seconds(actions["at"])
            took = (at_s >= self.signup[pos]) & (at_s < np.minimum(d[pos], now))
            np.multiply.at(rate, pos[took], 1.0 - self.effect[pos[took]])
        return alive, rate

    def expected(
        self,
        actions: pd.DataFrame | None,
        customer_ids: pd.Series | list[str],
        at: datetime,
        horizon_days: float,
    ) -> pd.DataFrame:
        """The world's *expected* outcomes of an alert opened at `at` for these customers, over (at, at +
        horizon], with and without an action at `at` (EXPECTED_COLUMNS, one row per customer in order):
        the mean over everything not yet decided at `at` (the customer's remaining exposure E, their future
        complaints and purchases), given their state then (`state`: there or gone, hazard, effect, purchase
        rate, mean spend) and no other action in the window. A customer gone at `at` has 0 everywhere.

        Survival: the hazard is r x k, k = 1 - effect with the action (1 without), multiplied by
        COMPLAINT_FACTOR at each complaint (a Poisson stream at the complaint rate c while the customer is
        there). With p_j(s) = P(there at s, j complaints since at), dp_0/ds = -(a_0) p_0 and
        dp_j/ds = -a_j p_j + c p_(j-1), a_j = k r F^j + c; solved in closed form as sums of exponentials
        (distinct a_j), S(s) = sum_j p_j(s) (j up to _MAX_COMPLAINTS; beyond it the customer is taken as
        gone). Purchases at rate lambda with mean spend m: P(saved) = int_0^H lambda e^(-lambda s) S(s) ds
        (the first purchase comes before the dropout) and the mean value after = lambda m int_0^H S(s) ds."""
        pos = self.index(customer_ids)
        alive, rate = self.state(actions, at)
        r, lam = rate[pos], self.purchase_rate[pos]
        h = float(horizon_days)
        out = {}
        for name, k in (("if_treated", 1.0 - self.effect[pos]), ("if_not", np.ones(len(pos)))):
            saved, exposure = _survival_integrals(r * k, _COMPLAINT_RATE, COMPLAINT_FACTOR, lam, h)
            there = alive[pos]
            out[f"expected_saved_{name}"] = np.where(there, saved, 0.0)
            out[f"expected_value_{name}"] = np.where(there, lam * self.mean_spend[pos] * exposure, 0.0)
        return pd.DataFrame(out)[EXPECTED_COLUMNS]

    # -- the history ---------------------------------------------------------------------------------------

    def history(self, actions: pd.DataFrame | None, until: datetime) -> dict[str, pa.Table]:
        """The contract tables (transactions, customers, interactions) of everything that happened up to
        `until` (inclusive) under `actions`, and `truth` (latent state and dropout under those actions)."""
        if until > END:
            raise ValueError(f"until {until:%Y-%m-%d %H:%M:%S} is after the world's end {END:%Y-%m-%d}")
        stop = (until - START).total_seconds() + 1.0  # events t < stop: floor(t) <= until
        d = self.dropout(actions)
        joined = self.signup < stop
        buys = (self.buy_t < d[self.buy_c]) & (self.buy_t < stop)
        visits = (self.visit_t < d[self.visit_c]) & (self.visit_t < stop)
        ids = pa.array(self.ids, pa.string())
        bc, bt = self.buy_c[buys], np.floor(self.buy_t[buys]).astype(np.int64)
        order_no = np.flatnonzero(buys) + 1  # the candidate's number: the same order id in every future
        transactions = pa.table(
            [
                ids.take(pa.array(bc)),
                _ts(bt),
                pa.array(self.buy_amount[buys]),
                pa.array(np.ones(len(bc), np.int64)),
                pa.array(np.where(self.business[bc], "office", "home").astype(object), pa.string()),
                pa.array(np.full(len(bc), "web", dtype=object), pa.string()),
                fixed_width_ids("O", order_no, 10),
                pa.array(self.buy_amount[buys] * np.where(self.business[bc], OFFICE_MARGIN, HOME_MARGIN)),
            ],
            schema=TRANSACTIONS_SCHEMA,
        )
        moans = (self.complaint_t < d[self.complaint_c]) & (self.complaint_t < stop)
        vc = np.concatenate((self.visit_c[visits], self.complaint_c[moans]))
        vt = np.floor(np.concatenate((self.visit_t[visits], self.complaint_t[moans]))).astype(np.int64)
        kind = np.concatenate(
            (
                np.full(int(visits.sum()), "visit", dtype=object),
                np.full(int(moans.sum()), "complaint", dtype=object),
            )
        )
        order = np.lexsort((kind, vt, vc))
        vc, vt, kind = vc[order], vt[order], kind[order]
        dup = np.zeros(len(vc), dtype=bool)  # two of a kind in the same second: one row
        dup[1:] = (vc[1:] == vc[:-1]) & (vt[1:] == vt[:-1]) & (kind[1:] == kind[:-1])
        vc, vt, kind = vc[~dup], vt[~dup], kind[~dup]
        interactions = pa.table(
            [
                ids.take(pa.array(vc)),
                _ts(vt),
                pa.array(kind, pa.string()),
                pa.array(np.ones(len(vc))),
            ],
            schema=INTERACTIONS_SCHEMA,
        )
        j = np.flatnonzero(joined)
        customers = pa.table(
            [
                ids.take(pa.array(j)),
                _ts(self.signup[j].astype(np.int64)),
                pa.array(np.where(self.business[j], "business", "consumer").astype(object), pa.string()),
                pa.array(np.array(_REGIONS, dtype=object)[self.region[j]], pa.string()),
            ],
            schema=CUSTOMERS_SCHEMA,
        )
        truth = pa.table(
            {
                "customer_id": ids.take(pa.array(j)),
                "dropout_time": _ts(np.minimum(d[j], (datetime(2200, 1, 1) - START).total_seconds())),
                "engaged": pa.array(self.engaged[j]),
                "effect": pa.array(self.effect[j]),
                "hazard": pa.array(self.hazard[j]),
                "purchase_rate": pa.array(self.purchase_rate[j]),
                "mean_spend": pa.array(self.mean_spend[j]),
            }
        )
        return {
            "transactions": transactions,
            "customers": customers,
            "interactions": interactions,
            "truth": truth,
        }

    def write(self, out_dir: str | Path, actions: pd.DataFrame | None, until: datetime) -> Path:
        """`history` as a history folder (Parquet per table and dataset.yaml, declared as_of `until`),
        replacing `out_dir` whole (written beside it, then renamed: never half-written)."""
        out = Path(out_dir).absolute()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = fresh_sibling(out, "tmp")
        try:
            for name, table in self.history(actions, until).items():
                pq.write_table(table, tmp / f"{name}.parquet")
            meta = {
                "name": "retention-world",
                "description": f"Retention world ({self.n_customers} customers, seed {self.seed}) "
                "generated by Diamond's simulation (features/datasets/world.py)",
                "as_of": until.isoformat(),
                "churn": "non_contractual",
            }
            (tmp / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
            replace_dir(tmp, out, overwrite=True)
        except BaseException:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out


def _survival_integrals(
    r: np.ndarray, c: float, factor: float, lam: np.ndarray, horizon: float
) -> tuple[np.ndarray, np.ndarray]:
    """For hazards r (per day, at s = 0) multiplied by `factor` at each event of a Poisson stream of rate c
    (followed up to _MAX_COMPLAINTS events, then gone): (int_0^H lam e^(-lam s) S(s) ds, int_0^H S(s) ds),
    S the survival. p_j(s) = sum_i C[j, i] e^(-a_i s), C[j, i] = c C[j-1, i] / (a_j - a_i) for i < j and
    C[j, j] = -sum_(i<j) C[j, i] (so p_j(0) = 0; p_0 = e^(-a_0 s))."""
    n_levels = _MAX_COMPLAINTS + 1
    a = r[:, None] * factor ** np.arange(n_levels)[None, :] + c  # (n, J+1)
    coef = np.zeros((len(r), n_levels, n_levels))
    coef[:, 0, 0] = 1.0
    for j in range(1, n_levels):
        gap = a[:, j : j + 1] - a[:, :j]  # a_j - a_i > 0 for r > 0 (factor > 1)
        coef[:, j, :j] = c * coef[:, j - 1, :j] / np.where(gap == 0, np.nan, gap)
        coef[:, j, j] = -coef[:, j, :j].sum(axis=1)
    weight = coef.sum(axis=1)  # S(s) = sum_i weight_i e^(-a_i s)
    exposure = (weight * -np.expm1(-a * horizon) / a).sum(axis=1)
    b = a + lam[:, None]
    saved = (weight * lam[:, None] * -np.expm1(-b * horizon) / b).sum(axis=1)
    return np.nan_to_num(saved), np.nan_to_num(exposure)


def _poisson(rng: np.random.Generator, rate: np.ndarray, t0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate events of homogeneous Poisson processes (per day) on [t0, END), sorted by customer, time."""
    duration = np.maximum(_END_S - t0, 0.0)
    n = rng.poisson(rate * duration / _DAY)
    c = np.repeat(np.arange(len(rate)), n)
    t = t0[c] + rng.random(len(c)) * duration[c]
    order = np.lexsort((t, c))
    return c[order], t[order]


def _seconds(at: pd.Series) -> np.ndarray:
    """Naive UTC datetimes -> float seconds since START."""
    stamps = pd.to_datetime(at)
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert(UTC).dt.tz_localize(None)
    return ((stamps - pd.Timestamp(START)) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


def _ts(seconds: np.ndarray) -> pa.Array:
    return timestamps(seconds, START)
