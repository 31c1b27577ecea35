"""The renormalised-kernel theory of the two-layer CNN (finwidth.theory.conv): exact reductions, the
gradient, the patch-pair store, sum rule and limits, the pooled readout, and bad input.

References: the fully connected 1HL theory (one patch), finite differences of the action, the blocks
computed one by one, a dense scalar action minimised by scipy (pooled readout), the NNGP (C → ∞).
deepbays' CONV_1HL is compared in test_reference_deepbays_conv.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import linalg, optimize

from finwidth import NNGP, RKGP, ConvNetwork, Network
from finwidth.conv_kernels import PatchInputs, conv_nngp
from finwidth.errors import ConfigError
from finwidth.theory.conv import ConvRKGP, LocalAction
from finwidth.theory.patch_store import PatchPairStore


def _data(n_features, P=40, P_test=25, seed=0):
    rng = np.random.default_rng(seed)
    X, Xt = rng.standard_normal((P, n_features)), rng.standard_normal((P_test, n_features))
    f = lambda Z: np.tanh(Z[:, : n_features // 3].sum(1) / 2)  # noqa: E731
    return X, f(X) + 0.05 * rng.standard_normal(P), Xt, f(Xt)


OVERLAP = ConvNetwork(25, 3, 12, "erf", priors=(0.7, 1.3), image_shape=(5, 5), stride=(2, 1))  # Ñ = 6


# an exact identity between two saddle points is checked: the validity diagnostic of the FC fit (α_eff > 1) does not apply
@pytest.mark.filterwarnings("ignore::finwidth.errors.ValidityWarning")
@pytest.mark.parametrize("T", [0.05, 0.0])
@pytest.mark.parametrize("readout", ["local", "pooled"])
def test_one_patch_is_the_fully_connected_theory(T, readout):
    X, y, Xt, yt = _data(12)
    cnn = ConvRKGP(ConvNetwork(12, 12, 30, "erf", priors=(0.7, 1.3), readout=readout), T).fit(X, y)
    fcn = RKGP(Network([30], "erf", priors=(0.7, 1.3)), T).fit(X, y)
    np.testing.assert_allclose(np.ravel(cnn.qbar_), fcn.qbar_, rtol=1e-8)
    assert math.isclose(cnn.action_, fcn.action_, rel_tol=1e-10, abs_tol=1e-10)
    assert math.isclose(cnn.log_evidence_, fcn.log_evidence_, rel_tol=1e-10)
    a, b = cnn.generalization_error(Xt, yt), fcn.generalization_error(Xt, yt)
    for part in ("total", "bias", "variance"):
        assert math.isclose(getattr(a, part), getattr(b, part), rel_tol=1e-7), part


def _sym_fd(action, Q, E, h=1e-5):
    f = [action.evaluate(Q + k * h * E, gradient=False).value for k in (-2, -1, 1, 2)]
    return (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("T", [0.03, 0.0])
def test_gradient_matches_finite_differences(dtype, T):
    X, y, _, _ = _data(25, P=30)
    net = OVERLAP
    action = LocalAction(PatchPairStore(PatchInputs(net, X), dtype), y, T, net.channels, net.priors[1])
    rng = np.random.default_rng(1)
    n = net.n_patches
    M = rng.standard_normal((n, n))
    Q = np.eye(n) + 0.2 * M @ M.T / n
    pt = action.evaluate(Q)
    for _ in range(4):
        E = rng.standard_normal((n, n))
        E = E + E.T
        assert math.isclose(float(np.sum(pt.grad * E)), _sym_fd(action, Q, E), rel_tol=1e-7, abs_tol=1e-7)


def test_store_contractions_equal_the_blocks_one_by_one():
    X, _, _, _ = _data(25, P=17)
    pin = PatchInputs(OVERLAP, X)
    n = OVERLAP.n_patches
    rng = np.random.default_rng(2)
    Q = rng.standard_normal((n, n))
    Q = Q + Q.T
    B = rng.standard_normal((17, 17))
    B = B + B.T
    dense = sum(Q[i, j] * pin.block(pin, i, j) for i in range(n) for j in range(n))
    inner = np.array([[np.sum(pin.block(pin, i, j) * B) for j in range(n)] for i in range(n)])
    for dtype, rtol in (("float64", 1e-13), ("float32", 1e-6)):
        store = PatchPairStore(pin, dtype)
        i, j = store.pairs
        np.testing.assert_allclose(store.contract(Q[i, j]), dense, rtol=rtol, atol=rtol * np.abs(dense).max())
        half = np.where(i == j, 1.0, 0.5)
        got = store.pair_matrix(store.adjoint(store.pack(B)) * half)
        np.testing.assert_allclose(got, inner, rtol=rtol, atol=rtol * np.abs(inner).max())
    assert store.nbytes == n * (n + 1) // 2 * 17 * 18 // 2 * 4


@pytest.mark.parametrize("T", [0.02, 0.0])
def test_saddle_sum_rule_and_curvature(T):
    """tr Q/Ñ = 1 − (P/(CÑ)) g_R at the saddle; the answer is a minimum (positive Hessian)."""
    X, y, _, _ = _data(25)
    model = ConvRKGP(OVERLAP, T).fit(X, y)
    Q = model.qbar_
    n, P, C = OVERLAP.n_patches, y.size, OVERLAP.channels
    action = LocalAction(PatchPairStore(PatchInputs(OVERLAP, X)), y, T, C, OVERLAP.priors[1])
    pt = action.evaluate(Q)
    assert math.isclose(np.trace(Q) / n, 1.0 - P / (C * n) * pt.g_R, rel_tol=1e-8)
    assert model.residual_ <= 1e-9 and model.min_curvature_ > 0
    assert np.all(np.linalg.eigvalsh(Q) > 0) and np.allclose(Q, Q.T)
    np.testing.assert_allclose(model.q_, np.linalg.inv(Q) - np.eye(n), rtol=1e-12, atol=1e-12)
    assert abs(Q[0, 1]) > 1e-3  # off-diagonal patch pairs do renormalise (the local mechanism)


def test_infinite_channels_is_the_nngp_and_first_order_in_1_over_c():
    X, y, Xt, yt = _data(25)
    T = 0.05
    C = 10**7
    model = ConvRKGP(OVERLAP.with_channels(C), T).fit(X, y)
    n = OVERLAP.n_patches
    action = LocalAction(PatchPairStore(PatchInputs(OVERLAP, X)), y, T, C, OVERLAP.priors[1])
    D = action.evaluate(np.eye(n)).grad  # the data gradient at Q = 1
    # Q = 1 − D/C + O(1/C²)
    np.testing.assert_allclose(C * (model.qbar_ - np.eye(n)), -D, rtol=1e-5, atol=1e-5 * np.abs(D).max())
    gp = NNGP(OVERLAP, T).fit(X, y)
    a, b = model.generalization_error(Xt, yt), gp.generalization_error(Xt, yt)
    assert math.isclose(a.total, b.total, rel_tol=1e-5)


def test_pooled_readout_is_the_scalar_theory_of_the_pooled_kernel():
    X, y, Xt, yt = _data(25)
    net = ConvNetwork(**{**OVERLAP.to_dict(), "readout": "pooled", "priors": [0.7, 0.05]})
    T = 0.02
    model = ConvRKGP(net, T).fit(X, y)
    K = conv_nngp(net, X, Xt)

    def S(logq):  # dense scalar action, Cholesky, minimised by scipy
        q = math.exp(logq)
        L = linalg.cholesky(T * np.eye(y.size) + q * K.train, lower=True)
        z = linalg.solve_triangular(L, y, lower=True)
        return net.channels * (q - logq - 1) + 2 * np.sum(np.log(np.diag(L))) + z @ z

    res = optimize.minimize_scalar(S, bounds=(-5, 5), method="bounded", options={"xatol": 1e-12})
    assert model.kind_ == "conv-pooled" and model.qbar_.shape == (1,)
    assert math.isclose(model.qbar_[0], math.exp(res.x), rel_tol=1e-6)
    mean, var = model.predict(Xt, return_var=True)
    A = T * np.eye(y.size) + model.qbar_[0] * K.train
    np.testing.assert_allclose(mean, model.qbar_[0] * K.test_train @ np.linalg.solve(A, y), rtol=1e-9)
    kx = model.qbar_[0] * K.test_train
    np.testing.assert_allclose(var, model.qbar_[0] * K.test_diag - np.sum(kx * np.linalg.solve(A, kx.T).T, 1), rtol=1e-8)
    assert model.width_criterion_.finite_width_better == (model.width_criterion_.r < 1)


def test_float32_store_moves_q_by_little():
    X, y, _, _ = _data(25)
    a = ConvRKGP(OVERLAP, 0.02, kernel_dtype="float64").fit(X, y)
    b = ConvRKGP(OVERLAP, 0.02, kernel_dtype="float32").fit(X, y)
    assert (a.kernel_dtype_, b.kernel_dtype_) == ("float64", "float32") and b.store_bytes_ * 2 == a.store_bytes_
    assert np.max(np.abs(a.qbar_ - b.qbar_)) < 1e-6 * np.max(np.abs(a.qbar_))


# dispatch is checked: the validity diagnostic of the small FC refit (α_eff > 1) is beside the point
@pytest.mark.filterwarnings("ignore::finwidth.errors.ValidityWarning")
def test_rkgp_dispatches_to_the_cnn_theory():
    X, y, Xt, _ = _data(25)
    direct = ConvRKGP(OVERLAP, 0.02).fit(X, y)
    via = RKGP(OVERLAP, 0.02).fit(X, y)
    assert via.kind_ == "conv-local" and via.qbar_.shape == (6, 6)
    np.testing.assert_allclose(via.qbar_, direct.qbar_, rtol=1e-12)
    np.testing.assert_allclose(via.predict(Xt, return_var=True)[1], direct.predict(Xt, return_var=True)[1], rtol=1e-12)
    np.testing.assert_allclose(via.renormalized_kernel().train, direct.kernel_, rtol=1e-15)
    # the same estimator refitted with a fully connected network forgets the CNN
    via.network = Network([20], "erf")
    assert via.fit(X[:, :7], y).qbar_.shape == (1,)


def test_bad_input_is_named():
    X, y, Xt, _ = _data(25, P=12)
    relu = ConvNetwork(25, 5, 4, "relu")
    with pytest.raises(ConfigError, match="mean_correction=False"):
        ConvRKGP(relu, 0.1).fit(X, y)
    assert ConvRKGP(relu, 0.1, mean_correction=False).fit(X, y).qbar_.shape == (5, 5)
    with pytest.raises(ConfigError, match="not available for CNNs"):
        RKGP(OVERLAP, 0.1, mean_correction=True).fit(X, y)
    with pytest.raises(ConfigError, match="max_memory"):
        ConvRKGP(OVERLAP, 0.1, max_memory=1000).fit(X, y)
    with pytest.raises(ConfigError, match="kernel_dtype"):
        ConvRKGP(OVERLAP, 0.1, kernel_dtype="float16").fit(X, y)
    with pytest.raises(ConfigError, match="temperature"):
        ConvRKGP(OVERLAP, -1.0).fit(X, y)
    with pytest.raises(ConfigError, match="ConvNetwork"):
        ConvRKGP(Network([3]), 0.1).fit(X, y)
    with pytest.raises(ConfigError, match="features"):
        ConvRKGP(OVERLAP, 0.1).fit(X[:, :24], y)
    with pytest.raises(ConfigError, match="not fitted"):
        ConvRKGP(OVERLAP, 0.1).predict(Xt)
    with pytest.raises(ConfigError, match="singular"):
        ConvRKGP(OVERLAP, 0.0).fit(np.vstack([X, X[:1]]), np.append(y, y[0]))
    model = ConvRKGP(OVERLAP, 0.1).fit(X, y)
    with pytest.raises(ConfigError, match="return_cov"):
        model.predict(Xt, return_cov=True)
    with pytest.raises(ConfigError, match="features"):
        model.predict(Xt[:, :20])


@pytest.mark.parametrize("readout", ["local", "pooled"])
def test_width_sensitivity_is_the_derivative_in_one_over_c(readout):
    """dε_g/d(1/C) at C = ∞ against Richardson differences of the solved theory at C = 1e5, 2e5."""
    X, y, Xt, yt = _data(25)
    net = ConvNetwork(**{**OVERLAP.to_dict(), "readout": readout})
    T = 0.02
    s = ConvRKGP(net, T).fit(X, y).width_sensitivity(Xt, yt)
    inf = NNGP(net, T).fit(X, y).generalization_error(Xt, yt)
    e1, e2 = (ConvRKGP(net.with_channels(C), T).fit(X, y).generalization_error(Xt, yt) for C in (10**5, 2 * 10**5))
    for part in ("total", "bias", "variance"):
        fd = 2 * 2e5 * (getattr(e2, part) - getattr(inf, part)) - 1e5 * (getattr(e1, part) - getattr(inf, part))
        assert math.isclose(getattr(s, part), fd, rel_tol=1e-4, abs_tol=1e-6 * abs(s.total)), part
    assert s.finite_width_better == (s.total < 0)


# an exact identity between two saddle points is checked: the validity diagnostic of the FC fit (α_eff > 1) does not apply
@pytest.mark.filterwarnings("ignore::finwidth.errors.ValidityWarning")
def test_width_sensitivity_of_one_patch_at_t0_is_the_fully_connected_criterion():
    """One patch, T = 0: the bias does not move and dε_g/d(1/C) = −P (1 − r) V_∞ (r < 1 ⇔ finite width better)."""
    X, y, Xt, yt = _data(12)
    net = ConvNetwork(12, 12, 30, "erf", priors=(0.7, 1.3))
    s = ConvRKGP(net, 0.0).fit(X, y).width_sensitivity(Xt, yt)
    r = RKGP(Network([30], "erf", priors=(0.7, 1.3)), 0.0).fit(X, y).width_criterion_.r
    v_inf = NNGP(net, 0.0).fit(X, y).generalization_error(Xt, yt).variance
    assert abs(s.bias) < 1e-10 * abs(s.total)
    assert math.isclose(s.total, -y.size * (1 - r) * v_inf, rel_tol=1e-8)
    assert s.finite_width_better == (r < 1)


def test_at_t0_finite_cnns_move_the_mean_predictor():
    """Unlike the fully connected theory, the local renormalisation changes the T = 0 bias with width."""
    X, y, Xt, yt = _data(25)
    s = ConvRKGP(OVERLAP, 0.0).fit(X, y).width_sensitivity(Xt, yt)
    assert abs(s.bias) > 1e-2 * abs(s.variance)


def test_scikit_learn_contract():
    from sklearn.base import clone

    X, y, Xt, yt = _data(25)
    model = ConvRKGP(OVERLAP, 0.02, kernel_dtype="float64")
    assert model.get_params()["network__channels"] == 12 and "kernel_dtype='float64'" in repr(model)
    twin = clone(model).set_params(network__channels=40).fit(X, y)
    ref = ConvRKGP(OVERLAP.with_channels(40), 0.02).fit(X, y)
    np.testing.assert_allclose(twin.qbar_, ref.qbar_, rtol=1e-12)
    mean, var, std = twin.predict(Xt, return_var=True, return_std=True)
    np.testing.assert_allclose(std, np.sqrt(var), rtol=1e-15)
    assert math.isclose(twin.score(Xt, yt), 1 - np.sum((yt - mean) ** 2) / np.sum((yt - yt.mean()) ** 2), rel_tol=1e-12)
    assert twin.n_features_in_ == 25
    # a refit with other data replaces the cached predictor
    twin.fit(X[:30], y[:30])
    np.testing.assert_allclose(twin.predict(Xt), ConvRKGP(OVERLAP.with_channels(40), 0.02).fit(X[:30], y[:30]).predict(Xt),
                               rtol=1e-10)
