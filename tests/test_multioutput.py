"""D outputs: the fast eigenbasis theory against an independent dense DP×DP action, closed forms and symmetry.

The independent reference is ``tests/fixtures/deepbays_multiclass/independent.py``: dense Cholesky of
A = T + 𝒬 ⊗ K, finite-difference derivatives in the natural variables (the upper triangle of each layer's
matrix), and for L > 1 the full layered action with the Wishart-step product M Mᵀ, M = Q_L^{1/2}⋯Q_1^{1/2}
(no reduction to one matrix, no eigenbasis). Nothing there is shared with finwidth.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib

import numpy as np
import pytest

from finwidth import NNGP, RKGP, Network
from finwidth.errors import ConfigError, ConvergenceError
from finwidth.theory import spectral
from finwidth.theory.bpkr import BPKR
from finwidth.theory.multioutput import MultiOutputAction, solve_multioutput
from finwidth.theory.spd import check_gradient

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "deepbays_multiclass"
_spec = importlib.util.spec_from_file_location("multiclass_independent", FIXTURES / "independent.py")
IND = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(IND)


def _data(P=30, D=3, N0=9, Pt=12, seed=0):
    rng = np.random.default_rng(seed)
    X, Xt = rng.standard_normal((P, N0)), rng.standard_normal((Pt, N0))
    W = rng.standard_normal((N0, D))
    mix = np.linalg.qr(rng.standard_normal((D, D)))[0] + 0.5 * np.eye(D)
    f = lambda Z: np.tanh(Z @ W / np.sqrt(N0)) @ mix  # noqa: E731
    return X, f(X) + 0.05 * rng.standard_normal((P, D)), Xt, f(Xt)


def _kernel(net, X, Xt=None):
    from finwidth import kernels

    b = kernels.nngp(net, X, Xt)
    return b.train, b.test_train, b.test_diag


# ----------------------------------------------------------------------------------------------
# the fast action against the dense one
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("widths, T", [([15], 0.2), ([15], 1e-3), ([12, 12], 0.3), ([10, 25], 0.05)])
def test_fast_action_and_gradient_equal_the_dense_ones(widths, T):
    X, Y, _, _ = _data()
    net = Network(widths, "erf", priors=[0.9] + [1.3] * len(widths))
    K = _kernel(net, X)[0]
    basis = spectral.eigenbasis(K)
    act = MultiOutputAction(basis.values, basis.project(Y), T, widths)
    rng = np.random.default_rng(1)
    B = rng.standard_normal((3, 3))
    Qn = np.eye(3) + 0.2 * (B + B.T)
    r = min(widths) / np.array(widths, float)
    layers = [np.eye(3) + rl * (Qn - np.eye(3)) for rl in r]
    S, G, _ = act(Qn)
    assert S == pytest.approx(IND.action(layers, K, Y, T, widths), rel=1e-11)
    assert check_gradient(act, Qn).max_rel_error < 1e-8
    if len(widths) == 1:  # natural variables: ∂S/∂Q_aa = G_aa, ∂S/∂Q_ab (a < b) = 2 G_ab
        fd = IND.fd_gradient(lambda v: IND.action(IND.from_vars(v, 3, 1), K, Y, T, widths), IND.to_vars([Qn]))
        iu = np.triu_indices(3)
        analytic = np.where(iu[0] == iu[1], 1.0, 2.0) * G[iu]
        np.testing.assert_allclose(analytic, fd, rtol=1e-7, atol=1e-7 * np.max(np.abs(fd)))


@pytest.mark.parametrize("L", [1, 2, 3])
def test_analytic_hessian(L):
    """The Hessian in 𝒬 that certifies a minimum, against 5-point second differences of the action
    along 𝒬 + tE (equal widths: Q_n = 𝒬^{1/L})."""
    from finwidth.theory.spd import svec

    X, Y, _, _ = _data()
    net = Network([14] * L, "erf")
    K = _kernel(net, X)[0]
    basis = spectral.eigenbasis(K)
    act = MultiOutputAction(basis.values, basis.project(Y), 0.1, [14] * L)
    rng = np.random.default_rng(L)
    O = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    Qp = (O * np.array([0.6, 1.0, 1.7])) @ O.T

    def S(Q):
        w, V = np.linalg.eigh(Q)
        return act((V * w ** (1 / L)) @ V.T)[0]

    w, V = np.linalg.eigh(Qp)
    H, Vh = act.hessian((V * w ** (1 / L)) @ V.T)
    for _ in range(3):
        E = rng.standard_normal((3, 3))
        E = 0.1 * (E + E.T)
        h = 1e-3
        f = [S(Qp + k * h * Vh @ E @ Vh.T) for k in (-2, -1, 0, 1, 2)]
        fd = (-f[0] + 16 * f[1] - 30 * f[2] + 16 * f[3] - f[4]) / (12 * h * h)
        assert svec(E) @ H @ svec(E) == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("widths, act, T", [([20], "erf", 0.1), ([8], "relu", 0.01), ([14, 14], "erf", 0.2),
                                            ([9, 30], "relu", 0.05),
                                            pytest.param([12, 12, 12], "linear", 0.1, marks=pytest.mark.slow)])
def test_solution_is_a_minimum_of_the_dense_layered_action(widths, act, T):
    """Every layer's matrix is stationary for the full layered action (no reduction): Newton step tiny,
    Hessian positive. With unequal widths this checks the reduction Q_l = 1 + C/N_l as well."""
    X, Y, Xt, Yt = _data(P=24)
    net = Network(widths, act, priors=[1.1] + [0.8] * len(widths))
    m = RKGP(net, T, mean_correction=False).fit(X, Y)
    assert m.qbar_.shape == (len(widths), 3, 3) and m.residual_ <= 1e-9
    assert m._multi.min_curvature > 0  # the analytic curvature check
    K = _kernel(net, X)[0]
    cert = IND.certify(list(m.qbar_), K, Y, T, widths)
    assert cert["max_rel_newton_step"] < 1e-7
    assert cert["hessian_eig_min"] > 0
    for Ql in m.qbar_:  # all layer matrices commute
        np.testing.assert_allclose(Ql @ m.qbar_[0], m.qbar_[0] @ Ql, atol=1e-12)
    prod = np.linalg.multi_dot(list(m.qbar_)) if len(widths) > 1 else m.qbar_[0]
    np.testing.assert_allclose(m.renormalization_, prod, rtol=1e-12, atol=1e-12)
    assert m.action_ == pytest.approx(IND.action(list(m.qbar_), K, Y, T, widths), rel=1e-11)


@pytest.mark.parametrize("T", [0.3, 1e-4])
def test_predictor_equals_the_dense_one(T):
    X, Y, Xt, Yt = _data()
    net = Network([12], "erf", priors=[0.7, 1.4])
    m = RKGP(net, T).fit(X, Y)
    mean, var, cov = m.predict(Xt, return_var=True, return_cov=True)
    K, kx, kd = _kernel(net, X, Xt)
    mean_d, cov_d = IND.predictor(m.renormalization_, K, kx, kd, Y, T)
    scale = np.max(np.abs(cov_d))
    np.testing.assert_allclose(mean, mean_d, rtol=1e-9, atol=1e-10 * np.max(np.abs(mean_d)))
    np.testing.assert_allclose(cov, cov_d, rtol=1e-7, atol=1e-9 * scale)
    np.testing.assert_allclose(var, np.diagonal(cov_d, axis1=1, axis2=2), rtol=1e-7, atol=1e-9 * scale)
    err = m.generalization_error(Xt, Yt)
    b, v = IND.errors(m.renormalization_, K, kx, kd, Y, Yt, T)
    np.testing.assert_allclose(err.bias_per_output, b, rtol=1e-8)
    np.testing.assert_allclose(err.variance_per_output, v, rtol=1e-7)
    assert err.total == pytest.approx(float(np.sum(b + v)), rel=1e-8)
    assert err.accuracy == pytest.approx(float(np.mean(np.argmax(mean_d, 1) == np.argmax(Yt, 1))))


# ----------------------------------------------------------------------------------------------
# D = 1, symmetries, limits
# ----------------------------------------------------------------------------------------------
def test_one_output_is_exactly_the_scalar_theory():
    X, Y, Xt, Yt = _data(D=1)
    net = Network([15], "erf")
    a = RKGP(net, 0.1).fit(X, Y[:, 0])
    b = RKGP(net, 0.1).fit(X, Y)  # shape (P, 1)
    np.testing.assert_array_equal(a.qbar_, b.qbar_)
    for ra, rb in zip(a.predict(Xt, return_var=True), b.predict(Xt, return_var=True)):
        np.testing.assert_array_equal(ra, rb)
    assert tuple(a.generalization_error(Xt, Yt[:, 0])) == tuple(b.generalization_error(Xt, Yt))
    assert b.n_outputs_ == 1 and a.qbar_.shape == (1,)
    # the matrix solver with D = 1 reproduces the scalar one (tests the fast action itself)
    for widths in ([15], [10, 30]):
        K = _kernel(Network(widths, "erf"), X)[0]
        basis = spectral.eigenbasis(K)
        yt = basis.project(Y)
        scalar = spectral.solve_product(basis, yt[:, 0], 0.1, widths)
        matrix = solve_multioutput(basis, yt, 0.1, widths)
        np.testing.assert_allclose(matrix.qbar[:, 0, 0], scalar.qbar, rtol=1e-9)
        assert matrix.action == pytest.approx(scalar.action, rel=1e-12)


def test_rotating_the_outputs_rotates_everything():
    """S(Y O, Oᵀ 𝒬 O) = S(Y, 𝒬) for orthogonal O: the theory has no preferred output basis."""
    X, Y, Xt, _ = _data(D=3)
    O = np.linalg.qr(np.random.default_rng(5).standard_normal((3, 3)))[0]
    net = Network([10], "erf")
    a = RKGP(net, 0.2).fit(X, Y)
    b = RKGP(net, 0.2).fit(X, Y @ O)
    np.testing.assert_allclose(b.renormalization_, O.T @ a.renormalization_ @ O, atol=1e-8)
    ma, ca = a.predict(Xt, return_cov=True)
    mb, cb = b.predict(Xt, return_cov=True)
    np.testing.assert_allclose(mb, ma @ O, atol=1e-9)
    np.testing.assert_allclose(cb, np.einsum("ia,pij,jb->pab", O, ca, O), atol=1e-9)
    assert b.action_ == pytest.approx(a.action_, rel=1e-11)


def test_infinite_width_is_the_nngp_with_independent_outputs():
    X, Y, Xt, Yt = _data()
    gp = NNGP(Network([10], "erf"), 0.1).fit(X, Y)
    m = RKGP(Network([10**12], "erf"), 0.1).fit(X, Y)
    np.testing.assert_allclose(m.renormalization_, np.eye(3), atol=1e-9)
    mg, vg, cg = gp.predict(Xt, return_var=True, return_cov=True)
    mr, vr = m.predict(Xt, return_var=True)
    np.testing.assert_allclose(mr, mg, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(vr, vg, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(cg, vg[:, :, None] * np.eye(3))
    # NNGP with D columns = D single-output NNGPs
    for a in range(3):
        single = NNGP(Network([10], "erf"), 0.1).fit(X, Y[:, a])
        ms, vs = single.predict(Xt, return_var=True)
        np.testing.assert_allclose(mg[:, a], ms, rtol=1e-12)
        np.testing.assert_allclose(vg[:, a], vs, rtol=1e-12)
    singles = sum(NNGP(Network([10], "erf"), 0.1).fit(X, Y[:, a]).log_evidence_ for a in range(3))
    assert gp.log_evidence_ == pytest.approx(singles, rel=1e-12)
    e = gp.generalization_error(Xt, Yt)
    assert e.total == pytest.approx(sum(NNGP(Network([10], "erf"), 0.1).fit(X, Y[:, a])
                                        .generalization_error(Xt, Yt[:, a]).total for a in range(3)), rel=1e-12)


def _t0_mode(alpha, r, L):
    """Positive root of q − 1 + α − α r q^{−L} = 0 (BPKR notes A.5, equal widths), by bisection in log q."""
    lo, hi = -50.0, 50.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        q = math.exp(mid)
        if q - 1 + alpha - alpha * r * q ** (-L) > 0:
            hi = mid
        else:
            lo = mid
    return math.exp(0.5 * (lo + hi))


@pytest.mark.parametrize("L, N", [(1, 20), (1, 60), (3, 25)])
def test_linear_t0_closed_form(L, N):
    """BPKR notes A.7 at T = 0 (P < N_0, linear, equal widths): 𝒬 shares the eigenvectors of
    R = Yᵀ K⁻¹ Y / P and each mode solves the scalar equation with its eigenvalue; at L = 1 the
    closed form q = [(1 − α) + √((1 − α)² + 4 α r)]/2. The predictive covariance is 𝒬 V_GP(x)."""
    X, Y, Xt, _ = _data(P=30, N0=40)
    net = Network([N] * L, "linear", priors=[1.2] + [0.9] * L)
    b = BPKR(net, 0.0).fit(X, Y)
    K, kx, kd = _kernel(net, X, Xt)
    P, alpha = X.shape[0], X.shape[0] / N
    r, V = np.linalg.eigh(Y.T @ np.linalg.solve(K, Y) / P)
    if L == 1:
        q = 0.5 * ((1 - alpha) + np.sqrt((1 - alpha) ** 2 + 4 * alpha * r))
    else:
        q = np.array([_t0_mode(alpha, ra, L) for ra in r])
    expected = (V * q**L) @ V.T
    np.testing.assert_allclose(b.renormalization_, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.qbar_[0], (V * q) @ V.T, rtol=1e-9, atol=1e-12)
    mean, cov = b.predict(Xt, return_cov=True)
    vgp = kd - np.sum(kx * np.linalg.solve(K, kx.T).T, axis=1)
    np.testing.assert_allclose(mean, kx @ np.linalg.solve(K, Y), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cov, vgp[:, None, None] * expected, rtol=1e-6, atol=1e-10)
    # the correlation of the outputs is that of 𝒬, at every test point
    d = np.sqrt(np.diag(expected))
    np.testing.assert_allclose(b.output_correlation(Xt), np.broadcast_to(expected / np.outer(d, d), cov.shape),
                               atol=1e-6)
    np.testing.assert_allclose(b.output_correlation(Xt, average=True), expected / np.outer(d, d), atol=1e-6)
    # continuity: the T → 0 limit of the finite-T solver
    small = BPKR(net, 1e-7).fit(X, Y)
    np.testing.assert_allclose(small.renormalization_, expected, rtol=1e-4)


def test_bpkr_weight_norms_and_readout():
    X, Y, _, _ = _data(P=25, N0=30)
    net = Network([20, 35], "linear", priors=[1.0, 0.7, 1.5])
    b = BPKR(net, 0.2).fit(X, Y)
    P = X.shape[0]
    G = b.g_
    for l, N in enumerate(net.widths):  # Q_l = 1 − α_l 𝒢 for every layer
        np.testing.assert_allclose(b.qbar_[l], np.eye(3) - P / N * G, atol=1e-12)
    norms = b.weight_norms()
    dims = [30, 20, 35, 3]
    for j in range(3):
        assert norms[j] == pytest.approx((dims[j] * dims[j + 1] - P * np.trace(G)) / net.priors[j], rel=1e-12)
    np.testing.assert_allclose(b.readout_second_moment(), 35 * b.qbar_[1] / 1.5, rtol=1e-12)
    # its trace is the readout's Frobenius norm
    assert np.trace(b.readout_second_moment()) == pytest.approx(norms[-1], rel=1e-10)
    with pytest.raises(ConfigError, match="one output"):
        b.hidden_kernels()


def test_starts_agree_and_no_spurious_minimum():
    """From the identity, the scalar solution and a random SPD matrix the solver reaches one 𝒬."""
    from finwidth.theory.spd import minimize_spd

    X, Y, _, _ = _data(P=40, D=4)
    net = Network([8], "erf")
    m = RKGP(net, 0.05).fit(X, Y)
    assert len(m.roots_) == 1
    K = _kernel(net, X)[0]
    basis = spectral.eigenbasis(K)
    act = MultiOutputAction(basis.values, basis.project(Y), 0.05, [8])
    B = np.random.default_rng(3).standard_normal((4, 4))
    sol = minimize_spd(act, B @ B.T + 0.1 * np.eye(4))
    np.testing.assert_allclose(sol.Q, m.qbar_[0], rtol=1e-7, atol=1e-9)
    assert sol.min_curvature > 0


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------
def test_bad_targets_and_settings():
    X, Y, Xt, Yt = _data()
    net = Network([10], "erf")
    bad = Y.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ConfigError, match="NaN or inf .*row 3, output 1"):
        RKGP(net, 0.1).fit(X, bad)
    with pytest.raises(ConfigError, match="entries but there are"):
        RKGP(net, 0.1).fit(X, Y[:-1])
    with pytest.raises(ConfigError, match="D = 0"):
        RKGP(net, 0.1).fit(X, Y[:, :0])
    with pytest.raises(ConfigError, match="mean_correction=False"):
        RKGP(Network([10], "relu"), 0.1).fit(X, Y)
    RKGP(Network([10], "relu"), 0.1, mean_correction=False).fit(X, Y)
    with pytest.raises(ConfigError, match="product"):
        RKGP(Network([10, 10], "erf"), 0.1, renormalization="nested").fit(X, Y)
    m = RKGP(net, 0.1).fit(X, Y)
    with pytest.raises(ConfigError, match="y_test must have shape"):
        m.generalization_error(Xt, Yt[:, :2])
    with pytest.raises(ConfigError, match="rows"):
        m.generalization_error(Xt, Yt[:-1])
    with pytest.raises(ConfigError, match="renormalization_"):
        m.renormalized_kernel(Xt)


def test_centred_one_hot_at_zero_temperature_is_a_clear_error():
    """Rows of centred one-hot targets sum to zero: the direction (1, …, 1) carries no labels and at T = 0
    its order parameter collapses when rank K exceeds the width. T > 0 is fine."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 6))
    Y = np.eye(3)[rng.integers(0, 3, 30)] - 1 / 3
    with pytest.raises(ConvergenceError, match="centred one-hot"):
        RKGP(Network([10], "erf"), 0.0).fit(X, Y)
    m = RKGP(Network([10], "erf"), 0.01).fit(X, Y)
    assert m.width_criterion_.pi_t0 is None and m.width_criterion_.finite_width_better is None
    ones = np.ones(3) / np.sqrt(3)
    assert ones @ m.renormalization_ @ ones < 0.1  # the label-free direction is strongly suppressed
