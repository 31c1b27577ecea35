"""Robustness campaigns: 520 random saddle-point problems, every answer verified or a clear
ConvergenceError; and 110 random RKGP fits at T = 0, each verified or an explained limit.

Kernels are built once per data set and reused across widths/temperatures/label scales (the
campaign targets the solvers, not the kernel code). Each returned saddle point is re-verified here
independently of the solver's own check: Q̄_l = 1 − α_l g(Π) with g recomputed from a dense
eigendecomposition-free formula (traces with numpy.linalg.solve).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from finwidth import kernels
from finwidth.errors import ConditioningWarning, ConfigError, ConvergenceError
from finwidth.network import Network
from finwidth.theory import spectral
from finwidth.theory.rkgp import RKGP, NonOddSaddle

# random problems test the saddle-point solver, not whether the saddle point describes a network
pytestmark = pytest.mark.filterwarnings("ignore::finwidth.errors.ValidityWarning")


def _dense_g(K, y, pi, T):
    P = len(y)
    A = pi * K + T * np.eye(P)
    B = np.linalg.solve(A, pi * K)
    a = np.linalg.solve(A, y)
    return (np.trace(B) - a @ (pi * K) @ a) / P


@pytest.mark.slow
def test_random_problems_all_verified():
    rng = np.random.default_rng(2024)
    n_checked = n_dense = n_multi = 0
    failures = []
    for dataset in range(26):
        P = int(rng.integers(5, 201))
        N0 = int(rng.integers(2, 300))  # P > N_0 happens often
        X = rng.normal(size=(P, N0))
        if dataset % 3 == 0:  # duplicated inputs
            X[: P // 4] = X[P // 4: 2 * (P // 4)]
        act = ["erf", "relu", "linear", "tanh"][dataset % 4]
        L = int(rng.integers(1, 5))
        K = kernels.nngp(Network([10] * L, act, priors=rng.uniform(0.5, 2.0, L + 1)), X).train
        basis = spectral.eigenbasis(K)
        y0 = np.sign(X[:, 0] + 0.3 * rng.normal(size=P))
        for _ in range(20):
            widths = np.exp(rng.uniform(np.log(5), np.log(2000), L)).astype(int)
            T = 0.0 if rng.random() < 0.15 else float(np.exp(rng.uniform(np.log(1e-4), np.log(10))))
            y = y0 * float(np.exp(rng.uniform(np.log(0.01), np.log(100)))) + 0.05 * rng.normal(size=P)
            y_t = basis.project(y)
            try:
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    sol = spectral.solve_product(basis, y_t, T, widths)
                n_multi += any(issubclass(x.category, spectral.MultipleRootsWarning) for x in w)
            except ConvergenceError as exc:  # allowed, but must carry a residual or a reason
                failures.append(str(exc))
                continue
            n_checked += 1
            alphas = P / widths
            assert np.all(sol.qbar > 0)
            assert sol.residual <= spectral.RESIDUAL_TOL
            g, _, _ = spectral.g_of_pi(sol.pi, basis.values, y_t ** 2, T)
            assert np.allclose(sol.qbar, 1 - alphas * g, rtol=1e-9, atol=1e-12)
            assert np.isclose(np.prod(sol.qbar), sol.pi, rtol=1e-9)
            if T > 1e-2 and basis.n_null == 0 and P <= 80:  # independent dense check where well conditioned
                gd = _dense_g(K, y, sol.pi, T)
                assert np.allclose(sol.qbar, 1 - alphas * gd, rtol=1e-7, atol=1e-9)
                n_dense += 1
            if act == "relu" and L == 1 and basis.n_null == 0:
                m = basis.project(Network([10], "relu").activation.mean(np.diag(X @ X.T) / N0))
                nz = NonOddSaddle(basis.values, y_t, m, T, float(widths[0]))
                for start in ((1.0, 0.0), (0.5, 1.0)):
                    try:
                        qb, q = nz.solve(*start)
                    except ConvergenceError:
                        continue
                    assert nz.residual(qb, q) <= spectral.RESIDUAL_TOL and qb > 0 and q > -1
                    n_checked += 1
                    break
    assert n_checked >= 500, (n_checked, failures[:3])
    assert n_dense >= 30
    assert not failures, failures[:5]


# failures at T = 0 that are limits of the theory, each with its message (anything else fails the test)
_EXPLAINED_T0 = (
    (ConfigError, "null eigenvalues"),  # nested / mean-corrected forms need a non-singular kernel at T = 0
    (ConvergenceError, "no component in the range of the kernel"),  # no saddle point exists (Q̄ → 0)
    (ConvergenceError, "Hermite series needs more than"),  # tanh kernel beyond its series' range (Q̄ ≫ 1)
)


@pytest.mark.slow  # 110 random fits
def test_random_problems_at_T0_fit_or_explain():
    """RKGP.fit at T = 0 on random problems (every form, duplicated inputs, constant and random labels,
    label scales 1e-2 … 1e2): a verified answer or one of the explained limits, nothing else."""
    rng = np.random.default_rng(17)
    n_fit = 0
    explained = []
    unexplained = []
    for problem in range(110):
        P = int(rng.integers(5, 160))
        N0 = int(rng.integers(2, 100))
        X = rng.normal(size=(P, N0)) * float(np.exp(rng.uniform(-1.0, 1.0)))
        if problem % 3 == 0:
            X[: P // 4] = X[P // 4: 2 * (P // 4)]
        act = ["erf", "relu", "linear", "tanh"][problem % 4]
        L = int(rng.integers(1, 4))
        kind = problem % 5
        y = [np.sign(X[:, 0] + 0.3 * rng.normal(size=P)), np.ones(P), rng.normal(size=P),
             np.tanh(X[:, 0]) + 0.05 * rng.normal(size=P), np.sign(X[:, 0])][kind]
        y = y * float(np.exp(rng.uniform(np.log(0.01), np.log(100))))
        widths = [int(np.exp(rng.uniform(np.log(5), np.log(2000))))] * L
        net = Network(widths, act, priors=rng.uniform(0.5, 2.0, L + 1))
        form = "nested" if problem % 2 and act == "erf" else "product"  # (tanh nested: slow series kernels)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConditioningWarning)
                warnings.simplefilter("ignore", spectral.MultipleRootsWarning)
                m = RKGP(net, 0.0, renormalization=form).fit(X, y)
        except (ConfigError, ConvergenceError) as exc:
            if any(isinstance(exc, cls) and text in str(exc) for cls, text in _EXPLAINED_T0):
                explained.append(str(exc))
            else:
                unexplained.append((problem, act, L, widths[0], P, N0, form, str(exc)))
            continue
        n_fit += 1
        assert np.all(np.isfinite(m.qbar_)) and np.all(m.qbar_ > 0)
        assert m.residual_ <= (1e-7 if m.kind_ == "nested" else spectral.RESIDUAL_TOL)
    assert not unexplained, "\n".join(map(str, unexplained[:3]))
    assert n_fit >= 80, (n_fit, explained[:3])


@pytest.mark.slow  # 27 fits of a 3-layer network
def test_T0_erf_three_layers_P154_N017_fits():
    """The failure reported in issue 17 (erf, L = 3, widths 25, P = 154, N_0 = 17, T = 0 ended in "no
    root of the product-form equation for log Π"): the same shapes, three label kinds and three label
    scales, all fit with a verified saddle point, and at T = 0 the predictor interpolates the labels."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(154, 17)) * float(np.exp(rng.uniform(-1.0, 1.0)))
        for scale in (0.01, 1.0, 100.0):
            for y in (np.sign(X[:, 0] + 0.3 * rng.normal(size=154)), np.ones(154), rng.normal(size=154)):
                y = scale * y
                net = Network([25] * 3, "erf", priors=rng.uniform(0.5, 2.0, 4))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConditioningWarning)
                    m = RKGP(net, 0.0).fit(X, y)
                assert np.all(np.isfinite(m.qbar_)) and np.all(m.qbar_ > 0)
                assert m.residual_ <= spectral.RESIDUAL_TOL
                np.testing.assert_allclose(m.predict(X), y, rtol=0, atol=1e-6 * np.abs(y).max())
