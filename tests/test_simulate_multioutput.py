"""Sampling networks with D outputs: gradients against autograd, the readout's D × D second moment
against dense linear algebra, the estimates against direct numpy from the raw samples, exact Gibbs against
MALA on the same law, and bad input. The theory comparisons are in test_multioutput_sampling.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import finwidth
from finwidth import Network
from finwidth.convnet import ConvNetwork
from finwidth.errors import ConfigError, NotConvergedWarning
from finwidth.simulate.config import run_config
from finwidth.simulate.loop import build_run
from finwidth.simulate.networks import BatchedMLP
from finwidth.simulate.observables import ReadoutConditional
from finwidth.simulate.recorder import Observable

torch.set_num_threads(1)


def _classes(P, Pt, N0, D, seed):
    """Inputs and one-hot labels of a random linear teacher with D classes."""
    rng = np.random.default_rng(seed)
    X, Xt = rng.standard_normal((P, N0)), rng.standard_normal((Pt, N0))
    W = rng.standard_normal((N0, D))
    return X, np.eye(D)[np.argmax(X @ W, 1)], Xt, np.eye(D)[np.argmax(Xt @ W, 1)]


@pytest.mark.parametrize("act,widths,bias", [("erf", [7], 0.3), ("relu", [7, 5], [0.5, 0.3, 0.2]),
                                             ("linear", [6, 4], None), ("tanh", [5], None)])
def test_gradient_with_several_outputs_matches_autograd(act, widths, bias):
    D = 3
    net = Network(widths, act, priors=np.linspace(0.7, 2.0, len(widths) + 1), bias=bias)
    m = BatchedMLP(net, 6, 0.3, n_outputs=D, dtype=torch.float64)
    params = m.init_params(2, torch.Generator().manual_seed(1))
    assert params[net.depth].shape == (2, D, widths[-1])
    g = torch.Generator().manual_seed(2)
    X = torch.randn((11, 6), generator=g, dtype=torch.float64)
    Y = torch.randn((11, D), generator=g, dtype=torch.float64)
    U, grads, _ = m.potential_and_grad(params, X, Y)
    ps = [p.clone().requires_grad_(True) for p in params]
    f = m.forward(ps, X)
    assert f.shape == (2, 11, D)
    # the explicit formula of each output: row a of the readout times the last features
    _, Phi = m.readout_features(params, X)
    for a in range(D):
        fa = Phi @ params[net.depth][:, a, :, None] / np.sqrt(widths[-1])
        if bias is not None:
            fa = fa + params[-1][:, None, a, None]
        torch.testing.assert_close(f[..., a].detach(), fa[..., 0])
    U_ref = 0.5 * ((Y - f) ** 2).flatten(1).sum(-1) + sum(0.5 * 0.3 * lam * (p ** 2).flatten(1).sum(-1)
                                                          for p, lam in zip(ps, m.precisions))
    ref = torch.autograd.grad(U_ref.sum(), ps)
    torch.testing.assert_close(U, U_ref.detach(), rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("P,N,bv", [(30, 12, 0.0), (12, 30, 0.0), (30, 12, 0.4), (12, 30, 0.4)])
def test_readout_second_moment_matches_dense(P, N, bv):
    """E[a aᵀ | Φ] = m mᵀ + tr(A⁻¹) 1 over the N readout weights (the bias column excluded), from the dense
    precision A = Φ̃ᵀΦ̃/(N T) + λ of the augmented features, in feature space (N < P) and sample space."""
    g = torch.Generator().manual_seed(5)
    Phi = torch.randn((2, P, N), generator=g, dtype=torch.float64)
    Y = torch.randn((P, 3), generator=g, dtype=torch.float64)
    lam, T = 1.3, 0.2
    rc = ReadoutConditional(Phi, Y, lam, T, bv)
    for r in range(2):
        F = Phi[r].numpy()
        if bv > 0:
            F = np.hstack([F, np.full((P, 1), np.sqrt(N * lam * bv))])
        A = F.T @ F / (N * T) + lam * np.eye(F.shape[1])
        cov = np.linalg.inv(A)
        m = cov @ F.T @ Y.numpy() / (np.sqrt(N) * T)  # (N(+1), D)
        ref = m[:N].T @ m[:N] + np.trace(cov[:N, :N]) * np.eye(3)
        np.testing.assert_allclose(rc.second_moment[r].numpy(), ref, rtol=1e-9, atol=1e-11)
        assert float(rc.norm2[r]) == pytest.approx(np.trace(ref), rel=1e-10)


def test_estimates_with_several_outputs_match_numpy_on_the_raw_samples():
    """With rao_blackwell=False and a fixed burn-in, every D-output field of PosteriorSamples is a
    statistic of the recorded raw samples: recompute each from the raw test predictions and readouts."""
    X, Y, Xt, Yt = _classes(P=15, Pt=9, N0=6, D=3, seed=0)
    net = Network([10], "erf", priors=(1.0, 1.5))
    cfg, data = run_config(net, X, Y, temperature=0.1, step_size=0.1, n_steps=600, burn_in=200, record_every=5,
                           X_test=Xt, y_test=Yt, replicas=4, seed=3, rao_blackwell=False)
    run = build_run(net, data, cfg, observables=[Observable("ftest", source="f_test"),
                                                 Observable("readout", lambda p: p[1])])
    run.initialize()
    run.run(progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)  # a short chain: only the arithmetic is checked
        res = run.result()
    run.close()
    post = cfg.record_steps() > 200
    f = run.recorder.traces["ftest"][post]  # (S, R, Pt, D)
    a = run.recorder.traces["readout"][post]  # (S, R, D, N)
    mean = f.mean((0, 1))
    np.testing.assert_allclose(res.prediction_mean, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.prediction_var, f.var((0, 1)), rtol=1e-8, atol=1e-12)
    q = 1.5 / 10 * np.einsum("srai,srbi->ab", a, a) / (a.shape[0] * a.shape[1])
    np.testing.assert_allclose(res.qbar_matrix, q, rtol=1e-10)
    np.testing.assert_allclose(res.qbar_matrix_raw, q, rtol=1e-10)
    assert float(res.qbar_readout) == pytest.approx(np.trace(q) / 3, rel=1e-10)
    err = res.generalization_error
    tot = np.mean((f - Yt) ** 2, axis=(0, 1, 2))
    np.testing.assert_allclose([float(e) for e in err.total_per_output], tot, rtol=1e-9)
    assert float(err.total) == pytest.approx(tot.sum(), rel=1e-9)
    assert sum(float(e) for e in err.bias_per_output) == pytest.approx(float(err.bias), rel=1e-8)
    assert float(err.accuracy) == np.mean(np.argmax(mean, 1) == np.argmax(Yt, 1))
    # test-averaged output covariance: jackknife bias-corrected, so equal to the plain value within its error
    dev = f - mean
    cov = np.einsum("srpa,srpb->ab", dev, dev) / (f.shape[0] * f.shape[1] * f.shape[2])
    se = res.output_covariance_stderr
    assert np.all(np.abs(res.output_covariance - cov) <= 0.5 * se + 1e-12), (res.output_covariance, cov, se)
    d = np.sqrt(np.diag(cov))
    assert np.all(np.abs(res.output_correlation - cov / np.outer(d, d)) <= 0.5 * res.output_correlation_stderr
                  + 1e-12)
    np.testing.assert_allclose(np.diag(res.output_correlation), 1.0)
    assert res.n_outputs == 3
    assert "readout_outer_raw" in res.diagnostics.rhat and "test_outer_raw" in res.diagnostics.ess


def test_one_output_results_have_no_matrix_fields():
    X, Y, Xt, Yt = _classes(P=10, Pt=5, N0=4, D=2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)
        res = finwidth.sample_posterior(Network([6], "erf"), X, Y[:, :1], temperature=0.1, step_size=0.1,
                                        n_steps=100, X_test=Xt, y_test=Yt[:, 0], replicas=2)
    assert res.qbar_matrix is None and res.output_correlation is None and res.n_outputs == 1
    assert res.generalization_error.accuracy is None and res.prediction_mean.shape == (5,)


@pytest.mark.slow
def test_mala_with_several_outputs_samples_the_exact_gibbs_posterior():
    """A linear network with D = 3 outputs: MALA (the BatchedMLP D-output potential and gradient, exact at
    any step) against exact block Gibbs (the D-output Kronecker sweep): Q̂ = λ⟨a aᵀ⟩/N, ε_g per output and
    the output correlations agree within 5 combined standard errors."""
    X, Y, Xt, Yt = _classes(P=12, Pt=10, N0=8, D=3, seed=2)
    net = Network([6], "linear", priors=(1.0, 1.4))
    kw = dict(temperature=0.2, X_test=Xt, y_test=Yt, replicas=8, seed=1)
    gibbs = finwidth.sample_posterior(net, X, Y, sampler="gibbs", n_steps=1500, **kw)
    mala = finwidth.sample_posterior(net, X, Y, sampler="mala", step_size=0.02, n_steps=20000,
                                     init="readout_conditional", **kw)
    assert gibbs.diagnostics.converged and mala.diagnostics.converged, (gibbs.diagnostics.problems,
                                                                       mala.diagnostics.problems)

    def agree(a, sa, b, sb):
        a, b, sa, sb = map(np.asarray, (a, b, sa, sb))
        assert np.all(np.abs(a - b) <= 5 * np.hypot(sa, sb) + 1e-12), (a, b, sa, sb)  # diagonal correlations: 1 ± ulp

    agree(gibbs.qbar_matrix, gibbs.qbar_matrix_stderr, mala.qbar_matrix, mala.qbar_matrix_stderr)
    g, m = gibbs.generalization_error, mala.generalization_error
    agree([float(e) for e in g.total_per_output], [e.stderr for e in g.total_per_output],
          [float(e) for e in m.total_per_output], [e.stderr for e in m.total_per_output])
    agree(gibbs.output_correlation, gibbs.output_correlation_stderr, mala.output_correlation,
          mala.output_correlation_stderr)


def test_resume_with_several_outputs_is_bit_identical(tmp_path):
    """The D × D traces are part of the checkpoint: a resumed run equals the uninterrupted one."""
    X, Y, Xt, Yt = _classes(P=10, Pt=6, N0=5, D=3, seed=4)
    net = Network([8], "erf", bias=0.2)
    kw = dict(temperature=0.1, step_size=0.1, n_steps=120, record_every=4, X_test=Xt, y_test=Yt, replicas=3, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)
        full = finwidth.sample_posterior(net, X, Y, **kw)
        cfg, data = run_config(net, X, Y, checkpoint=tmp_path / "m.ckpt", checkpoint_every=40, **kw)
        half = build_run(net, data, cfg)
        half.initialize()
        half.cfg = cfg.replace(n_steps=40)  # killed after the first checkpoint
        half.run(progress=False)
        half.close()
        payload = finwidth.simulate.checkpoint.load_checkpoint(tmp_path / "m.ckpt")
        payload["cfg"]["n_steps"] = 120
        finwidth.simulate.checkpoint.save_checkpoint(tmp_path / "m.ckpt", payload)
        resumed = finwidth.simulate.resume(tmp_path / "m.ckpt")
    assert "readout_outer_rb" in full.traces and "test_outer_rb" in full.traces
    for k in full.traces:
        np.testing.assert_array_equal(resumed.traces[k], full.traces[k], err_msg=k)
    np.testing.assert_array_equal(resumed.output_correlation, full.output_correlation)


@pytest.mark.parametrize("call,match", [
    (lambda X, Y, Xt, Yt: finwidth.sample_posterior(Network([4], "erf"), X, Y, temperature=0.1, step_size=0.1,
                                                    n_steps=10, X_test=Xt, y_test=Yt[:, :2]),
     "y_test has 2 outputs per point but y has 3"),
    (lambda X, Y, Xt, Yt: finwidth.sample_posterior(Network([4], "erf"), X, Y[:, :0], temperature=0.1,
                                                    step_size=0.1, n_steps=10), "zero outputs"),
    (lambda X, Y, Xt, Yt: finwidth.sample_posterior(Network([4], "erf"), X, Y[:-1], temperature=0.1,
                                                    step_size=0.1, n_steps=10), "7 entries but there are 8 inputs"),
    (lambda X, Y, Xt, Yt: finwidth.sample_posterior(Network([4], "linear"), X, Y[:, :0], temperature=0.1,
                                                    sampler="gibbs", n_steps=10), "zero outputs"),
    (lambda X, Y, Xt, Yt: finwidth.sample_posterior(Network([4], "erf"), X, np.where(Y > 0, np.nan, Y),
                                                    temperature=0.1, step_size=0.1, n_steps=10), "NaN"),
    (lambda X, Y, Xt, Yt: finwidth.sample_posterior(Network([4], "erf"), X, Y, temperature=0.1, step_size=0.1,
                                                    n_steps=10, scaling="mean_field"), "one output"),
    (lambda X, Y, Xt, Yt: finwidth.sample_posterior(ConvNetwork(6, 2, 3, "erf"), X, Y, temperature=0.1,
                                                    step_size=0.1, n_steps=10), "one output"),
])
def test_bad_multioutput_input(call, match):
    X, Y, Xt, Yt = _classes(P=8, Pt=4, N0=6, D=3, seed=0)
    with pytest.raises(ConfigError, match=match):
        call(X, Y, Xt, Yt)


def test_gibbs_deep_linear_with_several_outputs_records_the_readout_outer_product():
    X, Y, Xt, _ = _classes(P=10, Pt=4, N0=5, D=3, seed=6)
    from finwidth.simulate.gibbs import gibbs_deep_linear

    s = gibbs_deep_linear(Network([6, 4], "linear"), X, Y, temperature=0.2, n_sweeps=20, replicas=2, seed=1, X_test=Xt)
    assert s.readout_outer.shape == (20, 2, 3, 3) and s.test_pred.shape == (20, 2, 4, 3)
    np.testing.assert_allclose(np.trace(s.readout_outer, axis1=-2, axis2=-1), s.readout_norm, rtol=1e-12)
    assert s.hidden_alignment.shape == (20, 2, 2) and np.all(np.isfinite(s.hidden_alignment))
