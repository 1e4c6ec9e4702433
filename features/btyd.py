"""BG/NBD purchase-count and Gamma-Gamma spend models ("buy 'til you die"), fitted by maximum likelihood.

Implemented directly from the published likelihoods, with numpy/scipy only:

- BG/NBD: P. S. Fader, B. G. S. Hardie and K. L. Lee (2005), "Counting Your Customers the Easy Way:
  An Alternative to the Pareto/NBD Model", Marketing Science 24(2), 275-284. While active, a customer
  buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after each repeat purchase she drops out
  with probability p ~ Beta(a, b). Inputs per customer are x (repeat purchases), t_x (time of the last
  purchase, measured from the first) and T (time from the first purchase to the end of observation).
- Gamma-Gamma: P. S. Fader, B. G. S. Hardie and K. L. Lee (2005), "RFM and CLV: Using Iso-Value Curves
  for Customer Base Analysis", Journal of Marketing Research 42(4), 415-430, and P. S. Fader and
  B. G. S. Hardie (2013), "The Gamma-Gamma Model of Monetary Value". Transaction values are
  Gamma(p, nu) with nu ~ Gamma(q, v) across customers; the inputs are x and the mean value m_x of the x
  repeat transactions.

Everything is vectorised and computed in logs (`gammaln`, `betaln`, `logaddexp`, `expit`) so that large
x or T neither overflow nor lose precision; the conditional expectation uses Euler's transformation of
the paper's 2F1 so that its parameters do not grow with x. Times may be in any unit (days, weeks): the
fits optimise alpha relative to the mean T, so the estimates are unit-equivariant (alpha scales with the
unit, r, a, b do not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

__all__ = [
    "BGNBDParams",
    "GammaGammaParams",
    "bgnbd_expected_purchases",
    "bgnbd_loglik",
    "bgnbd_p_alive",
    "bgnbd_p_no_purchase",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_expected_spend",
]

Array = NDArray[np.float64]

_LOG_BOUND = 15.0  # log-parameters are searched in [-15, 15] (alpha, v relative to their data scale)
_EDGE = 1.0  # an estimate within this (in logs) of a bound means the likelihood has no interior maximum


@dataclass(frozen=True)
class BGNBDParams:
    """BG/NBD parameters: purchase rate lambda ~ Gamma(shape r, rate alpha), dropout p ~ Beta(a, b).

    alpha is in the caller's time unit (it scales with it); r, a and b are unit-free."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: transaction value ~ Gamma(shape p, rate nu), nu ~ Gamma(shape q, rate v).

    v is in the caller's money unit; p and q are unit-free."""

    p: float
    q: float
    v: float


# --------------------------------------------------------------------------------------------------
# Input checks


def _float_array(values: ArrayLike, name: str) -> Array:
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (found NaN or infinity)")
    return arr


def _rft(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> tuple[Array, Array, Array]:
    """Validate and broadcast (x, t_x, T): x whole and >= 0, 0 <= t_x <= T, t_x = 0 when x = 0."""
    x = _float_array(frequency, "frequency")
    t_x = _float_array(recency, "recency")
    big_t = _float_array(T, "T")
    try:
        x, t_x, big_t = np.broadcast_arrays(x, t_x, big_t)
    except ValueError as exc:
        raise ValueError(
            f"frequency, recency and T have incompatible shapes {np.shape(frequency)}, "
            f"{np.shape(recency)}, {np.shape(T)}"
        ) from exc
    if np.any(x < 0):
        raise ValueError("frequency (number of repeat purchases) must be >= 0")
    if np.any(x != np.floor(x)):
        raise ValueError("frequency (number of repeat purchases) must be a whole number")
    if np.any(t_x < 0):
        raise ValueError("recency (time of the last purchase since the first) must be >= 0")
    if np.any(big_t < 0):
        raise ValueError("T (time from the first purchase to the end of observation) must be >= 0")
    if np.any(t_x > big_t):
        raise ValueError("recency must be <= T (the last purchase cannot come after the end of observation)")
    if np.any((x == 0) & (t_x != 0)):
        raise ValueError(
            "recency must be 0 when frequency is 0 (t_x is the time of the last purchase since the first; "
            "is recency measured from the end of observation instead?)"
        )
    return x, t_x, big_t


def _check_bgnbd(params: BGNBDParams) -> None:
    values = (params.r, params.alpha, params.a, params.b)
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"BG/NBD parameters must be finite and > 0, got {params}")


def _check_gg(params: GammaGammaParams) -> None:
    values = (params.p, params.q, params.v)
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"Gamma-Gamma parameters must be finite and > 0, got {params}")


def _horizon(horizon: ArrayLike) -> Array:
    h = _float_array(horizon, "horizon")
    if np.any(h < 0):
        raise ValueError("horizon must be >= 0")
    return h


def _weights(weights: ArrayLike | None, n: int) -> Array:
    if weights is None:
        return np.ones(n)
    w = _float_array(weights, "weights").ravel()
    if w.size == 1 and n != 1:
        w = np.full(n, w.item())
    if w.size != n:
        raise ValueError(f"weights has {w.size} values for {n} rows")
    if np.any(w < 0):
        raise ValueError("weights must be >= 0")
    return w


def _compress(columns: tuple[Array, ...], weights: Array) -> tuple[tuple[Array, ...], Array]:
    """Merge identical rows, summing their weights: the likelihood only needs each distinct row once."""
    keep = weights > 0
    cols = [c[keep] for c in columns]
    if cols[0].size == 0:
        raise ValueError("all weights are zero")
    order = np.lexsort(cols[::-1])  # sorted by the first column, then the second, ...
    cols = [c[order] for c in cols]
    new_row = np.ones(cols[0].size, dtype=bool)
    new_row[1:] = np.any([np.diff(c) != 0 for c in cols], axis=0)
    starts = np.flatnonzero(new_row)
    summed = np.add.reduceat(weights[keep][order], starts)
    return tuple(np.ascontiguousarray(c[starts]) for c in cols), summed


def _dot(u: Array, v: Array) -> float:
    """sum(u * v) with numpy's own pairwise sum, not BLAS: np.dot on long vectors may go multithreaded,
    which is slow on busy machines and makes the rounding (hence the fit) depend on the thread count."""
    return float(np.multiply(u, v).sum())


def _weighted_counts(index: NDArray[np.intp], weights: Array, size: int) -> Array:
    """The sum of `weights` per value of `index` (0 .. size-1), as float64."""
    # numpy's stub types every bincount as intp; with weights it returns float64
    return cast(Array, np.bincount(index, weights=weights, minlength=size))


def _minimise(
    objective: Callable[[Array], tuple[float, Array]], start: Array, what: str, names: tuple[str, ...]
) -> Array:
    """L-BFGS-B on log-parameters with an analytic gradient; raise ValueError unless it converged inside."""
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(start)
    result = minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 20},
    )
    theta = np.asarray(result.x, dtype=np.float64)
    _, grad = objective(theta)
    converged = bool(result.success) or (np.all(np.isfinite(grad)) and np.max(np.abs(grad)) < 1e-6)
    if not (np.isfinite(result.fun) and np.all(np.isfinite(theta)) and converged):
        raise ValueError(
            f"{what} maximum-likelihood optimisation failed to converge (scipy L-BFGS-B: {result.message}); "
            "too few customers or repeat purchases to identify the model?"
        )
    at_edge = [n for n, t in zip(names, theta, strict=True) if abs(t) > _LOG_BOUND - _EDGE]
    if at_edge:
        raise ValueError(
            f"{what} maximum-likelihood optimisation failed: {', '.join(at_edge)} ran off to 0 or infinity "
            "(the data do not identify the model)"
        )
    return theta


# --------------------------------------------------------------------------------------------------
# BG/NBD


def _bgnbd_terms(
    r: float, alpha: float, a: float, b: float, x: Array, t_x: Array, big_t: Array
) -> tuple[Array, Array, Array]:
    """log of the two terms of the likelihood (eq. 6) sharing the factor exp(common).

    L = exp(common) * (exp(A) + delta_{x>0} exp(B)) with
    common = ln Gamma(r+x) - ln Gamma(r) + r ln alpha,
    A = ln B(a, b+x) - ln B(a, b) - (r+x) ln(alpha+T),
    B = ln B(a+1, b+x-1) - ln B(a, b) - (r+x) ln(alpha+t_x)   (-inf when x = 0)."""
    repeat = x > 0
    log_beta_ab = betaln(a, b)
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    term_a = betaln(a, b + x) - log_beta_ab - (r + x) * np.log(alpha + big_t)
    term_b = np.where(
        repeat,
        betaln(a + 1.0, np.where(repeat, b + x - 1.0, 1.0)) - log_beta_ab - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return common, term_a, term_b


def bgnbd_loglik(params: BGNBDParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Array:
    """Per-customer BG/NBD log-likelihood ln L(r, alpha, a, b | x, t_x, T) (Fader, Hardie & Lee 2005, eq. 6).

    Computed as a log-sum-exp of the two terms so that it stays finite for any x and T."""
    _check_bgnbd(params)
    x, t_x, big_t = _rft(frequency, recency, T)
    common, term_a, term_b = _bgnbd_terms(params.r, params.alpha, params.a, params.b, x, t_x, big_t)
    return common + np.logaddexp(term_a, term_b)


class _BGNBDObjective:
    """Mean negative log-likelihood and its gradient in theta = (ln r, ln(alpha/scale), ln a, ln b).

    Rows with x = 0 reduce to ln L = r ln(alpha/(alpha+T)) and are handled apart; for x > 0 the
    quantities that only depend on x are evaluated once per distinct x and gathered. With
    d = A - B (the two terms of eq. 6), ln L = common + B + softplus(d) and the share of the
    "still alive" term is expit(d), which is what the gradient needs."""

    def __init__(self, x: Array, t_x: Array, big_t: Array, weights: Array, scale: float) -> None:
        self.scale = scale
        w = weights / weights.sum()
        zero = x == 0
        self.big_t0, self.w0 = big_t[zero], w[zero]
        self.sum_w0 = float(self.w0.sum())
        rep = ~zero
        self.xu, inverse = np.unique(x[rep], return_inverse=True)
        self.inv = inverse.ravel()
        self.x1, self.t_x1, self.big_t1, self.w1 = x[rep], t_x[rep], big_t[rep], w[rep]
        self.w1x1 = self.w1 * self.x1
        self.wu = _weighted_counts(self.inv, self.w1, self.xu.size)  # weight per distinct x

    def params(self, theta: Array) -> tuple[float, float, float, float]:
        r, alpha_rel, a, b = np.exp(theta)
        return float(r), float(alpha_rel * self.scale), float(a), float(b)

    def __call__(self, theta: Array) -> tuple[float, Array]:
        r, alpha, a, b = self.params(theta)
        log_alpha = np.log(alpha)
        # x = 0: ln L = r (ln alpha - ln(alpha+T))
        log_at0 = np.log(alpha + self.big_t0)
        s0 = self.sum_w0 * log_alpha - _dot(self.w0, log_at0)
        ll = r * s0
        d_r = s0
        d_alpha = r * (self.sum_w0 / alpha - _dot(self.w0, 1.0 / (alpha + self.big_t0)))
        # x > 0, per distinct x
        xu, inv, wu, w1 = self.xu, self.inv, self.wu, self.w1
        log_beta_ab = betaln(a, b)
        common_u = gammaln(r + xu) - gammaln(r) + r * log_alpha
        ba_u = betaln(a, b + xu) - log_beta_ab
        bb_u = betaln(a + 1.0, b + xu - 1.0) - log_beta_ab
        # x > 0, per row
        rx = r + self.x1
        log_at = np.log(alpha + self.big_t1)
        log_atx = np.log(alpha + self.t_x1)
        d = (ba_u - bb_u)[inv] - rx * (log_at - log_atx)
        ll += _dot(wu, common_u + bb_u) - r * _dot(w1, log_atx)
        ll += -_dot(self.w1x1, log_atx) + _dot(w1, np.logaddexp(0.0, d))
        if not np.isfinite(ll):
            return np.inf, np.zeros(4)
        wa = w1 * expit(d)  # weight x posterior share of the "still alive" term
        wb = w1 - wa
        d_r += _dot(wu, digamma(r + xu)) - (1.0 - self.sum_w0) * (digamma(r) - log_alpha)
        d_r -= _dot(wa, log_at) + _dot(wb, log_atx)
        d_alpha += r * (1.0 - self.sum_w0) / alpha
        d_alpha -= _dot(wa * rx, 1.0 / (alpha + self.big_t1))
        d_alpha -= _dot(wb * rx, 1.0 / (alpha + self.t_x1))
        sa_u = _weighted_counts(inv, wa, xu.size)
        sb_u = wu - sa_u
        psi_ab_minus_abx = digamma(a + b) * (1.0 - self.sum_w0) - _dot(wu, digamma(a + b + xu))
        d_a = psi_ab_minus_abx + float(sb_u.sum()) / a  # digamma(a + 1) - digamma(a) = 1/a
        d_b = psi_ab_minus_abx - digamma(b) * (1.0 - self.sum_w0)
        d_b += _dot(sa_u, digamma(b + xu)) + _dot(sb_u, digamma(b + xu - 1.0))
        grad = -np.array([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
        return -ll, grad


def fit_bgnbd(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None
) -> BGNBDParams:
    """Maximum-likelihood BG/NBD estimates from (x, t_x, T) per customer (Fader, Hardie & Lee 2005).

    frequency x = number of repeat purchases (purchases after the first); recency t_x = time of the last
    purchase since the first (0 when x = 0); T = time from the first purchase to the end of observation,
    all in one time unit of the caller's choice. Optional weights count each row that many times.
    Identical rows are merged into weights first and x-only terms are computed once per distinct x, so
    a million customers fit in seconds. The optimiser (L-BFGS-B on log-parameters, analytic gradient,
    fixed start) is deterministic. Raises ValueError on empty or invalid input, when there are no repeat
    purchases, or when the optimisation fails."""
    x, t_x, big_t = _rft(frequency, recency, T)
    x, t_x, big_t = x.ravel(), t_x.ravel(), big_t.ravel()
    if x.size == 0:
        raise ValueError("no customers to fit: frequency, recency and T are empty")
    w = _weights(weights, x.size)
    (x, t_x, big_t), w = _compress((x, t_x, big_t), w)
    if not np.any(x > 0):
        raise ValueError(
            "no repeat purchases (every frequency is 0): the BG/NBD parameters are not identified"
        )
    scale = _dot(w, big_t) / w.sum()
    if scale <= 0:
        raise ValueError("every T is 0: no observation time to fit on")
    objective = _BGNBDObjective(x, t_x, big_t, w, scale)
    theta = _minimise(objective, np.zeros(4), "BG/NBD", ("r", "alpha", "a", "b"))
    r, alpha, a, b = objective.params(theta)
    return BGNBDParams(r=r, alpha=alpha, a=a, b=b)


def _log_alive_odds(params: BGNBDParams, x: Array, t_x: Array, big_t: Array) -> Array:
    """ln[delta_{x>0} a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)]: P(alive) = 1/(1 + exp(this))."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    repeat = x > 0
    safe = np.where(repeat, b + x - 1.0, 1.0)
    log_odds = np.log(a) - np.log(safe) + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x))
    return np.where(repeat, log_odds, -np.inf)


def bgnbd_p_alive(params: BGNBDParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Array:
    """P(still active at T | x, t_x, T) (Fader, Hardie & Lee 2005, eq. 11).

    Exactly 1 when x = 0: in the BG/NBD a customer can only drop out right after a repeat purchase."""
    _check_bgnbd(params)
    x, t_x, big_t = _rft(frequency, recency, T)
    return expit(-_log_alive_odds(params, x, t_x, big_t))


def _hyp2f1(a: float, b: float, c: Array, z: Array) -> Array:
    """scipy's hyp2f1, except where c - a - b is within 1e-8 of an integer.

    There scipy (1.17) takes its integer-(c-a-b) branch, which returns NaN or inf for z > 0.9 (e.g.
    r = a in the BG/NBD, so that c - a - b = x + 1). The function is analytic in its first parameter,
    so those points are evaluated as the mean at a -/+ 1e-6 (relative error below ~1e-9)."""
    s = c - a - b
    out = np.asarray(hyp2f1(a, b, c, z), dtype=np.float64)
    near = np.broadcast_to(np.abs(s - np.round(s)) < 1e-8, out.shape)
    if np.any(near):
        cn, zn = np.broadcast_to(c, out.shape)[near], np.broadcast_to(z, out.shape)[near]
        out[near] = 0.5 * (hyp2f1(a - 1e-6, b, cn, zn) + hyp2f1(a + 1e-6, b, cn, zn))
    return out


def _expected_bracket(r: float, alpha: float, a: float, b: float, x: Array, big_t: Array, h: Array) -> Array:
    """(a+b+x-1)/(a-1) [1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)], z = h/(alpha+T+h), a != 1.

    c = a+b+x-1 = 0 (x = 0, a + b = 1) is a pole of 2F1 cancelled by the factor c: there
    c (2F1(A, B; c; z) - 1) -> A B z 2F1(A+1, B+1; 2; z), used for |c| < 1e-10 (error ~1e-10)."""
    log1mz = np.log(alpha + big_t) - np.log(alpha + big_t + h)  # ln(1 - z)
    z = -np.expm1(log1mz)
    big_a = a + b - 1.0 - r
    c = a + b + x - 1.0
    pole = np.abs(c) < 1e-10
    f = _hyp2f1(big_a, a - 1.0, np.where(pole, 1.0, c), z)
    power = np.exp((a - 1.0) * log1mz)  # (1 - z)^(a-1)
    bracket = -np.expm1((a - 1.0) * log1mz) - power * (f - 1.0)
    out = c / (a - 1.0) * bracket
    if np.any(pole):
        limit = -power * big_a * z * _hyp2f1(big_a + 1.0, a, np.full(np.shape(z), 2.0), z)
        out = np.where(pole, limit, out)
    return out


def bgnbd_expected_purchases(
    params: BGNBDParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, horizon: ArrayLike
) -> Array:
    """E[number of purchases in (T, T + horizon] | x, t_x, T] (Fader, Hardie & Lee 2005, eq. 10).

    E = (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+h))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)] * P(alive),
    z = h/(alpha+T+h). Euler's transformation 2F1(A,B;C;z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z) turns the
    bracket into 1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), which neither overflows nor cancels for
    large x. a = 1 is a removable singularity (0/0): for |a - 1| < 1e-5 the value is interpolated
    linearly between a = 1 -/+ 1e-5 (relative error below ~1e-9)."""
    _check_bgnbd(params)
    x, t_x, big_t = _rft(frequency, recency, T)
    h = _horizon(horizon)
    x, t_x, big_t, h = np.broadcast_arrays(x, t_x, big_t, h)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    step = 1e-5
    if abs(a - 1.0) < step:
        low = _expected_bracket(r, alpha, 1.0 - step, b, x, big_t, h)
        high = _expected_bracket(r, alpha, 1.0 + step, b, x, big_t, h)
        expected = low + (a - (1.0 - step)) / (2 * step) * (high - low)
    else:
        expected = _expected_bracket(r, alpha, a, b, x, big_t, h)
    alive = expit(-_log_alive_odds(params, x, t_x, big_t))
    return np.where(h == 0, 0.0, expected * alive)


def bgnbd_p_no_purchase(
    params: BGNBDParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, horizon: ArrayLike
) -> Array:
    """P(no purchase in (T, T + horizon] | x, t_x, T) = 1 - P(alive) + P(alive) ((alpha+T)/(alpha+T+h))^(r+x).

    A customer alive at T with rate lambda stays silent with probability exp(-lambda h) (she can only drop
    out after a purchase); lambda given alive is Gamma(r+x, alpha+T). Computed as
    1 - P(alive) (1 - ((alpha+T)/(alpha+T+h))^(r+x)) with expm1 for accuracy at small h."""
    _check_bgnbd(params)
    x, t_x, big_t = _rft(frequency, recency, T)
    h = _horizon(horizon)
    alive = expit(-_log_alive_odds(params, x, t_x, big_t))
    log_ratio = np.log(params.alpha + big_t) - np.log(params.alpha + big_t + h)
    buys = -np.expm1((params.r + x) * log_ratio)  # P(at least one purchase | alive)
    return np.clip(1.0 - alive * buys, 0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# Gamma-Gamma


def _xm(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[Array, Array]:
    x = _float_array(frequency, "frequency")
    m = np.asarray(monetary_value, dtype=np.float64)
    try:
        x, m = np.broadcast_arrays(x, m)
    except ValueError as exc:
        raise ValueError(
            f"frequency and monetary_value have incompatible shapes {np.shape(frequency)}, "
            f"{np.shape(monetary_value)}"
        ) from exc
    if np.any(x < 0):
        raise ValueError("frequency (number of repeat purchases) must be >= 0")
    if np.any(x != np.floor(x)):
        raise ValueError("frequency (number of repeat purchases) must be a whole number")
    repeat = x > 0
    if not np.all(np.isfinite(m[repeat])):
        raise ValueError("monetary_value must be finite for customers with frequency > 0")
    if np.any(m[repeat] <= 0):
        raise ValueError(
            "monetary_value must be > 0 for customers with frequency > 0 (the Gamma-Gamma model needs "
            "positive mean transaction values; drop or adjust zero-value customers)"
        )
    return x, m


class _GGObjective:
    """Mean negative Gamma-Gamma log-likelihood and gradient in theta = (ln p, ln q, ln(v/scale)).

    ln f(m_x | x) = ln Gamma(px+q) - ln Gamma(px) - ln Gamma(q) + q ln v + (px-1) ln m_x + px ln x
                    - (px+q) ln(v + x m_x)   (Fader & Hardie 2013, the density of the mean of x values)."""

    def __init__(self, x: Array, m: Array, weights: Array, scale: float) -> None:
        self.scale = scale
        self.w = weights / weights.sum()
        self.x = x
        self.m = m
        self.log_m = np.log(m)
        self.log_xm = np.log(x) + self.log_m
        self.xm = x * m

    def params(self, theta: Array) -> tuple[float, float, float]:
        p, q, v_rel = np.exp(theta)
        return float(p), float(q), float(v_rel * self.scale)

    def __call__(self, theta: Array) -> tuple[float, Array]:
        p, q, v = self.params(theta)
        x, w = self.x, self.w
        px = p * x
        log_vxm = np.log(v + self.xm)
        ll = gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v) + (px - 1.0) * self.log_m
        ll += px * np.log(x) - (px + q) * log_vxm
        fun = -_dot(w, ll)
        if not np.isfinite(fun):
            return np.inf, np.zeros(3)
        psi_pxq = digamma(px + q)
        d_p = _dot(w, x * (psi_pxq - digamma(px) + self.log_xm - log_vxm))
        d_q = _dot(w, psi_pxq) - digamma(q) + np.log(v) - _dot(w, log_vxm)
        d_v = q / v - _dot(w, (px + q) / (v + self.xm))
        return fun, -np.array([d_p * p, d_q * q, d_v * v])


def fit_gamma_gamma(
    frequency: ArrayLike, monetary_value: ArrayLike, weights: ArrayLike | None = None
) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma estimates (Fader, Hardie & Lee 2005; Fader & Hardie 2013).

    Uses customers with frequency x > 0 only; monetary_value is the mean value of their x repeat
    transactions (the first purchase excluded, as in the papers). Rows with x = 0 are ignored (their
    monetary_value may be anything). Identical rows are merged into weights; deterministic L-BFGS-B on
    log-parameters. Raises ValueError if no repeat customer remains, a monetary value among them is
    <= 0, or the optimisation fails."""
    x, m = _xm(frequency, monetary_value)
    x, m = x.ravel(), m.ravel()
    w = _weights(weights, x.size)
    repeat = x > 0
    if not np.any(repeat & (w > 0)):
        raise ValueError(
            "no customers with frequency > 0: the Gamma-Gamma model is fitted on repeat customers"
        )
    (x, m), w = _compress((x[repeat], m[repeat]), w[repeat])
    scale = _dot(w, m) / w.sum()
    objective = _GGObjective(x, m, w, scale)
    theta = _minimise(objective, np.zeros(3), "Gamma-Gamma", ("p", "q", "v"))
    p, q, v = objective.params(theta)
    return GammaGammaParams(p=p, q=q, v=v)


def gamma_gamma_expected_spend(
    params: GammaGammaParams, frequency: ArrayLike, monetary_value: ArrayLike
) -> Array:
    """E[M | x, m_x] = p (v + x m_x) / (p x + q - 1): a weighted mean of the population mean p v/(q-1) and
    the customer's own mean m_x (Fader, Hardie & Lee 2005). For x = 0 it is the population mean (m_x is
    ignored). Where the mean does not exist (p x + q <= 1, e.g. q <= 1 for x = 0) the result is inf."""
    _check_gg(params)
    x, m = _xm(frequency, monetary_value)
    p, q, v = params.p, params.q, params.v
    own = np.where(x > 0, x * np.where(x > 0, m, 0.0), 0.0)
    denominator = p * x + q - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p * (v + own) / denominator
    return np.where(denominator > 0, out, np.inf)
