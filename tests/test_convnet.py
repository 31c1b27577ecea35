"""ConvNetwork geometry and validation, and its NNGP / patch-pair kernels against Monte Carlo of random CNNs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import erf

from finwidth import NNGP, ConvNetwork, kernels
from finwidth.conv_kernels import PatchInputs, conv_nngp, conv_nngp_cross
from finwidth.errors import ConfigError
from finwidth.theory.gp import gp_posterior


def test_one_dimensional_default_is_unchanged():
    net = ConvNetwork(12, 4, 64, "erf", priors=(2.0, 0.5))
    assert (net.n_patches, net.patch_features, net.patch_size, net.stride, net.readout) == (3, 4, 4, 4, "local")
    assert net.contiguous and net.image_shape is None
    assert net.to_dict() == {"input_size": 12, "patch_size": 4, "channels": 64, "activation": "erf",
                             "priors": [2.0, 0.5]}
    X = np.arange(24.0).reshape(2, 12)
    np.testing.assert_array_equal(net.patches(X), X.reshape(2, 3, 4))


def test_patch_index_overlapping_image_windows():
    # 4×5 image, 2×3 windows at strides (2, 1): rows {0, 2}, columns {0, 1, 2}
    net = ConvNetwork(20, (2, 3), 7, image_shape=(4, 5), stride=(2, 1))
    assert net.patch_grid == (2, 3) and net.n_patches == 6 and net.patch_features == 6
    img = np.arange(20).reshape(4, 5)
    expected = [img[r:r + 2, c:c + 3].ravel() for r in (0, 2) for c in (0, 1, 2)]
    np.testing.assert_array_equal(net.patch_index, np.array(expected))
    X = np.random.default_rng(0).standard_normal((3, 20))
    np.testing.assert_array_equal(net.patches(X)[1, 4], X[1].reshape(4, 5)[2:4, 1:4].ravel())
    assert not net.contiguous
    # 1-D overlapping blocks
    one = ConvNetwork(10, 4, 3, stride=3)
    np.testing.assert_array_equal(one.patch_index, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])


def test_description_roundtrips_through_json():
    for net in (ConvNetwork(36, 3, 8, "relu", (0.5, 2.0), image_shape=(6, 6), stride=1, readout="pooled"),
                ConvNetwork(20, (2, 3), 7, image_shape=(4, 5), stride=(2, 1)), ConvNetwork(10, 4, 3, stride=3)):
        again = ConvNetwork(**json.loads(json.dumps(net.to_dict())))
        assert again == net and repr(again) == repr(net)
        assert again.with_channels(5).channels == 5 and again.with_channels(5).patch_index.tolist() == net.patch_index.tolist()


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_size=30, patch_size=3, channels=4, image_shape=(6, 6)), "image_shape .* 36 pixels but input_size"),
    (dict(input_size=36, patch_size=4, channels=4, image_shape=(6, 6)), "do not tile the image height"),
    (dict(input_size=36, patch_size=(3, 2), channels=4, image_shape=(6, 6), stride=(3, 3)), "do not tile the image width"),
    (dict(input_size=10, patch_size=4, channels=4, stride=4), "do not tile the input"),
    (dict(input_size=10, patch_size=3, channels=4), "multiple of patch_size"),
    (dict(input_size=12, patch_size=4, channels=0), "channels"),
    (dict(input_size=12, patch_size=16, channels=2, stride=1), "larger than the input"),
    (dict(input_size=12, patch_size=4, channels=2, readout="max"), "readout"),
    (dict(input_size=12, patch_size=4, channels=2, stride=0), "stride"),
    (dict(input_size=16, patch_size=(2, 2, 2), channels=2, image_shape=(4, 4)), "pair"),
])
def test_bad_geometry_is_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ConvNetwork(**kwargs)


def test_patches_check_the_feature_count():
    with pytest.raises(ConfigError, match="input_size"):
        ConvNetwork(36, 3, 2, image_shape=(6, 6)).patches(np.zeros((2, 35)))


def test_disjoint_windows_are_a_permutation_of_contiguous_blocks():
    rng = np.random.default_rng(1)
    X, Xt = rng.standard_normal((7, 64)), rng.standard_normal((3, 64))
    img = ConvNetwork(64, 4, 5, "erf", (0.7, 1.3), image_shape=(8, 8))
    blocks = ConvNetwork(64, 16, 5, "erf", (0.7, 1.3))
    perm = img.patch_index.ravel()
    for readout in ("local", "pooled"):
        a = conv_nngp(ConvNetwork(**{**img.to_dict(), "readout": readout}), X, Xt)
        b = conv_nngp(ConvNetwork(**{**blocks.to_dict(), "readout": readout}), X[:, perm], Xt[:, perm])
        for u, v in ((a.train, b.train), (a.test_train, b.test_train), (a.test_diag, b.test_diag)):
            np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-15)


def _random_cnn_outputs(net: ConvNetwork, X: np.ndarray, n_nets: int, rng) -> np.ndarray:
    """f(x) of n_nets independent prior draws of the network, by explicit numpy (n_nets, n_points)."""
    lam0, lam1 = net.priors
    C, S, n = net.channels, net.patch_features, net.n_patches
    Z = X[:, net.patch_index]  # (points, Ñ, S), cut independently of ConvNetwork.patches
    act = {"erf": erf, "relu": lambda v: np.maximum(v, 0.0)}[net.activation.name]
    w = rng.standard_normal((n_nets, C, S)) / np.sqrt(lam0)
    phi = act(np.einsum("pis,kcs->kpci", Z, w) / np.sqrt(S))  # (nets, points, C, Ñ)
    if net.readout == "local":
        a = rng.standard_normal((n_nets, C, n)) / np.sqrt(lam1)
        return np.einsum("kpci,kci->kp", phi, a) / np.sqrt(C * n)
    a = rng.standard_normal((n_nets, C)) / np.sqrt(lam1)
    return np.einsum("kpc,kc->kp", phi.mean(axis=3), a) / np.sqrt(C)


def _second_moments(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[F_a F_b] over the rows of F and the standard error of each entry."""
    M = F.shape[0]
    emp = F.T @ F / M
    sq = F * F
    return emp, np.sqrt(np.maximum(sq.T @ sq / M - emp ** 2, 0.0) / M)


@pytest.mark.parametrize("act, readout", [("erf", "local"), ("relu", "pooled"), ("erf", "pooled")])
def test_nngp_kernel_is_the_prior_covariance_of_random_cnns(act, readout):
    """Cov f over prior draws equals the NNGP kernel for any C (the readout is Gaussian and independent)."""
    rng = np.random.default_rng(5)
    net = ConvNetwork(25, 3, 4, act, priors=(0.6, 1.5), image_shape=(5, 5), stride=1, readout=readout)
    X = rng.standard_normal((4, 25)) * 1.3
    emp, se = _second_moments(_random_cnn_outputs(net, X, 40000, rng))
    K = conv_nngp(net, X).train
    assert np.all(np.abs(emp - K) < 5 * se), np.max(np.abs(emp - K) / se)


def test_patch_pair_blocks_against_monte_carlo():
    """K_ij(x, x') = E σ(h_i(x)) σ(h_j(x')) for every patch pair, overlapping 2-D windows."""
    rng = np.random.default_rng(7)
    net = ConvNetwork(16, 2, 1, "erf", priors=(0.8, 1.0), image_shape=(4, 4), stride=1)
    X = rng.standard_normal((3, 16)) * 1.5
    pin = PatchInputs(net, X)
    M = 100000
    w = rng.standard_normal((M, 4)) / np.sqrt(0.8)
    phi = erf(np.einsum("pis,ms->mpi", X[:, net.patch_index], w) / 2.0)  # (M, points, Ñ)
    emp, se = _second_moments(phi.reshape(M, -1))
    n = net.n_patches
    exact = np.block([[pin.block(pin, i, j) for j in range(n)] for i in range(n)])  # rows (i, point)
    order = np.arange(3 * n).reshape(3, n).T.ravel()  # (point, i) → (i, point)
    emp, se = emp[np.ix_(order, order)], se[np.ix_(order, order)]
    assert np.all(np.abs(emp - exact) < 5 * se)
    # the pair diagonals are the diagonals of those blocks
    pd = pin.pair_diagonals()
    for i, j in ((0, 0), (2, 7), (8, 3)):
        np.testing.assert_allclose(pd[:, i, j], np.diag(pin.block(pin, i, j)), rtol=1e-14)


def test_kernel_api_dispatch_and_nngp_estimator():
    rng = np.random.default_rng(3)
    net = ConvNetwork(36, 3, 10, "erf", priors=(0.7, 1.3), image_shape=(6, 6), stride=(3, 1))
    X, Xt, y = rng.standard_normal((15, 36)), rng.standard_normal((6, 36)), rng.standard_normal(15)
    ref = conv_nngp(net, X, Xt)
    via = kernels.nngp(net, X, Xt)
    np.testing.assert_array_equal(ref.train, via.train)
    kt, kd = kernels.nngp_cross(net, X, Xt)
    np.testing.assert_allclose(kt, ref.test_train, rtol=1e-14)
    np.testing.assert_allclose(kd, conv_nngp_cross(net, X, Xt)[1], rtol=1e-14)
    # the local NNGP kernel is the patch average of the diagonal blocks
    pin = PatchInputs(net, X)
    np.testing.assert_allclose(ref.train, sum(pin.block(pin, i, i) for i in range(net.n_patches)) / (1.3 * net.n_patches),
                               rtol=1e-13)
    mean, var = NNGP(net, 0.1).fit(X, y).predict(Xt, return_var=True)
    m2, v2 = gp_posterior(ref.train, ref.test_train, ref.test_diag, y, 0.1)
    np.testing.assert_allclose(mean, m2, rtol=1e-12)
    np.testing.assert_allclose(var, v2, rtol=1e-12)
    with pytest.raises(ConfigError, match="all_layers"):
        kernels.nngp(net, X, all_layers=True)


@pytest.mark.parametrize("act", ["erf", "relu", "tanh"])
def test_weighted_kernels_equal_the_sum_of_blocks(act):
    from finwidth.conv_kernels import weighted_diagonal, weighted_kernel

    rng = np.random.default_rng(4)
    net = ConvNetwork(25, 3, 2, act, priors=(0.9, 1.1), image_shape=(5, 5), stride=(1, 2))  # Ñ = 6
    tr, te = PatchInputs(net, rng.standard_normal((9, 25))), PatchInputs(net, rng.standard_normal((4, 25)))
    n = net.n_patches
    W = rng.standard_normal((n, n))
    W[1, 3:] = 0.0  # rows with one, a few and many non-zero weights take different paths
    W[2, :5] = 0.0
    ref = sum(W[i, j] * te.block(tr, i, j) for i in range(n) for j in range(n))
    np.testing.assert_allclose(weighted_kernel(te, tr, W), ref, rtol=1e-12, atol=1e-14)
    Ws = W + W.T
    ref = sum(Ws[i, j] * tr.block(tr, i, j) for i in range(n) for j in range(n))
    np.testing.assert_allclose(weighted_kernel(tr, None, Ws), ref, rtol=1e-12, atol=1e-14)
    diag = np.array([sum(W[i, j] * te.block(te, i, j)[p, p] for i in range(n) for j in range(n)) for p in range(4)])
    np.testing.assert_allclose(weighted_diagonal(te, W), diag, rtol=1e-12)


def test_adaptive_kernel_reads_the_window_geometry():
    """AdaptiveKernel on disjoint 2-D windows = on contiguous blocks of permuted columns; pooled readouts refused."""
    from finwidth import AdaptiveKernel

    rng = np.random.default_rng(6)
    X = rng.standard_normal((20, 16))
    y = np.tanh(X[:, :4].sum(1))
    img = ConvNetwork(16, 2, 30, "erf", priors=(1.2, 0.4), image_shape=(4, 4))
    flat = ConvNetwork(16, 4, 30, "erf", priors=(1.2, 0.4))
    a = AdaptiveKernel(img, 0.05, scaling="standard").fit(X, y)
    b = AdaptiveKernel(flat, 0.05, scaling="standard").fit(X[:, img.patch_index.ravel()], y)
    np.testing.assert_allclose(a.sigma_, b.sigma_, rtol=1e-8, atol=1e-12)
    with pytest.raises(ConfigError, match="local readout"):
        AdaptiveKernel(ConvNetwork(16, 2, 30, image_shape=(4, 4), readout="pooled"), 0.05).fit(X, y)
