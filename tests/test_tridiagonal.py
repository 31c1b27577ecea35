"""The spectrum without eigenvectors (finwidth.theory.tridiagonal) against numpy's dense eigh.

References: ``np.linalg.eigh`` of a copy of the same kernel (eigenvalues, Uᵀy, yᵀ f(K) y), and
the eigenbasis solver of the product form (``spectral.solve_product`` on ``np.linalg.eigh``).
"""

from __future__ import annotations

import numpy as np
import pytest

from finwidth import kernels
from finwidth.errors import ConfigError
from finwidth.network import Network
from finwidth.theory import spectral, tridiagonal
from finwidth.theory.rkgp import RKGP


def _kernel(P=120, N0=8, seed=0, act="erf"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, N0))
    y = np.sin(X[:, 0]) + 0.2 * rng.normal(size=P)
    return X, y, kernels.nngp(Network([50], act), X).train


@pytest.mark.parametrize("order", ["C", "F"])
def test_spectrum_and_label_measure_match_eigh(order):
    X, y, K = _kernel()
    w, U = np.linalg.eigh(K)
    yt = U.T @ y
    A = np.array(K, order=order)
    hs = tridiagonal.householder_spectrum(A, y)
    assert np.shares_memory(hs._reflectors, A)  # in place: no second P×P matrix
    np.testing.assert_allclose(hs.values, w, rtol=0, atol=1e-12 * w[-1])
    assert hs.label_mass == pytest.approx(float(y @ y), rel=1e-14)
    meas = tridiagonal.TridiagonalMeasure(hs)
    for s in (1e-3, 0.1, 2.0):
        r1, r2 = meas.label_resolvent(s)
        assert r1 == pytest.approx(float(np.sum(yt ** 2 / (s + w))), rel=1e-10)
        assert r2 == pytest.approx(float(np.sum(yt ** 2 / (s + w) ** 2)), rel=1e-10)
    ref = spectral.SpectralMeasure.from_eigenbasis(w, yt ** 2)
    for pi, T in ((0.7, 1e-2), (1.3, 0.0)):
        np.testing.assert_allclose(meas.g(pi, T), ref.g(pi, T), rtol=1e-9)
        assert meas.data_term(pi, T) == pytest.approx(ref.data_term(pi, T), rel=1e-10)
        assert meas.roundoff_sensitivity(pi, T) == pytest.approx(ref.roundoff_sensitivity(pi, T), rel=1e-8)


def test_coordinates_match_eigh_up_to_sign():
    X, y, K = _kernel(P=90, seed=3)
    w, U = np.linalg.eigh(K)
    m = np.cos(X[:, 1])
    V = np.stack([y, m], axis=1)
    ref = U.T @ V
    got = tridiagonal.householder_spectrum(K.copy(), y).coordinates(V)
    sign = np.sign(got[:, 0] * ref[:, 0])
    sign[sign == 0] = 1.0
    np.testing.assert_allclose(got * sign[:, None], ref, rtol=0, atol=1e-9 * np.abs(ref).max())


def test_rank_one_update_and_bad_input():
    rng = np.random.default_rng(0)
    K = rng.normal(size=(700, 700))
    v = rng.normal(size=700)
    ref = K + 0.3 * np.outer(v, v)
    tridiagonal.rank_one_update(K, v, 0.3)
    np.testing.assert_allclose(K, ref, rtol=0, atol=1e-13)
    with pytest.raises(ConfigError, match="float64"):
        tridiagonal.householder_spectrum(np.eye(3, dtype=np.float32))
    with pytest.raises(ConfigError, match="all zero"):
        tridiagonal.householder_spectrum(np.eye(3), np.zeros(3))


# N_1 = 50 < P = 100: the validity diagnostic warns (the theory's regime); the numbers are what is tested
@pytest.mark.filterwarnings("ignore::finwidth.errors.ValidityWarning")
@pytest.mark.parametrize("T,act", [(1e-2, "erf"), (0.0, "erf"), (1e-3, "relu")])
def test_product_fit_matches_eigh_solver(T, act):
    """RKGP's product-form fit (Householder path) against solve_product on numpy's eigh, and its
    deferred predictions against the dense GP formula with the renormalised kernel."""
    X, y, K = _kernel(P=100, seed=5, act=act)
    net = Network([50], act)
    w, U = np.linalg.eigh(K)
    basis = spectral.Eigenbasis(*spectral.checked_spectrum(w)[:1], vectors=U, n_null=0)
    ref = spectral.solve_product(basis, U.T @ y, T, [50])
    m = RKGP(net, T, mean_correction=False).fit(X, y)
    assert m.kind_ == "product"
    np.testing.assert_allclose(m.qbar_, ref.qbar, rtol=1e-10)
    assert m.action_ == pytest.approx(ref.action, rel=1e-10)
    Xt = np.random.default_rng(9).normal(size=(7, X.shape[1]))
    blocks = kernels.nngp(net, X, Xt)
    A = ref.pi * blocks.train + T * np.eye(len(y))
    kt = ref.pi * blocks.test_train
    mean, var = m.predict(Xt, return_var=True)
    np.testing.assert_allclose(mean, kt @ np.linalg.solve(A, y), rtol=1e-7, atol=1e-9)
    ref_var = ref.pi * blocks.test_diag - np.einsum("ij,ji->i", kt, np.linalg.solve(A, kt.T))
    np.testing.assert_allclose(var, np.maximum(ref_var, 0), rtol=1e-6, atol=1e-9)


# --- coordinates from blocks of T's eigenvectors (no P×P matrix of eigenvectors) -----------------------

def _clustered_kernel(P=150, seed=1):
    """K = Q diag(k) Qᵀ with exact clusters (multiplicities 25 and 12 > the blocks used below), a
    near-degenerate run (relative spacing 1e-13), 20 null modes and isolated values; y and m generic."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(P, P)))
    k = np.concatenate([np.zeros(20), np.full(25, 0.3), np.full(12, 2.0), 5.0 * (1 + 1e-13 * np.arange(10)),
                        np.linspace(0.01, 40.0, P - 67)])
    K = (Q * k) @ Q.T
    K = 0.5 * (K + K.T)
    return K, rng.normal(size=P), rng.normal(size=P) + 1.0


def _cluster_invariants(values, C, tol):
    """Per cluster of equal eigenvalues (gaps ≤ tol): the Gram matrix CᵀC of the coordinates over it."""
    cuts = np.flatnonzero(np.diff(values) > tol) + 1
    return [C[a:b].T @ C[a:b] for a, b in zip(np.r_[0, cuts], np.r_[cuts, values.size])]


@pytest.mark.parametrize("block", [8, 16, 40])
def test_blockwise_coordinates_on_clustered_spectra_match_eigh(block, monkeypatch):
    K, y, m = _clustered_kernel()
    w, U = np.linalg.eigh(K)
    V = np.stack([y, m], axis=1)
    ref = U.T @ V
    hs = tridiagonal.householder_spectrum(K.copy(), y)

    def no_full_run(*args, **kwargs):  # the fallback (all of Z at once) must not be what is tested
        raise AssertionError("fell back to the full eigenvector matrix")

    monkeypatch.setattr(tridiagonal.linalg, "eigh_tridiagonal", no_full_run)
    got = hs.coordinates(V, block=block)
    scale = float(np.max(np.abs(V.T @ V)))
    # the coordinates are defined up to a rotation inside each cluster: compare what is invariant
    tol = 1e-9 * w[-1]
    for g, r in zip(_cluster_invariants(hs.values, got, tol), _cluster_invariants(w, ref, tol), strict=True):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-12 * scale)
    for s in (1e-3, 0.5, 10.0):  # the sums the fits take: Σ f(k_i) a_i b_i
        f = 1.0 / (s + np.maximum(w, 0))
        np.testing.assert_allclose((got * f[:, None]).T @ got, (ref * f[:, None]).T @ ref, rtol=0,
                                   atol=1e-12 * scale / s)


@pytest.mark.parametrize("block", [7, 30])
def test_eigenvector_ranges_are_orthonormal_and_accurate(block):
    """The ranges of one MRRR run are orthogonal to each other, also across exact and near-exact clusters
    (multiplicities 25 and 12 > 7, a run spaced 1e-13, 20 null modes), and their residuals are at rounding."""
    K, y, _ = _clustered_kernel(P=120, seed=4)
    hs = tridiagonal.householder_spectrum(K, y)
    mrrr = tridiagonal._MRRR(hs.diagonal, hs.offdiagonal)
    Z = np.vstack([mrrr.vector_rows(a, min(a + block, 120)) for a in range(0, 120, block)])[mrrr.order]
    assert Z.shape == (120, 120)
    np.testing.assert_allclose(Z @ Z.T, np.eye(120), rtol=0, atol=1e-13)
    T = np.diag(hs.diagonal) + np.diag(hs.offdiagonal, 1) + np.diag(hs.offdiagonal, -1)
    np.testing.assert_allclose(Z @ T, hs.values[:, None] * Z, rtol=0, atol=1e-13 * hs.values[-1])
    with pytest.raises(ConfigError, match="block"):
        tridiagonal.householder_spectrum(np.eye(3), np.ones(3)).coordinates(np.ones(3), block=0)


@pytest.mark.filterwarnings("ignore::finwidth.errors.ValidityWarning")
@pytest.mark.parametrize("T,dup", [(1e-2, False), (0.2, True)])
def test_nonodd_fit_with_blocks_equals_the_full_eigenvector_path(T, dup, monkeypatch):
    """The non-odd fit (Q̄, Q, action, validity, predictions) with blocks of 8 eigenvectors against the previous
    path (all of Z at once: a block of P); ``dup`` repeats inputs (numerically-null kernel modes)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(90, 6))
    if dup:
        X[60:] = X[:30]
    y = np.tanh(X[:, 0]) + 0.1 * rng.normal(size=90)
    Xt = rng.normal(size=(5, 6))
    net = Network([40], "relu")
    assert spectral.checked_spectrum(np.linalg.eigvalsh(kernels.nngp(net, X).train))[1] == (30 if dup else 0)
    fits = {}
    for name, block in (("full", 10**6), ("blocks", 8)):
        monkeypatch.setattr(tridiagonal, "BLOCK_MIN", block)
        if name == "blocks":  # no fallback to the full eigenvector matrix
            monkeypatch.setattr(tridiagonal.linalg, "eigh_tridiagonal", None)
        m = RKGP(net, T).fit(X, y)
        assert m.kind_ == "nonodd"
        fits[name] = (m, m.predict(Xt, return_var=True))
    (a, (ma, va)), (b, (mb, vb)) = fits["full"], fits["blocks"]
    np.testing.assert_allclose(b.qbar_, a.qbar_, rtol=1e-12)
    np.testing.assert_allclose(b.q_, a.q_, rtol=1e-12)
    assert b.action_ == pytest.approx(a.action_, rel=1e-12)
    assert b.validity_.degrees_of_freedom == pytest.approx(a.validity_.degrees_of_freedom, rel=1e-12)
    np.testing.assert_allclose(mb, ma, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(vb, va, rtol=1e-11, atol=1e-13)


@pytest.mark.filterwarnings("ignore::finwidth.errors.ValidityWarning")
def test_product_fit_with_a_large_null_space_in_ranges_equals_the_full_path(monkeypatch):
    """A linear network with P = 200 > N_0 = 10: 190 numerically-null modes, one cluster spread over many
    ranges of 25 vectors; the product fit (labels' coordinates from the ranges) equals the previous path."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(200, 10))
    y = X[:, 0] + 0.3 * rng.normal(size=200)
    net = Network([100], "linear")
    fits = []
    for block in (10**6, 25):
        monkeypatch.setattr(tridiagonal, "BLOCK_MIN", block)
        if block == 25:  # no fallback to the full eigenvector matrix
            monkeypatch.setattr(tridiagonal.linalg, "eigh_tridiagonal", None)
        fits.append(RKGP(net, 1e-2).fit(X, y))
    assert fits[1].kind_ == "product"
    np.testing.assert_allclose(fits[1].qbar_, fits[0].qbar_, rtol=1e-13)
    assert fits[1].action_ == pytest.approx(fits[0].action_, rel=1e-13)
