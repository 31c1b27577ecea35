"""finwidth.theory.spd: minimisation over SPD matrices, against problems with closed-form minimisers.

The main family, S(Q) = tr(A Q) − c log det Q + tr(B Q⁻¹) with A, B SPD, is strictly convex on the
cone and its minimiser solves Q A Q − c Q − B = 0, i.e.
Q* = A^{-1/2} [c/2 + (c²/4 + A^{1/2} B A^{1/2})^{1/2}] A^{-1/2} (substitute Q = A^{-1/2} M A^{-1/2}).
It is the structure of the multi-output action at T = 0 (prior + P log det Q + P tr(Q⁻¹ R)).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from finwidth.errors import ConfigError, ConvergenceError
from finwidth.theory.spd import check_gradient, minimize_spd, smat, svec


def _spd(rng, n, cond):
    O, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (O * np.logspace(0, np.log10(cond), n)) @ O.T


def _riccati(A, B, c):
    n = A.shape[0]

    def fun(Q):
        Qi = np.linalg.inv(Q)
        S = np.trace(A @ Q) - c * np.linalg.slogdet(Q)[1] + np.trace(B @ Qi)
        G = A - c * Qi - Qi @ B @ Qi
        scale = np.linalg.norm(A) * np.linalg.norm(Q) + c * np.sqrt(n) + np.linalg.norm(B) * np.linalg.norm(Qi)
        return S, G, scale

    Ah = linalg.sqrtm(A).real
    Aih = np.linalg.inv(Ah)
    M = 0.5 * c * np.eye(n) + linalg.sqrtm(0.25 * c * c * np.eye(n) + Ah @ B @ Ah).real
    return fun, Aih @ M @ Aih


@pytest.mark.parametrize("n, cond, start", [(1, 1.0, 1.0), (3, 10.0, 1.0), (12, 1e3, 1.0), (6, 1e2, 1e-3), (6, 1e2, 1e3)])
def test_riccati_closed_form(n, cond, start):
    rng = np.random.default_rng(n)
    fun, Q_star = _riccati(_spd(rng, n, cond), _spd(rng, n, cond), 2.5)
    sol = minimize_spd(fun, start * np.eye(n))
    assert sol.residual <= 1e-10
    np.testing.assert_allclose(sol.Q, Q_star, rtol=0, atol=1e-7 * np.linalg.norm(Q_star))
    assert sol.value == pytest.approx(fun(Q_star)[0], rel=1e-12)
    np.testing.assert_allclose(sol.Q, sol.Q.T)
    assert np.linalg.eigvalsh(sol.Q)[0] > 0
    assert sol.min_curvature > 0  # strictly convex: a strict minimum
    np.testing.assert_allclose(linalg.expm(sol.log_Q), sol.Q, rtol=1e-12, atol=1e-14 * np.linalg.norm(sol.Q))


def test_fifty_by_fifty():
    """n = 50 (1275 unknowns): the size of a patch–patch order parameter."""
    rng = np.random.default_rng(50)
    fun, Q_star = _riccati(_spd(rng, 50, 100.0), _spd(rng, 50, 1e3), 3.0)
    sol = minimize_spd(fun, np.eye(50), check_minimum=False)
    assert sol.residual <= 1e-10
    np.testing.assert_allclose(sol.Q, Q_star, rtol=0, atol=1e-8 * np.linalg.norm(Q_star))
    assert sol.min_curvature is None


def test_inverse_of_A_from_a_non_identity_start():
    """S = tr(A Q) − log det Q is minimised by Q = A⁻¹ (no scale returned: absolute residual)."""
    rng = np.random.default_rng(3)
    A = _spd(rng, 5, 20.0)
    Q0 = _spd(rng, 5, 5.0)
    sol = minimize_spd(lambda Q: (np.trace(A @ Q) - np.linalg.slogdet(Q)[1], A - np.linalg.inv(Q)), Q0)
    np.testing.assert_allclose(sol.Q, np.linalg.inv(A), rtol=1e-9, atol=1e-11)
    assert sol.scale == 1.0


def test_saddle_at_the_start_is_left():
    """In X = log Q: S = −(tr X)² + (tr X)⁴ + ‖X − (tr X/n) 1‖²; X = 0 is a stationary saddle, the minima
    are X = ±(1/(n√2)) 1 with S = −1/4. The curvature check must leave the saddle."""
    n = 4

    def fun(Q):
        w, V = np.linalg.eigh(Q)
        lw = np.log(w)
        X = (V * lw) @ V.T
        t = np.trace(X)
        S = -t * t + t**4 + np.linalg.norm(X - t / n * np.eye(n)) ** 2
        gX = (-2 * t + 4 * t**3) * np.eye(n) + 2 * (X - t / n * np.eye(n))
        d = lw[:, None] - lw[None, :]
        with np.errstate(all="ignore"):
            E = np.where(np.abs(d) < 1e-12, w[:, None] + 0 * w[None, :], (w[:, None] - w[None, :]) / np.where(d == 0, 1, d))
        return S, V @ ((V.T @ gX @ V) / E) @ V.T

    assert check_gradient(fun, np.diag([1.1, 0.9, 1.3, 0.7])).max_rel_error < 1e-7
    sol = minimize_spd(fun, np.eye(n))
    assert sol.value == pytest.approx(-0.25, abs=1e-12)
    q = np.exp(1 / (np.sqrt(2) * n))
    assert np.allclose(sol.Q, q * np.eye(n), atol=1e-6) or np.allclose(sol.Q, np.eye(n) / q, atol=1e-6)
    assert sol.min_curvature > 0


def test_gradient_convention_each_entry_counts_once():
    """S = Σ_ab M_ab Q_ab (M symmetric) has G = M: an off-diagonal pair moved together changes S by 2 M_ab ε.
    The upper-triangle derivative (off-diagonals doubled, deepbays' convention) is flagged."""
    rng = np.random.default_rng(7)
    M = rng.standard_normal((4, 4))
    M = M + M.T
    Q = _spd(rng, 4, 3.0)
    good = check_gradient(lambda Q: (float(np.sum(M * Q)), M), Q)
    assert good.max_rel_error < 1e-9
    triu = 2 * M - np.diag(np.diag(M))
    bad = check_gradient(lambda Q: (float(np.sum(M * Q)), triu), Q)
    assert bad.max_rel_error > 0.1


def test_svec_is_an_isometry():
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((2, 5, 5))
    A, B = A + A.T, B + B.T
    assert svec(A) @ svec(B) == pytest.approx(np.trace(A @ B))
    np.testing.assert_allclose(smat(svec(A)), A, rtol=1e-15, atol=1e-15)


def test_bad_starts_and_outputs():
    ok = lambda Q: (np.trace(Q) - np.linalg.slogdet(Q)[1], np.eye(Q.shape[0]) - np.linalg.inv(Q))  # noqa: E731
    with pytest.raises(ConfigError, match="not positive definite"):
        minimize_spd(ok, np.diag([1.0, -0.5]))
    with pytest.raises(ConfigError, match="not positive definite"):
        minimize_spd(ok, np.zeros((2, 2)))
    with pytest.raises(ConfigError, match="not symmetric"):
        minimize_spd(ok, np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ConfigError, match="NaN"):
        minimize_spd(ok, np.array([[1.0, np.nan], [np.nan, 1.0]]))
    with pytest.raises(ConfigError, match="square"):
        minimize_spd(ok, np.ones((2, 3)))
    with pytest.raises(ConfigError, match="shape"):
        minimize_spd(lambda Q: (1.0, np.eye(3)), np.eye(2))
    with pytest.raises(ConvergenceError, match="not finite at the starting"):
        minimize_spd(lambda Q: (np.inf, np.eye(2)), np.eye(2))


def test_inconsistent_gradient_is_reported():
    """A gradient that is not the derivative of the value: no verified answer, and the message says
    what to check."""
    A = np.diag([1.0, 2.0, 3.0])
    wrong = lambda Q: (np.trace(A @ Q) - np.linalg.slogdet(Q)[1], A - np.linalg.inv(Q) + 0.3 * np.eye(3))  # noqa: E731
    assert check_gradient(wrong, np.eye(3)).max_rel_error > 0.01
    with pytest.raises(ConvergenceError, match="check_gradient"):
        minimize_spd(wrong, np.eye(3), max_evaluations=5000)


def test_budget_is_reported():
    rng = np.random.default_rng(1)
    fun, _ = _riccati(_spd(rng, 6, 1e3), _spd(rng, 6, 1e3), 1.0)
    with pytest.raises(ConvergenceError, match="budget"):
        minimize_spd(fun, np.eye(6), max_evaluations=5)
