"""The exact block-Gibbs sampler against brute-force numerical integration of tiny posteriors.

The reference is a direct quadrature of the posterior density on a 3-d grid (no theory involved):
networks with three scalar weights, so the whole posterior can be integrated numerically.
"""

from __future__ import annotations

import numpy as np
import pytest

from finwidth.errors import ConfigError
from finwidth.network import Network
from finwidth.simulate.gibbs import gibbs_deep_linear


def _grid_posterior(X, y, xt, priors, T, shapes, n=121):
    """Posterior expectations by quadrature over every weight (each on ±7 prior sd)."""
    prec = []
    for lam, shp in zip(priors, shapes):
        prec += [lam] * int(np.prod(shp))
    grids = [np.linspace(-7 / np.sqrt(p), 7 / np.sqrt(p), n) for p in prec]
    theta = [m.ravel() for m in np.meshgrid(*grids, indexing="ij")]
    Ws, i = [], 0
    for shp in shapes:
        k = int(np.prod(shp))
        Ws.append(np.stack(theta[i:i + k], -1).reshape(-1, *shp))
        i += k
    c = 1 / np.sqrt(np.prod([s[1] for s in shapes]))

    def f(Xin):
        h = np.broadcast_to(Xin.T, (Ws[0].shape[0], *Xin.T.shape))
        for W in Ws:
            h = W @ h
        return c * h[:, 0, :]

    logp = -((y - f(X)) ** 2).sum(1) / (2 * T) - 0.5 * sum(p * t ** 2 for p, t in zip(prec, theta))
    w = np.exp(logp - logp.max())
    w /= w.sum()
    fte = f(xt)
    return {
        "readout_norm": w @ (Ws[-1] ** 2).sum((1, 2)),
        "layer0": w @ (Ws[0] ** 2).sum((1, 2)),
        "test_mean": w @ fte,
        "test_second": w @ fte ** 2,
    }


CASES = [
    # (hidden widths, N0, priors, T): three scalar weights in total
    ([1, 1], 1, (1.0, 2.0, 0.5), 0.3),
    ([1], 2, (0.7, 1.5), 0.2),
]


@pytest.mark.slow
@pytest.mark.parametrize("widths,n0,priors,T", CASES)
def test_gibbs_matches_quadrature(widths, n0, priors, T):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3, n0)) * 1.2
    y = np.array([0.8, -0.3, 1.5])
    xt = rng.normal(size=(2, n0))
    dims = [n0, *widths, 1]
    shapes = [(dims[l + 1], dims[l]) for l in range(len(dims) - 1)]
    ref = _grid_posterior(X, y, xt, priors, T, shapes)
    net = Network(widths, "linear", priors=priors)
    s = gibbs_deep_linear(net, X, y, temperature=T, n_sweeps=400, burn_in=50, replicas=300, seed=7, X_test=xt)
    checks = {
        "readout_norm": s.replica_means("readout_norm"),
        "layer0": s.replica_means("layer_norms")[:, 0],
        "test_mean": s.replica_means("test_pred"),
        "test_second": np.mean(s.test_pred ** 2, axis=0),
    }
    for name, rm in checks.items():
        mean = rm.mean(axis=0)
        se = rm.std(axis=0, ddof=1) / np.sqrt(rm.shape[0])
        # replica means are independent: 4.5 standard errors (two-sided p ~ 7e-6 per check)
        assert np.all(np.abs(mean - ref[name]) <= 4.5 * se), (name, mean, ref[name], se)
        assert np.all(se < 0.05 * np.abs(ref[name]) + 1e-3), (name, se)  # the check has power


def test_gibbs_shapes_and_records():
    net = Network([4, 3], "linear", priors=1.0)
    X = np.random.default_rng(0).normal(size=(5, 6))
    y = np.arange(5.0)
    s = gibbs_deep_linear(net, X, y, temperature=0.5, n_sweeps=10, burn_in=2, replicas=3, seed=0,
                          X_test=X[:2], record_every=2)
    assert s.readout_norm.shape == (5, 3)
    assert s.layer_norms.shape == (5, 3, 3)
    assert np.allclose(s.layer_norms[..., -1], s.readout_norm)
    assert s.train_pred.shape == (5, 3, 5) and s.test_pred.shape == (5, 3, 2)
    # test predictions at training inputs equal the recorded training predictions
    assert np.allclose(s.test_pred, s.train_pred[..., :2])
    assert s.hidden_trace.shape == (5, 3, 2) and np.all(s.hidden_trace > 0)
    assert list(s.sweeps) == [2, 4, 6, 8, 10]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"n_sweeps": 0}, "n_sweeps"),
        ({"replicas": 0}, "replicas"),
    ],
)
def test_gibbs_rejects_bad_settings(kwargs, match):
    net = Network([3], "linear")
    X = np.ones((4, 2))
    args = {"temperature": 1.0, "n_sweeps": 5, **kwargs}
    with pytest.raises(ConfigError, match=match):
        gibbs_deep_linear(net, X, np.zeros(4), **args)


def test_gibbs_rejects_bad_inputs():
    X = np.ones((4, 2))
    with pytest.raises(ConfigError, match="linear"):
        gibbs_deep_linear(Network([3], "erf"), X, np.zeros(4), temperature=1.0, n_sweeps=2)
    with pytest.raises(ConfigError, match="bias"):
        gibbs_deep_linear(Network([3], "linear", bias=0.1), X, np.zeros(4), temperature=1.0, n_sweeps=2)
    with pytest.raises(ConfigError, match="3 entries but there are 4 inputs"):
        gibbs_deep_linear(Network([3], "linear"), X, np.zeros(3), temperature=1.0, n_sweeps=2)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        gibbs_deep_linear(Network([3], "linear"), bad, np.zeros(4), temperature=1.0, n_sweeps=2)
