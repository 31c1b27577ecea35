"""``sample_posterior`` with the two-layer models: the mean-field FCN (``scaling="mean_field"``) and
the CNN (``ConvNetwork``). References: the exact Gibbs sampler of the equivalent standard network,
closed-form prior moments, and the independent ``sample_weights`` driver."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import finwidth
from finwidth import Network
from finwidth.convnet import ConvNetwork
from finwidth.errors import ConfigError
from finwidth.simulate.two_layer import TwoLayerCNN
from finwidth.simulate.weights import sample_weights

torch.set_num_threads(1)


def _agree(a, b, k=5.0, what=""):
    se = math.hypot(a.stderr, b.stderr)
    assert abs(float(a) - float(b)) < k * se, f"{what}: {float(a):.5g} vs {float(b):.5g} (se {se:.2g})"


@pytest.mark.slow
def test_mean_field_linear_matches_exact_gibbs_of_the_mapped_standard_network():
    """A mean-field net (f = a·h/N, a ~ N(0, 1/λ_1)) is the standard net with readout precision λ_1 N in
    function space (a' = a/sqrt(N)): same posterior of f and the same λ⟨|a|²⟩/N. MALA (exact) on
    the mean-field net vs block Gibbs (exact) on the mapped one, within 5 combined standard errors."""
    rng = np.random.default_rng(1)
    P, N0, N, Pt = 12, 6, 20, 10
    X, Xt = rng.standard_normal((P, N0)), rng.standard_normal((Pt, N0))
    w = rng.standard_normal(N0)
    y = X @ w / math.sqrt(N0) + 0.1 * rng.standard_normal(P)
    yt = Xt @ w / math.sqrt(N0)
    lam1, T = 0.05, 0.5 / N  # small T in mean field: the feature-learning regime
    mf = finwidth.sample_posterior(Network([N], "linear", priors=(1.0, lam1)), X, y, temperature=T,
                                   scaling="mean_field", sampler="mala", step_size=0.1, n_steps=8000,
                                   burn_in=1000, record_every=10, replicas=8, X_test=Xt, y_test=yt,
                                   dtype="float64", seed=3)
    gs = finwidth.sample_posterior(Network([N], "linear", priors=(1.0, lam1 * N)), X, y, temperature=T,
                                   sampler="gibbs", n_steps=1500, burn_in=100, replicas=8, X_test=Xt,
                                   y_test=yt, seed=4)
    assert mf.config["scaling"] == "mean_field" and mf.config["input_reduction"] is False
    assert 0.3 < mf.diagnostics.acceptance < 0.99
    # Rao–Blackwellised readout estimates only: the readout directions outside the span of the features
    # feel only the prior, curvature T λ_1 ≈ 1e-3, and relax over ~1/(η T λ_1) = 8000 MALA steps (the
    # whole run), so the raw |a|² has not mixed; the conditional expectation integrates them exactly.
    _agree(mf.qbar_readout, gs.qbar_readout, what="qbar")
    for part in ("total", "bias", "variance"):
        _agree(getattr(mf.generalization_error, part), getattr(gs.generalization_error, part), what=part)
    _agree(mf.train_error, gs.train_error, what="train")
    z = (mf.prediction_mean - gs.prediction_mean) / np.hypot(mf.prediction_mean_stderr, gs.prediction_mean_stderr)
    assert np.all(np.abs(z) < 5), z


@pytest.mark.slow
@pytest.mark.parametrize("scaling", ["standard", "mean_field"])
def test_cnn_at_huge_temperature_recovers_its_prior(scaling):
    """T = 1e6 makes the likelihood flat: the posterior is the prior. Closed forms (erf, labels 0):
    ε_g = mean_test E f(x)² = s_out² C (1/λ_1) Σ_i (2/π) arcsin(2v_i/(1 + 2v_i)), v_i = |x_i|²/(λ_0 S);
    ⟨‖W‖²⟩ = C S/λ_0, ⟨|a|²⟩ = C Ñ/λ_1, qbar_readout = 1. BAOAB is exact for this Gaussian target."""
    rng = np.random.default_rng(0)
    net = ConvNetwork(12, 4, 16, "erf", priors=(2.0, 0.5))
    C, S, Nt = 16, 4, 3
    X, Xt = rng.standard_normal((6, 12)), rng.standard_normal((5, 12))
    T = 1e6
    h = finwidth.simulate.suggest_step_size(net, X, np.zeros(6), temperature=T, scaling=scaling)["baoab"]
    res = finwidth.sample_posterior(net, X, np.zeros(6), temperature=T, scaling=scaling, step_size=h,
                                    n_steps=2000, burn_in=200, record_every=4, replicas=8, X_test=Xt,
                                    y_test=np.zeros(5), dtype="float64", seed=2)
    s_out2 = 1.0 / (C * C * Nt) if scaling == "mean_field" else 1.0 / (C * Nt)
    v = (Xt.reshape(5, Nt, S) ** 2).sum(-1) / (2.0 * S)
    eg = s_out2 * C / 0.5 * ((2 / np.pi) * np.arcsin(2 * v / (1 + 2 * v))).sum(-1).mean()
    Est = finwidth.simulate.Estimate
    for got, ref, what in ((res.generalization_error.total, eg, "eps_g"), (res.generalization_error_raw.total, eg, "eps_g raw"),
                           (res.qbar_readout_raw, 1.0, "qbar raw"), (res.layer_norms[0], C * S / 2.0, "|W|²"),
                           (res.layer_norms[1], C * Nt / 0.5, "|a|²")):
        _agree(got, Est(ref, 0.0), what=what)
    # RB: E[|a'|² | Φ] = Tr (λ' + ΦᵀΦ/(M T))⁻¹ with y = 0, so 0 ≤ 1 − qbar ≤ Tr ΦᵀΦ/(M² T λ') ≤ P/(M T λ')
    # (erf² ≤ 1), with λ' = λ_1/(M s_out²) the precision of the standard-form readout
    M = C * Nt
    lam_std = 0.5 / (M * s_out2)
    assert 0.0 <= 1.0 - float(res.qbar_readout) <= 6 / (M * T * lam_std)
    assert res.diagnostics.max_rhat < 1.05


@pytest.mark.slow
def test_cnn_sample_posterior_matches_sample_weights():
    """The same CNN posterior at moderate T through both drivers (same sampler and step, independent
    seeds): test MSE and test predictions agree within 5 combined standard errors."""
    rng = np.random.default_rng(5)
    net = ConvNetwork(12, 4, 8, "erf")
    X, Xt = rng.standard_normal((10, 12)), rng.standard_normal((8, 12))
    w = rng.standard_normal(4)
    y = np.tanh(X.reshape(10, 3, 4) @ w).mean(-1)
    yt = np.tanh(Xt.reshape(8, 3, 4) @ w).mean(-1)
    T, h, n, burn = 0.05, 0.2, 4000, 800
    res = finwidth.sample_posterior(net, X, y, temperature=T, scaling="mean_field", step_size=h, n_steps=n,
                                    burn_in=burn, record_every=5, replicas=8, X_test=Xt, y_test=yt,
                                    dtype="float64", seed=7)
    ref = sample_weights(TwoLayerCNN(net, T, scaling="mean_field"), X, y, sampler="baoab", step_size=h,
                         n_steps=n, burn_in=burn, record_every=5, replicas=8, X_test=Xt, y_test=yt, seed=8)
    Est = finwidth.simulate.Estimate
    _agree(res.generalization_error.total, Est(ref.test_mse, ref.test_mse_stderr), what="eps_g (RB)")
    _agree(res.generalization_error_raw.total, Est(ref.test_mse, ref.test_mse_stderr), what="eps_g (raw)")
    ref_se = ref.test_mean_replicas.std(0, ddof=1) / math.sqrt(8)
    z = (res.prediction_mean - ref.test_mean) / np.hypot(res.prediction_mean_stderr, ref_se)
    assert np.all(np.abs(z) < 5), z


@pytest.mark.parametrize("net,kw,match", [
    (Network([6], "erf"), dict(scaling="ntk"), "scaling"),
    (Network([6], "erf"), dict(scaling="mean_field", input_reduction=True), "input_reduction"),
    (Network([6], "linear"), dict(scaling="mean_field", sampler="gibbs", step_size=None), "gibbs"),
    (Network([6, 6], "erf"), dict(scaling="mean_field"), "one hidden layer"),
    (Network([6], "erf", bias=0.1), dict(scaling="mean_field"), "biases"),
    (ConvNetwork(10, 5, 4), dict(), "input_size"),
    (ConvNetwork(12, 4, 4), dict(input_reduction=True), "input_reduction"),
])
def test_two_layer_models_reject_what_they_cannot_do(net, kw, match):
    rng = np.random.default_rng(0)
    args = dict(temperature=0.1, step_size=0.1, n_steps=20, replicas=2)
    args.update(kw)
    with pytest.raises(ConfigError, match=match):
        finwidth.sample_posterior(net, rng.standard_normal((5, 12)), rng.standard_normal(5), **args)


@pytest.mark.filterwarnings("ignore::finwidth.errors.NotConvergedWarning")  # 40 steps: the init and the basis, not a result
def test_readout_conditional_init_and_auto_input_reduction():
    """P < N_0 would switch input reduction on for BatchedMLP; the two-layer models run the full layer.
    init='readout_conditional' starts the readout at its exact conditional (finite energies, a fit)."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((5, 12)), rng.standard_normal(5)
    for net, sc in ((Network([10], "erf"), "mean_field"), (ConvNetwork(12, 3, 6, "relu"), "standard")):
        res = finwidth.sample_posterior(net, X, y, temperature=0.05, scaling=sc, step_size=0.05, n_steps=40,
                                        record_every=1, replicas=2, init="readout_conditional", burn_in=0)
        assert res.config["input_reduction"] is False
        assert np.all(np.isfinite(res.traces["energy"]))
        assert res.traces["train_mse_raw"][0].max() < np.mean(y ** 2)
