"""Samplers on Bayesian linear regression, whose posterior is an exact Gaussian.

References are closed forms: the posterior N(A⁻¹Φᵀy/T, T·H⁻¹ … ) from the normal equations, and for
the unadjusted Euler scheme its exact stationary law on a quadratic potential, covariance
T (H − ηH²/2)⁻¹ (the O(η) bias, measured here). BAOAB samples the configurational marginal of a
quadratic potential exactly for h < 2/sqrt(λ_max(H)); MALA is exact for any step.
Samples: the states of many independent replicas at several well-separated times after a burn-in
of many relaxation times, so they are (nearly) independent; tolerances are 5 standard errors.
"""

import math

import numpy as np
import pytest
import torch

from finwidth.simulate.networks import LinearRegressionTarget
from finwidth.simulate.samplers import BAOABSampler, EulerSampler, MALASampler

torch.set_num_threads(1)

T, LAM, P, N = 0.5, 1.0, 20, 6


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(3)
    Phi = rng.standard_normal((P, N)) + 0.5
    y = Phi @ rng.standard_normal(N) / math.sqrt(N) + 0.3 * rng.standard_normal(P)
    target = LinearRegressionTarget(torch.tensor(Phi), LAM, T)
    mean, cov = target.exact_posterior(y)
    F = Phi / math.sqrt(N)
    H = F.T @ F + T * LAM * np.eye(N)  # Hessian of U
    return target, torch.tensor(y), mean, cov, H


def _collect(sampler, R, burn, every, n_rec, seed):
    gen = sampler.gen
    sampler.start([torch.randn((R, N), generator=gen, dtype=torch.float64)])
    out = []
    for s in range(burn + every * n_rec):
        sampler.step()
        if s >= burn and (s - burn) % every == every - 1:
            out.append(sampler.params[0].clone().numpy())
    return np.concatenate(out)


def _check_moments(samples, mean, cov, label):
    n = samples.shape[0]
    m = samples.mean(0)
    se_m = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(m - mean) < 5 * se_m), f"{label}: mean off by {np.max(np.abs(m - mean) / se_m):.1f} se"
    C = np.cov(samples.T)
    se_c = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n)
    z = np.abs(C - cov) / se_c
    assert z.max() < 5, f"{label}: covariance off by {z.max():.1f} se"
    return C, se_c


@pytest.mark.slow  # a long MALA chain against the exact Gaussian
def test_mala_is_exact(problem):
    target, y, mean, cov, H = problem
    lmax = np.linalg.eigvalsh(H).max()
    s = MALASampler(target, None, y, 0.8 / lmax, torch.Generator().manual_seed(1))
    x = _collect(s, 2000, 400, 40, 8, 1)
    _check_moments(x, mean, cov, "mala")
    acc = s.acceptance()
    assert 0.3 < acc.mean() < 1.0


def test_baoab_exact_on_gaussian_positions(problem):
    target, y, mean, cov, H = problem
    lmax = np.linalg.eigvalsh(H).max()
    h = 1.0 / math.sqrt(lmax)  # half the stability limit: still exact for a quadratic potential
    s = BAOABSampler(target, None, y, h, torch.Generator().manual_seed(2), friction=1.0)
    x = _collect(s, 2000, 300, 30, 8, 2)
    _check_moments(x, mean, cov, "baoab")


@pytest.mark.slow
def test_euler_has_its_predicted_order_eta_bias(problem):
    target, y, mean, cov, H = problem
    lmax = np.linalg.eigvalsh(H).max()
    eta = 0.6 / lmax
    s = EulerSampler(target, None, y, eta, torch.Generator().manual_seed(3))
    x = _collect(s, 2000, 1000, 100, 8, 3)
    # exact stationary law of Euler–Maruyama on a quadratic: same mean, covariance T (H − ηH²/2)⁻¹
    cov_euler = T * np.linalg.inv(H - 0.5 * eta * H @ H)
    C, se_c = _check_moments(x, mean, cov_euler, "euler vs its discrete stationary law")
    # ... and the bias relative to the true posterior is resolved: the stiffest mode's variance is
    # inflated by 1/(1 − ηλ_max/2) = 1.43
    v = np.linalg.eigh(H)[1][:, -1]
    ratio = (v @ C @ v) / (v @ cov @ v)
    se_ratio = math.sqrt(2.0 / x.shape[0]) * 1.0 / (1 - 0.3)
    assert abs(ratio - 1 / (1 - 0.5 * eta * lmax)) < 5 * se_ratio
    assert ratio - 1 > 10 * se_ratio
