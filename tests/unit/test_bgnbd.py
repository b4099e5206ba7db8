"""BG/NBD: our likelihood reproduces the published fit on CDNOW, and recovers known parameters from its own process."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from train.bgnbd import BgNbd, BgNbdParams, log_likelihood, summary_from_features


def _cdnow_summary() -> pd.DataFrame:
    try:
        path = Path(str(distribution("lifetimes").locate_file("lifetimes/datasets/cdnow_customers_summary.csv")))
    except PackageNotFoundError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs the bench extra, which ships the CDNOW data (lifetimes)")
        pytest.skip("the CDNOW summary ships in the lifetimes package: pip install '.[bench]'")
    return pd.read_csv(path)


def test_fit_reproduces_fader_hardie_lee_2005_on_cdnow() -> None:
    """The paper's estimates on the 2,357-customer CDNOW sample: r 0.243, alpha 4.414, a 0.793, b 2.426, LL -9582.4."""
    data = _cdnow_summary()
    model = BgNbd().fit(data["frequency"], data["recency"], data["T"])
    p = model.params_
    assert (round(p.r, 3), round(p.alpha, 3), round(p.a, 3), round(p.b, 3)) == (0.243, 4.414, 0.793, 2.426)
    assert round(model.log_likelihood_, 1) == -9582.4


def _simulate(params: BgNbdParams, n: int, T: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Customers from the BG/NBD process itself: Poisson purchases, a coin after each one decides dropout."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(params.r, 1 / params.alpha, n)
    dropout = rng.beta(params.a, params.b, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / rates[i])
            if t > T:
                break
            x[i], t_x[i] = x[i] + 1, t
            if rng.random() < dropout[i]:
                break
    return x, t_x, np.full(n, T)


def test_fit_recovers_the_parameters_of_its_own_process() -> None:
    truth = BgNbdParams(r=0.5, alpha=3.0, a=0.8, b=2.5)
    model = BgNbd().fit(*_simulate(truth, 6000, 40.0, seed=1))
    got = model.params_
    assert got.r == pytest.approx(truth.r, rel=0.1) and got.alpha == pytest.approx(truth.alpha, rel=0.15)
    assert got.a == pytest.approx(truth.a, rel=0.25) and got.b == pytest.approx(truth.b, rel=0.3)


def test_probabilities_follow_the_model() -> None:
    model = BgNbd()
    model.params_ = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
    x, t_x, T = np.array([0.0, 2.0, 2.0]), np.array([0.0, 30.0, 5.0]), np.array([38.0, 38.0, 38.0])
    alive = model.probability_alive(x, t_x, T)
    assert alive[0] == 1.0  # no repeat purchase: the model cannot have seen a dropout
    assert alive[1] > alive[2]  # the same purchases, the later one recent: more likely alive
    short, long = model.probability_no_transaction(4.0, x, t_x, T), model.probability_no_transaction(40.0, x, t_x, T)
    assert ((0 < long) & (long < short) & (short < 1)).all()
    # By hand for the second customer: P(none in t) = 1 - P(alive) * (1 - ((alpha+T)/(alpha+T+t))^(r+x))
    expected = 1 - alive[1] * (1 - ((4.414 + 38) / (4.414 + 38 + 4)) ** (0.243 + 2))
    assert short[1] == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(log_likelihood(model.params_, x, t_x, T)).all()


def test_summary_from_features_is_in_weeks() -> None:
    x, t_x, T = summary_from_features([1, 4], [14.0, 70.0], [14.0, 7.0])
    assert x.tolist() == [0.0, 3.0] and t_x.tolist() == [0.0, 9.0] and T.tolist() == [2.0, 10.0]
    with pytest.raises(ValueError, match="0 <= t_x <= T"):
        BgNbd().fit([1.0], [3.0], [2.0])
