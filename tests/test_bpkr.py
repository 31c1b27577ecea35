"""BPKR (deep linear networks): the §A.14 T = 0 table and the exact block-Gibbs sampler."""

from __future__ import annotations

import numpy as np
import pytest

from finwidth.errors import ConfigError
from finwidth.network import Network
from finwidth.simulate.gibbs import gibbs_deep_linear
from finwidth.theory.bpkr import BPKR
from finwidth.theory.rkgp import RKGP

# BPKR notes §A.14 (i): Q / Π at T = 0, equal widths, P < N_0 (published in the notes, 5 decimals)
TABLE = {
    (0.5, 0.5): [(0.80902, 0.80902), (0.84781, 0.71878), (0.89305, 0.63606), (0.96231, 0.54077)],
    (0.5, 2.0): [(1.28078, 1.28078), (1.19743, 1.43384), (1.12478, 1.60056), (1.03934, 1.85411)],
    (1.0, 0.5): [(0.70711, 0.70711), (0.79370, 0.62996), (0.87055, 0.57435), (0.96005, 0.52081)],
    (1.0, 2.0): [(1.41421, 1.41421), (1.25992, 1.58740), (1.14870, 1.74110), (1.04162, 1.92009)],
    (2.0, 0.5): [(0.61803, 0.61803), (0.75488, 0.56984), (0.85667, 0.53860), (0.95885, 0.51050)],
    (2.0, 2.0): [(1.56155, 1.56155), (1.31460, 1.72816), (1.16577, 1.84692), (1.04289, 1.95801)],
}


@pytest.mark.parametrize("alpha,r0", sorted(TABLE))
def test_T0_table(alpha, r0):
    P = 40
    rng = np.random.default_rng(0)
    X = rng.normal(size=(P, 60))
    y = rng.normal(size=P)
    G = X @ X.T / 60
    y *= np.sqrt(r0 * P / (y @ np.linalg.solve(G, y)))  # r0 = yᵀK⁻¹y/P with K = G (λ = 1)
    for L, (q_ref, pi_ref) in zip((1, 2, 4, 16), TABLE[(alpha, r0)]):
        m = BPKR(Network([int(P / alpha)] * L, "linear"), 0.0).fit(X, y)
        assert m.width_criterion_.r == pytest.approx(r0, rel=1e-9)
        assert np.allclose(m.qbar_, q_ref, atol=6e-6), (L, m.qbar_)
        assert m.pi_ == pytest.approx(pi_ref, abs=6e-6)


def test_bpkr_is_rkgp_linear_and_rejects_others():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(20, 30)), rng.normal(size=20)
    net = Network([10, 40], "linear", priors=(1.0, 2.0, 0.5))
    b = BPKR(net, 0.2).fit(X, y)
    r = RKGP(net, 0.2, renormalization="nested").fit(X, y)
    assert np.allclose(b.qbar_, r.qbar_, rtol=1e-8)
    # the weight-norm identity for the readout: ⟨|a|²⟩ λ_L / N_L = Q̄_L
    assert b.weight_norms()[-1] * 0.5 / 40 == pytest.approx(b.qbar_[-1], rel=1e-12)
    with pytest.raises(ConfigError, match="linear"):
        BPKR(Network([5], "erf"), 0.1).fit(X, y)
    with pytest.raises(ConfigError, match="bias"):
        BPKR(Network([5], "linear", bias=0.1), 0.1).fit(X, y)


def _teacher(P, N0, Pt, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=N0)
    X = rng.normal(size=(P, N0))
    Xt = rng.normal(size=(Pt, N0))
    return X, X @ w / np.sqrt(N0) + 0.5 * rng.normal(size=P), Xt, Xt @ w / np.sqrt(N0)


@pytest.mark.slow
@pytest.mark.parametrize("widths,priors", [([40], (1.0, 1.5)), ([30, 60], (1.2, 0.8, 1.5))])
def test_bpkr_against_exact_gibbs(widths, priors):
    """Theory vs exact posterior sampling, P = 40, N_0 = 60, T = 0.1.

    Tolerance: 4.5 standard errors (from independent replicas) plus the finite-size correction of a
    proportional-limit theory, taken as |value|/min(N) (O(1/N), unit coefficient; the deviations
    measured here are about 0.3/N).
    """
    X, y, Xt, yt = _teacher(40, 60, 50, seed=1)
    T = 0.1
    net = Network(widths, "linear", priors=priors)
    th = BPKR(net, T).fit(X, y)
    err = th.generalization_error(Xt, yt)
    R = 32
    s = gibbs_deep_linear(net, X, y, temperature=T, n_sweeps=500, burn_in=100, replicas=R, seed=2, X_test=Xt)
    n_min = min(widths)

    def close(theory, replica_values):
        m = replica_values.mean(axis=0)
        se = replica_values.std(axis=0, ddof=1) / np.sqrt(R)
        tol = 4.5 * se + np.abs(theory) / n_min
        assert np.all(np.abs(m - theory) <= tol), (theory, m, se)

    # Q̄_L from the readout norm, and every layer's weight norm
    close(th.qbar_[-1], s.replica_means("readout_norm") * priors[-1] / widths[-1])
    close(th.weight_norms(), s.replica_means("layer_norms"))
    # ε_g: the posterior average of the test MSE of sampled networks
    close(err.total, np.mean((s.test_pred - yt) ** 2, axis=2).mean(axis=0))
    # bias and variance of the posterior predictive
    fbar = s.test_pred.mean(axis=(0, 1))
    fbar_r = s.test_pred.mean(axis=0)  # (R, Pt)
    se_f2 = fbar_r.var(axis=0, ddof=1) / R
    bias = np.mean((yt - fbar) ** 2 - se_f2)  # remove the sampling noise of f̄ from the squared bias
    se_bias = np.sqrt(np.mean(4 * (yt - fbar) ** 2 * se_f2) / len(yt))
    assert abs(bias - err.bias) <= 4.5 * se_bias + err.bias / n_min
    var = np.mean(s.test_pred.var(axis=(0, 1)))
    assert abs(var - err.variance) <= 4.5 * np.mean(np.sqrt(se_f2)) * 2 + err.variance / n_min
    # hidden kernels: normalised trace and task alignment
    hk = th.hidden_kernels()
    for ell in range(len(widths)):
        close(np.trace(hk[ell]) / len(y), s.replica_means("hidden_trace")[:, ell])
        close(y @ hk[ell] @ y / (y @ y), s.replica_means("hidden_alignment")[:, ell])
