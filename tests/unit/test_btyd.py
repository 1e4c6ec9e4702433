"""BG/NBD and Gamma-Gamma (features.btyd): published CDNOW estimates, the paper's formulas, simulations.

CDNOW conventions that reproduce the published estimates (checked; see `cdnow_calibration`):
- purchases of one customer on one day are merged into one purchase (amounts summed);
- calibration = purchase days <= 1997-09-30 (inclusive), times in weeks = days / 7;
- x = distinct purchase days - 1, t_x = (last - first purchase day) / 7,
  T = (1997-09-30 - first purchase day) / 7, i.e. measured to the last calibration day itself.
  Measuring T to the end of that day (1997-10-01, T + 1/7) instead moves a by +3 % and fails the check.
- Gamma-Gamma: monetary value = mean of the repeat (merged daily) amounts, first purchase excluded.
  One repeat customer (id 10244: $15.96 then a $0.00 purchase) has mean 0, which the model cannot take
  (values must be > 0); it is dropped, leaving 9,450 of the 9,451 repeat customers. Including the first
  purchase in the mean gives p = 14.4, q = 3.75, v = 6.87 instead: not the published numbers.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.special import betaln

from features.btyd import (
    BGNBDParams,
    GammaGammaParams,
    bgnbd_expected_purchases,
    bgnbd_loglik,
    bgnbd_p_alive,
    bgnbd_p_no_purchase,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_expected_spend,
)
from tests.helpers import ROOT

CDNOW = ROOT / "features" / "datasets" / "cdnow_transactions.csv.gz"
CDNOW_PARAMS = BGNBDParams(r=0.2516, alpha=4.789, a=0.7234, b=2.161)
RNG_SEED = 20050301


# ------------------------------------------------------------------------------------------------
# helpers: direct, slow transcriptions of the papers and a vectorised BG/NBD simulator


def beta_fn(a: float, b: float) -> float:
    return math.gamma(a) * math.gamma(b) / math.gamma(a + b)


def loglik_eq6(p: BGNBDParams, x: int, t_x: float, big_t: float) -> float:
    """Eq. 6 of Fader, Hardie & Lee (2005), term by term with math.gamma."""
    r, alpha, a, b = p.r, p.alpha, p.a, p.b
    nbd = math.gamma(r + x) * alpha**r / math.gamma(r)
    likelihood = beta_fn(a, b + x) / beta_fn(a, b) * nbd / (alpha + big_t) ** (r + x)
    if x > 0:
        likelihood += beta_fn(a + 1, b + x - 1) / beta_fn(a, b) * nbd / (alpha + t_x) ** (r + x)
    return math.log(likelihood)


def hyp2f1_series(a: float, b: float, c: float, z: float) -> float:
    """Gauss's series, summed term by term (|z| < 1)."""
    total = term = 1.0
    for k in range(100_000):
        term *= (a + k) * (b + k) / ((c + k) * (k + 1)) * z
        total += term
        if abs(term) < 1e-17 * abs(total):
            return total
    raise AssertionError("series did not converge")


def expected_eq10(p: BGNBDParams, x: int, t_x: float, big_t: float, t: float) -> float:
    """Eq. 10 of Fader, Hardie & Lee (2005), as printed (no Euler transformation)."""
    r, alpha, a, b = p.r, p.alpha, p.a, p.b
    z = t / (alpha + big_t + t)
    f = hyp2f1_series(r + x, b + x, a + b + x - 1, z)
    numerator = (a + b + x - 1) / (a - 1) * (1 - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x) * f)
    denominator = 1 + (x > 0) * a / (b + x - 1) * ((alpha + big_t) / (alpha + t_x)) ** (r + x)
    return numerator / denominator


def simulate_bgnbd(
    p: BGNBDParams, n: int, rng: np.random.Generator, t_low: float, t_high: float, horizon: float = 0.0
) -> dict[str, np.ndarray]:
    """BG/NBD customers observed for T ~ U(t_low, t_high) after their first purchase, then `horizon` more.

    lambda ~ Gamma(r, rate alpha), p ~ Beta(a, b); J ~ Geometric(p) is the repeat purchase after which
    the customer drops out. Purchases in (0, T] and (T, T+h] are independent Poisson counts; the
    customer makes the first J of them. The x-th of N uniform purchase times is T * Beta(x, N - x + 1)."""
    lam = rng.gamma(p.r, 1.0 / p.alpha, n)
    drop = rng.beta(p.a, p.b, n)
    big_t = rng.uniform(t_low, t_high, n)
    n_cal = rng.poisson(lam * big_t)
    n_hold = rng.poisson(lam * horizon)
    last = rng.geometric(drop)
    x = np.minimum(n_cal, last)
    t_x = np.zeros(n)
    repeat = x > 0
    t_x[repeat] = big_t[repeat] * rng.beta(x[repeat], n_cal[repeat] - x[repeat] + 1)
    return {
        "x": x.astype(float),
        "t_x": t_x,
        "T": big_t,
        "alive": last > n_cal,
        "holdout": np.minimum(n_hold, np.maximum(last - n_cal, 0)),
    }


# ------------------------------------------------------------------------------------------------
# acceptance: the published CDNOW estimates


@pytest.fixture(scope="module")
def cdnow_calibration() -> pd.DataFrame:
    tx = pd.read_csv(CDNOW, dtype={"customer_id": str}, parse_dates=["timestamp"])
    daily = tx.groupby(["customer_id", "timestamp"], as_index=False)["amount"].sum()
    end = pd.Timestamp("1997-09-30")
    cal = daily[daily["timestamp"] <= end].sort_values(["customer_id", "timestamp"])
    cal["nth"] = cal.groupby("customer_id").cumcount()
    per = cal.groupby("customer_id").agg(
        first=("timestamp", "min"), last=("timestamp", "max"), days=("timestamp", "size")
    )
    repeat_mean = cal[cal["nth"] > 0].groupby("customer_id")["amount"].mean()
    return pd.DataFrame(
        {
            "x": (per["days"] - 1).astype(float),
            "t_x": (per["last"] - per["first"]).dt.days / 7.0,
            "T": (end - per["first"]).dt.days / 7.0,
            "m": repeat_mean.reindex(per.index).fillna(0.0),
        }
    )


def assert_close(got: object, expected: dict[str, float], rel: float) -> None:
    for name, value in expected.items():
        assert getattr(got, name) == pytest.approx(value, rel=rel), (name, got)


def test_cdnow_bgnbd_reproduces_the_published_estimates(cdnow_calibration: pd.DataFrame) -> None:
    s = cdnow_calibration
    assert len(s) == 23_570 and s["x"].sum() == 24_337  # repeat purchase days in calibration
    assert s["T"].max() == 272 / 7 and s["T"].min() == 189 / 7  # first purchases 1997-01-01..03-25
    x, t_x, big_t = s["x"].to_numpy(), s["t_x"].to_numpy(), s["T"].to_numpy()
    params = fit_bgnbd(x, t_x, big_t)
    assert_close(params, {"r": 0.2516, "alpha": 4.789, "a": 0.7234, "b": 2.161}, rel=0.005)
    # the fit maximises the public per-row log-likelihood: any 1 % move of one parameter lowers it
    best = bgnbd_loglik(params, x, t_x, big_t).sum()
    for name in ("r", "alpha", "a", "b"):
        for factor in (0.99, 1.01):
            moved = replace(params, **{name: getattr(params, name) * factor})
            assert bgnbd_loglik(moved, x, t_x, big_t).sum() < best, (name, factor)


def test_cdnow_gamma_gamma_reproduces_the_published_estimates(cdnow_calibration: pd.DataFrame) -> None:
    s = cdnow_calibration
    usable = ~((s["x"] > 0) & (s["m"] <= 0))
    assert (s["x"] > 0).sum() == 9_451 and (~usable).sum() == 1  # customer 10244: repeat mean $0.00
    params = fit_gamma_gamma(s.loc[usable, "x"].to_numpy(), s.loc[usable, "m"].to_numpy())
    assert_close(params, {"p": 6.275, "q": 3.6245, "v": 14.98}, rel=0.005)
    with pytest.raises(ValueError, match="monetary_value must be > 0"):
        fit_gamma_gamma(s["x"].to_numpy(), s["m"].to_numpy())


# ------------------------------------------------------------------------------------------------
# BG/NBD formulas

ROWS = [(0, 0.0, 38.86), (0, 0.0, 0.0), (1, 2.0, 30.0), (3, 25.5, 27.0), (7, 10.0, 39.0), (12, 38.0, 38.5)]
PARAM_SETS = [CDNOW_PARAMS, BGNBDParams(r=2.0, alpha=10.0, a=3.5, b=0.4), BGNBDParams(1.0, 1.0, 1.0, 1.0)]


@pytest.mark.parametrize("params", PARAM_SETS)
def test_loglik_matches_eq6_transcribed_with_math_gamma(params: BGNBDParams) -> None:
    x, t_x, big_t = (np.array(c, dtype=float) for c in zip(*ROWS, strict=True))
    got = bgnbd_loglik(params, x, t_x, big_t)
    expected = [loglik_eq6(params, int(row[0]), row[1], row[2]) for row in ROWS]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_loglik_by_hand_for_a_customer_without_repeat_purchases() -> None:
    # x = 0: L = (alpha / (alpha + T))^r = (1/2)^0.5 with alpha = T = 3, r = 0.5
    got = bgnbd_loglik(BGNBDParams(r=0.5, alpha=3.0, a=0.7, b=2.0), 0, 0, 3.0)
    assert got == pytest.approx(0.5 * math.log(0.5), rel=1e-14)


@pytest.mark.parametrize(
    "params",
    [
        CDNOW_PARAMS,
        BGNBDParams(r=2.0, alpha=10.0, a=3.5, b=0.4),
        # r = a makes c - a - b an integer, where scipy's own hyp2f1 returns NaN for z > 0.9
        BGNBDParams(r=0.7, alpha=6.0, a=0.7, b=2.0),
    ],
)
def test_expected_purchases_matches_eq10_as_printed(params: BGNBDParams) -> None:
    for x, t_x, big_t in ROWS:
        for horizon in (0.5, 10.0, 39.0, 1_000.0):
            got = bgnbd_expected_purchases(params, x, t_x, big_t, horizon)
            assert got == pytest.approx(expected_eq10(params, x, t_x, big_t, horizon), rel=1e-9)


def test_expected_purchases_is_zero_at_horizon_zero_and_grows_with_horizon() -> None:
    horizons = np.array([0.0, 0.1, 1.0, 10.0, 52.0, 520.0])
    for x, t_x, big_t in ROWS:
        e = bgnbd_expected_purchases(CDNOW_PARAMS, x, t_x, big_t, horizons)
        assert e[0] == 0.0
        assert np.all(np.diff(e) > 0)


def expected_by_quadrature(p: BGNBDParams, x: int, t_x: float, big_t: float, t: float) -> float:
    """Eq. 10 without 2F1: given alive, p ~ Beta(a, b+x) and lambda ~ Gamma(r+x, alpha+T), a customer
    buys (1/p)(1 - exp(-lambda p t)) in expectation, so
    E = P(alive) E_p[(1 - ((alpha+T)/(alpha+T+pt))^(r+x)) / p]."""
    r, alpha, a, b = p.r, p.alpha, p.a, p.b

    def integrand(q: float) -> float:
        buys = -math.expm1(-(r + x) * math.log1p(q * t / (alpha + big_t))) / q if q > 0 else (r + x) * t
        return buys * math.exp((a - 1) * math.log(q) + (b + x - 1) * math.log1p(-q) - betaln(a, b + x))

    value = quad(integrand, 0, 0.5, limit=200, epsabs=0, epsrel=1e-12)[0]
    value += quad(integrand, 0.5, 1, limit=200, epsabs=0, epsrel=1e-12)[0]
    alive = 1 / (1 + (x > 0) * a / (b + x - 1) * ((alpha + big_t) / (alpha + t_x)) ** (r + x)) if x else 1.0
    return alive * value


@pytest.mark.parametrize(
    "params",
    [
        CDNOW_PARAMS,
        BGNBDParams(r=0.7, alpha=6.0, a=0.7, b=2.0),  # r = a
        BGNBDParams(r=1.0, alpha=2.0, a=0.25, b=0.75),  # a + b = 1: the x = 0 pole of 2F1
        BGNBDParams(r=3.0, alpha=0.5, a=4.0, b=7.0),
    ],
)
def test_expected_purchases_matches_an_integral_over_the_dropout_probability(params: BGNBDParams) -> None:
    for x, t_x, big_t in ROWS:
        for horizon in (1.0, 52.0):
            got = bgnbd_expected_purchases(params, x, t_x, big_t, horizon)
            assert got == pytest.approx(expected_by_quadrature(params, x, t_x, big_t, horizon), rel=1e-7)


def test_expected_purchases_by_hand_for_a_new_customer_with_arcsine_dropout() -> None:
    # x = T = 0, r = alpha = 1, t = 1: E = E_p[(1 - 1/(1+p))/p] = E[1/(1+p)], p ~ Beta(1/2, 1/2): 1/sqrt(2)
    got = bgnbd_expected_purchases(BGNBDParams(1.0, 1.0, 0.5, 0.5), 0, 0, 0, 1.0)
    assert got == pytest.approx(1 / math.sqrt(2), rel=1e-9)


def test_expected_purchases_is_continuous_through_the_removable_singularity_at_a_equal_1() -> None:
    values = [
        bgnbd_expected_purchases(BGNBDParams(0.5, 3.0, a, 2.0), [0, 3, 50], [0, 10, 30], 30, [10, 52, 1000])
        for a in (1 - 1e-3, 1.0, 1 + 1e-3)
    ]
    assert np.all(np.isfinite(values[1]))
    np.testing.assert_allclose(values[1], (values[0] + values[2]) / 2, rtol=1e-5)
    assert np.all((values[1] - values[0]) * (values[2] - values[1]) > 0)  # in between


def test_new_customer_expectation_is_the_unconditional_eq9() -> None:
    # x = t_x = T = 0: E[X(t)] = (a+b-1)/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b; a+b-1; t/(alpha+t))]
    r, alpha, a, b = 0.5, 2.0, 1.5, 3.0
    t = 4.0
    expected = (
        (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * hyp2f1_series(r, b, a + b - 1, t / 6))
    )
    got = bgnbd_expected_purchases(BGNBDParams(r, alpha, a, b), 0, 0, 0, t)
    assert got == pytest.approx(expected, rel=1e-12)


def test_p_alive_is_one_without_repeat_purchases_and_falls_with_the_recency_gap() -> None:
    assert np.all(bgnbd_p_alive(CDNOW_PARAMS, 0, 0, [0.0, 10.0, 39.0, 1e6]) == 1.0)
    t_x = np.array([39.0, 30.0, 20.0, 10.0, 1.0])  # fixed x = 2, T = 39: ever longer silence
    alive = bgnbd_p_alive(CDNOW_PARAMS, 2, t_x, 39.0)
    assert np.all(np.diff(alive) < 0) and alive[0] < 1.0
    # by hand (eq. 11): x = 1, t_x = 2, T = 6, r = 1, alpha = 2, a = 1, b = 3
    # P = 1 / (1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)) = 1 / (1 + (1/3) 2^2) = 3/7
    assert bgnbd_p_alive(BGNBDParams(1.0, 2.0, 1.0, 3.0), 1, 2.0, 6.0) == pytest.approx(3 / 7, rel=1e-14)


def test_p_no_purchase_bounds_monotone_and_by_hand() -> None:
    horizons = np.array([0.0, 0.5, 5.0, 50.0, 5000.0])
    for x, t_x, big_t in ROWS:
        p0 = bgnbd_p_no_purchase(CDNOW_PARAMS, x, t_x, big_t, horizons)
        assert p0[0] == 1.0
        assert np.all((p0 >= 0) & (p0 <= 1)) and np.all(np.diff(p0) < 0)
    # same hand case as above, h = 8: P(alive) = 3/7, ((alpha+T)/(alpha+T+h))^(r+x) = (8/16)^2 = 1/4
    # P = 4/7 + 3/7 * 1/4 = 19/28
    got = bgnbd_p_no_purchase(BGNBDParams(1.0, 2.0, 1.0, 3.0), 1, 2.0, 6.0, 8.0)
    assert got == pytest.approx(19 / 28, rel=1e-14)


def test_large_counts_and_long_histories_stay_finite() -> None:
    x = np.array([0, 50, 500, 5_000, 50_000], dtype=float)
    t_x = np.array([0, 10, 300, 999, 1_000], dtype=float)
    big_t = np.full(5, 1_000.0)
    for fn in (bgnbd_loglik, bgnbd_p_alive):
        assert np.all(np.isfinite(fn(CDNOW_PARAMS, x, t_x, big_t)))
    e = bgnbd_expected_purchases(CDNOW_PARAMS, x, t_x, big_t, 100.0)
    assert np.all(np.isfinite(e)) and np.all(e >= 0)
    # an active heavy buyer (last purchase at T) buys at about her own rate x/T in the horizon
    assert e[-1] == pytest.approx(50_000 / 1_000 * 100, rel=0.05)


@settings(max_examples=150, deadline=None)
@given(
    r=st.floats(0.05, 5.0),
    alpha=st.floats(0.1, 100.0),
    a=st.floats(0.05, 5.0),
    b=st.floats(0.05, 10.0),
    x=st.integers(0, 300),
    big_t=st.floats(0.0, 500.0),
    gap=st.floats(0.0, 1.0),
    horizon=st.floats(0.01, 200.0),
)
def test_predictions_are_probabilities_and_monotone_in_horizon(
    r: float, alpha: float, a: float, b: float, x: int, big_t: float, gap: float, horizon: float
) -> None:
    params = BGNBDParams(r, alpha, a, b)
    t_x = big_t * gap if x > 0 else 0.0
    alive = bgnbd_p_alive(params, x, t_x, big_t)
    assert 0.0 <= alive <= 1.0
    h = np.array([horizon, 2 * horizon + 1])
    e = bgnbd_expected_purchases(params, x, t_x, big_t, h)
    none = bgnbd_p_no_purchase(params, x, t_x, big_t, h)
    assert np.all(np.isfinite(e)) and np.all(e >= 0) and e[1] >= e[0]
    assert np.all((none >= 0) & (none <= 1)) and none[1] <= none[0]
    assert none[0] >= 1.0 - alive - 1e-12  # a customer who has dropped out never buys


def test_predictions_agree_with_what_simulated_customers_then_do() -> None:
    """Law of total expectation: averaged over customers (or any group chosen from calibration data),
    E[purchases | x, t_x, T], P(alive) and P(no purchase) match the simulated outcomes."""
    params = BGNBDParams(r=0.7, alpha=6.0, a=0.7, b=2.0)
    sim = simulate_bgnbd(params, 60_000, np.random.default_rng(RNG_SEED), 26.0, 78.0, horizon=52.0)
    x, t_x, big_t, hold = sim["x"], sim["t_x"], sim["T"], sim["holdout"]
    predicted = bgnbd_expected_purchases(params, x, t_x, big_t, 52.0)
    alive = bgnbd_p_alive(params, x, t_x, big_t)
    none = bgnbd_p_no_purchase(params, x, t_x, big_t, 52.0)
    for group in (np.ones(x.size, bool), x == 0, x >= 3, (x >= 1) & (big_t - t_x > 26)):
        n = group.sum()
        for pred, outcome in ((predicted, hold), (alive, sim["alive"]), (none, hold == 0)):
            diff = pred[group] - outcome[group]
            assert abs(diff.mean()) <= 4 * diff.std() / math.sqrt(n), (n, diff.mean())


# ------------------------------------------------------------------------------------------------
# BG/NBD fitting


def test_fit_recovers_simulated_parameters() -> None:
    true = BGNBDParams(r=0.7, alpha=6.0, a=0.7, b=2.0)
    sim = simulate_bgnbd(true, 20_000, np.random.default_rng(RNG_SEED + 1), 26.0, 78.0)
    got = fit_bgnbd(sim["x"], sim["t_x"], sim["T"])
    assert_close(got, {"r": true.r, "alpha": true.alpha, "a": true.a, "b": true.b}, rel=0.15)


def test_compressed_rows_fit_exactly_like_the_raw_rows_and_order_does_not_matter() -> None:
    rng = np.random.default_rng(RNG_SEED + 2)
    sim = simulate_bgnbd(BGNBDParams(0.7, 6.0, 0.7, 2.0), 5_000, rng, 26.0, 78.0)
    # whole weeks, so that customers share rows
    big_t = np.ceil(sim["T"])
    t_x = np.floor(sim["t_x"])
    rows = np.column_stack([sim["x"], t_x, big_t])
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    assert unique.shape[0] < 0.7 * rows.shape[0]
    raw = fit_bgnbd(rows[:, 0], rows[:, 1], rows[:, 2])
    compressed = fit_bgnbd(unique[:, 0], unique[:, 1], unique[:, 2], weights=counts)
    order = rng.permutation(rows.shape[0])
    shuffled = fit_bgnbd(rows[order, 0], rows[order, 1], rows[order, 2])
    assert raw == compressed == shuffled
    # integer weights mean repetition; zero weight means absence
    w = np.where(np.arange(unique.shape[0]) == 0, 0.0, counts)
    dropped = fit_bgnbd(unique[1:, 0], unique[1:, 1], unique[1:, 2], weights=counts[1:])
    assert fit_bgnbd(unique[:, 0], unique[:, 1], unique[:, 2], weights=w) == dropped


def test_fit_is_unit_equivariant_days_versus_weeks() -> None:
    sim = simulate_bgnbd(BGNBDParams(0.7, 6.0, 0.7, 2.0), 5_000, np.random.default_rng(RNG_SEED + 3), 26, 78)
    weeks = fit_bgnbd(sim["x"], sim["t_x"], sim["T"])
    days = fit_bgnbd(sim["x"], sim["t_x"] * 7, sim["T"] * 7)
    assert_close(days, {"r": weeks.r, "alpha": weeks.alpha * 7, "a": weeks.a, "b": weeks.b}, rel=1e-6)


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "weights", "message"),
    [
        ([], [], [], None, "empty"),
        ([-1, 2], [0, 3], [5, 5], None, "frequency .* must be >= 0"),
        ([1.5, 2], [1, 3], [5, 5], None, "whole number"),
        ([1, 2], [-1, 3], [5, 5], None, "recency .* must be >= 0"),
        ([1, 2], [6, 3], [5, 5], None, "recency must be <= T"),
        ([0, 2], [1, 3], [5, 5], None, "recency must be 0 when frequency is 0"),
        ([1, 2], [1, np.nan], [5, 5], None, "recency must be finite"),
        ([1, 2], [1, 3], [5, -5], None, "recency must be <= T|T .* must be >= 0"),
        ([1, 2, 0], [1, 3], [5, 5, 5], None, "incompatible shapes"),
        ([1, 2], [1, 3], [5, 5], [1, 2, 3], "weights has 3 values for 2 rows"),
        ([1, 2], [1, 3], [5, 5], [1, -1], "weights must be >= 0"),
        ([1, 2], [1, 3], [5, 5], [0, 0], "all weights are zero"),
        ([0, 0, 0], [0, 0, 0], [5, 6, 7], None, "no repeat purchases"),
        ([1, 2, 3, 4], [10, 10, 10, 10], [10, 10, 10, 10], None, "optimisation failed"),
    ],
)
def test_fit_bgnbd_rejects_bad_input_clearly(frequency, recency, T, weights, message) -> None:
    with pytest.raises(ValueError, match=message):
        fit_bgnbd(frequency, recency, T, weights=weights)


def test_predictions_reject_bad_input_and_bad_parameters() -> None:
    with pytest.raises(ValueError, match="horizon must be >= 0"):
        bgnbd_expected_purchases(CDNOW_PARAMS, 1, 1, 5, -1)
    with pytest.raises(ValueError, match="recency must be <= T"):
        bgnbd_p_alive(CDNOW_PARAMS, 1, 6, 5)
    with pytest.raises(ValueError, match="parameters must be finite and > 0"):
        bgnbd_loglik(BGNBDParams(0.2, 4.0, -0.7, 2.0), 1, 1, 5)
    with pytest.raises(ValueError, match="parameters must be finite and > 0"):
        gamma_gamma_expected_spend(GammaGammaParams(6.0, 4.0, float("nan")), 1, 10.0)


# ------------------------------------------------------------------------------------------------
# Gamma-Gamma

GG = GammaGammaParams(p=6.0, q=4.0, v=15.0)


def test_expected_spend_by_hand_population_mean_and_shrinkage() -> None:
    # x = 0: population mean p v / (q - 1) = 6 * 15 / 3 = 30, whatever monetary_value says
    got = gamma_gamma_expected_spend(GG, [0, 0, 0], [0.0, 99.0, np.nan])
    np.testing.assert_allclose(got, 30.0, rtol=1e-15)
    # x = 2, m = 20: p (v + x m) / (p x + q - 1) = 6 * 55 / 15 = 22
    assert gamma_gamma_expected_spend(GG, 2, 20.0) == pytest.approx(22.0, rel=1e-15)
    # more transactions: the estimate moves from the population mean towards the customer's own mean
    x = np.array([1, 10, 100, 10_000, 1_000_000], dtype=float)
    spend = gamma_gamma_expected_spend(GG, x, 80.0)
    assert np.all(np.diff(spend) > 0) and np.all(spend < 80.0) and spend[-1] == pytest.approx(80.0, rel=1e-5)
    # no finite population mean when q <= 1
    assert gamma_gamma_expected_spend(GammaGammaParams(6.0, 0.8, 15.0), 0, 0.0) == np.inf


def simulate_gamma_gamma(params: GammaGammaParams, n: int, rng: np.random.Generator) -> tuple:
    """x ~ 1 + Poisson(2) repeat purchases; nu ~ Gamma(q, rate v); mean of x Gamma(p, rate nu) values."""
    x = 1 + rng.poisson(2.0, n)
    nu = rng.gamma(params.q, 1.0 / params.v, n)
    return x.astype(float), rng.gamma(params.p * x, 1.0 / nu) / x


def test_gamma_gamma_fit_recovers_simulated_parameters_and_ignores_non_repeat_rows() -> None:
    true = GammaGammaParams(p=2.0, q=4.0, v=15.0)
    x, m = simulate_gamma_gamma(true, 20_000, np.random.default_rng(RNG_SEED + 4))
    got = fit_gamma_gamma(x, m)
    assert_close(got, {"p": true.p, "q": true.q, "v": true.v}, rel=0.15)
    padded = fit_gamma_gamma(np.r_[x, 0, 0, 0], np.r_[m, 0.0, np.nan, -5.0])
    assert padded == got


def test_gamma_gamma_compressed_rows_fit_exactly_like_raw_rows() -> None:
    x, m = simulate_gamma_gamma(GammaGammaParams(2.0, 4.0, 15.0), 2_000, np.random.default_rng(RNG_SEED + 5))
    m = np.ceil(m)  # whole dollars, so that rows repeat
    rows = np.column_stack([x, m])
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    assert unique.shape[0] < rows.shape[0]
    assert fit_gamma_gamma(x, m) == fit_gamma_gamma(unique[:, 0], unique[:, 1], weights=counts)


@pytest.mark.parametrize(
    ("frequency", "monetary_value", "message"),
    [
        ([0, 0], [10.0, 12.0], "no customers with frequency > 0"),
        ([], [], "no customers with frequency > 0"),
        ([1, 2], [10.0, 0.0], "monetary_value must be > 0"),
        ([1, 2], [10.0, -3.0], "monetary_value must be > 0"),
        ([1, 2], [10.0, np.inf], "monetary_value must be finite"),
        ([-1, 2], [10.0, 12.0], "frequency .* must be >= 0"),
        ([1, 1, 1], [5.0, 5.0, 5.0], "optimisation failed"),
    ],
)
def test_fit_gamma_gamma_rejects_bad_input_clearly(frequency, monetary_value, message) -> None:
    with pytest.raises(ValueError, match=message):
        fit_gamma_gamma(frequency, monetary_value)
