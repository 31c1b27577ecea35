"""Truncated input reduction (``sample_posterior(..., input_rank=k | input_tolerance=t)``): an opt-in
approximation that samples the posterior on the projected inputs X V_k V_kᵀ, with its accuracy check."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import finwidth
from finwidth.errors import ConfigError
from finwidth.inputs import InputReduction, check_truncation
from finwidth.kernels import nngp
from finwidth.simulate.truncation import KERNEL_CHANGE_WARN, InputTruncationWarning, truncation_check


def _data(P=40, N0=30, Pt=10, seed=0):
    rng = np.random.default_rng(seed)
    scale = np.linspace(1.0, 0.01, N0)  # a decaying spectrum, as in images
    X, Xt = rng.standard_normal((P, N0)) * scale, rng.standard_normal((Pt, N0)) * scale
    return X, np.tanh(X[:, 0] + X[:, 1]), Xt, np.tanh(Xt[:, 0] + Xt[:, 1])


NET = finwidth.Network([20], "erf")
RUN = dict(temperature=0.1, sampler="baoab", step_size=0.05, n_steps=120, replicas=2, seed=3, burn_in=40,
           record_every=10)


def _sample(X, y, Xt, yt, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: NotConvergedWarning; small ranks: the truncation warning
        return finwidth.sample_posterior(NET, X, y, X_test=Xt, y_test=yt, **RUN, **kw)


def test_basis_keeps_the_leading_singular_directions_and_reports_the_dropped_energy():
    X, *_ = _data()
    s = np.linalg.svd(X, compute_uv=False)
    exact = InputReduction.from_inputs(X)
    for k in (1, 7, 29):
        red = InputReduction.from_inputs(X, rank=k)
        assert red.rank == k and red.full_rank == exact.rank == 30 and red.truncated
        np.testing.assert_allclose(red.basis.T @ red.basis, np.eye(k), atol=1e-12)
        # span = the k leading right singular vectors: X B Bᵀ is the best rank-k approximation
        best = np.linalg.norm(X - red.project(X)) ** 2
        np.testing.assert_allclose(best, np.sum(s[k:] ** 2), rtol=1e-10)
        np.testing.assert_allclose(red.dropped_energy, np.sum(s[k:] ** 2) / np.sum(s ** 2), rtol=1e-10)
        L = red.train_lower
        assert np.all(np.triu(L, 1) == 0) and np.all(np.diag(L) >= 0)
        np.testing.assert_allclose(L, X @ red.basis, atol=1e-12)
    # a tolerance picks the fewest directions that drop at most that fraction
    frac = 1 - np.cumsum(s ** 2) / np.sum(s ** 2)
    for tol in (0.3, 0.05, 1e-3):
        red = InputReduction.from_inputs(X, tolerance=tol)
        k = red.rank
        assert frac[k - 1] <= tol < (frac[k - 2] if k > 1 else np.inf)


def test_full_rank_truncation_is_the_exact_reduction():
    X, y, Xt, yt = _data()
    exact = InputReduction.from_inputs(X)
    full = InputReduction.from_inputs(X, rank=exact.rank)
    assert not full.truncated and full.dropped_energy < 1e-14
    np.testing.assert_array_equal(full.basis, exact.basis)
    np.testing.assert_array_equal(full.train_lower, exact.train_lower)
    a = _sample(X, y, Xt, yt, input_reduction=True)
    b = _sample(X, y, Xt, yt, input_rank=X.shape[1])
    for key in ("energy", "train_mse_raw", "test_mse_raw"):
        np.testing.assert_array_equal(a.traces[key], b.traces[key])
    assert a.input_truncation is None and b.input_truncation.kernel_change < 1e-13


def test_truncation_samples_the_posterior_of_the_projected_inputs():
    """Same seed, same chains as an exact run given X V_k V_kᵀ explicitly (test inputs unchanged)."""
    X, y, Xt, yt = _data()
    k = 8
    trunc = _sample(X, y, Xt, yt, input_rank=k)
    proj = _sample(InputReduction.from_inputs(X, rank=k).project(X), y, Xt, yt)
    assert proj.config.input_reduction and proj.config.input_rank is None and trunc.config.input_rank == k
    for key in ("energy", "train_mse_raw", "train_mse_rb", "test_mse_raw", "test_mse_rb"):
        np.testing.assert_allclose(trunc.traces[key], proj.traces[key], rtol=1e-4, atol=1e-6)
    # and not those of the exact run on X
    exact = _sample(X, y, Xt, yt)
    assert not np.allclose(trunc.traces["train_mse_raw"], exact.traces["train_mse_raw"], rtol=1e-3)


def test_accuracy_check_against_a_direct_computation():
    X, y, Xt, yt = _data()
    red = InputReduction.from_inputs(X, rank=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputTruncationWarning)
        check = truncation_check(NET, X, red, Xt)
    # direct: the erf NNGP kernel written out, K = (2/π) arcsin(2 C / sqrt((1 + 2 C_aa)(1 + 2 C_bb)))
    # with C = A Bᵀ/N_0 (priors 1), on the projected training inputs and the full test inputs
    Xk = X @ red.basis @ red.basis.T

    def k_erf(A, B):
        C = A @ B.T / A.shape[1]
        da, db = (A * A).sum(1) / A.shape[1], (B * B).sum(1) / A.shape[1]
        return 2 / np.pi * np.arcsin(2 * C / np.sqrt(np.outer(1 + 2 * da, 1 + 2 * db)))

    K, Kk = k_erf(X, X), k_erf(Xk, Xk)
    Kt, Ktk = k_erf(Xt, X), k_erf(Xt, Xk)
    np.testing.assert_allclose(check.kernel_change, np.linalg.norm(Kk - K) / np.linalg.norm(K), rtol=1e-8)
    np.testing.assert_allclose(check.cross_kernel_change, np.linalg.norm(Ktk - Kt) / np.linalg.norm(Kt), rtol=1e-8)
    np.testing.assert_allclose(K, nngp(NET, X).train, rtol=1e-10)  # the direct formula is the network's kernel
    assert check.rank == 12 and check.full_rank == 30 and check.dropped_energy == red.dropped_energy


def test_a_large_kernel_change_warns_and_the_result_carries_the_check():
    X, y, Xt, yt = _data()
    with pytest.warns(InputTruncationWarning, match="input_rank=2"), warnings.catch_warnings():
        warnings.simplefilter("ignore", finwidth.errors.NotConvergedWarning)
        res = finwidth.sample_posterior(NET, X, y, X_test=Xt, y_test=yt, input_rank=2, **RUN)
    assert res.input_truncation.worst > KERNEL_CHANGE_WARN and res.config.input_rank == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputTruncationWarning)
        warnings.simplefilter("ignore", finwidth.errors.NotConvergedWarning)
        res = finwidth.sample_posterior(NET, X, y, input_tolerance=1e-6, **RUN)  # keeps nearly all: no warning
    assert res.input_truncation.worst <= KERNEL_CHANGE_WARN


@pytest.mark.parametrize("kw, match", [
    (dict(input_rank=0), "input_rank must be a positive integer"),
    (dict(input_rank=2.5), "input_rank must be a positive integer"),
    (dict(input_rank=31), "input_rank=31 exceeds the number of input features N_0 = 30"),
    (dict(input_tolerance=0.0), "input_tolerance must be a number strictly between 0 and 1"),
    (dict(input_tolerance=1.0), "input_tolerance must be a number strictly between 0 and 1"),
    (dict(input_tolerance="0.1"), "input_tolerance must be a number strictly between 0 and 1"),
    (dict(input_rank=5, input_tolerance=0.1), "at most one of input_rank"),
    (dict(input_rank=5, input_reduction=False), "need input_reduction=True or 'auto'"),
])
def test_bad_truncation_arguments_name_the_problem(kw, match):
    X, y, *_ = _data()
    with pytest.raises(ConfigError, match=match):
        finwidth.sample_posterior(NET, X, y, **RUN, **kw)


def test_truncation_is_refused_for_the_two_layer_models():
    X, y, *_ = _data()
    with pytest.raises(ConfigError, match="not available for scaling='mean_field'"):
        finwidth.sample_posterior(NET, X, y, scaling="mean_field", input_rank=5, **RUN)
    assert check_truncation(None, None) == (None, None)
