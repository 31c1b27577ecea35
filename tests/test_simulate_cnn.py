"""Two-layer CNN sampler model: gradients vs autograd, patch layout, equivalence with the FCN at one
patch, and the mean-field ↔ standard function-space map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from finwidth import Network
from finwidth.convnet import ConvNetwork
from finwidth.errors import ConfigError
from finwidth.simulate.two_layer import TwoLayerCNN, TwoLayerFCN
from finwidth.simulate.weights import sample_weights


@pytest.mark.parametrize("act", ["erf", "relu", "linear"])
@pytest.mark.parametrize("scaling", ["mean_field", "standard"])
def test_gradient_matches_autograd(act, scaling):
    rng = np.random.default_rng(0)
    net = ConvNetwork(12, 4, 5, act, priors=(0.8, 1.7))
    m = TwoLayerCNN(net, 0.29, scaling=scaling)
    A0 = m.prepare_inputs(rng.standard_normal((6, 12)))
    y = torch.as_tensor(rng.standard_normal(6))
    params = m.init_params(3, torch.Generator().manual_seed(2))
    U, grads, _ = m.potential_and_grad(params, A0, y)
    ps = [p.clone().requires_grad_(True) for p in params]
    f = m.forward(ps, A0)
    Ur = 0.5 * ((f - y) ** 2).sum(-1) + 0.5 * m.temperature * sum(
        lam * (p ** 2).flatten(1).sum(-1) for lam, p in zip(m.precisions, ps))
    gr = torch.autograd.grad(Ur.sum(), ps)
    torch.testing.assert_close(U, Ur.detach(), rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, gr):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_forward_by_explicit_loops():
    """f(x) = s_out Σ_c Σ_i a_ci σ(w_c·x_i/sqrt S) with x_i the i-th contiguous block of S features."""
    rng = np.random.default_rng(1)
    net = ConvNetwork(6, 2, 3, "erf")
    m = TwoLayerCNN(net, 0.1, scaling="standard")
    X = rng.standard_normal((2, 6))
    W, a = m.init_params(1, torch.Generator().manual_seed(0))
    f = m.forward([W, a], m.prepare_inputs(X))[0].numpy()
    from scipy.special import erf

    ref = np.zeros(2)
    for n in range(2):
        for c in range(3):
            for i in range(3):
                ref[n] += a[0, c, i].item() * erf(W[0, c].numpy() @ X[n, 2 * i: 2 * i + 2] / math.sqrt(2))
    np.testing.assert_allclose(f, ref / math.sqrt(9), rtol=1e-12)


@pytest.mark.parametrize("scaling", ["mean_field", "standard"])
def test_one_patch_cnn_is_the_fcn(scaling):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5, 4))
    y = torch.as_tensor(rng.standard_normal(5))
    cnn = TwoLayerCNN(ConvNetwork(4, 4, 7, "relu", priors=(1.1, 0.6)), 0.2, scaling=scaling)
    fcn = TwoLayerFCN(Network([7], "relu", priors=(1.1, 0.6)), 4, 0.2, scaling=scaling)
    W, a = cnn.init_params(2, torch.Generator().manual_seed(0))
    U1, g1, _ = cnn.potential_and_grad([W, a], cnn.prepare_inputs(X), y)
    U2, g2, _ = fcn.potential_and_grad([W, a.transpose(-1, -2)], fcn.prepare_inputs(X), y)
    torch.testing.assert_close(U1, U2, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(g1[0], g2[0], rtol=1e-12, atol=1e-13)


@pytest.mark.slow
def test_sampling_recovers_the_prior_without_data_signal():
    """At a huge temperature the likelihood is flat and the posterior is the prior: u = w/sqrt(S) ~
    N(0, I/(λ_0 S)), so Tr Σ̂ = 1/λ_0 and the pre-activation variance at x is |x_i|²/(λ_0 S).
    Tolerance: 5 standard errors over 16 independent replicas."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    net = ConvNetwork(6, 3, 16, "erf", priors=(2.0, 1.0))
    m = TwoLayerCNN(net, 1e6, scaling="standard")
    X = rng.standard_normal((4, 6))
    res = sample_weights(m, X, np.zeros(4), sampler="mala", step_size=2e-7, n_steps=1500, burn_in=100,
                         record_every=5, replicas=16, seed=1)
    tr = np.trace(res.sigma_replicas, axis1=1, axis2=2)
    assert abs(tr.mean() - 0.5) < 5 * tr.std(ddof=1) / 4
    ref_var = (X.reshape(4, 2, 3) ** 2).sum(-1) / (2.0 * 3)
    # prior curvature T λ_0 = 2e6 relaxes in ~2.5 steps, records every 5: ~16·16·280 nearly independent
    # draws per entry, relative standard error sqrt(2/n) ≈ 0.005; 5σ = 0.027
    np.testing.assert_allclose(res.preact_var, ref_var, rtol=0.027)


def test_validation():
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        ConvNetwork(10, 3, 4)
    with pytest.raises(ConfigError, match="channels"):
        ConvNetwork(9, 3, 0)
    with pytest.raises(ConfigError, match="priors"):
        ConvNetwork(9, 3, 2, priors=(1.0, -1.0))
    with pytest.raises(ConfigError, match="ConvNetwork"):
        TwoLayerCNN(Network([3]), 0.1)
    m = TwoLayerCNN(ConvNetwork(9, 3, 2), 0.1)
    with pytest.raises(ConfigError, match="input_size"):
        m.prepare_inputs(np.ones((2, 8)))


def test_windows_and_strides_follow_the_spec():
    """2-D windows with overlapping strides: f = s_out Σ_c Σ_i a_ci σ(w_c·x[patch_index[i]]/sqrt(S)), the
    patches of ConvNetwork.patches."""
    rng = np.random.default_rng(4)
    net = ConvNetwork(16, (2, 2), 3, "erf", image_shape=(4, 4), stride=(1, 2))
    m = TwoLayerCNN(net, 0.1, scaling="standard")
    X = rng.standard_normal((2, 16))
    W, a = m.init_params(1, torch.Generator().manual_seed(0))
    f = m.forward([W, a], m.prepare_inputs(X))[0].numpy()
    from scipy.special import erf

    idx, Nt = net.patch_index, net.n_patches
    ref = [sum(a[0, c, i].item() * erf(W[0, c].numpy() @ X[n, idx[i]] / 2.0) for c in range(3) for i in range(Nt))
           for n in range(2)]
    np.testing.assert_allclose(f, np.array(ref) / math.sqrt(3 * Nt), rtol=1e-12)


def test_pooled_readout_by_explicit_loops_and_its_gradient():
    """Pooled readout: f = (1/sqrt C) Σ_c a_c (1/Ñ) Σ_i σ(w_c·x_i/sqrt S) on 2-D windows (docs/conventions.md);
    hand-written gradients equal autograd; mean-field scaling is refused (the pooled readout is standard only)."""
    rng = np.random.default_rng(5)
    net = ConvNetwork(16, (2, 2), 3, "erf", image_shape=(4, 4), stride=(2, 1), readout="pooled", priors=(0.7, 1.3))
    m = TwoLayerCNN(net, 0.2, scaling="standard")
    X = rng.standard_normal((4, 16))
    y = torch.as_tensor(rng.standard_normal(4))
    params = m.init_params(2, torch.Generator().manual_seed(1))
    W, a = params
    assert a.shape == (2, 3, 1)
    A0 = m.prepare_inputs(X)
    f = m.forward(params, A0)[1].numpy()
    from scipy.special import erf

    idx, Nt = net.patch_index, net.n_patches
    ref = [sum(a[1, c, 0].item() * erf(W[1, c].numpy() @ X[n, idx[i]] / 2.0) for c in range(3) for i in range(Nt))
           / (Nt * math.sqrt(3)) for n in range(4)]
    np.testing.assert_allclose(f, ref, rtol=1e-12)
    U, grads, _ = m.potential_and_grad(params, A0, y)
    ps = [p.clone().requires_grad_(True) for p in params]
    Ur = 0.5 * ((m.forward(ps, A0) - y) ** 2).sum(-1) + 0.5 * m.temperature * sum(
        lam * (p ** 2).flatten(1).sum(-1) for lam, p in zip(m.precisions, ps))
    for g, r in zip(grads, torch.autograd.grad(Ur.sum(), ps)):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    with pytest.raises(ConfigError, match="standard scaling"):
        TwoLayerCNN(net, 0.2, scaling="mean_field")
