"""Matrix-free theory: tiled kernel operator, Lanczos quadrature, stochastic trace, CG predictions.

References are independent of the code under test: the dense kernel of ``kernels.nngp``, dense
eigendecompositions and solves (numpy), the dense saddle-point solver, and the exact Hutchinson
variance 2(‖F‖_F² − Σ F_ii²) computed from an eigendecomposition.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from finwidth import kernels
from finwidth.errors import ConfigError, ConvergenceError
from finwidth.kernel_operator import KernelOperator, storage_bytes
from finwidth.network import Network
from finwidth.theory import krylov, scalable, spectral


def _data(P=150, N0=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, N0))
    y = np.tanh(X[:, 0] + 0.5 * X[:, 1]) + 0.1 * rng.normal(size=P)
    return X, y


@pytest.mark.parametrize("act,bias", [("erf", None), ("relu", [0.1, 0.2, 0.3]), ("tanh", None)])
def test_operator_matches_dense_kernel(act, bias):
    X, _ = _data(P=233)
    net = Network([10, 10], act, bias=bias)
    K = kernels.nngp(net, X).train
    V = np.random.default_rng(1).normal(size=(233, 3))
    for storage, tol in (("float64", 1e-14), ("recompute", 1e-14), ("float32", 1e-7)):
        op = KernelOperator(net, X, storage=storage, tile=50, threads=2)
        assert np.max(np.abs(op.dense() - K)) <= tol * np.max(np.abs(K))
        assert np.allclose(op @ V, K @ V, rtol=0, atol=tol * 10 * np.abs(K @ V).max())
        assert np.allclose(op.matmat(V[:, 0]), K @ V[:, 0], rtol=0, atol=tol * 10 * np.abs(K @ V).max())
        np.testing.assert_allclose(op.diagonal(), np.diagonal(K), rtol=1e-14)


def test_operator_storage_choice_and_errors():
    X, _ = _data(P=100)
    net = Network([5], "erf")
    assert KernelOperator(net, X).storage == "float64"
    assert KernelOperator(net, X, max_bytes=storage_bytes(100, "float32", 2048)).storage == "float32"
    assert KernelOperator(net, X, max_bytes=10).storage == "recompute"
    # the tiles of the upper triangle: half of a dense copy plus the diagonal tiles' lower halves
    assert storage_bytes(4096, "float64", 2048) == 8 * (2048 * 4096 + 2048 * 2048)
    for kw in ({"storage": "float16"}, {"tile": 0}, {"threads": 0}):
        with pytest.raises(ConfigError):
            KernelOperator(net, X, **kw)
    with pytest.raises(ConfigError, match="shape"):
        KernelOperator(net, X).matmat(np.ones(7))


def _psd(P=80, seed=3):
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.normal(size=(P, P)))[0]
    k = np.exp(rng.uniform(-8, 2, size=P))
    return (U * k) @ U.T


def test_gauss_and_radau_bracket_the_resolvent():
    K = _psd()
    rng = np.random.default_rng(0)
    V = rng.normal(size=(80, 3))
    lz = krylov.ScalarLanczos(V)
    for _ in range(12):
        lz.advance(np.arange(3), K @ lz.current(np.arange(3)))
    J = lz.jacobi()
    w, U = np.linalg.eigh(K)
    for s in (1e-3, 0.1, 3.0):
        exact1 = np.einsum("ij,i,ij->j", U.T @ V, 1 / (s + w), U.T @ V)
        exact2 = np.einsum("ij,i,ij->j", U.T @ V, 1 / (s + w) ** 2, U.T @ V)
        g1, g2 = J.resolvent(s)
        r1, r2 = J.radau().resolvent(s)
        # Gauss below, Gauss-Radau (node at 0) above, for these completely monotone functions
        assert np.all(g1 <= exact1 * (1 + 1e-12)) and np.all(exact1 <= r1 * (1 + 1e-12))
        assert np.all(g2 <= exact2 * (1 + 1e-12)) and np.all(exact2 <= r2 * (1 + 1e-12))
        # the continued fraction is the Gauss rule of the eigendecomposition
        for i, (theta, wt) in enumerate(J.rules()):
            assert g1[i] == pytest.approx(np.sum(wt / (s + theta)), rel=1e-11)
    # run to the end: the rules become exact
    for _ in range(150):
        lz.advance(np.arange(3), K @ lz.current(np.arange(3)))
    g1, _ = lz.jacobi().resolvent(0.01)
    exact = np.einsum("ij,i,ij->j", U.T @ V, 1 / (0.01 + w), U.T @ V)
    assert np.allclose(g1, exact, rtol=1e-9)


def test_block_lanczos_rule_gives_the_label_gram_matrix():
    K = _psd(P=60)
    Y = np.random.default_rng(2).normal(size=(60, 3))
    bl = krylov.BlockLanczos(Y)
    while not bl.exhausted:
        bl.advance(K @ bl.current())
    theta, Z = bl.rule()
    w, U = np.linalg.eigh(K)
    f = 1 / (0.05 + w)
    exact = (U.T @ Y).T @ ((U.T @ Y) * f[:, None])
    assert np.allclose(Z.T @ (Z / (0.05 + theta)[:, None]), exact, rtol=1e-9)
    with pytest.raises(ConfigError, match="dependent"):
        krylov.BlockLanczos(np.ones((10, 2)))


@pytest.mark.parametrize("widths", [[60], [80, 50]])
def test_krylov_saddle_with_exact_probes_is_the_dense_saddle(widths):
    X, y = _data(P=120)
    net = Network(widths, "erf")
    K = kernels.nngp(net, X).train
    basis = spectral.eigenbasis(K)
    dense = spectral.solve_product(basis, basis.project(y), 0.01, widths)
    sol = scalable.solve_product_krylov(lambda V: K @ V, y, 0.01, widths, rtol=1e-10, probes="exact")
    assert np.allclose(sol.qbar, dense.qbar, rtol=1e-9)
    assert sol.action == pytest.approx(dense.action, rel=1e-9)
    assert np.all(sol.qbar_stderr == 0) and np.all(sol.qbar_quadrature_error <= 3e-10 * sol.qbar)


def test_krylov_saddle_error_bars_are_honest():
    """Rademacher probes: the answer is within a few standard errors of the dense one, and the
    reported standard error matches the exact Hutchinson variance of this kernel."""
    P, T, N = 300, 1e-2, 150
    X, y = _data(P=P, seed=4)
    net = Network([N], "erf")
    K = kernels.nngp(net, X).train
    basis = spectral.eigenbasis(K)
    dense = spectral.solve_product(basis, basis.project(y), T, [N])
    sol = scalable.solve_product_krylov(lambda V: K @ V, y, T, [N], rtol=2e-3, seed=7, deflate=0)
    se = sol.qbar_stderr[0]
    assert abs(sol.qbar[0] - dense.qbar[0]) <= 4 * se + sol.qbar_quadrature_error[0]
    assert se <= 2e-3 * sol.qbar[0]
    # exact Hutchinson variance of tr(ΠK(T + ΠK)⁻¹)/P at the dense root, propagated with dQ̄/dg
    w, U = basis.values, basis.vectors
    f = dense.pi * w / (T + dense.pi * w)
    F_diag = (U ** 2) @ f
    var = 2 * (np.sum(f ** 2) - np.sum(F_diag ** 2)) / P ** 2
    sens = scalable.qbar_sensitivity(spectral.SpectralMeasure.from_eigenbasis(w, basis.project(y) ** 2), dense, T,
                                     np.array([N], float))
    expected = abs(sens[0]) * math.sqrt(var / sol.n_probes)
    assert 0.6 * expected <= se <= 1.6 * expected  # 32 probes: the sample spread is itself ±13%


def test_krylov_saddle_raises_when_the_budget_cannot_verify_the_target():
    X, y = _data(P=200)
    K = kernels.nngp(Network([100], "erf"), X).train
    with pytest.raises(ConvergenceError, match="probes"):
        scalable.solve_product_krylov(lambda V: K @ V, y, 1e-2, [100], rtol=1e-6, max_probes=40)
    with pytest.raises(ConvergenceError, match="not converged"):
        scalable.solve_product_krylov(lambda V: K @ V, y, 1e-4, [100], rtol=1e-12, probes="exact", max_steps=20,
                                      check_every=10)
    with pytest.raises(ConfigError, match="T > 0"):
        scalable.solve_product_krylov(lambda V: K @ V, y, 0.0, [100])
    with pytest.raises(ConfigError, match="probes"):
        scalable.solve_product_krylov(lambda V: K @ V, y, 0.1, [100], probes=1)


def test_krylov_predictor_is_the_dense_gp():
    X, y = _data(P=260)
    Xt = np.random.default_rng(9).normal(size=(37, 20))
    net = Network([50], "erf")
    op = KernelOperator(net, X, tile=64)
    pi, T = 0.7, 1e-3
    pred = scalable.KrylovPredictor(op, y, T, pi, rank=40, rtol=1e-11)
    blocks = kernels.nngp(net, X, Xt)
    A = pi * blocks.train + T * np.eye(260)
    mean = pi * blocks.test_train @ np.linalg.solve(A, y)
    var = pi * blocks.test_diag - pi ** 2 * np.einsum("ij,ji->i", blocks.test_train,
                                                       np.linalg.solve(A, blocks.test_train.T))
    m, v = pred.predict(Xt, return_var=True, block_rows=16)
    assert np.allclose(m, mean, rtol=1e-7, atol=1e-9)
    assert np.allclose(v, var, rtol=1e-6, atol=1e-9)
    assert np.allclose(pred.predict(Xt), m)
    assert pred.residual <= 1e-10


# N_1 = 70 < P = 140: the validity diagnostic warns (the theory's regime); the numbers are what is tested
@pytest.mark.filterwarnings("ignore::finwidth.errors.ValidityWarning")
def test_rkgp_krylov_path_is_the_dense_fit():
    from finwidth.theory.rkgp import RKGP

    X, y = _data(P=140)
    Xt = np.random.default_rng(5).normal(size=(30, 20))
    net = Network([70], "erf")
    dense = RKGP(net, 0.01).fit(X, y)
    assert dense.solver_ == "dense" and np.all(dense.qbar_stderr_ == 0)
    kry = RKGP(net, 0.01, solver="krylov", solver_options={"probes": "exact", "rtol": 1e-10, "tile": 64}).fit(X, y)
    assert kry.solver_ == "krylov" and kry.kind_ == "product"
    assert np.allclose(kry.qbar_, dense.qbar_, rtol=1e-9)
    assert kry.log_evidence_ == pytest.approx(dense.log_evidence_, rel=1e-9)
    assert kry.width_criterion_ is None
    assert kry.roundoff_sensitivity_ == pytest.approx(dense.roundoff_sensitivity_, rel=1e-6)
    m0, v0 = dense.predict(Xt, return_var=True)
    m1, v1 = kry.predict(Xt, return_var=True)
    assert np.allclose(m1, m0, rtol=1e-7, atol=1e-9) and np.allclose(v1, v0, rtol=1e-6, atol=1e-9)
    e0, e1 = dense.generalization_error(Xt, np.tanh(Xt[:, 0])), kry.generalization_error(Xt, np.tanh(Xt[:, 0]))
    assert e1.total == pytest.approx(e0.total, rel=1e-7)


def test_rkgp_solver_choice_is_validated():
    from finwidth.theory.rkgp import RKGP

    X, y = _data(P=40)
    for kw in ({"temperature": 0.0}, {"network": Network([20], "relu")},
               {"network": Network([20, 20], "erf"), "renormalization": "nested"}):
        args = {"network": Network([20], "erf"), "temperature": 0.1} | kw
        with pytest.raises(ConfigError, match="solver='krylov'"):
            RKGP(args.pop("network"), args.pop("temperature"), solver="krylov", **args).fit(X, y)
    with pytest.raises(ConfigError, match="solver must be"):
        RKGP(Network([20], "erf"), 0.1, solver="lanczos").fit(X, y)
    with pytest.raises(ConfigError, match="unknown solver_options"):
        RKGP(Network([20], "erf"), 0.1, solver_options={"rtool": 1e-3}).fit(X, y)
    assert scalable.choose_solver("auto", scalable.KRYLOV_ABOVE_P + 1, product_form=True, temperature=0.1) == "krylov"
    assert scalable.choose_solver("auto", scalable.KRYLOV_ABOVE_P + 1, product_form=False, temperature=0.1) == "dense"
    assert scalable.choose_solver("auto", scalable.KRYLOV_ABOVE_P, product_form=True, temperature=0.1) == "dense"


def test_the_theory_does_not_import_torch_without_a_device():
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from finwidth import Network\n"
            "from finwidth.theory.rkgp import RKGP\n"
            "X = np.random.default_rng(0).normal(size=(60, 5)); y = X[:, 0]\n"
            "RKGP(Network([30], 'erf'), 0.1, solver='krylov', solver_options={'rtol': 0.05}).fit(X, y).predict(X[:3])\n"
            "RKGP(Network([30], 'erf'), 0.1).fit(X, y).predict(X[:3], return_var=True)\n"
            "RKGP(Network([30, 20], 'erf'), 0.1, renormalization='nested').fit(X, y).predict(X[:3])\n"
            "from finwidth import NNGP\n"
            "NNGP(Network([30], 'relu'), 0.1).fit(X, y).predict(X[:3], return_var=True)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_float32_products_move_the_answer_far_less_than_the_reported_errors():
    """float32 tiles multiplied in float32 (sums in float64) perturb K entrywise by η ~ 1e-7: with exact
    (deterministic) probes the float32 and float64 answers differ by less than the product-error estimate
    the fit reports, itself far below any useful rtol."""
    X, y = _data(P=220, seed=2)
    net = Network([110], "erf")
    K = kernels.nngp(net, X).train
    V = np.random.default_rng(0).choice([-1.0, 1.0], size=(220, 5))
    op32 = KernelOperator(net, X, storage="float32", tile=64, threads=2)
    # η: entrywise backward error of a product, against float64 products on the exact kernel
    assert 1e-8 <= op32.product_error <= 64 * np.finfo(np.float32).eps
    assert np.all(np.abs(op32 @ V - K @ V) <= 2 * (64 + 2) * np.finfo(np.float32).eps * (np.abs(K) @ np.abs(V)))
    assert KernelOperator(net, X, storage="float64", tile=64).product_error < 1e-14
    opts = {"probes": "exact", "rtol": 1e-9, "tile": 64}
    from finwidth.theory.rkgp import RKGP

    f64 = RKGP(net, 0.01, solver="krylov", solver_options={**opts, "storage": "float64"}).fit(X, y)
    # (rtol = 1e-9 would be refused with float32: below the products' accuracy)
    f32 = RKGP(net, 0.01, solver="krylov", solver_options={**opts, "storage": "float32", "rtol": 1e-5}).fit(X, y)
    diff = abs(f32.qbar_[0] - f64.qbar_[0])
    assert 0 < f32.qbar_product_error_[0] <= 1e-5 * f32.qbar_[0]
    assert diff <= f32.qbar_product_error_[0] + f32.qbar_quadrature_error_[0] + f64.qbar_quadrature_error_[0]
    assert f64.qbar_product_error_[0] < 1e-12
    # a target below the products' accuracy is refused, with what to change
    with pytest.raises(ConvergenceError, match="float64"):
        scalable.solve_product_krylov(op32.matmat, y, 0.01, [110], rtol=1e-3, product_error=1e-1)


# ---------------------------------------------------------------------------------------------
# deflation: the top eigenpairs exact, Hutchinson on the complement (krylov.Deflation)
# ---------------------------------------------------------------------------------------------


def _mnist_like_kernel(P=300, seed=3):
    X, y = _data(P=P, N0=40, seed=seed)
    return X, y, kernels.nngp(Network([P // 2], "erf"), X).train


def test_top_eigenpairs_are_verified_and_the_deflation_bound_holds():
    X, y, K = _mnist_like_kernel()
    w = np.linalg.eigvalsh(K)[::-1]
    d = krylov.top_eigenpairs(lambda V: K @ V, K.shape[0], above=0.5, residual_budget=1e-16, max_vectors=280,
                              block=16, rng=np.random.default_rng(0))
    assert d.k == np.sum(w > 0.5) and np.allclose(d.values, w[:d.k], rtol=1e-10, atol=1e-12)
    R = K @ d.vectors - d.vectors * d.values
    assert np.sum(R ** 2) == pytest.approx(d.residual2, rel=1e-6, abs=1e-20) and d.residual2 <= 1e-16
    assert np.allclose(d.vectors.T @ d.vectors, np.eye(d.k), atol=1e-12)
    # an inexact subspace: tr f(K) − [Σ f(θ) + tr f(K_⊥)] within ‖R‖² max|f''| (f = x/(s + x): 2/s²)
    rng = np.random.default_rng(1)
    V, _ = np.linalg.qr(d.vectors + 1e-3 * rng.normal(size=d.vectors.shape))
    theta, S = np.linalg.eigh(V.T @ K @ V)
    V = V @ S
    r2 = float(np.sum((K @ V - V * theta) ** 2))
    Pp = np.eye(K.shape[0]) - V @ V.T
    mu = np.maximum(np.linalg.eigvalsh(Pp @ K @ Pp), 0.0)[d.k:]  # the complement (k zeros dropped)
    for s in (1e-3, 1e-2, 1.0):
        exact = np.sum(w / (s + np.maximum(w, 0)))
        split = np.sum(theta / (s + theta)) + np.sum(mu / (s + mu))
        assert 0 < abs(exact - split) <= r2 * 2 / s ** 2


def test_deflated_hutchinson_is_unbiased_and_its_standard_error_calibrated():
    """The estimator of tr f(K) (deflated part + projected probes + control variate), with the probes'
    quadratic forms computed densely: over 400 repetitions of 32 probes its mean is tr f(K) and the
    spread of (estimate − exact)/(reported standard error) is that of a unit normal."""
    X, y, K = _mnist_like_kernel()
    P, s = K.shape[0], 3e-3
    w, U = np.linalg.eigh(K)
    exact = np.sum(np.maximum(w, 0) / (s + np.maximum(w, 0)))
    d = scalable.deflate_top(lambda V: K @ V, P, 1e-3, 1e-3, "auto", 0)
    assert d.k > 0
    Pp = np.eye(P) - d.vectors @ d.vectors.T
    mu, Up = np.linalg.eigh(Pp @ K @ Pp)
    Fp = (Up * (np.maximum(mu, 0) / (s + np.maximum(mu, 0)))) @ Up.T
    rng = np.random.default_rng(2)
    z = []
    for _ in range(400):
        Zp = d.project(krylov.rademacher(P, 32, rng))
        vals = d.complete(np.einsum("ij,ij->j", Zp, Fp @ Zp), np.sum(Zp ** 2, axis=0), d.values / (s + d.values), P)
        z.append((vals.mean() - exact) / (vals.std(ddof=1) / math.sqrt(32)))
    z = np.array(z)
    assert abs(z.mean()) <= 4 / math.sqrt(z.size) and 0.85 <= z.std() <= 1.2


def test_deflated_krylov_saddle_is_the_dense_saddle():
    X, y, K = _mnist_like_kernel(P=200)
    T, widths = 1e-3, [100]
    basis = spectral.eigenbasis(K)
    dense = spectral.solve_product(basis, basis.project(y), T, widths)
    # unit-vector probes on the complement: deterministic, exact up to the deflation's residual bound
    ex = scalable.solve_product_krylov(lambda V: K @ V, y, T, widths, rtol=1e-9, probes="exact", deflate=30)
    assert ex.n_deflated == 30 and np.allclose(ex.qbar, dense.qbar, rtol=1e-8)
    assert ex.action == pytest.approx(dense.action, rel=1e-8) and ex.g_deflation_error <= 1e-10
    # Rademacher probes: within the error bars, with fewer Lanczos steps per probe than without deflation
    sol = scalable.solve_product_krylov(lambda V: K @ V, y, T, widths, rtol=2e-3, seed=3, check_every=5)
    plain = scalable.solve_product_krylov(lambda V: K @ V, y, T, widths, rtol=2e-3, seed=3, deflate=0, check_every=5)
    assert sol.n_deflated > 0 and plain.n_deflated == 0
    assert abs(sol.qbar[0] - dense.qbar[0]) <= 4 * sol.qbar_stderr[0] + sol.qbar_quadrature_error[0]
    assert sol.qbar_stderr[0] <= 2e-3 * sol.qbar[0]
    assert sol.probe_steps.max() < plain.probe_steps.max()


def test_deflate_option_is_validated():
    from finwidth.theory.rkgp import RKGP

    X, y = _data(P=60)
    K = kernels.nngp(Network([30], "erf"), X).train
    for bad in (-1, "yes", True, 2.5):
        with pytest.raises(ConfigError, match="deflate"):
            scalable.solve_product_krylov(lambda V: K @ V, y, 0.1, [30], deflate=bad)
    with pytest.raises(ConfigError, match="deflate"):
        RKGP(Network([30], "erf"), 0.1, solver="krylov", solver_options={"deflate": -2}).fit(X, y)


def test_probes_give_way_to_unit_vectors_when_they_would_cost_as_much():
    X, y, K = _mnist_like_kernel(P=120)
    basis = spectral.eigenbasis(K)
    dense = spectral.solve_product(basis, basis.project(y), 1e-3, [60])
    lines = []
    sol = scalable.solve_product_krylov(lambda V: K @ V, y, 1e-3, [60], rtol=1e-7, progress=lines.append)
    assert any("unit vectors" in line for line in lines)
    assert np.all(sol.qbar_stderr == 0) and sol.n_probes == 120
    assert abs(sol.qbar[0] - dense.qbar[0]) <= sol.qbar_quadrature_error[0] + 1e-12


def test_auto_deflation_is_off_with_inexact_products():
    X, y, K = _mnist_like_kernel(P=150)
    sol = scalable.solve_product_krylov(lambda V: K @ V, y, 1e-3, [75], rtol=1e-2, product_error=6e-8)
    assert sol.n_deflated == 0
    assert scalable.solve_product_krylov(lambda V: K @ V, y, 1e-3, [75], rtol=1e-2).n_deflated > 0
