"""AdaptiveKernel: limits, gradients, stationarity of the AK free energy, an independent linear solver,
the CNN path, the comparison with exact BPKR for linear networks, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finwidth import NNGP, RKGP, Network
from finwidth.activations import get_activation
from finwidth.convnet import ConvNetwork
from finwidth.errors import ConfigError, ConvergenceError
from finwidth.theory import adaptive_eos
from finwidth.theory.adaptive import AdaptiveKernel, covariance_summary, patch_kernel


@pytest.fixture(scope="module")
def teacher():
    rng = np.random.default_rng(0)
    N0 = 6
    w = rng.standard_normal(N0)
    X = rng.standard_normal((24, N0))
    Xt = rng.standard_normal((15, N0))
    return X, np.tanh(X @ w / math.sqrt(N0)), Xt, np.tanh(Xt @ w / math.sqrt(N0)), w


@pytest.mark.parametrize("act", ["erf", "relu"])
def test_standard_scaling_infinite_width_is_nngp(teacher, act):
    X, y, Xt, _, _ = teacher
    net = Network([10**7], act, priors=(1.3, 0.8))
    ak = AdaptiveKernel(net, 0.05, scaling="standard").fit(X, y)
    gp = NNGP(net, 0.05).fit(X, y)
    np.testing.assert_allclose(ak.nngp_kernel_, gp.kernel_, rtol=1e-12, atol=1e-14)
    m1, v1 = ak.predict(Xt, return_var=True)
    m2, v2 = gp.predict(Xt, return_var=True)
    # the data term of Σ⁻¹ is O(1/N) = 1e-7 relative
    np.testing.assert_allclose(m1, m2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-6)
    assert ak.adaptation_ < 1e-5


@pytest.mark.parametrize("act", ["erf", "relu", "tanh", "linear"])
def test_kernel_gradient_matches_finite_differences(act):
    rng = np.random.default_rng(1)
    a = get_activation(act)
    Z = rng.standard_normal((7, 2, 3))
    G = rng.standard_normal((3, 3))
    # pre-activation variances of order 0.1–1, the regime of the sampled networks in these tests
    Sigma = 0.2 * (G @ G.T / 3 + 0.2 * np.eye(3))
    M = rng.standard_normal((7, 7))
    M = M + M.T
    grad = adaptive_eos.kernel_gradient(a, Sigma, Z, M)
    E = rng.standard_normal((3, 3))
    E = E + E.T
    eps = 1e-6

    def f(S):
        return float(np.sum(M * patch_kernel(a, S, Z)))

    fd = (f(Sigma + eps * E) - f(Sigma - eps * E)) / (2 * eps)
    assert fd == pytest.approx(float(np.sum(grad * E)), rel=1e-6, abs=1e-8)


def test_cnn_kernel_closed_forms():
    """Linear: Q̄_NNGP = X Xᵀ/(λ_0 λ_1 N_0). erf: (1/(λ_1 Ñ)) Σ_i (2/π) arcsin(2c12/sqrt((1+2c11)(1+2c22)))."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((9, 12))
    y = rng.standard_normal(9)
    lin = AdaptiveKernel(ConvNetwork(12, 4, 10**6, "linear", priors=(2.0, 0.5)), 0.1, scaling="standard").fit(X, y)
    np.testing.assert_allclose(lin.nngp_kernel_, X @ X.T / (2.0 * 0.5 * 12), rtol=1e-12)
    erf = AdaptiveKernel(ConvNetwork(12, 4, 10**6, "erf", priors=(2.0, 0.5)), 0.1, scaling="standard").fit(X, y)
    Z = X.reshape(9, 3, 4)
    ref = np.zeros((9, 9))
    for i in range(3):
        c = Z[:, i] @ Z[:, i].T / (2.0 * 4)
        d = np.diag(c)
        ref += 2 / np.pi * np.arcsin(np.clip(2 * c / np.sqrt(np.outer(1 + 2 * d, 1 + 2 * d)), -1, 1))
    np.testing.assert_allclose(erf.nngp_kernel_, ref / (0.5 * 3), rtol=1e-12)


def _free_energy(Sigma, X, y, act, N, va, a, T):
    """F(Σ) written out directly from its definition (full N_0 × N_0 Σ, no input reduction)."""
    c = X @ Sigma @ X.T
    d = np.diag(c)
    Phi = act.kappa(d[:, None], c, d[None, :])
    Q = N * va * Phi
    A = Q + T * np.eye(len(y))
    sign, logdetA = np.linalg.slogdet(A)
    _, logdetS = np.linalg.slogdet(a * Sigma)
    return 0.5 * N * (a * np.trace(Sigma) - logdetS - Sigma.shape[0]) + 0.5 * y @ np.linalg.solve(A, y) + 0.5 * logdetA


@pytest.mark.parametrize("scaling", ["mean_field", "standard"])
@pytest.mark.parametrize("act", ["erf", "relu"])
def test_solution_is_stationary_point_of_free_energy(teacher, act, scaling):
    X, y, _, _, _ = teacher
    X = X[:, :4] if act == "relu" else X  # P > N_0 (full-rank span) and P < N_0 are both covered
    N, T = 40, 0.01
    ak = AdaptiveKernel(Network([N], act, priors=(1.0, 0.5)), T, scaling=scaling).fit(X, y)
    assert ak.residual_ <= 1e-9
    N0 = X.shape[1]
    va = 1.0 / (0.5 * (N ** 2 if scaling == "mean_field" else N))
    act_o = get_activation(act)
    F = lambda S: _free_energy(S, X, y, act_o, N, va, 1.0 * N0, T)  # noqa: E731
    assert F(ak.sigma_) == pytest.approx(ak.free_energy_, rel=1e-10)
    rng = np.random.default_rng(3)
    S0 = np.eye(N0) / N0
    for _ in range(3):
        E = rng.standard_normal((N0, N0))
        E = (E + E.T) / N0
        eps = 1e-5
        d_sol = (F(ak.sigma_ + eps * E) - F(ak.sigma_ - eps * E)) / (2 * eps)
        d_prior = (F(S0 + eps * E) - F(S0 - eps * E)) / (2 * eps)
        assert abs(d_sol) < 1e-5 * abs(d_prior)
    # the adapted solution has a lower free energy than the prior (GP) covariance
    assert ak.free_energy_ < F(S0)


def test_linear_matches_independent_fixed_point_iteration(teacher):
    """Linear σ (Gaussian ansatz exact): damped iteration of Σ⁻¹ = a I − v_a Xᵀ M X on the full
    N_0 × N_0 matrix, written here from the equations."""
    X, y, Xt, _, _ = teacher
    N, T, lam0, lam1 = 30, 0.02, 1.0, 0.3
    ak = AdaptiveKernel(Network([N], "linear", priors=(lam0, lam1)), T).fit(X, y)
    N0 = X.shape[1]
    a, va = lam0 * N0, 1.0 / (lam1 * N * N)
    S = np.eye(N0) / a
    for _ in range(3000):
        Q = N * va * X @ S @ X.T
        A = Q + T * np.eye(len(y))
        t = np.linalg.solve(A, y)
        M = np.outer(t, t) - np.linalg.inv(A)
        S_new = np.linalg.inv(a * np.eye(N0) - va * X.T @ M @ X)
        S = 0.7 * S + 0.3 * S_new
    np.testing.assert_allclose(ak.sigma_, S, rtol=1e-7, atol=1e-12)
    mean = (N * va * Xt @ S @ X.T) @ np.linalg.solve(N * va * X @ S @ X.T + T * np.eye(len(y)), y)
    np.testing.assert_allclose(ak.predict(Xt), mean, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ak.discrepancy_, T * np.linalg.solve(N * va * X @ S @ X.T + T * np.eye(len(y)), y),
                               rtol=1e-7, atol=1e-12)



def _eos_residual(ak, X, y):
    """‖Σ⁻¹ − a I + v_a ∇_Σ Tr[M Φ(Σ)]‖_F / ‖a I‖_F on the full N_0 × N_0 Σ, written from the equations
    (dense solves; the gradient by central differences of Tr[M Φ(Σ)] along each symmetric unit direction)."""
    act = ak.network.activation
    N, T, S = ak.width, ak.temperature, ak.sigma_
    N0 = X.shape[1]
    a = ak.network.priors[0] * N0
    va = 1.0 / (ak.network.priors[1] * N ** 2)  # mean-field scaling

    def phi(S):
        c = X @ S @ X.T
        d = np.diag(c)
        k = act.kappa(d[:, None], c, d[None, :])
        np.fill_diagonal(k, act.kappa_diag(d))
        return k

    A = N * va * phi(S) + T * np.eye(len(y))
    t = np.linalg.solve(A, y)
    M = np.outer(t, t) - np.linalg.inv(A)
    grad = np.zeros((N0, N0))
    for i in range(N0):
        for j in range(i, N0):
            E = np.zeros((N0, N0))
            E[i, j] = E[j, i] = 1.0 if i == j else 0.5
            h = 1e-6
            grad[i, j] = grad[j, i] = (np.sum(M * phi(S + h * E)) - np.sum(M * phi(S - h * E))) / (2 * h)
    R = np.linalg.inv(S) - a * np.eye(N0) + va * grad
    return np.linalg.norm(R) / (a * math.sqrt(N0))


@pytest.mark.parametrize("act", ["erf", "relu", "linear"])
def test_fast_path_agrees_with_newton_krylov_continuation(teacher, act, monkeypatch):
    """The Anderson fixed point (default) and the Newton–Krylov width continuation (the fallback,
    forced here) reach the same Σ and predictor; the residual is re-verified from the equations."""
    X, y, Xt, _, _ = teacher
    net = Network([40], act, priors=(1.0, 0.3))
    fast = AdaptiveKernel(net, 0.01).fit(X, y)
    assert fast.solver_ == "anderson" and fast.anneal_path_ == [] and fast.residual_ <= 1e-9
    monkeypatch.setattr(adaptive_eos, "MAX_FIXED_POINT", 0)
    slow = AdaptiveKernel(net, 0.01).fit(X, y)
    assert slow.solver_ == "newton-krylov" and len(slow.anneal_path_) > 3 and slow.residual_ <= 1e-9
    # both are verified to a relative residual of 1e-9 (the fast path aims at 1e-11)
    np.testing.assert_allclose(fast.sigma_, slow.sigma_, rtol=0, atol=1e-9 * np.abs(slow.sigma_).max())
    np.testing.assert_allclose(fast.predict(Xt), slow.predict(Xt), rtol=1e-8, atol=1e-12)
    assert fast.free_energy_ == pytest.approx(slow.free_energy_, rel=1e-12)
    assert fast.n_evaluations_ < slow.n_evaluations_ / 3
    assert _eos_residual(fast, X, y) < 1e-7  # finite-difference gradient: ~1e-9 is its own noise


def test_stalled_fast_path_falls_back_to_the_continuation(teacher, monkeypatch):
    X, y, Xt, _, _ = teacher
    net = ConvNetwork(6, 3, 30, "erf", priors=(1.0, 0.2))
    ref = AdaptiveKernel(net, 0.01).fit(X, y)
    monkeypatch.setattr(adaptive_eos, "MAX_FIXED_POINT", 3)  # the fixed point is cut off before it converges
    ak = AdaptiveKernel(net, 0.01).fit(X, y)
    assert ref.solver_ == "anderson" and ak.solver_ == "newton-krylov"
    np.testing.assert_allclose(ak.sigma_, ref.sigma_, rtol=0, atol=1e-10 * np.abs(ref.sigma_).max())
    assert ak.n_evaluations_ > ak.n_iterations_

def test_one_patch_cnn_equals_fcn(teacher):
    X, y, Xt, _, _ = teacher
    for scaling in ("mean_field", "standard"):
        fcn = AdaptiveKernel(Network([25], "erf", priors=(1.2, 0.4)), 0.01, scaling=scaling).fit(X, y)
        cnn = AdaptiveKernel(ConvNetwork(6, 6, 25, "erf", priors=(1.2, 0.4)), 0.01, scaling=scaling).fit(X, y)
        np.testing.assert_allclose(cnn.sigma_, fcn.sigma_, rtol=1e-7, atol=1e-12)
        m1, v1, c1 = fcn.predict(Xt, return_var=True, return_cov=True)
        m2, v2, c2 = cnn.predict(Xt, return_var=True, return_cov=True)
        np.testing.assert_allclose(m1, m2, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(c1, c2, rtol=1e-6, atol=1e-10)
        np.testing.assert_allclose(np.diag(c1), v1, rtol=1e-10, atol=1e-14)


def test_fcn_test_points_outside_training_span(teacher):
    """P < N_0: Σ adapts only in the span of X. Test covariance must use the full Σ (out-of-span
    components of two test points overlap); compare with a kernel built from sigma_ directly."""
    X, y, Xt, _, _ = teacher
    X3 = X[:3]
    ak = AdaptiveKernel(Network([20], "erf"), 0.01).fit(X3, y[:3])
    a = get_activation("erf")
    S = ak.sigma_
    c = Xt @ S @ Xt.T
    d = np.diag(c)
    K = a.kappa(d[:, None], c, d[None, :]) / (1.0 * 20)
    np.fill_diagonal(K, a.kappa_diag(d) / 20)
    np.testing.assert_allclose(ak.adapted_kernel(Xt), K, rtol=1e-10)
    ct = Xt @ S @ X3.T
    dt = np.diag(X3 @ S @ X3.T)
    Ks = a.kappa(d[:, None], ct, dt[None, :]) / 20
    mean = Ks @ ak.tbar_
    np.testing.assert_allclose(ak.predict(Xt), mean, rtol=1e-10)
    np.testing.assert_allclose(ak.preactivation_variance(Xt)[:, 0], d, rtol=1e-12)


def _noisy_linear_teacher(N0, P, Pt, seed=0):
    """y = w·x/sqrt(N0) + 0.5 ξ on P Gaussian inputs; Pt test inputs with noiseless targets."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(N0)
    X = rng.standard_normal((P, N0))
    y = X @ w / math.sqrt(N0) + 0.5 * rng.standard_normal(P)
    Xt = rng.standard_normal((Pt, N0))
    return X, y, Xt, Xt @ w / math.sqrt(N0)


def test_linear_mean_field_approaches_bpkr_like_one_over_n():
    """Mean-field linear network = standard network with readout precision λ_1 N (exact map); BPKR is
    exact there. The AK mean predictor converges to it like 1/N (theory notes §C.6)."""
    X, y, Xt, _ = _noisy_linear_teacher(N0=40, P=20, Pt=50)
    diffs = []
    for N in (50, 200, 800):
        T = 5.0 / N
        ak = AdaptiveKernel(Network([N], "linear", priors=(1.0, 0.01)), T).fit(X, y)
        bp = RKGP(Network([N], "linear", priors=(1.0, 0.01 * N)), T).fit(X, y)
        diffs.append(np.sqrt(np.mean((ak.predict(Xt) - bp.predict(Xt)) ** 2)))
    rates = [diffs[i] / diffs[i + 1] for i in range(2)]
    assert all(3.0 < r < 5.5 for r in rates), (diffs, rates)  # 4 for an exact 1/N law


@pytest.mark.slow
def test_linear_standard_scaling_misses_the_kernel_renormalisation():
    """Standard scaling, proportional regime (theory notes §C.6): at α = 2 AK is worse than the GP
    while exact BPKR is better; at α = 0.5 AK ≈ GP while BPKR differs visibly."""
    X, y, Xt, yt = _noisy_linear_teacher(N0=120, P=60, Pt=200)
    P = X.shape[0]
    out = {}
    for alpha in (0.5, 2.0):
        net = Network([int(P / alpha)], "linear", priors=(1.0, 0.2))
        out[alpha] = [m(net, 0.1, **kw).fit(X, y).generalization_error(Xt, yt)
                      for m, kw in ((AdaptiveKernel, {"scaling": "standard"}), (RKGP, {}), (NNGP, {}))]
    ak, bp, gp = out[2.0]
    assert ak.total > gp.total > 1.5 * bp.total
    assert ak.bias > gp.bias > bp.bias
    ak, bp, gp = out[0.5]
    assert abs(ak.total - gp.total) < 0.01 * gp.total
    assert abs(bp.total - gp.total) > 0.2 * gp.total


def test_covariance_summary():
    S = np.diag([1.0, 3.0, 2.0])
    s = covariance_summary(S, [0.0, 1.0, 0.0])
    assert s["top_eigenvalue"] == pytest.approx(3.0)
    assert s["alignment"] == pytest.approx(1.0)
    assert s["rayleigh"] == pytest.approx(3.0)
    assert covariance_summary(S, [1.0, 0.0, 0.0])["alignment"] == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ConfigError, match="direction"):
        covariance_summary(S, [0.0, 0.0, 0.0])


def test_errors(teacher, monkeypatch):
    X, y, Xt, _, _ = teacher
    with pytest.raises(ConfigError, match="one hidden layer"):
        AdaptiveKernel(Network([5, 5]), 0.1).fit(X, y)
    with pytest.raises(ConfigError, match="biases"):
        AdaptiveKernel(Network([5], bias=1.0), 0.1).fit(X, y)
    with pytest.raises(ConfigError, match="scaling"):
        AdaptiveKernel(Network([5]), 0.1, scaling="ntk").fit(X, y)
    with pytest.raises(ConfigError, match="temperature"):
        AdaptiveKernel(Network([5]), -0.1).fit(X, y)
    with pytest.raises(ConfigError, match="Network or ConvNetwork"):
        AdaptiveKernel("net", 0.1).fit(X, y)
    ak = AdaptiveKernel(Network([5]), 0.1)
    with pytest.raises(ConfigError, match="not fitted"):
        ak.predict(Xt)
    with pytest.raises(ConfigError, match="NaN"):
        ak.fit(np.full_like(X, np.nan), y)
    with pytest.raises(ConfigError):
        ak.fit(X, y[:-1])
    ak.fit(X, y)
    with pytest.raises(ConfigError, match="features"):
        ak.predict(Xt[:, :3])
    # T = 0 with a singular kernel (linear network, P > N_0): no admissible point
    with pytest.raises(ConvergenceError, match="temperature"):
        AdaptiveKernel(Network([5], "linear"), 0.0).fit(X, y)
    # a solver denied its iterations must fail loudly, with the residual
    monkeypatch.setattr(adaptive_eos, "MAX_FIXED_POINT", 0)
    monkeypatch.setattr(adaptive_eos, "MAX_NEWTON", 0)
    with pytest.raises(ConvergenceError) as info:
        AdaptiveKernel(Network([5], "erf"), 0.01).fit(X, y)
    assert info.value.residual is not None and info.value.residual > 1e-9
