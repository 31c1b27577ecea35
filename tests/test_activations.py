"""Activation registry, closed-form kernel maps, derivatives and the quadrature path.

References are independent of the code under test: Monte Carlo over Gaussian pairs (fixed
seeds, tolerance 5 standard errors), scipy adaptive 1-D quadrature, central finite differences,
and textbook identities (diagonals, homogeneity, Isserlis).
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from finwidth.activations import Activation, QuadratureActivation, available, get_activation, register_activation
from finwidth.errors import ConfigError, ConvergenceError

ALL = ["linear", "erf", "relu", "quadratic", "sign", "step", "tanh", "gelu"]
SMOOTH = ["linear", "erf", "relu", "quadratic", "tanh", "gelu"]  # finite derivatives everywhere
COVS = [(1.3, 0.4, 0.7), (0.5, -0.45, 0.6), (2.0, 1.9, 2.1), (0.2, 0.0, 3.0)]


def _mc_pair(act: Activation, c11: float, c12: float, c22: float, n: int, seed: int):
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(np.array([[c11, c12], [c12, c22]]))
    z = rng.standard_normal((n, 2)) @ L.T
    v = act.numpy(z[:, 0]) * act.numpy(z[:, 1])
    return v.mean(), v.std(ddof=1) / math.sqrt(n)


def test_registry_contents_and_aliases():
    assert set(ALL) <= set(available())
    assert get_activation("ReLU") is get_activation("relu")
    assert get_activation("id") is get_activation("linear")
    act = get_activation("erf")
    assert get_activation(act) is act
    assert act.odd and not get_activation("relu").odd
    assert get_activation("relu").homogeneous_degree == 1
    assert get_activation("erf").homogeneous_degree is None


def test_unknown_activation_names_the_available_ones():
    with pytest.raises(ConfigError, match="available: .*erf.*relu"):
        get_activation("swish-ish")
    with pytest.raises(ConfigError):
        get_activation(3)  # type: ignore[arg-type]


def test_register_refuses_duplicates_unless_overwrite():
    act = Activation.from_callable("cube_test", lambda x: x**3, lambda x: x**3, odd=True, order=20)
    register_activation(act)
    try:
        other = Activation.from_callable("cube_test", lambda x: x**3, lambda x: x**3, odd=True, order=20)
        with pytest.raises(ConfigError, match="already registered"):
            register_activation(other)
        register_activation(other, overwrite=True)
        assert get_activation("cube_test") is other
        # registered activations pickle by name (process pools)
        assert pickle.loads(pickle.dumps(get_activation("erf"))) is get_activation("erf")
    finally:
        from finwidth import activations as mod

        mod._REGISTRY.pop("cube_test", None)
    with pytest.raises(ConfigError):
        register_activation("erf")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ALL)
def test_numpy_and_torch_agree(name):
    act = get_activation(name)
    x = np.linspace(-3, 3, 61)
    t = act.torch(torch.tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(act.numpy(x), t, rtol=1e-12, atol=1e-12)
    assert act(x).shape == x.shape


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("cov", COVS)
def test_kappa_matches_monte_carlo(name, cov):
    act = get_activation(name)
    ref, se = _mc_pair(act, *cov, n=200_000, seed=hash((name, cov)) % 2**32)
    assert abs(float(act.kappa(*cov)) - ref) < 5 * se + 1e-12


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("c", [0.3, 1.0, 2.5])
def test_diag_and_mean_against_1d_quadrature(name, c):
    act = get_activation(name)
    dens = lambda x: math.exp(-x * x / (2 * c)) / math.sqrt(2 * math.pi * c)  # noqa: E731
    f = lambda x: float(act.numpy(np.array(x)))  # noqa: E731
    lim = 12 * math.sqrt(c)
    pts = [0.0]
    e2 = integrate.quad(lambda x: f(x) ** 2 * dens(x), -lim, lim, points=pts, epsabs=1e-13, limit=200)[0]
    e1 = integrate.quad(lambda x: f(x) * dens(x), -lim, lim, points=pts, epsabs=1e-13, limit=200)[0]
    # kappa_diag: the verified 1-D rule; kappa(c, c, c): the series, within tol·κ(c, c, c)
    assert abs(float(act.kappa_diag(c)) - e2) < 1e-11
    assert abs(float(act.kappa(c, c, c)) - e2) < 1e-10 * e2 + 1e-11
    assert abs(float(act.mean(c)) - e1) < 1e-9
    if act.odd:
        assert float(act.mean(c)) == 0.0


def test_closed_form_identities():
    c = np.array([0.1, 1.0, 7.0])
    np.testing.assert_allclose(get_activation("erf").kappa_diag(c), (2 / np.pi) * np.arcsin(2 * c / (1 + 2 * c)))
    np.testing.assert_allclose(get_activation("relu").kappa_diag(c), c / 2)
    np.testing.assert_allclose(get_activation("relu").mean(c), np.sqrt(c / (2 * np.pi)))
    np.testing.assert_allclose(get_activation("quadratic").kappa_diag(c), 3 * c**2)
    # erf at 90° and at zero variance
    assert get_activation("erf").kappa(1.0, 0.0, 2.0) == 0.0
    assert get_activation("relu").kappa(0.0, 0.0, 2.0) == 0.0
    # relu at orthogonal inputs: sqrt(c11 c22)/(2π)
    assert math.isclose(float(get_activation("relu").kappa(2.0, 0.0, 8.0)), 4 / (2 * np.pi), rel_tol=1e-14)


def _fd(act, c11, c12, c22, h=1e-5):
    k = act.kappa
    return (
        (k(c11, c12 + h, c22) - k(c11, c12 - h, c22)) / (2 * h),
        (k(c11 + h, c12, c22) - k(c11 - h, c12, c22)) / (2 * h),
        (k(c11, c12, c22 + h) - k(c11, c12, c22 - h)) / (2 * h),
    )


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("cov", COVS[:3] + [(9.0, -7.5, 11.0)])
def test_gradient_matches_finite_differences(name, cov):
    act = get_activation(name)
    # the series κ is smooth in (c11, c12, c22): difference it directly; FD error ~h² + 1e-16/h
    ref = act
    tol = 1e-7
    g = act.kappa_grad(*cov)
    fd = _fd(ref, *cov)
    for a, b in zip(g, fd):
        assert abs(float(a) - float(b)) < tol * max(1.0, abs(float(b)))
    c = cov[0]
    hd = 1e-5
    fd_diag = (ref.kappa_diag(c + hd) - ref.kappa_diag(c - hd)) / (2 * hd)
    assert abs(float(act.kappa_diag_grad(c)) - float(fd_diag)) < tol * max(1.0, abs(float(fd_diag)))
    if name not in ("sign", "step"):
        fd_m = (ref.mean(c + hd) - ref.mean(c - hd)) / (2 * hd)
        assert abs(float(act.mean_grad(c)) - float(fd_m)) < 1e-7


@pytest.mark.parametrize("name", SMOOTH)
@pytest.mark.parametrize("c11,c22", [(1.0, 1.0), (0.3, 2.0)])
def test_gradient_finite_and_continuous_at_the_diagonal(name, c11, c22):
    act = get_activation(name)
    s = math.sqrt(c11 * c22)
    g_at = np.array(act.kappa_grad(c11, s, c22), dtype=float)
    g_near = np.array(act.kappa_grad(c11, s * (1 - 1e-12), c22), dtype=float)
    assert np.all(np.isfinite(g_at))
    np.testing.assert_allclose(g_at, g_near, atol=1e-5)
    # the one-sided difference converges to ∂κ/∂c12 (as sqrt(h) for relu's arccos kink)
    h = 1e-10 * s
    one_sided = (act.kappa(c11, s, c22) - act.kappa(c11, s - h, c22)) / h
    assert abs(float(one_sided) - g_at[0]) < 1e-4


def test_relu_autograd_nan_is_avoided():
    # autograd through the closed form is NaN at u = 1 (the deepbays failure); ours is 1/2
    c = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    u = c[1] / torch.sqrt(c[0] * c[2])
    kap = torch.sqrt(c[0] * c[2]) / (2 * math.pi) * (u * (math.pi - torch.arccos(u)) + torch.sqrt(1 - u * u))
    kap.backward()
    assert torch.isnan(c.grad).any()
    g12, g11, g22 = get_activation("relu").kappa_grad(1.0, 1.0, 1.0)
    assert (float(g12), float(g11), float(g22)) == (0.5, 0.0, 0.0)
    assert float(get_activation("relu").kappa_diag_grad(1.0)) == 0.5


def test_sign_and_step_gradients_diverge_at_the_diagonal():
    for name in ("sign", "step"):
        g12 = get_activation(name).kappa_grad(1.0, 1.0, 1.0)[0]
        assert np.isinf(g12)


def test_arguments_are_clipped_and_validated():
    # round-off can push |u| above 1 for duplicate inputs: clipped, not NaN
    c = 0.7
    for name in ("erf", "relu", "sign", "step"):
        v = get_activation(name).kappa(c, c * (1 + 1e-15), c)
        assert np.isfinite(v)
    with pytest.raises(ConfigError, match="non-negative"):
        get_activation("erf").kappa(-1.0, 0.0, 1.0)
    with pytest.raises(ConfigError, match="finite"):
        get_activation("relu").kappa(1.0, np.nan, 1.0)
    with pytest.raises(ConfigError):
        get_activation("relu").kappa_diag(-0.1)
    with pytest.raises(ConfigError):
        get_activation("relu").mean(np.inf)


def test_broadcasting_shapes():
    act = get_activation("erf")
    c11 = np.linspace(0.5, 1.5, 4)[:, None]
    c22 = np.linspace(0.2, 0.9, 3)[None, :]
    c12 = 0.1 * np.ones((4, 3))
    assert act.kappa(c11, c12, c22).shape == (4, 3)
    assert all(g.shape == (4, 3) for g in act.kappa_grad(c11, c12, c22))
    assert get_activation("tanh").kappa(c11, c12, c22).shape == (4, 3)


# --- quadrature path --------------------------------------------------------------------------


def _erf_d1(x):
    return 2 / math.sqrt(math.pi) * np.exp(-x * x)


def _erf_d2(x):
    return -4 * x / math.sqrt(math.pi) * np.exp(-x * x)


def _cs_scale(act, c11, c22):
    """sqrt(κ(c11,c11,c11) κ(c22,c22,c22)): the scale of the documented error bound tol·scale."""
    return np.sqrt(act.kappa_diag(c11) * act.kappa_diag(c22))


@pytest.mark.slow  # high-order Hermite series
def test_series_reproduces_the_erf_arcsine_kernel_and_its_derivatives():
    # variances up to 20, correlations up to |ρ| = 1; the series must meet tol = 1e-10 relative
    rng = np.random.default_rng(11)
    c11 = np.concatenate([rng.uniform(0.0, 20.0, 300), [0.0, 20.0, 7.0, 1e-8]])
    c22 = np.concatenate([rng.uniform(0.0, 20.0, 300), [3.0, 20.0, 7.0, 2.0]])
    u = np.concatenate([rng.uniform(-1, 1, 300), [0.4, 1.0, -1.0, 0.999999]])
    c12 = u * np.sqrt(c11 * c22)
    series = Activation.from_callable("erf_s", special.erf, None, odd=True, derivatives=(_erf_d1, _erf_d2))
    exact = get_activation("erf")
    scale = _cs_scale(exact, c11, c22) + 1e-300
    assert np.max(np.abs(series.kappa(c11, c12, c22) - exact.kappa(c11, c12, c22)) / scale) < 1e-10
    d1 = np.sqrt(exact.kappa_diag_grad(c11))  # crude scales for the derivative series
    for a, b in zip(series.kappa_grad(c11, c12, c22), exact.kappa_grad(c11, c12, c22)):
        assert np.max(np.abs(a - b)) < 1e-10 * max(1.0, float(np.max(np.abs(b))))
    np.testing.assert_allclose(series.kappa_diag(c11), exact.kappa_diag(c11), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(series.kappa_diag_grad(c11), exact.kappa_diag_grad(c11), rtol=1e-11)
    assert np.all(np.isfinite(d1))
    # σ' and σ'' from torch autograd instead of explicit callables: same answer
    auto = Activation.from_callable("erf_auto", special.erf, torch.erf, odd=True)
    sl = slice(0, 20)
    for a, b in zip(auto.kappa_grad(c11[sl], c12[sl], c22[sl]), exact.kappa_grad(c11[sl], c12[sl], c22[sl])):
        assert np.max(np.abs(a - b)) < 1e-10 * max(1.0, float(np.max(np.abs(b))))


def test_series_is_exact_for_polynomials():
    covs = np.array([(1.3, 0.4, 0.7), (0.5, -0.45, 0.6), (2.0, 1.9, 2.1), (1.0, 1.0, 1.0), (9.0, -1.5, 0.3)]).T
    sq = Activation.from_callable("sq_s", lambda x: x * x, lambda x: x * x, odd=False)
    ref = get_activation("quadratic")
    np.testing.assert_allclose(sq.kappa(*covs), ref.kappa(*covs), rtol=1e-12)
    for a, b in zip(sq.kappa_grad(*covs), ref.kappa_grad(*covs)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(sq.mean(covs[0]), covs[0], rtol=1e-12)
    np.testing.assert_allclose(sq.mean_grad(covs[0]), 1.0, rtol=1e-12)


def test_non_smooth_callables_raise_and_the_product_rule_is_opt_in():
    covs = np.array([(1.3, 0.4, 0.7), (0.5, -0.45, 0.6), (2.0, 1.9, 2.1), (1.0, 1.0, 1.0)]).T
    relu_s = Activation.from_callable("relu_s", lambda x: np.maximum(x, 0), torch.relu, odd=False)
    with pytest.raises(ConvergenceError, match="closed form"):
        relu_s.kappa(*covs)
    # the 2-D Gauss-Hermite product rule: no error control, algebraic convergence at the kink
    relu_q = Activation.from_callable("relu_q", lambda x: np.maximum(x, 0), torch.relu, odd=False, order=64,
                                      method="product")
    np.testing.assert_allclose(relu_q.kappa(*covs), get_activation("relu").kappa(*covs), atol=2e-3)
    # a smooth σ at a variance beyond max_terms: a clear error, not a silent truncation
    few = Activation.from_callable("tanh_few", np.tanh, torch.tanh, odd=True, max_terms=16)
    with pytest.raises(ConvergenceError, match="max_terms"):
        few.kappa(20.0, 5.0, 20.0)


_REF = json.loads((Path(__file__).parent / "fixtures" / "activation_quad" / "reference.json").read_text())["cases"]


@pytest.mark.parametrize("row", _REF, ids=lambda r: f"{r['activation']}-{r['c11']}-{r['c12']:.4g}-{r['c22']}")
def test_tanh_gelu_against_nested_adaptive_quadrature(row):
    # fixture: tests/fixtures/activation_quad/make_reference.py (nested scipy quad, ~1e-13)
    act = get_activation(row["activation"])
    c11, c12, c22 = row["c11"], row["c12"], row["c22"]
    scale = math.sqrt(row["diag11"] * row["diag22"])
    assert abs(float(act.kappa(c11, c12, c22)) - row["kappa"]) <= act.tol * scale + 1e-12
    assert abs(float(act.kappa_diag(c11)) - row["diag11"]) <= 1e-12 * row["diag11"] + 1e-13
    g12, g11, g22 = (float(g) for g in act.kappa_grad(c11, c12, c22))
    # derivative series: bound tol·sqrt(E[σ'²]E[σ'²]) resp. ½ tol·sqrt(E[σ''²]E[σ²]); all ≤ O(1) here
    for got, key in ((g12, "g12"), (g11, "g11"), (g22, "g22")):
        assert abs(got - row[key]) <= 2 * act.tol + 1e-12, key


@pytest.mark.slow  # high-order Hermite series
@pytest.mark.parametrize("name", ["tanh", "gelu"])
def test_series_gradient_symmetry_is_exact(name):
    act = get_activation(name)
    rng = np.random.default_rng(5)
    a, c = rng.uniform(0.01, 12, 50), rng.uniform(0.01, 12, 50)
    b = rng.uniform(-1, 1, 50) * np.sqrt(a * c)
    g12, g11, g22 = act.kappa_grad(a, b, c)
    h12, h11, h22 = act.kappa_grad(c, b, a)
    assert np.array_equal(g11, h22) and np.array_equal(g22, h11) and np.array_equal(g12, h12)
    assert np.array_equal(act.kappa(a, b, c), act.kappa(c, b, a))


@pytest.mark.slow  # high-order Hermite series
def test_series_blocks_with_test_points_of_larger_variance():
    # kernels.propagate evaluates rows and columns with separately computed coefficient tables; the
    # table of the smaller variances is extended to the other's degree (checked against pointwise κ)
    from finwidth.kernels import KernelBlocks, propagate

    act = get_activation("tanh")
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 5)) * 0.4
    Xt = rng.standard_normal((12, 5)) * 2.0
    K0 = KernelBlocks(X @ X.T, Xt @ X.T, np.einsum("ij,ij->i", Xt, Xt))
    d, dt = np.diag(K0.train).copy(), K0.test_diag.copy()
    out = propagate(K0.copy(), act, 1.0)
    ref_t = act.kappa(dt[:, None], K0.test_train, d[None, :])
    ref = act.kappa(d[:, None], K0.train, d[None, :])
    scale = np.sqrt(np.outer(act.kappa_diag(dt), act.kappa_diag(d)))
    assert np.max(np.abs(out.test_train - ref_t) / scale) < 2 * act.tol
    off = ~np.eye(40, dtype=bool)
    assert np.max(np.abs(out.train - ref)[off]) < 2 * act.tol * np.max(act.kappa_diag(d))
    np.testing.assert_array_equal(np.diag(out.train), act.kappa_diag(d))


def test_quadrature_autograd_derivatives_match_explicit_ones():
    explicit = get_activation("gelu")
    auto = Activation.from_callable("gelu_auto", explicit.numpy, explicit.torch, odd=False, order=40)
    cov = (1.1, 0.3, 0.8)
    for a, b in zip(auto.kappa_grad(*cov), explicit.kappa_grad(*cov)):
        assert abs(float(a) - float(b)) < 1e-12
    assert abs(float(auto.mean_grad(0.9)) - float(explicit.mean_grad(0.9))) < 1e-12


def test_quadrature_blocks_give_the_same_answer():
    act = get_activation("tanh")
    rng = np.random.default_rng(3)
    c11 = rng.uniform(0.1, 2, 700)
    c22 = rng.uniform(0.1, 2, 700)
    c12 = rng.uniform(-1, 1, 700) * np.sqrt(c11 * c22)
    whole = act.kappa(c11, c12, c22)
    old = QuadratureActivation._CHUNK
    try:
        QuadratureActivation._CHUNK = 64 * 64 * 7  # force many chunks
        chunked = act.kappa(c11, c12, c22)
    finally:
        QuadratureActivation._CHUNK = old
    np.testing.assert_allclose(whole, chunked, rtol=1e-14, atol=1e-15)  # BLAS may sum in another order


def test_from_callable_validation():
    with pytest.raises(ConfigError, match="order"):
        Activation.from_callable("x", np.tanh, torch.tanh, odd=True, order=1)
    with pytest.raises(ConfigError, match="derivatives"):
        Activation.from_callable("x", np.tanh, None, odd=True)
    with pytest.raises(ConfigError):
        Activation.from_callable("", np.tanh, torch.tanh, odd=True)
    with pytest.raises(ConfigError, match="method"):
        Activation.from_callable("x", np.tanh, torch.tanh, odd=True, method="gauss")
    with pytest.raises(ConfigError, match="tol"):
        Activation.from_callable("x", np.tanh, torch.tanh, odd=True, tol=0.0)
    with pytest.raises(ConfigError, match="max_terms"):
        Activation.from_callable("x", np.tanh, torch.tanh, odd=True, max_terms=2)
    act = Activation.from_callable("x", np.tanh, None, odd=True, derivatives=(np.cos, np.sin))
    with pytest.raises(ConfigError, match="torch"):
        act.torch(torch.zeros(2))


# --- properties (hypothesis) ------------------------------------------------------------------

variances = st.floats(min_value=1e-3, max_value=20.0, allow_nan=False)
corrs = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
closed = st.sampled_from(["linear", "erf", "relu", "quadratic", "sign", "step"])


@settings(max_examples=60, deadline=None)
@given(closed, variances, corrs, variances)
def test_kappa_symmetric_and_bounded_by_cauchy_schwarz(name, c11, u, c22):
    act = get_activation(name)
    c12 = u * math.sqrt(c11 * c22)
    k = float(act.kappa(c11, c12, c22))
    assert math.isclose(k, float(act.kappa(c22, c12, c11)), rel_tol=1e-12, abs_tol=1e-14)
    bound = math.sqrt(float(act.kappa_diag(c11)) * float(act.kappa_diag(c22)))
    assert abs(k) <= bound * (1 + 1e-12) + 1e-14


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["linear", "relu", "quadratic", "sign", "step"]), variances, corrs, variances,
       st.floats(min_value=0.01, max_value=50.0))
def test_homogeneity(name, c11, u, c22, a):
    act = get_activation(name)
    d = act.homogeneous_degree
    c12 = u * math.sqrt(c11 * c22)
    lhs = float(act.kappa(a * c11, a * c12, a * c22))
    rhs = a**d * float(act.kappa(c11, c12, c22))
    assert math.isclose(lhs, rhs, rel_tol=1e-9, abs_tol=1e-12 * max(1.0, a**d))


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["linear", "erf", "relu", "quadratic", "sign", "step", "tanh", "gelu"]),
       st.integers(min_value=0, max_value=10_000))
def test_kernel_matrix_is_psd(name, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((9, 4)) * rng.uniform(0.2, 2.0)
    C = X @ X.T / 4
    d = np.diag(C)
    K = get_activation(name).kappa(d[:, None], C, d[None, :])
    K = 0.5 * (K + K.T)
    w = np.linalg.eigvalsh(K)
    assert w[0] >= -1e-9 * max(1.0, w[-1])


@pytest.mark.parametrize("name,exact", [("sign", 1.0), ("step", 0.5)])
def test_perfectly_correlated_inputs_despite_rounding(name, exact):
    """c12 = sqrt(c11 c22) up to rounding (duplicate directions at different scales): u is 1 to a few
    ulps, where κ of sign/step moves like sqrt(1 − u); the kernel must still be exact (the case
    hypothesis found in test_homogeneity: c11 = 3, c22 = 0.003, c12 = 3 sqrt(0.001))."""
    c12 = 3.0 * math.sqrt(1.0 * 0.001)
    assert float(get_activation(name).kappa(3.0, c12, 0.003)) == pytest.approx(exact, rel=1e-13)
