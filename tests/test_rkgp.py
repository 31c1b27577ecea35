"""RKGP (Pacelli et al.): limits, closed forms, gradients, saddle equations, dense cross-checks.

References here are independent of the solver: closed forms of the theory notes, dense linear
algebra (numpy.linalg.solve/slogdet on the P×P renormalised kernel) and central finite differences.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from finwidth import kernels
from finwidth.errors import ConditioningWarning, ConfigError, ConvergenceError
from finwidth.network import Network
from finwidth.theory import spectral
from finwidth.theory.rkgp import RKGP, NonOddSaddle

# These tests check the saddle-point equations, predictors and corrections themselves, also at small
# widths where the validity diagnostic warns that sampled networks deviate (docs/validity.md).
pytestmark = pytest.mark.filterwarnings("ignore::finwidth.errors.ValidityWarning")


def _data(P=40, N0=12, Pt=25, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, N0))
    y = scale * np.tanh(X[:, 0] + 0.5 * X[:, 1]) + 0.1 * rng.normal(size=P)
    Xt = rng.normal(size=(Pt, N0))
    yt = scale * np.tanh(Xt[:, 0] + 0.5 * Xt[:, 1])
    return X, y, Xt, yt


def _dense_gp(KR, kt, kd, y, T):
    """GP posterior mean/variance with dense solves (reference)."""
    A = KR + T * np.eye(len(y))
    mean = kt @ np.linalg.solve(A, y)
    var = kd - np.einsum("ij,ji->i", kt, np.linalg.solve(A, kt.T))
    return mean, var


def _dense_action(qbar_prod_kernel, widths, qbar, y, T):
    A = qbar_prod_kernel + T * np.eye(len(y))
    sign, logdet = np.linalg.slogdet(A)
    assert sign > 0
    return float(np.sum(widths * (qbar - np.log(qbar) - 1))) + logdet + float(y @ np.linalg.solve(A, y))


@pytest.mark.parametrize("act", ["erf", "relu", "linear", "tanh"])
def test_infinite_width_is_nngp(act):
    X, y, Xt, yt = _data()
    net = Network([10 ** 15], act, priors=(1.3, 0.7))
    m = RKGP(net, 0.05, mean_correction=False).fit(X, y)
    assert np.allclose(m.qbar_, 1.0, atol=1e-12)
    K = kernels.nngp(net, X, Xt)
    mean, var = _dense_gp(K.train, K.test_train, K.test_diag, y, 0.05)
    pm, pv = m.predict(Xt, return_var=True)
    assert np.allclose(pm, mean, rtol=1e-9, atol=1e-10)
    assert np.allclose(pv, var, rtol=1e-8, atol=1e-10)
    # the log evidence at infinite width is the GP log marginal likelihood
    A = K.train + 0.05 * np.eye(len(y))
    ref = -0.5 * y @ np.linalg.solve(A, y) - 0.5 * np.linalg.slogdet(A)[1] - 0.5 * len(y) * math.log(2 * math.pi)
    assert m.log_evidence_ == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("act,N,T", [("erf", 30, 0.01), ("erf", 200, 1.0), ("linear", 20, 0.1), ("relu", 15, 0.3)])
def test_one_layer_saddle_and_dense_predictor(act, N, T):
    X, y, Xt, yt = _data(seed=1)
    net = Network([N], act, priors=(1.0, 2.0))
    m = RKGP(net, T, mean_correction=False).fit(X, y)
    K = kernels.nngp(net, X, Xt)
    qb = m.qbar_[0]
    # stationarity of the dense action S(Q̄) by central finite differences in log Q̄
    h = 1e-5
    S = lambda q: _dense_action(q * K.train, np.array([N]), np.array([q]), y, T)  # noqa: E731
    dS = (S(qb * math.exp(h)) - S(qb * math.exp(-h))) / (2 * h)
    assert abs(dS) < 1e-6 * (N + len(y))
    assert m.action_ == pytest.approx(S(qb), rel=1e-10)
    mean, var = _dense_gp(qb * K.train, qb * K.test_train, qb * K.test_diag, y, T)
    pm, pv = m.predict(Xt, return_var=True)
    assert np.allclose(pm, mean, rtol=1e-8, atol=1e-10) and np.allclose(pv, var, rtol=1e-7, atol=1e-10)
    err = m.generalization_error(Xt, yt)
    assert err.total == pytest.approx(np.mean((yt - mean) ** 2) + np.mean(var), rel=1e-8)
    assert err.bias == pytest.approx(np.mean((yt - mean) ** 2), rel=1e-8)


@pytest.mark.parametrize("lam1,N", [(1.0, 20), (0.5, 60), (3.0, 10)])
def test_T0_closed_form_one_layer(lam1, N):
    X, y, Xt, yt = _data(P=30, N0=40, seed=2)
    net = Network([N], "erf", priors=(1.0, lam1))
    K = kernels.nngp(net, X, Xt)
    r = float(y @ np.linalg.solve(K.train, y)) / len(y)
    a = len(y) / N
    q_ref = 0.5 * ((1 - a) + math.sqrt((1 - a) ** 2 + 4 * a * r))
    m = RKGP(net, 0.0).fit(X, y)
    assert m.qbar_[0] == pytest.approx(q_ref, rel=1e-12)
    assert m.width_criterion_.r == pytest.approx(r, rel=1e-9)
    assert m.width_criterion_.pi_t0 == pytest.approx(q_ref, rel=1e-12)
    assert m.width_criterion_.student_t_factor == pytest.approx((N + len(y) * r - 2) / (N + len(y) - 2))
    # T → 0 continuity of order parameter and predictions
    m_small = RKGP(net, 1e-10).fit(X, y)
    assert m_small.qbar_[0] == pytest.approx(q_ref, rel=1e-6)
    assert np.allclose(m_small.predict(Xt), m.predict(Xt), rtol=1e-5, atol=1e-7)
    # at T = 0 the mean is the width-independent interpolant, the variance Q̄ × V_NNGP
    mean, var = _dense_gp(K.train, K.test_train, K.test_diag, y, 0.0)
    pm, pv = m.predict(Xt, return_var=True)
    assert np.allclose(pm, mean, rtol=1e-7, atol=1e-9)
    assert np.allclose(pv, q_ref * var, rtol=1e-6, atol=1e-9)


def test_width_criterion_direction():
    """At T = 0: finite width beats infinite width iff r < 1 (labels scaled to both sides)."""
    X, y, Xt, yt = _data(P=30, N0=40, seed=3)
    for scale in (0.3, 3.0):
        net = Network([15], "erf")
        m = RKGP(net, 0.0).fit(X, scale * y)
        inf = RKGP(net.with_widths([10 ** 15]), 0.0).fit(X, scale * y)
        e_fin = m.generalization_error(Xt, scale * yt).total
        e_inf = inf.generalization_error(Xt, scale * yt).total
        assert m.width_criterion_.finite_width_better == (e_fin < e_inf)
        assert (m.width_criterion_.r < 1) == (scale == 0.3)


@pytest.mark.parametrize("act", ["relu", "linear"])
@pytest.mark.parametrize("L", [2, 3])
def test_nested_equals_product_for_homogeneous(act, L):
    X, y, Xt, yt = _data(seed=4)
    net = Network([25, 60, 40][:L], act, priors=[1.1, 0.8, 1.5, 0.9][: L + 1])
    p = RKGP(net, 0.05, renormalization="product").fit(X, y)
    n = RKGP(net, 0.05, renormalization="nested").fit(X, y)
    assert np.allclose(p.qbar_, n.qbar_, rtol=1e-7)
    assert np.allclose(p.predict(Xt), n.predict(Xt), rtol=1e-7, atol=1e-10)
    assert p.action_ == pytest.approx(n.action_, rel=1e-10)


def test_product_L1_equals_one_layer_and_deep_unequal_widths():
    X, y, Xt, yt = _data(seed=5)
    net = Network([30], "erf")
    assert np.allclose(RKGP(net, 0.1, renormalization="nested").fit(X, y).qbar_,
                       RKGP(net, 0.1).fit(X, y).qbar_, rtol=1e-12)
    # unequal widths: N_l (Q̄_l − 1) is the same for every layer (product form)
    deep = RKGP(Network([10, 40, 160], "erf"), 0.1).fit(X, y)
    c = np.array([10, 40, 160]) * (deep.qbar_ - 1)
    assert np.allclose(c, c[0], rtol=1e-9)


def test_product_gradient_matches_finite_differences():
    X, y, _, _ = _data(seed=6)
    K = kernels.nngp(Network([5, 5], "erf"), X).train
    basis = spectral.eigenbasis(K)
    y2 = basis.project(y) ** 2
    widths = np.array([20.0, 70.0])
    for T in (0.3, 0.0):
        q = np.array([1.3, 0.8])
        g = spectral.product_gradient(q, widths, basis.values, y2, T)
        for l in range(2):
            e = np.zeros(2)
            e[l] = 1e-6
            fd = (spectral.product_action(q + e, widths, basis.values, y2, T)
                  - spectral.product_action(q - e, widths, basis.values, y2, T)) / 2e-6
            assert g[l] == pytest.approx(fd, rel=1e-6)


def test_nested_gradient_matches_finite_differences_and_saddle():
    X, y, Xt, _ = _data(P=30, seed=7)
    net = Network([20, 35, 50], "erf", priors=(1.0, 0.9, 1.2, 0.8), bias=(0.1, 0.2, 0.0, 0.3))
    m = RKGP(net, 0.1, renormalization="nested")
    widths = np.array(net.widths, dtype=float)
    x = np.log(np.array([1.2, 0.9, 1.4]))
    S, g, _ = m._nested_value_grad(x, X, y, widths)
    for l in range(3):
        e = np.zeros(3)
        e[l] = 1e-6
        fd = (m._nested_value_grad(x + e, X, y, widths)[0] - m._nested_value_grad(x - e, X, y, widths)[0]) / 2e-6
        assert g[l] == pytest.approx(fd, rel=1e-6, abs=1e-7)
    m.fit(X, y)
    assert m.residual_ < 1e-7
    assert m.n_factorizations_ <= 40
    # dense reference: the returned kernel and predictor
    KR = m.renormalized_kernel(Xt)
    mean, var = _dense_gp(KR.train, KR.test_train, KR.test_diag, y, 0.1)
    pm, pv = m.predict(Xt, return_var=True)
    assert np.allclose(pm, mean, rtol=1e-8, atol=1e-10) and np.allclose(pv, var, rtol=1e-7, atol=1e-10)



def _dense_nested_action(net, X, y, T, qbar):
    """S(Q̄) of the nested form written out with full matrices (no recursion code of the library)."""
    act = net.activation
    K = X @ X.T / (net.priors[0] * X.shape[1])
    for l in range(1, net.depth + 1):
        d = np.diag(K).copy()
        K = qbar[l - 1] / net.priors[l] * act.kappa(d[:, None], K, d[None, :])
        np.fill_diagonal(K, qbar[l - 1] / net.priors[l] * act.kappa_diag(d))
    widths = np.array(net.widths, dtype=float)
    return _dense_action(K, widths, np.asarray(qbar), y, T)


@pytest.mark.parametrize("L, T", [(2, 1e-3), (3, 1e-3), (3, 0.0)])
def test_nested_erf_few_factorisations_and_dense_stationarity(L, T):
    """The quasi-Newton solver needs few Cholesky factorisations, and its answer is a stationary
    point of the nested action evaluated densely (central differences in log Q̄)."""
    X, y, Xt, _ = _data(P=120, N0=30, seed=13)
    net = Network([60, 90, 75][:L], "erf")
    m = RKGP(net, T, renormalization="nested").fit(X, y)
    assert m.residual_ <= 1e-9
    assert m.n_factorizations_ <= 15
    x = np.log(m.qbar_)
    for l in range(L):
        e = np.zeros(L)
        e[l] = 1e-5
        fd = (_dense_nested_action(net, X, y, T, np.exp(x + e)) - _dense_nested_action(net, X, y, T, np.exp(x - e))) / 2e-5
        assert abs(fd) < 1e-5 * net.widths[l] * m.qbar_[l]
    assert m.action_ == pytest.approx(_dense_nested_action(net, X, y, T, m.qbar_), rel=1e-10)


def test_nested_prediction_basis_is_built_by_the_first_predict(monkeypatch):
    X, y, Xt, _ = _data(P=50, seed=14)
    calls = []
    original = spectral.eigenbasis
    monkeypatch.setattr(spectral, "eigenbasis", lambda K, **kw: calls.append(K.shape) or original(K, **kw))
    m = RKGP(Network([30, 40], "erf"), 0.05, renormalization="nested").fit(X, y)
    assert len(calls) == 0  # criterion and product start: the NNGP spectrum without eigenvectors
    first = m.predict(Xt)
    assert len(calls) == 1
    np.testing.assert_array_equal(m.predict(Xt), first)
    assert len(calls) == 1


def test_nested_erf_differs_from_product():
    X, y, _, _ = _data(seed=8, scale=2.0)
    net = Network([15, 15], "erf")
    p = RKGP(net, 0.01).fit(X, y)
    n = RKGP(net, 0.01, renormalization="nested").fit(X, y)
    assert not np.allclose(p.qbar_, n.qbar_, rtol=1e-3)
    assert abs(n.qbar_[0] - n.qbar_[1]) > 1e-4  # layers differ in the nested form


# ---------------------------------------------------------------------------------------------
# non-odd (mean-corrected) theory
# ---------------------------------------------------------------------------------------------


def _nonodd_dense(net, X, y, T, qbar, q, Xt=None):
    lay = kernels.nngp(net, X, Xt, all_layers=True)
    lam1 = net.priors[1]
    act = net.activation
    m = act.mean(np.diag(lay[0].train)) / math.sqrt(lam1)
    c = qbar - 1 / (1 + q)
    KR = qbar * lay[-1].train - c * np.outer(m, m)
    N = net.widths[0]
    A = KR + T * np.eye(len(y))
    S = N * (-qbar * q + math.log1p(q)) + np.linalg.slogdet(A)[1] + y @ np.linalg.solve(A, y)
    if Xt is None:
        return S
    mt = act.mean(lay[0].test_diag) / math.sqrt(lam1)
    return S, KR, qbar * lay[-1].test_train - c * np.outer(mt, m), qbar * lay[-1].test_diag - c * mt ** 2


@pytest.mark.parametrize("act,T,N", [("relu", 0.05, 20), ("relu", 0.0, 30), ("gelu", 0.2, 15), ("relu", 1.0, 200)])
def test_nonodd_saddle_against_dense_action(act, T, N):
    X, y, Xt, yt = _data(P=35, N0=40, seed=9)
    net = Network([N], act, priors=(1.0, 0.7), bias=None)
    m = RKGP(net, T).fit(X, y)
    assert m.kind_ == "nonodd"
    qb, q = m.qbar_[0], m.q_[0]
    f = lambda a, b: _nonodd_dense(net, X, y, T, a, b)  # noqa: E731
    h = 1e-5
    g1 = (f(qb + h, q) - f(qb - h, q)) / (2 * h)
    g2 = (f(qb, q + h) - f(qb, q - h)) / (2 * h)
    assert abs(g1) < 1e-5 * N and abs(g2) < 1e-5 * N
    assert m.action_ == pytest.approx(f(qb, q), rel=1e-9)
    # a genuine saddle: the Hessian of S(Q̄, Q) is indefinite (not a minimum)
    H = np.empty((2, 2))
    H[0, 0] = (f(qb + h, q) - 2 * f(qb, q) + f(qb - h, q)) / h ** 2
    H[1, 1] = (f(qb, q + h) - 2 * f(qb, q) + f(qb, q - h)) / h ** 2
    H[0, 1] = H[1, 0] = (f(qb + h, q + h) - f(qb + h, q - h) - f(qb - h, q + h) + f(qb - h, q - h)) / (4 * h * h)
    ev = np.linalg.eigvalsh(H)
    assert ev[0] < 0 < ev[1]
    # the predictor is the GP with the dense mean-corrected kernel
    _, KR, kt, kd = _nonodd_dense(net, X, y, T, qb, q, Xt)
    mean, var = _dense_gp(KR, kt, kd, y, T)
    pm, pv = m.predict(Xt, return_var=True)
    assert np.allclose(pm, mean, rtol=1e-7, atol=1e-9) and np.allclose(pv, var, rtol=1e-6, atol=1e-9)



def test_nonodd_T0_saddle_far_from_the_fixed_starts():
    """T = 0, labels along the mean direction and tiny against the kernel (the problem of issue 17:
    no stationary point was found from the fixed starts): the saddle sits at Q̄ ~ 1e-7, Q ~ 1e7 and is
    reached from the plain theory's saddle. Checked on the dense action in log variables."""
    rng = np.random.default_rng(31)
    X = 20.0 * rng.normal(size=(215, 85))
    y = np.full(215, 0.03)
    net = Network([95], "relu", priors=(0.7, 0.9))
    m = RKGP(net, 0.0).fit(X, y)
    qb, q = m.qbar_[0], m.q_[0]
    assert m.kind_ == "nonodd" and qb < 1e-5 and q > 1e5 and m.residual_ <= 1e-9
    f = lambda a, b: _nonodd_dense(net, X, y, 0.0, math.exp(a), math.expm1(b))  # noqa: E731
    a, b, h = math.log(qb), math.log1p(q), 1e-5
    assert m.action_ == pytest.approx(f(a, b), rel=1e-9)
    for g in ((f(a + h, b) - f(a - h, b)) / (2 * h), (f(a, b + h) - f(a, b - h)) / (2 * h)):
        assert abs(g) < 1e-5 * 95  # the terms of each equation are O(N) = O(95)


def test_T0_labels_outside_the_range_of_the_kernel_are_explained():
    """T = 0, linear kernel of rank 3 < P, labels orthogonal to its range, α ρ ≥ 1: no saddle point
    exists (the action falls without bound as Q̄ → 0); the error says so. With α ρ < 1: Q̄ = 1 − α ρ."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3))
    Q, _ = np.linalg.qr(X)
    y = rng.normal(size=40)
    y -= Q @ (Q.T @ y)
    with pytest.raises(ConvergenceError, match="no component in the range of the kernel"):
        RKGP(Network([2], "linear"), 0.0).fit(X, y)
    assert RKGP(Network([10], "linear"), 0.0).fit(X, y).qbar_[0] == pytest.approx(1 - 4 * 3 / 40, rel=1e-9)


def test_near_singular_fit_warns():
    """N_0 = 2 with T = 1e-6: the kernel's spectrum falls below ε k_max where the labels still weigh,
    so the fit warns (ConditioningWarning) and reports the sensitivity; a well-posed fit does not."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 2))
    y = np.sign(X[:, 0] + 0.3 * rng.normal(size=200))
    with pytest.warns(ConditioningWarning, match="near-singular"):
        m = RKGP(Network([100], "erf"), 1e-6).fit(X, y)
    assert m.roundoff_sensitivity_ > 1e-6
    X, y, _, _ = _data(P=60, N0=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        m = RKGP(Network([30], "erf"), 1e-2).fit(X, y)
    assert m.roundoff_sensitivity_ < 1e-9

def test_nonodd_gradient_matches_finite_differences():
    X, y, _, _ = _data(P=30, seed=10)
    net = Network([25], "relu")
    lay = kernels.nngp(net, X, all_layers=True)
    basis = spectral.eigenbasis(lay[-1].train)
    mt = basis.project(net.activation.mean(np.diag(lay[0].train)))
    nz = NonOddSaddle(basis.values, basis.project(y), mt, 0.1, 25)
    for qb, q in ((1.2, -0.1), (0.7, 0.6)):
        g = nz.gradient(qb, q)
        h = 1e-6
        assert g[0] == pytest.approx((nz.action(qb + h, q) - nz.action(qb - h, q)) / (2 * h), rel=1e-6)
        assert g[1] == pytest.approx((nz.action(qb, q + h) - nz.action(qb, q - h)) / (2 * h), rel=1e-6)


def test_nonodd_reduces_to_plain_without_mean_and_defaults():
    X, y, _, _ = _data(seed=11)
    assert RKGP(Network([20], "relu"), 0.1).fit(X, y).mean_correction_ is True
    assert RKGP(Network([20, 20], "relu"), 0.1).fit(X, y).mean_correction_ is False
    assert RKGP(Network([20], "erf"), 0.1).fit(X, y).mean_correction_ is False
    plain = RKGP(Network([20], "relu"), 0.1, mean_correction=False).fit(X, y)
    corr = RKGP(Network([20], "relu"), 0.1).fit(X, y)
    assert plain.kind_ == "product" and corr.kind_ == "nonodd"
    # the mean term is a small correction (theory notes §5), but not zero
    assert 0 < abs(corr.qbar_[0] - plain.qbar_[0]) < 0.2 * plain.qbar_[0]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"renormalization": "bogus"}, "renormalization"),
        ({"mean_correction": True, "network": Network([5], "erf")}, "odd"),
        ({"mean_correction": True, "network": Network([5, 5], "relu")}, "one hidden layer"),
    ],
)
def test_bad_configuration(kwargs, match):
    args = {"network": Network([5], "relu"), "temperature": 0.1, **kwargs}
    net, T = args.pop("network"), args.pop("temperature")
    model = RKGP(net, T, **args)  # stores only; fit validates
    X, y, _, _ = _data()
    with pytest.raises(ConfigError, match=match):
        model.fit(X, y)


def test_bad_data():
    X, y, Xt, _ = _data()
    m = RKGP(Network([5], "erf"), 0.1)
    with pytest.raises(ConfigError, match="39 entries but there are 40 inputs"):
        m.fit(X, y[:-1])
    bad = X.copy()
    bad[3, 2] = np.inf
    with pytest.raises(ConfigError, match="NaN or inf"):
        m.fit(bad, y)
    with pytest.raises(ConfigError, match="2-D"):
        m.fit(X[:, 0], y)
    with pytest.raises(ConfigError, match="not fitted"):
        m.predict(Xt)
    m.fit(X, y)
    with pytest.raises(ConfigError, match="features"):
        m.predict(Xt[:, :3])
    with pytest.raises(ConfigError, match="NaN or inf"):
        m.generalization_error(Xt, np.full(len(Xt), np.nan))


def test_singular_kernel_at_T0():
    X, y, Xt, yt = _data(P=40, N0=5, seed=12)  # linear kernel of rank 5 < P
    net = Network([10, 10], "linear")
    with pytest.raises(ConfigError, match="null eigenvalues"):
        RKGP(net, 0.0, renormalization="nested").fit(X, y)
    m = RKGP(net, 0.0).fit(X, y)  # product form: mode-by-mode T → 0 limit
    assert m.log_evidence_ is None
    with pytest.warns(ConditioningWarning, match="near-singular"):  # rank 5 < P at T = 1e-9: said, not silent
        small = RKGP(net, 1e-9).fit(X, y)
    assert np.allclose(small.qbar_, m.qbar_, rtol=1e-5)
    assert np.allclose(small.predict(Xt), m.predict(Xt), rtol=1e-5, atol=1e-7)
