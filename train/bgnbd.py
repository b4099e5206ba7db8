"""BG/NBD, the classic buy-till-you-die baseline (Fader, Hardie & Lee 2005, "Counting your customers the easy
way"): a closed-form likelihood over each customer's repeat transactions ``x``, the time of the last one ``t_x``
and their age ``T``. We score churn as the probability of no transaction in the label window that follows.

Transactions here are active days (a user's first active day is their "first purchase", each later one a repeat),
and time is in weeks, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import gammaln

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float


def log_likelihood(params: BgNbdParams, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
    """Each customer's log-likelihood (FHL 2005, equation 6)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    a4 = np.full_like(x, -np.inf)
    a4[repeat] = np.log(a) - np.log(b + x[repeat] - 1) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
    return a1 + a2 + np.logaddexp(a3, a4)


class BgNbd:
    """Maximum-likelihood BG/NBD with the scikit-learn habits: ``fit`` returns self, fitted state ends in ``_``."""

    def __init__(self, max_iter: int = 2000) -> None:
        self.max_iter = max_iter

    def fit(self, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> BgNbd:
        x_, t_x_, T_ = _arrays(x, t_x, T)

        def negative(log_params: FloatArray) -> float:
            return -float(log_likelihood(BgNbdParams(*np.exp(log_params)), x_, t_x_, T_).sum())

        result = minimize(
            negative,
            np.zeros(4),
            method="Nelder-Mead",
            options={"maxiter": self.max_iter, "xatol": 1e-6, "fatol": 1e-6},
        )
        result = minimize(negative, result.x, method="L-BFGS-B")  # polish from the simplex's answer
        self.params_ = BgNbdParams(*map(float, np.exp(result.x)))
        self.log_likelihood_ = -float(result.fun)
        return self

    def probability_alive(self, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> FloatArray:
        """P(the customer has not dropped out by T); 1 without a repeat transaction (the model's assumption)."""
        x_, t_x_, T_ = _arrays(x, t_x, T)
        p = self.params_
        ratio = np.zeros_like(x_)
        repeat = x_ > 0
        log_ratio = (
            np.log(p.a)
            - np.log(p.b + x_[repeat] - 1)
            + (p.r + x_[repeat]) * (np.log(p.alpha + T_[repeat]) - np.log(p.alpha + t_x_[repeat]))
        )
        ratio[repeat] = np.exp(log_ratio)
        return 1.0 / (1.0 + ratio)

    def probability_no_transaction(
        self, t: float, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
    ) -> FloatArray:
        """P(no transaction in (T, T + t]): dropped out, or alive and its Poisson rate gave none.

        An active customer's rate has the posterior Gamma(r + x, alpha + T), so P(none in t | alive) is
        ((alpha + T) / (alpha + T + t)) ** (r + x); dropping out happens only at transactions, never in a quiet spell.
        """
        x_, t_x_, T_ = _arrays(x, t_x, T)
        p = self.params_
        quiet_if_alive = np.exp((p.r + x_) * (np.log(p.alpha + T_) - np.log(p.alpha + T_ + t)))
        return 1.0 - self.probability_alive(x_, t_x_, T_) * (1.0 - quiet_if_alive)


def _arrays(*values: npt.ArrayLike) -> tuple[FloatArray, ...]:
    arrays = tuple(np.asarray(v, dtype=np.float64) for v in values)
    x, t_x, T = arrays
    if (x < 0).any() or (t_x < 0).any() or (t_x > T + 1e-9).any():
        raise ValueError("BG/NBD needs x >= 0 and 0 <= t_x <= T for every customer")
    return arrays


def summary_from_features(
    active_days: npt.ArrayLike, days_since_first: npt.ArrayLike, days_since_last: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(x, t_x, T)`` in weeks from the catalogue's features: repeats, last repeat's time, age at the cutoff."""
    first = np.asarray(days_since_first, dtype=np.float64)
    last = np.asarray(days_since_last, dtype=np.float64)
    x = np.asarray(active_days, dtype=np.float64) - 1.0
    return x, (first - last) / 7.0, first / 7.0
