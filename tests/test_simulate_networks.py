"""Batched networks: hand-written gradients against torch autograd, the Rao–Blackwell readout
against dense linear algebra, input reduction against the full first layer, stiffness estimate
against the dense Gauss–Newton matrix."""

import math

import numpy as np
import pytest
import torch

from finwidth import Network
from finwidth.simulate.guidance import stiffness
from finwidth.inputs import InputReduction
from finwidth.simulate.networks import BatchedMLP
from finwidth.simulate.observables import ReadoutConditional, sample_readout_conditional

torch.set_num_threads(1)


@pytest.mark.parametrize("act,widths,bias", [("erf", [7], None), ("relu", [7, 5], [0.5, 0.3, 0.2]),
                                             ("linear", [6, 4, 3], None), ("tanh", [5, 4], 0.4)])
def test_gradient_matches_autograd(act, widths, bias):
    net = Network(widths, act, priors=np.linspace(0.7, 2.0, len(widths) + 1), bias=bias)
    m = BatchedMLP(net, 6, 0.3, dtype=torch.float64)
    params = m.init_params(3, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    X = torch.randn((11, 6), generator=g, dtype=torch.float64)
    y = torch.randn(11, generator=g, dtype=torch.float64)
    U, grads, _ = m.potential_and_grad(params, X, y)
    ps = [p.clone().requires_grad_(True) for p in params]
    f = m.forward(ps, X)
    U_ref = 0.5 * ((y - f) ** 2).sum(-1) + sum(0.5 * 0.3 * lam * (p ** 2).flatten(1).sum(-1)
                                               for p, lam in zip(ps, m.precisions))
    ref = torch.autograd.grad(U_ref.sum(), ps)
    torch.testing.assert_close(U, U_ref.detach(), rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_forward_matches_explicit_formula():
    net = Network([4, 3], "erf", priors=1.0)
    m = BatchedMLP(net, 5, 1.0, dtype=torch.float64)
    p = m.init_params(2, torch.Generator().manual_seed(0))
    X = torch.randn(6, 5, dtype=torch.float64)
    for r in range(2):
        h1 = X @ p[0][r].T / math.sqrt(5)
        h2 = torch.erf(h1) @ p[1][r].T / math.sqrt(4)
        f = (torch.erf(h2) @ p[2][r].T / math.sqrt(3)).squeeze(-1)
        torch.testing.assert_close(m.forward(p, X)[r], f)


@pytest.mark.parametrize("P,N,bv", [(30, 40, 0.0), (50, 20, 0.0), (30, 40, 0.7), (50, 20, 0.7)])
def test_readout_conditional_matches_dense(P, N, bv):
    g = torch.Generator().manual_seed(P + N)
    Phi = torch.randn((2, P, N), generator=g, dtype=torch.float64)
    y = torch.randn(P, generator=g, dtype=torch.float64)
    Pt = torch.randn((2, 7, N), generator=g, dtype=torch.float64)
    lam, T = 1.7, 0.3
    rc = ReadoutConditional(Phi, y, lam, T, bv)
    mu, v = rc.predict(Pt)
    for r in range(2):
        F, Ft, prec = Phi[r].numpy() / math.sqrt(N), Pt[r].numpy() / math.sqrt(N), np.full(N, lam)
        if bv > 0:
            F, Ft = np.hstack([F, np.ones((P, 1))]), np.hstack([Ft, np.ones((7, 1))])
            prec = np.append(prec, 1 / bv)
        C = np.linalg.inv(F.T @ F / T + np.diag(prec))
        mean = C @ F.T @ y.numpy() / T
        np.testing.assert_allclose(mu[r].numpy(), Ft @ mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(v[r].numpy(), np.einsum("ij,jk,ik->i", Ft, C, Ft), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(rc.norm2[r].item(), (mean[:N] ** 2).sum() + np.trace(C[:N, :N]), rtol=1e-10)


def test_readout_conditional_draws_have_the_exact_moments():
    P, N, lam, T, bv = 8, 5, 1.3, 0.4, 0.5
    g = torch.Generator().manual_seed(0)
    Phi1 = torch.randn((1, P, N), generator=g, dtype=torch.float64)
    y = torch.randn(P, generator=g, dtype=torch.float64)
    R = 20000
    a, b = sample_readout_conditional(Phi1.expand(R, P, N), y, lam, T, g, bv)
    F = np.hstack([Phi1[0].numpy() / math.sqrt(N), np.ones((P, 1))])
    C = np.linalg.inv(F.T @ F / T + np.diag(np.append(np.full(N, lam), 1 / bv)))
    mean = C @ F.T @ y.numpy() / T
    x = np.hstack([a[:, 0].numpy(), b.numpy()])
    se = np.sqrt(np.diag(C) / R)
    assert np.all(np.abs(x.mean(0) - mean) < 5 * se)
    se_c = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C ** 2) / R)
    assert np.all(np.abs(np.cov(x.T) - C) < 5 * se_c)


def test_input_reduction_reproduces_the_full_first_layer():
    rng = np.random.default_rng(0)
    P, N0, N1 = 6, 15, 5
    X, Xt = rng.standard_normal((P, N0)), rng.standard_normal((4, N0))
    red = InputReduction.from_inputs(X)
    assert red.rank == P
    np.testing.assert_allclose(red.basis.T @ red.basis, np.eye(P), atol=1e-12)
    W0 = rng.standard_normal((N1, N0))
    W_span = W0 @ red.basis
    W_perp = W0 - W_span @ red.basis.T
    net = Network([N1], "erf")
    full = BatchedMLP(net, N0, 1.0, dtype=torch.float64)
    reduced = BatchedMLP(net, N0, 1.0, first_layer_inputs=P, dtype=torch.float64)
    a = torch.randn(1, 1, N1, dtype=torch.float64)
    pf = [torch.tensor(W0)[None], a]
    pr = [torch.tensor(W_span)[None], a]
    f_full = full.forward(pf, torch.tensor(X))
    f_red = reduced.forward(pr, torch.tensor(red.reduce(X)))
    torch.testing.assert_close(f_full, f_red)  # the likelihood only sees W_span
    # test points: W_perp x_perp is the extra pre-activation; its law is G Fᵀ with G iid prior
    F = red.perp_factor(Xt)
    xp = Xt - red.reduce(Xt) @ red.basis.T
    np.testing.assert_allclose(F @ F.T, xp @ xp.T, atol=1e-10)
    extra = torch.tensor((xp @ W_perp.T) / math.sqrt(N0))[None]
    torch.testing.assert_close(full.forward(pf, torch.tensor(Xt)),
                               reduced.forward(pr, torch.tensor(red.reduce(Xt)), extra))


def test_stiffness_matches_dense_gauss_newton():
    net = Network([6, 4], "tanh", priors=[1.0, 2.0, 0.5])
    P, N0, T = 9, 5, 0.2
    m = BatchedMLP(net, N0, T, dtype=torch.float64)
    params = m.init_params(2, torch.Generator().manual_seed(4), "prior")
    X = torch.randn(P, N0, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    k = stiffness(m, params, X, n_iter=200, generator=torch.Generator().manual_seed(6))
    best = 0.0
    for r in range(2):
        flat = [p[r : r + 1] for p in params]
        J = torch.autograd.functional.jacobian(lambda *ps: m.forward(list(ps), X)[0], tuple(flat))
        Jm = torch.cat([j.reshape(P, -1) for j in J], dim=1)
        best = max(best, float(torch.linalg.eigvalsh(Jm @ Jm.T).max()))
    assert k == pytest.approx(best + T * 2.0, rel=1e-6)


@pytest.mark.parametrize("P,N,bv", [(30, 12, 0.0), (12, 30, 0.4)])
def test_readout_conditional_with_several_outputs_is_one_conditional_per_output(P, N, bv):
    """Targets (P, D): the D readout rows are independent given Φ with one shared precision, so the
    D-output conditional equals D one-output conditionals (means per output, the same variance,
    norms summed), in feature and in sample space."""
    g = torch.Generator().manual_seed(3)
    Phi = torch.randn((2, P, N), generator=g, dtype=torch.float64)
    Y = torch.randn((P, 3), generator=g, dtype=torch.float64)
    Pt = torch.randn((2, 5, N), generator=g, dtype=torch.float64)
    rc = ReadoutConditional(Phi, Y, 1.3, 0.2, bv)
    mu, v = rc.predict(Pt)
    assert mu.shape == (2, 5, 3) and v.shape == (2, 5)
    norm = torch.zeros(2, dtype=torch.float64)
    for d in range(3):
        one = ReadoutConditional(Phi, Y[:, d], 1.3, 0.2, bv)
        m1, v1 = one.predict(Pt)
        torch.testing.assert_close(mu[..., d], m1, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(v, v1, rtol=1e-10, atol=1e-12)
        norm += one.norm2
    torch.testing.assert_close(rc.norm2, norm, rtol=1e-10, atol=1e-12)
    a, b = sample_readout_conditional(Phi, Y, 1.3, 0.2, torch.Generator().manual_seed(0), bv)
    assert a.shape == (2, 3, N) and (b is None) == (bv == 0) and (b is None or b.shape == (2, 3))


@pytest.mark.parametrize("bias", [None, [0.5, 0.2]])
def test_gradients_do_not_share_the_reused_scratch_buffers(bias):
    """The gradient's forward pass keeps σ' and the first pre-activation in per-thread buffers
    reused by the next call (erf in place: no page faults per step); what a call returns must not
    live in them (MALA holds the current gradient while it evaluates the proposal's)."""
    rng = np.random.default_rng(1)
    P, N0, N1 = 30, 12, 7
    X, y = rng.standard_normal((P, N0)), rng.standard_normal(P)
    red = InputReduction.from_inputs(X)
    model = BatchedMLP(Network([N1], "erf", bias=bias), N0, 0.5, first_layer_inputs=red.rank, dtype=torch.float64)
    A0 = model.prepare_inputs(red.train_lower)
    model.use_lower_inputs(A0)
    yt = torch.tensor(y)
    p1 = model.init_params(3, torch.Generator().manual_seed(0), "prior")
    p2 = model.init_params(3, torch.Generator().manual_seed(1), "prior")
    _, g1, _ = model.potential_and_grad(p1, A0, yt)
    kept = [g.clone() for g in g1]
    _, g2, _ = model.potential_and_grad(p2, A0, yt)
    for a, b in zip(g1, kept):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and the scratch path gives autograd's gradient
    params = [p.clone().requires_grad_(True) for p in p2]
    f = model.forward(params, A0)
    U = 0.5 * ((f - yt) ** 2).sum() + 0.5 * 0.5 * sum((p ** 2).sum() * lam for p, lam in zip(params, model.precisions))
    U.backward()
    for g, p in zip(g2, params):
        torch.testing.assert_close(g, p.grad)
