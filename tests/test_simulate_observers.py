"""sample_posterior(..., observers=...): user measurements at every record, averaged with error bars.

The bookkeeping is checked against quantities the library already estimates from the same records:
the raw readout norm (a trace) and the raw test predictions (a per-chunk accumulator) come out
identical when computed by an observer from the record state; observers do not change the chains;
a checkpointed run resumes to the same observed means; bad observers are rejected.
"""

import math

import numpy as np
import pytest
import torch

import finwidth
from finwidth import Network
from finwidth.errors import ConfigError
from test_simulate_api import _data as tanh_teacher  # the same tanh teacher, smaller

torch.set_num_threads(1)


def _data():
    return tanh_teacher(P=12, N0=30, Pt=20)


N1 = 16
KW = dict(temperature=0.05, sampler="baoab", step_size=0.2, n_steps=1200, record_every=10, replicas=4, seed=3,
          burn_in=200, rao_blackwell=False)


def _observers():
    def readout_norm(s):  # λ_1 |a|²/N_1 with λ_1 = 1
        return (s.params[-1].double() ** 2).flatten(1).sum(-1) / N1

    def test_f(s):  # raw network output at the test points, from the record's test features
        a = s.params[-1].double().reshape(s.features.shape[0], -1)
        return torch.einsum("rpi,ri->rp", s.test_features.double(), a) / math.sqrt(N1)

    def kernel(s):
        Phi = s.features.double()
        return Phi @ Phi.transpose(1, 2) / N1

    return {"qbar": readout_norm, "test_f": test_f, "K": kernel}


@pytest.fixture(scope="module")
def runs():
    X, y, Xt, yt = _data()
    net = Network([N1], "erf")
    plain = finwidth.sample_posterior(net, X, y, X_test=Xt, y_test=yt, **KW)
    observed = finwidth.sample_posterior(net, X, y, X_test=Xt, y_test=yt, observers=_observers(), **KW)
    return plain, observed, (net, X, y, Xt, yt)


def test_observers_do_not_change_the_chains(runs):
    plain, observed, _ = runs
    for k in plain.traces:
        np.testing.assert_array_equal(observed.traces[k], plain.traces[k], err_msg=k)


def test_observed_means_equal_the_library_estimates_of_the_same_records(runs):
    _, res, _ = runs
    o = res.observed
    assert set(o) == {"qbar", "test_f", "K"}
    assert o["qbar"].n_records == (KW["n_steps"] - KW["burn_in"]) // KW["record_every"]
    np.testing.assert_allclose(float(o["qbar"].mean), float(res.qbar_readout_raw), rtol=1e-10)
    np.testing.assert_allclose(o["test_f"].mean, res.prediction_mean, rtol=1e-6, atol=1e-7)
    assert o["K"].mean.shape == (12, 12) and np.allclose(o["K"].mean, o["K"].mean.T)
    assert np.all(np.isfinite(o["K"].stderr)) and np.all(o["qbar"].stderr > 0)
    # the jackknife error of the readout norm has the size of the library's own (same records, other blocks)
    assert 0.2 < float(o["qbar"].stderr) / res.qbar_readout_raw.stderr < 5


def test_resume_with_observers(tmp_path, runs):
    from finwidth.simulate.config import run_config
    from finwidth.simulate.loop import build_run

    _, full, (net, X, y, Xt, yt) = runs
    kw = dict(KW, X_test=Xt, y_test=yt)
    cfg, data = run_config(net, X, y, checkpoint=tmp_path / "o.ckpt", checkpoint_every=600, **kw)
    half = build_run(net, data, cfg, observers=_observers())
    half.initialize()
    half.cfg = cfg.replace(n_steps=600)  # killed after the first checkpoint
    half.run()
    payload = finwidth.simulate.checkpoint.load_checkpoint(tmp_path / "o.ckpt")
    payload["cfg"]["n_steps"] = KW["n_steps"]
    finwidth.simulate.checkpoint.save_checkpoint(tmp_path / "o.ckpt", payload)
    with pytest.raises(ConfigError, match="same observers"):
        finwidth.simulate.resume(tmp_path / "o.ckpt")
    resumed = finwidth.simulate.resume(tmp_path / "o.ckpt", observers=_observers())
    for name in full.observed:
        np.testing.assert_array_equal(resumed.observed[name].mean, full.observed[name].mean, err_msg=name)


def test_bad_observers():
    X, y, _, _ = _data()
    net = Network([N1], "erf")
    with pytest.raises(ConfigError, match="observers must be a dict"):
        finwidth.sample_posterior(net, X, y, observers=[lambda s: 0], **KW)
    with pytest.raises(ConfigError, match="replica axis first"):
        finwidth.sample_posterior(net, X, y, observers={"bad": lambda s: 1.0}, **KW)
