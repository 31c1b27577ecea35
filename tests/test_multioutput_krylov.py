"""D outputs on the matrix-free path (theory/multioutput_krylov.py) against the dense multi-output fit.

References: the eigenbasis solver of finwidth.theory.multioutput on the dense kernel (numpy eigh), an
independent computation; the Krylov answers must agree within the error bars they report.
"""

from __future__ import annotations

import numpy as np
import pytest

from finwidth import Network, kernels
from finwidth.errors import ConfigError, ConvergenceError
from finwidth.theory import spectral
from finwidth.theory.multioutput import solve_multioutput
from finwidth.theory.multioutput_krylov import solve_multioutput_krylov
from finwidth.theory.rkgp import RKGP


def _data(P=240, N0=20, D=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, N0))
    W = rng.normal(size=(N0, D))
    Y = np.tanh(X @ W / np.sqrt(N0)) + 0.1 * rng.normal(size=(P, D))
    return X, Y


@pytest.mark.parametrize("widths", [[100], [80, 150]])
def test_krylov_multioutput_saddle_is_the_dense_one_within_its_error_bars(widths):
    X, Y = _data()
    K = kernels.nngp(Network(widths, "erf"), X).train
    basis = spectral.eigenbasis(K)
    dense = solve_multioutput(basis, basis.project(Y), 1e-2, widths)
    sol = solve_multioutput_krylov(lambda V: K @ V, Y, 1e-2, widths, rtol=2e-3, seed=3)
    err = 4 * sol.renormalization_stderr + sol.renormalization_quadrature_error + 1e-12
    assert np.all(np.abs(sol.renormalization - dense.renormalization) <= err)
    assert np.max(sol.renormalization_stderr) <= 2e-3 * np.max(sol.pi)
    assert np.all(sol.renormalization_stderr > 0) and sol.qbar_stderr.shape == (len(widths), 3, 3)
    # the layers: Q_l within their own error bars
    assert np.all(np.abs(sol.qbar - dense.qbar) <= 4 * sol.qbar_stderr + 1e-6)
    assert sol.residual <= spectral.RESIDUAL_TOL and sol.min_curvature > 0
    # the action: the dense one within the probes' standard error of log det A
    assert 0 < sol.action_stderr and abs(sol.action - dense.action) <= 4 * sol.action_stderr


def test_krylov_multioutput_error_bars_shrink_like_one_over_root_probes():
    X, Y = _data(P=200, seed=1)
    K = kernels.nngp(Network([60], "erf"), X).train
    runs = [solve_multioutput_krylov(lambda V: K @ V, Y, 1e-2, [60], rtol=1.0, probes=n, seed=5) for n in (8, 128)]
    assert runs[0].n_probes == 8 and runs[1].n_probes == 128
    ratio = np.max(runs[0].renormalization_stderr) / np.max(runs[1].renormalization_stderr)
    assert 2.5 <= ratio <= 6.5  # √16 = 4, with the sample spread of 8 probes


def test_rkgp_multioutput_krylov_fit_and_predictions():
    X, Y = _data(P=200, seed=2)
    Xt = np.random.default_rng(7).normal(size=(25, 20))
    net = Network([100], "erf")
    dense = RKGP(net, 1e-2).fit(X, Y)
    assert dense.solver_ == "dense" and np.all(dense.renormalization_stderr_ == 0)
    kry = RKGP(net, 1e-2, solver="krylov", solver_options={"rtol": 2e-3, "probes": 32, "tile": 64}).fit(X, Y)
    assert kry.solver_ == "krylov" and kry.n_outputs_ == 3 and kry.width_criterion_ is None
    assert kry.renormalization_.shape == (3, 3) and kry.qbar_.shape == (1, 3, 3)
    tol = 4 * kry.renormalization_stderr_ + kry.renormalization_quadrature_error_ + kry.renormalization_product_error_
    assert np.all(np.abs(kry.renormalization_ - dense.renormalization_) <= tol)
    assert np.all(kry.renormalization_product_error_ < 1e-10)  # float64 tiles
    # predictions: the GP with kernel 𝒬 ⊗ K by CG, against the dense predictor at the Krylov 𝒬
    m1, v1 = kry.predict(Xt, return_var=True)
    m0, v0 = dense.predict(Xt, return_var=True)
    scale = np.max(np.abs(m0))
    assert np.max(np.abs(m1 - m0)) <= 0.05 * scale and np.max(np.abs(v1 - v0)) <= 0.05 * np.max(v0)
    cov = kry.output_covariance(Xt)
    assert cov.shape == (25, 3, 3) and np.allclose(np.diagonal(cov, axis1=1, axis2=2), v1, rtol=1e-10)
    assert kry.generalization_error(Xt, np.zeros((25, 3))).total > 0


def test_krylov_prediction_is_exact_at_a_given_renormalization():
    """The CG predictor at the Krylov fit's own 𝒬 equals the dense formula at that 𝒬 (no sampling error)."""
    from finwidth.theory.multioutput_estimator import predictive

    X, Y = _data(P=150, seed=4)
    Xt = np.random.default_rng(8).normal(size=(10, 20))
    net = Network([70], "erf")
    kry = RKGP(net, 1e-2, solver="krylov", solver_options={"rtol": 1e-2, "probes": 8}).fit(X, Y)
    blocks = kernels.nngp(net, X, Xt)
    basis = spectral.eigenbasis(blocks.train)
    mean, s = predictive(kry.krylov_, basis, basis.project(Y), 1e-2, blocks.test_train, blocks.test_diag)
    m, v = kry.predict(Xt, return_var=True)
    assert np.allclose(m, mean, rtol=1e-7, atol=1e-9)
    assert np.allclose(v, s @ (kry.krylov_.vectors ** 2).T, rtol=1e-6, atol=1e-9)


def test_krylov_multioutput_bad_input_and_budgets():
    X, Y = _data(P=120, seed=3)
    K = kernels.nngp(Network([60], "erf"), X).train

    def mm(V):
        return K @ V

    with pytest.raises(ConfigError, match="T > 0"):
        solve_multioutput_krylov(mm, Y, 0.0, [60])
    with pytest.raises(ConfigError, match="probes"):
        solve_multioutput_krylov(mm, Y, 0.1, [60], probes=2)
    with pytest.raises(ConfigError, match="rtol"):
        solve_multioutput_krylov(mm, Y, 0.1, [60], rtol=-1.0)
    with pytest.raises(ConfigError, match="finite"):
        solve_multioutput_krylov(mm, np.where(np.arange(3) == 0, np.nan, Y), 0.1, [60])
    with pytest.raises(ConfigError, match="widths"):
        solve_multioutput_krylov(mm, Y, 0.1, [np.inf])
    with pytest.raises(ConfigError, match="dependent"):
        solve_multioutput_krylov(mm, np.column_stack([Y[:, 0], 2 * Y[:, 0]]), 0.1, [60])
    with pytest.raises(ConvergenceError, match="max_probes"):
        solve_multioutput_krylov(mm, Y, 1e-2, [60], rtol=1e-6, max_probes=20)
    with pytest.raises(ConvergenceError, match="max_steps"):
        solve_multioutput_krylov(mm, Y, 1e-4, [60], rtol=1e-1, probes=8, max_steps=20, check_every=10)
    with pytest.raises(ConvergenceError, match="float64"):
        solve_multioutput_krylov(mm, Y, 1e-2, [60], rtol=1e-2, probes=8, product_error=0.1)
    net = Network([60], "erf")
    with pytest.raises(ConfigError, match="krylov"):
        RKGP(net, 0.0, solver="krylov").fit(X, Y)
    with pytest.raises(ConfigError, match="exact"):
        RKGP(net, 0.1, solver="krylov", solver_options={"probes": "exact"}).fit(X, Y)


def test_deflation_is_refused_for_several_outputs():
    X, Y = _data(P=60)
    with pytest.raises(ConfigError, match="deflate"):
        RKGP(Network([30], "erf"), 1e-2, solver="krylov", solver_options={"deflate": 10}).fit(X, Y)
