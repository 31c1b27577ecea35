"""Diagnostics against processes with known answers: AR(1) chains (τ = (1+ρ)/(1−ρ)), iid chains,
chains stuck at different levels, a decaying transient."""

import math

import numpy as np
import pytest

from finwidth.simulate import diagnostics as d


def _ar1(rng, R, n, rho):
    x = np.empty((R, n))
    x[:, 0] = rng.standard_normal(R)
    e = rng.standard_normal((R, n)) * math.sqrt(1 - rho ** 2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + e[:, t]
    return x


def test_ess_and_tau_of_ar1():
    rng = np.random.default_rng(0)
    rho, R, n = 0.9, 8, 20000
    x = _ar1(rng, R, n, rho)
    tau = (1 + rho) / (1 - rho)
    assert d.integrated_time(x) == pytest.approx(tau, rel=0.1)
    assert d.effective_sample_size(x) == pytest.approx(R * n / tau, rel=0.1)


@pytest.mark.slow  # many AR(1) series
def test_batch_means_stderr_of_ar1():
    rng = np.random.default_rng(1)
    rho, R, n = 0.8, 4, 10000
    tau = (1 + rho) / (1 - rho)
    true_se = math.sqrt(tau / (R * n))
    ses = [d.batch_means_stderr(_ar1(rng, R, n, rho)) for _ in range(20)]
    # batch means with ⌊√n⌋ = 100 batches of 100 ≫ τ = 9: unbiased to a few percent
    assert np.mean(ses) == pytest.approx(true_se, rel=0.1)


def test_split_rhat():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 2000))
    assert d.split_rhat(x) == pytest.approx(1.0, abs=0.01)
    y = x + np.arange(8)[:, None] * 0.5  # chains stuck at different levels
    assert d.split_rhat(y) > 1.2
    z = x + np.linspace(0, 3, 2000)[None, :]  # a drift inside every chain: split halves disagree
    assert d.split_rhat(z) > 1.2


def test_jackknife_of_mean_and_squared_mean():
    rng = np.random.default_rng(3)
    J, m = 40, 50
    blocks = rng.normal(2.0, 1.0, size=(J, m))
    sums, counts = blocks.sum(1), np.full(J, float(m))
    est, se, _ = d.jackknife(lambda S, n: S / n, sums, counts)
    assert est == pytest.approx(blocks.mean())
    assert se == pytest.approx(blocks.mean(1).std(ddof=1) / math.sqrt(J), rel=1e-10)
    # the bias correction removes the Var(x̄) term of x̄²: averaged over many data sets
    corr = []
    raw = []
    for _ in range(400):
        b = rng.normal(0.0, 1.0, size=(10, 5))
        e, _, c = d.jackknife(lambda S, n: (S / n) ** 2, b.sum(1), np.full(10, 5.0))
        raw.append(e)
        corr.append(c)
    assert np.mean(raw) == pytest.approx(1 / 50, rel=0.3)  # E x̄² = σ²/n
    assert abs(np.mean(corr)) < 3 * np.std(corr) / math.sqrt(400)


def test_mser_finds_the_transient():
    rng = np.random.default_rng(4)
    n = 64
    x = 5.0 * np.exp(-np.arange(n) / 4.0) + 0.05 * rng.standard_normal(n)
    k = d.mser_truncation(x)
    assert 8 <= k <= 32
    assert d.mser_truncation(0.05 * rng.standard_normal(n)) <= 16
