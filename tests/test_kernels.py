"""NNGP recursion: Monte Carlo over wide random networks, structure, blocking and validation."""

from __future__ import annotations

import numpy as np
import pytest

from finwidth.activations import get_activation
from finwidth.errors import ConfigError
from finwidth.kernels import KernelBlocks, input_kernel, layer_diagonals, nngp, nngp_cross, propagate, propagate_vjp
from finwidth.network import Network

ACTS = ["linear", "erf", "relu", "quadratic", "sign", "step", "tanh", "gelu"]


def _inputs(P=5, N0=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N0))
    X[-1] = X[0]  # an exact duplicate: correlation 1 off the diagonal
    return X


def _sqrt_psd(S):
    w, U = np.linalg.eigh(S)
    return U * np.sqrt(np.clip(w, 0, None))


def _mc_output_kernel(net: Network, X: np.ndarray, width: int, n_nets: int, seed: int):
    """Per-network estimates of E[f(x) f(x') | hidden layers] for random finite networks.

    The first layer uses explicit weights W0 ~ N(0, 1/λ_0). Given the layer-l features
    A = σ(H_l) (P × N_l), the N_{l+1} next pre-activations W A/sqrt(N_l) + b are iid columns
    ~ N(0, A Aᵀ/(N_l λ_l) + σ_b²): sampling them through that P×P covariance is exact in
    distribution and avoids the N_l × N_{l+1} weight matrices.
    """
    rng = np.random.default_rng(seed)
    act = net.activation
    P, N0 = X.shape
    b = net.bias_variances()
    out = np.empty((n_nets, P, P))
    for r in range(n_nets):
        W0 = rng.standard_normal((width, N0)) / np.sqrt(net.priors[0])
        H = X @ W0.T / np.sqrt(N0) + np.sqrt(b[0]) * rng.standard_normal(width)
        for layer in range(1, net.depth):
            A = act.numpy(H)
            S = A @ A.T / (width * net.priors[layer]) + b[layer]
            H = _sqrt_psd(S) @ rng.standard_normal((P, width))
        A = act.numpy(H)
        out[r] = A @ A.T / (width * net.priors[-1]) + b[-1]
    return out


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_nngp_matches_wide_random_networks(name, depth):
    X = _inputs()
    net = Network([10] * depth, name, priors=[1.2, 0.8, 1.5, 0.9][: depth + 1], bias=[0.1, 0.2, 0.0, 0.05][: depth + 1])
    K = nngp(net, X).train
    est = _mc_output_kernel(net, X, width=8_000, n_nets=30, seed=depth * 101 + ACTS.index(name))
    mean = est.mean(0)
    se = est.std(0, ddof=1) / np.sqrt(est.shape[0])
    # finite-width bias is O(1/width) ≈ 1e-4 relative, well below the MC error (≈ 3e-3)
    assert np.all(np.abs(mean - K) <= 5 * se + 1e-12), np.max(np.abs(mean - K) / (se + 1e-300))


def test_relu_and_linear_closed_form_depth_recursions():
    X = _inputs(P=6, N0=4, seed=1)
    lam = [0.7, 1.3, 0.5, 2.0]
    C = X @ X.T / (lam[0] * 4)
    Klin = nngp(Network([3, 3, 3], "linear", priors=lam), X).train
    np.testing.assert_allclose(Klin, C / (lam[1] * lam[2] * lam[3]), rtol=1e-14)
    # relu halves the diagonal at each layer: diag K_l = diag K_{l-1}/(2 λ_l)
    layers = nngp(Network([3, 3, 3], "relu", priors=lam), X, all_layers=True)
    for l in range(1, 4):
        np.testing.assert_allclose(np.diag(layers[l].train), np.diag(layers[l - 1].train) / (2 * lam[l]), rtol=1e-14)
    # relu homogeneity: scaling λ_0 scales K_L
    K1 = nngp(Network([3, 3], "relu", priors=[1.0, 1.0, 1.0]), X).train
    K2 = nngp(Network([3, 3], "relu", priors=[4.0, 1.0, 1.0]), X).train
    np.testing.assert_allclose(K2, K1 / 4, rtol=1e-13)


def test_erf_one_layer_by_hand():
    X = _inputs(P=4, N0=3, seed=2)
    lam0, lam1 = 0.5, 2.0
    C = X @ X.T / (lam0 * 3)
    d = np.diag(C)
    hand = (2 / np.pi) * np.arcsin(2 * C / np.sqrt((1 + 2 * d)[:, None] * (1 + 2 * d)[None, :])) / lam1
    np.fill_diagonal(hand, (2 / np.pi) * np.arcsin(2 * d / (1 + 2 * d)) / lam1)
    np.testing.assert_allclose(nngp(Network([9], "erf", priors=[lam0, lam1]), X).train, hand, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", ACTS)
def test_blocks_symmetric_psd_and_consistent(name):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((23, 6))
    Xt = rng.standard_normal((9, 6))
    net = Network([5, 5], name, priors=[1.0, 0.9, 1.1], bias=[0.05, 0.1, 0.0])
    B = nngp(net, X, Xt)
    assert np.array_equal(B.train, B.train.T)
    w = np.linalg.eigvalsh(B.train)
    assert w[0] >= -1e-10 * w[-1]
    joint = nngp(net, np.vstack([X, Xt])).train
    # tanh/gelu: Hermite series truncated at tol = 1e-10 relative (docs/kernels.md)
    tol = {"tanh": 2e-10, "gelu": 2e-10}.get(name, 1e-13)
    np.testing.assert_allclose(B.train, joint[:23, :23], rtol=1e-13, atol=1e-13 * np.abs(joint).max())
    np.testing.assert_allclose(B.test_train, joint[23:, :23], atol=tol * np.abs(joint).max())
    np.testing.assert_allclose(B.test_diag, np.diag(joint)[23:], rtol=1e-13)
    Ks, kd = nngp_cross(net, X, Xt)
    np.testing.assert_allclose(Ks, B.test_train, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(kd, B.test_diag, rtol=1e-13)


def test_block_size_and_inplace_do_not_change_results():
    rng = np.random.default_rng(5)
    X, Xt = rng.standard_normal((31, 4)), rng.standard_normal((7, 4))
    net = Network([5, 5, 5], "relu", priors=[1.0, 0.5, 0.5, 1.0])
    ref = nngp(net, X, Xt)
    for bs in (1, 3, 8, 31, 100):
        other = nngp(net, X, Xt, block_size=bs)
        np.testing.assert_allclose(other.train, ref.train, rtol=1e-15, atol=1e-16)
        np.testing.assert_allclose(other.test_train, ref.test_train, rtol=1e-15, atol=1e-16)
    K0 = input_kernel(net, X, Xt)
    before = K0.copy()
    K1 = propagate(K0, "erf", 0.5, 0.1)
    np.testing.assert_array_equal(K0.train, before.train)  # not overwritten
    K1b = propagate(K0, "erf", 0.5, 0.1, inplace=True)
    assert K1b is K0
    np.testing.assert_array_equal(K1b.train, K1.train)
    np.testing.assert_array_equal(K1b.test_train, K1.test_train)


def test_all_layers_and_layer_diagonals():
    rng = np.random.default_rng(6)
    X, Xt = rng.standard_normal((12, 3)), rng.standard_normal((4, 3))
    net = Network([5, 5, 5], "erf", priors=[1.0, 2.0, 0.5, 1.0], bias=[0.1, 0.0, 0.3, 0.2])
    layers = nngp(net, X, Xt, all_layers=True)
    assert len(layers) == 4
    np.testing.assert_allclose(layers[0].train, X @ X.T / 3 + 0.1, rtol=1e-14)
    np.testing.assert_array_equal(layers[-1].train, nngp(net, X, Xt).train)
    diags = layer_diagonals(net, X)
    for l, blk in enumerate(layers):
        np.testing.assert_allclose(diags[l], np.diag(blk.train), rtol=1e-14)
    cross = nngp_cross(net, X, Xt, all_layers=True)
    for (Ks, kd), blk in zip(cross, layers):
        np.testing.assert_allclose(Ks, blk.test_train, rtol=1e-14)
        np.testing.assert_allclose(kd, blk.test_diag, rtol=1e-14)


def test_float64_and_integer_inputs():
    X = np.arange(12, dtype=np.int32).reshape(4, 3)
    K = nngp(Network([3], "relu"), X).train
    assert K.dtype == np.float64
    K32 = nngp(Network([3], "relu"), X.astype(np.float32)).train
    np.testing.assert_allclose(K32, K, rtol=1e-14)


def test_input_validation():
    net = Network([3], "erf")
    X = np.ones((4, 3))
    with pytest.raises(ConfigError, match="2-D"):
        nngp(net, np.ones(3))
    with pytest.raises(ConfigError, match="NaN or inf.*row 1, column 2"):
        Xb = X.copy()
        Xb[1, 2] = np.nan
        nngp(net, Xb)
    with pytest.raises(ConfigError, match="features"):
        nngp(net, X, np.ones((2, 4)))
    with pytest.raises(ConfigError, match="at least one"):
        nngp(net, np.ones((0, 3)))
    with pytest.raises(ConfigError, match="numeric"):
        nngp(net, np.array([["a", "b"]]))
    with pytest.raises(ConfigError, match="Network"):
        nngp("erf", X)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="block_size"):
        nngp(net, X, block_size=0)
    K0 = input_kernel(net, X)
    with pytest.raises(ConfigError, match="scale"):
        propagate(K0, "erf", -1.0)
    with pytest.raises(ConfigError, match="bias_var"):
        propagate(K0, "erf", 1.0, -0.1)
    with pytest.raises(ConfigError, match="square"):
        propagate(KernelBlocks(np.ones((3, 4))), "erf", 1.0)
    bad = K0.copy()
    bad.train[0, 1] = bad.train[1, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        propagate(bad, "erf", 1.0)
    neg = K0.copy()
    neg.train[0, 0] = -1.0
    with pytest.raises(ConfigError, match="non-negative"):
        propagate(neg, "relu", 1.0)
    with pytest.raises(ConfigError, match="unknown activation"):
        propagate(K0, "nope", 1.0)
    with pytest.raises(ConfigError, match="train_diags"):
        nngp_cross(net, X, X, train_diags=np.ones((5, 4)))


def test_quadrature_activation_kernel_matches_pointwise_kappa():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((10, 3))
    act = get_activation("tanh")
    B = nngp(Network([4], "tanh"), X)
    C = X @ X.T / 3
    d = np.diag(C)
    iu = np.triu_indices(10)
    ref = act.kappa(d[iu[0]], C[iu], d[iu[1]])
    # the diagonal comes from the 1-D rule, off-diagonal entries from the series (tol = 1e-10)
    np.testing.assert_allclose(B.train[iu], ref, rtol=0, atol=act.tol * np.max(act.kappa_diag(d)))


@pytest.mark.parametrize("name", ["erf", "relu", "tanh", "linear", "quadratic"])
def test_propagate_vjp_matches_finite_differences(name):
    """⟨∂f/∂K, dK⟩ equals the central difference of f(K) = Σ Γ ∘ propagate(K) along symmetric dK,
    for directions that move the diagonal (variances) and the off-diagonal together."""
    rng = np.random.default_rng(5)
    Z = rng.standard_normal((23, 4))
    K = Z @ Z.T / 4 + 0.1 * np.eye(23)
    G = rng.standard_normal((23, 23))
    G = G + G.T
    scale, bias = 0.7, 0.3

    def f(K):
        return float(np.sum(G * propagate(KernelBlocks(K), name, scale, bias).train))

    B = propagate_vjp(K, name, G, scale, block_size=5)  # several blocks, a ragged last one
    assert np.array_equal(B, B.T)
    np.testing.assert_allclose(B, propagate_vjp(K, name, G, scale), rtol=1e-12, atol=1e-12)
    for _ in range(3):
        E = rng.standard_normal((4, 4))
        dK = Z @ (E + E.T) @ Z.T / 4 + np.diag(rng.uniform(0, 0.1, 23))
        eps = 1e-6
        fd = (f(K + eps * dK) - f(K - eps * dK)) / (2 * eps)
        assert fd == pytest.approx(float(np.sum(B * dK)), rel=1e-7, abs=1e-9)


def test_propagate_vjp_input_validation():
    K = np.eye(3)
    with pytest.raises(ConfigError, match="square"):
        propagate_vjp(K, "erf", np.eye(4))
    with pytest.raises(ConfigError, match="diagonal"):
        propagate_vjp(-K, "erf", np.eye(3))
