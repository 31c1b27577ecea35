"""NNGP estimator and the shared GP helpers, against dense solves, scipy and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import Kernel

from finwidth import NNGP, Network
from finwidth.errors import ConfigError, ConvergenceError
from finwidth.kernels import nngp
from finwidth.theory.gp import ErrorDecomposition, factorize, generalization_error, gp_fit, gp_posterior, gp_predict


class _Precomputed(Kernel):
    """sklearn kernel over integer index inputs, looking up a precomputed Gram matrix."""

    def __init__(self, gram):
        self.gram = gram

    def __call__(self, X, Y=None, eval_gradient=False):
        i = X[:, 0].astype(int)
        j = i if Y is None else Y[:, 0].astype(int)
        return self.gram[np.ix_(i, j)]

    def diag(self, X):
        i = X[:, 0].astype(int)
        return self.gram[i, i]

    def is_stationary(self):
        return False

    @property
    def hyperparameters(self):
        return []


def _data(P=40, Pt=15, N0=6, seed=0):
    rng = np.random.default_rng(seed)
    X, Xt = rng.standard_normal((P, N0)), rng.standard_normal((Pt, N0))
    w = rng.standard_normal(N0)
    return X, np.tanh(X @ w) + 0.1 * rng.standard_normal(P), Xt, np.tanh(Xt @ w)


@pytest.mark.parametrize("act,depth", [("erf", 1), ("relu", 2), ("tanh", 1), ("linear", 3)])
@pytest.mark.parametrize("T", [0.5, 0.01])
def test_matches_dense_solve_scipy_and_sklearn(act, depth, T):
    X, y, Xt, yt = _data()
    net = Network([7] * depth, act, priors=[1.0] + [0.8] * depth, bias=[0.1] * (depth + 1))
    gp = NNGP(net, T).fit(X, y)
    mean, var, cov = gp.predict(Xt, return_var=True, return_cov=True)
    P = X.shape[0]
    G = nngp(net, np.vstack([X, Xt])).train
    np.testing.assert_allclose(gp.kernel_, G[:P, :P], rtol=1e-12, atol=1e-14)
    # the GP algebra is checked on the estimator's own kernel blocks (kernels: test_kernels.py)
    K = gp.kernel_
    Ks, kd, Ktt = gp.test_kernels(Xt, full=True)
    np.testing.assert_allclose(kd, np.diag(Ktt), rtol=1e-13)
    G = np.block([[K, Ks.T], [Ks, Ktt]])
    A = K + T * np.eye(P)
    sol = np.linalg.solve(A, np.column_stack([y, Ks.T]))
    np.testing.assert_allclose(gp.alpha_, sol[:, 0], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(mean, Ks @ sol[:, 0], rtol=1e-8, atol=1e-10)
    dense_cov = Ktt - Ks @ sol[:, 1:]
    np.testing.assert_allclose(cov, dense_cov, atol=1e-8 * np.abs(Ktt).max())
    np.testing.assert_allclose(var, np.diag(dense_cov), atol=1e-8 * np.abs(Ktt).max())
    assert math.isclose(gp.log_evidence_, multivariate_normal(np.zeros(P), A).logpdf(y), rel_tol=1e-9)
    # scikit-learn with the precomputed joint Gram matrix over index inputs, alpha = T
    skl = GaussianProcessRegressor(kernel=_Precomputed(G), alpha=T, optimizer=None, normalize_y=False)
    skl.fit(np.arange(P)[:, None].astype(float), y)
    m_s, s_s = skl.predict(np.arange(P, P + len(Xt))[:, None].astype(float), return_std=True)
    np.testing.assert_allclose(mean, m_s, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(np.sqrt(var), s_s, rtol=1e-6, atol=1e-7)
    assert math.isclose(gp.log_evidence_, skl.log_marginal_likelihood_value_, rel_tol=1e-9)


def test_generalization_error_is_bias_plus_variance():
    X, y, Xt, yt = _data()
    gp = NNGP(Network([5], "erf"), 0.1).fit(X, y)
    err = gp.generalization_error(Xt, yt)
    mean, var = gp.predict(Xt, return_var=True)
    assert isinstance(err, ErrorDecomposition)
    assert math.isclose(err.bias, float(np.mean((yt - mean) ** 2)), rel_tol=1e-14)
    assert math.isclose(err.variance, float(np.mean(var)), rel_tol=1e-14)
    assert math.isclose(err.total, err.bias + err.variance, rel_tol=1e-15)
    total, bias, variance = err
    assert (total, bias, variance) == (err.total, err.bias, err.variance)
    np.testing.assert_allclose(err.variance_per_point, var)
    assert set(err.as_dict()) == {"total", "bias", "variance"}


def test_temperature_zero_interpolates():
    X, y, Xt, _ = _data(P=25)
    gp = NNGP(Network([5, 5], "erf"), 0.0).fit(X, y)
    assert gp.rank_ == 25
    mean, var = gp.predict(X, return_var=True)
    np.testing.assert_allclose(mean, y, atol=1e-8)
    np.testing.assert_allclose(var, 0.0, atol=1e-8)
    # T = 0 is the T → 0⁺ limit: a tiny temperature gives the same predictor
    m0, v0 = gp.predict(Xt, return_var=True)
    m1, v1 = NNGP(Network([5, 5], "erf"), 1e-11).fit(X, y).predict(Xt, return_var=True)
    np.testing.assert_allclose(m0, m1, atol=1e-6)
    np.testing.assert_allclose(v0, v1, atol=1e-6)
    K = gp.kernel_
    assert math.isclose(gp.log_evidence_, multivariate_normal(np.zeros(25), K).logpdf(y), rel_tol=1e-8)


def test_temperature_zero_singular_kernel_uses_the_pseudo_inverse_limit():
    rng = np.random.default_rng(3)
    X, Xt = rng.standard_normal((30, 4)), rng.standard_normal((6, 4))  # linear kernel: rank 4 < P
    y = rng.standard_normal(30)
    net = Network([3], "linear")
    gp = NNGP(net, 0.0).fit(X, y)
    assert gp.rank_ == 4
    assert gp.log_evidence_ == -math.inf  # y has a component outside range(K)
    m0, v0 = gp.predict(Xt, return_var=True)
    # the T → 0⁺ limit is least squares, K_* K⁺ y = x*·w_ls, and, since X has full column
    # rank N_0, zero posterior variance of the linear function everywhere
    w = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(m0, Xt @ w, atol=1e-10)
    np.testing.assert_allclose(v0, 0.0, atol=1e-12)
    m1 = NNGP(net, 1e-7).fit(X, y).predict(Xt)
    np.testing.assert_allclose(m0, m1, atol=1e-5)
    # labels inside range(K): the log density of the degenerate Gaussian on that range
    y_in = X @ rng.standard_normal(4)
    gp_in = NNGP(net, 0.0).fit(X, y_in)
    K = gp_in.kernel_
    wv, U = np.linalg.eigh(K)
    keep = wv > 1e-9 * wv.max()
    c = U[:, keep].T @ y_in
    ref = -0.5 * np.sum(c**2 / wv[keep]) - 0.5 * np.sum(np.log(wv[keep])) - 0.5 * keep.sum() * math.log(2 * math.pi)
    assert math.isclose(gp_in.log_evidence_, ref, rel_tol=1e-8)


def test_shared_helpers_directly():
    rng = np.random.default_rng(8)
    A = rng.standard_normal((12, 12))
    K = A @ A.T
    Ks = rng.standard_normal((3, 12)) @ A.T
    kd = np.full(3, 100.0)
    y = rng.standard_normal(12)
    mean, var = gp_posterior(K, Ks, kd, y, 0.3)
    np.testing.assert_allclose(mean, Ks @ np.linalg.solve(K + 0.3 * np.eye(12), y), rtol=1e-9)
    fit = gp_fit(K, y, 0.3)
    assert fit.factor.method == "cholesky"
    np.testing.assert_allclose(gp_predict(fit, Ks), mean)
    f0 = factorize(K, 0.0)
    assert f0.method == "eigh" and f0.full_rank
    assert math.isclose(f0.logdet, np.linalg.slogdet(K)[1], rel_tol=1e-10)
    with pytest.raises(ConfigError, match="positive semi-definite"):
        factorize(-K, 0.0)
    with pytest.raises(ConfigError, match="k_test_diag"):
        gp_predict(fit, Ks, return_var=True)
    with pytest.raises(ConfigError, match="K_test"):
        gp_predict(fit, Ks, kd, return_cov=True)
    # a kernel that is not PSD shows up as a negative posterior variance, not silently
    with pytest.raises(ConvergenceError, match="negative posterior variance"):
        gp_predict(fit, Ks, np.zeros(3), return_var=True)
    with pytest.raises(ConfigError, match="var must be non-negative"):
        generalization_error([0.0], [0.0], [-1.0])


def test_packed_fit_is_the_unpacked_fit_in_one_array():
    """gp_fit(packed=True): the factor shares K's array and every number is that of the unpacked fit;
    K itself is kept exactly (strict upper triangle and saved diagonal)."""
    rng = np.random.default_rng(11)
    A = rng.standard_normal((700, 40))  # > one row block of the 1-norm
    K = A @ A.T / 40
    Y = rng.standard_normal((700, 2))
    Ks, kd = rng.standard_normal((4, 40)) @ A.T / 40, np.full(4, 3.0)
    Kt = np.full((4, 4), 0.5) + 3.0 * np.eye(4)
    ref = gp_fit(K, Y, 0.05)
    work = K.copy()
    fit = gp_fit(work, Y, 0.05, packed=True)
    assert fit.kernel is not None and np.shares_memory(fit.factor._chol, work)
    np.testing.assert_array_equal(fit.alpha, ref.alpha)  # the same LAPACK factorisation of the same numbers
    assert fit.log_evidence == ref.log_evidence
    for a, b in zip(gp_predict(fit, Ks, kd, K_test=Kt, return_var=True, return_cov=True),
                    gp_predict(ref, Ks, kd, K_test=Kt, return_var=True, return_cov=True)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fit.kernel.full(), K)
    np.testing.assert_allclose(fit.kernel.matmul(Y), K @ Y, rtol=1e-13, atol=1e-13 * np.abs(K @ Y).max())
    assert fit.kernel.norm1() == pytest.approx(np.abs(K).sum(axis=0).max(), rel=1e-14)
    np.testing.assert_array_equal(fit.kernel.restore(), K)
    with pytest.raises(ConfigError, match="C-contiguous"):
        gp_fit(np.asfortranarray(K + 0.01 * np.triu(np.ones_like(K), 1)), Y, 0.05, packed=True)


def test_packed_fit_falls_back_when_cholesky_fails():
    """Cholesky fails (rank 3 at a negligible T): K is restored in place and the eigh path runs as unpacked."""
    rng = np.random.default_rng(12)
    B = rng.standard_normal((30, 3))
    K = B @ B.T
    y = B @ rng.standard_normal(3)
    ref = gp_fit(K, y, 1e-300)
    work = K.copy()
    fit = gp_fit(work, y, 1e-300, packed=True)
    assert fit.kernel is None and fit.factor.method == "eigh" and ref.factor.method == "eigh"
    np.testing.assert_array_equal(work, K)
    np.testing.assert_array_equal(fit.alpha, ref.alpha)


def test_nngp_keeps_one_matrix_and_kernel_is_rebuilt():
    X, y, Xt, _ = _data(P=30, Pt=4)
    gp = NNGP(Network([5], "erf"), 0.1).fit(X, y)
    K = nngp(Network([5], "erf"), X).train
    assert gp.fit_.kernel is not None and gp._kernel is None
    np.testing.assert_array_equal(gp.kernel_, K)
    assert gp.kernel_ is not gp.kernel_  # a new array per access, documented
    ref = gp_fit(K, y, 0.1)
    Ks, kd, _ = gp.test_kernels(Xt)
    np.testing.assert_array_equal(gp.predict(Xt, return_var=True), gp_predict(ref, Ks, kd, return_var=True))
    assert not hasattr(NNGP(Network([5], "erf"), 0.1), "kernel_")
    gp0 = NNGP(Network([5], "erf"), 0.0).fit(X, y)  # T = 0: eigh path, the kernel kept as it is
    assert gp0.fit_.kernel is None
    np.testing.assert_array_equal(gp0.kernel_, K)


def test_validation_errors():
    X, y, Xt, yt = _data(P=10, Pt=3)
    net = Network([5], "erf")
    for bad_T in (-0.1, float("nan"), float("inf"), "hot", "0.1", True):
        with pytest.raises(ConfigError, match="temperature"):
            NNGP(net, bad_T).fit(X, y)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Network"):
        NNGP("erf", 0.1).fit(X, y)  # type: ignore[arg-type]
    gp = NNGP(net, 0.1)
    with pytest.raises(ConfigError, match="not fitted"):
        gp.predict(Xt)
    with pytest.raises(ConfigError, match="entries but there are"):
        gp.fit(X, y[:-1])
    ybad = y.copy()
    ybad[2] = np.inf
    with pytest.raises(ConfigError, match="NaN or inf"):
        gp.fit(X, ybad)
    with pytest.raises(ConfigError, match="D = 0"):
        gp.fit(X, np.ones((10, 0)))
    with pytest.raises(ConfigError, match="n_outputs"):
        gp.fit(X, np.ones((10, 2, 1)))
    gp.fit(X, y[:, None])  # (P, 1) is accepted
    with pytest.raises(ConfigError, match="features"):
        gp.predict(np.ones((2, 7)))
    with pytest.raises(ConfigError, match="y_test"):
        gp.generalization_error(Xt, yt[:-1])
