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
