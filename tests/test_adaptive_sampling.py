"""AdaptiveKernel against mean-field Langevin sampling of a real erf network (small, fixed seeds).

The AK theory is exact only as N → ∞ (mean-field scaling, T ∝ 1/N); at N = 50 its own error is
O(1/N). The test therefore asks that AK predicts the *adaptation* of the weight covariance — the
departure of its top eigenvalue from the prior value 1/(λ_0 N_0) — to within 10 % plus 5 standard
errors of the sampled value, where the GP (no adaptation) would be off by 100 %.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from finwidth import Network
from finwidth.simulate.two_layer import TwoLayerFCN
from finwidth.simulate.weights import sample_weights
from finwidth.theory.adaptive import AdaptiveKernel, covariance_summary


@pytest.mark.slow
def test_adaptive_kernel_vs_mean_field_langevin_erf():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    P, N0, N = 20, 5, 50
    w = rng.standard_normal(N0)
    X = rng.standard_normal((P, N0))
    y = np.tanh(2 * X @ w / math.sqrt(N0))
    Xt = rng.standard_normal((50, N0))
    yt = np.tanh(2 * Xt @ w / math.sqrt(N0))
    T = 0.5 / N
    net = Network([N], "erf", priors=(1.0, 0.1))
    ak = AdaptiveKernel(net, T).fit(X, y)
    res = sample_weights(TwoLayerFCN(net, N0, T), X, y, sampler="baoab", step_size=0.25, n_steps=8000,
                         burn_in=2000, record_every=10, replicas=8, X_test=Xt, y_test=yt, seed=0)
    assert res.rhat["energy"] < 1.05
    prior = 1.0 / N0
    reps = [covariance_summary(s, w) for s in res.sigma_replicas]
    for key in ("top_eigenvalue", "rayleigh"):
        mc = covariance_summary(res.sigma, w)[key]
        se = np.std([r[key] for r in reps], ddof=1) / math.sqrt(len(reps))
        theory = ak.weight_summary(w)[key]
        assert mc - prior > 0.1 * prior  # the weights did adapt: a genuine feature-learning test
        assert abs(theory - mc) < 0.1 * abs(mc - prior) + 5 * se, (key, theory, mc, se)
    # the spike points along the teacher in both
    assert ak.weight_summary(w)["alignment"] > 0.95
    assert covariance_summary(res.sigma, w)["alignment"] > 0.95
    # Gaussian pre-activations (the GFL ansatz): excess kurtosis 0; a two-peaked (GMFL) law would give
    # ≲ −1 (−2 for two sharp peaks), so |κ_ex| < 0.3 separates the two cases
    assert np.all(np.abs(res.preact_excess_kurtosis) < 0.3)
    # test error: AK within 10 % of the sampled ε_g (+5σ); the untrained prior predictor is far off
    eg = ak.generalization_error(Xt, yt).total
    assert abs(eg - res.test_mse) < 0.1 * res.test_mse + 5 * res.test_mse_stderr
    assert np.mean(yt ** 2) > 10 * res.test_mse
