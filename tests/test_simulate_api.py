"""sample_posterior / resume: exactness of the cost cuts, reproducibility, kill-and-resume,
divergence detection and input validation."""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import finwidth
from finwidth import Network
from finwidth.convnet import ConvNetwork
from finwidth.errors import ConfigError, DataError, DivergenceError

torch.set_num_threads(1)


def _data(P=15, N0=40, Pt=60, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(N0)
    X, Xt = rng.standard_normal((P, N0)), rng.standard_normal((Pt, N0))
    return X, np.tanh(X @ w / math.sqrt(N0)), Xt, np.tanh(Xt @ w / math.sqrt(N0))


def _agree(a, b, k=5.0):
    se = math.hypot(a.stderr, b.stderr)
    assert abs(float(a) - float(b)) < k * se, f"{float(a):.5g} vs {float(b):.5g} (se {se:.2g})"


@pytest.fixture(scope="module")
def reduced_and_full():
    X, y, Xt, yt = _data()
    net = Network([30], "erf")
    kw = dict(temperature=0.05, sampler="baoab", step_size=0.3, n_steps=4000, record_every=10, X_test=Xt,
              y_test=yt, replicas=8)
    red = finwidth.sample_posterior(net, X, y, input_reduction=True, seed=1, **kw)
    full = finwidth.sample_posterior(net, X, y, input_reduction=False, seed=2, **kw)
    return red, full


@pytest.mark.slow
def test_input_reduction_samples_the_same_posterior(reduced_and_full):
    red, full = reduced_and_full
    assert red.config["input_reduction"] and not full.config["input_reduction"]
    for name in ("total", "bias", "variance"):
        _agree(getattr(red.generalization_error, name), getattr(full.generalization_error, name))
    _agree(red.qbar_readout, full.qbar_readout)
    _agree(red.train_error, full.train_error)
    # first-layer norm: sampled span part + exact prior expectation of the orthogonal part
    _agree(red.layer_norms[0], full.layer_norms[0])


@pytest.mark.slow
def test_rao_blackwell_agrees_with_raw_and_reduces_variance(reduced_and_full):
    for res in reduced_and_full:
        _agree(res.generalization_error.total, res.generalization_error_raw.total)
        _agree(res.qbar_readout, res.qbar_readout_raw)
        assert res.variance_reduction > 2.0
        ge = res.generalization_error
        assert float(ge.total) == pytest.approx(float(ge.bias) + float(ge.variance))
        assert res.prediction_mean.shape == (60,) and np.all(res.prediction_var >= 0)
        # ε_g variance part = mean over the test set of the posterior predictive variance
        assert float(ge.variance) == pytest.approx(res.prediction_var.mean(), rel=0.05)


@pytest.mark.slow  # three float64 MALA runs
@pytest.mark.filterwarnings("ignore::finwidth.errors.NotConvergedWarning")  # 200 steps: the record layout and seeds, not a result
def test_seed_reproducibility_and_record_layout():
    X, y, Xt, yt = _data(P=8, N0=10, Pt=5)
    net = Network([6, 5], "relu", priors=[1.0, 2.0, 1.0], bias=0.3)
    kw = dict(temperature=0.1, sampler="mala", step_size=0.01, n_steps=200, record_every=4, X_test=Xt,
              y_test=yt, replicas=3, dtype="float64")
    a = finwidth.sample_posterior(net, X, y, seed=5, **kw)
    b = finwidth.sample_posterior(net, X, y, seed=5, **kw)
    c = finwidth.sample_posterior(net, X, y, seed=6, **kw)
    for k in a.traces:
        np.testing.assert_array_equal(a.traces[k], b.traces[k])
    assert not np.array_equal(a.traces["energy"], c.traces["energy"])
    assert a.traces["energy"].shape == (50, 3)
    np.testing.assert_array_equal(a.record_steps, np.arange(4, 201, 4))
    assert 0 < a.diagnostics.acceptance <= 1 and a.diagnostics.acceptance_per_replica.shape == (3,)
    assert a.traces["layer_norms"].shape == (50, 3, 3)


_CHILD = """
import sys, torch
torch.set_num_threads(1)
import numpy as np, finwidth
from finwidth import Network
from finwidth.convnet import ConvNetwork
rng = np.random.default_rng(0)
X, Xt = rng.standard_normal((12, 20)), rng.standard_normal((30, 20))
w = rng.standard_normal(20)
finwidth.sample_posterior({net}, X, np.tanh(X @ w / 4.5), temperature=0.05, sampler="{sampler}",
    step_size={h}, n_steps={n}, record_every=5, X_test=Xt, y_test=np.tanh(Xt @ w / 4.5), replicas=4, seed=11,
    checkpoint=sys.argv[1], checkpoint_every=100, scaling="{scaling}")
"""


@pytest.mark.slow
# 4000 steps: bit-identity after a kill, not a converged result (MALA's energy R̂ is ~1.2 here)
@pytest.mark.filterwarnings("ignore::finwidth.errors.NotConvergedWarning")
@pytest.mark.parametrize("sampler,h,net,scaling,n", [
    ("baoab", 0.2, "Network([40], 'erf')", "standard", 4000),
    ("mala", 0.02, "Network([40], 'erf')", "standard", 4000),
    ("baoab", 0.2, "ConvNetwork(20, 5, 16, 'erf')", "mean_field", 3000),  # the checkpoint records kind and scaling
    ("baoab", 0.2, "ConvNetwork(20, (2, 2), 8, 'erf', image_shape=(4, 5), stride=(2, 1), readout='pooled')", "standard", 3000),
])
def test_sigkill_then_resume_is_bit_identical(tmp_path, sampler, h, net, scaling, n):
    ck = tmp_path / "run.ckpt"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD.format(sampler=sampler, h=h, n=n, net=net, scaling=scaling)))
    proc = subprocess.Popen([sys.executable, str(script), str(ck)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        step = 0
        while time.time() < deadline and proc.poll() is None:
            if ck.exists():
                step = int(finwidth.simulate.checkpoint.load_checkpoint(ck)["run"]["step"])
                if step >= 200:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"child ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 200 <= step < n
    stale = tmp_path / ".run.ckpt.tmp999999"  # what a writer killed between write and rename leaves
    stale.write_bytes(b"partial")
    resumed = finwidth.simulate.resume(ck)
    assert not list(tmp_path.glob(".run.ckpt.tmp*"))  # cleaned on resume
    rng = np.random.default_rng(0)
    X, Xt = rng.standard_normal((12, 20)), rng.standard_normal((30, 20))
    w = rng.standard_normal(20)
    ref = finwidth.sample_posterior(eval(net, {"Network": Network, "ConvNetwork": ConvNetwork}), X,
                                    np.tanh(X @ w / 4.5), temperature=0.05, sampler=sampler, step_size=h,
                                    n_steps=n, record_every=5, X_test=Xt, y_test=np.tanh(Xt @ w / 4.5),
                                    replicas=4, seed=11, scaling=scaling)
    assert resumed.config["scaling"] == scaling
    assert resumed.traces["energy"].shape == (n // 5, 4)
    assert np.all(np.isfinite(resumed.traces["energy"]))  # no record lost
    np.testing.assert_array_equal(resumed.record_steps, np.arange(5, n + 1, 5))  # none twice, none missing
    for k in ref.traces:
        np.testing.assert_array_equal(resumed.traces[k], ref.traces[k], err_msg=k)
    assert float(resumed.generalization_error.total) == float(ref.generalization_error.total)
    np.testing.assert_array_equal(resumed.prediction_mean, ref.prediction_mean)


def test_divergence_is_detected_with_a_step_size_hint():
    X, y, _, _ = _data(P=10, N0=10)
    with pytest.raises(DivergenceError, match="step_size"):
        finwidth.sample_posterior(Network([20], "erf"), X, 10 * y, temperature=0.01, sampler="euler",
                                  step_size=5.0, n_steps=500, replicas=2)


def test_corrupt_checkpoint_raises_data_error(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError):
        finwidth.simulate.resume(bad)
    with pytest.raises(DataError):
        finwidth.simulate.resume(tmp_path / "missing.ckpt")


@pytest.mark.parametrize("change,match", [
    (dict(temperature=-1.0), "temperature"), (dict(temperature=0.0), "temperature"),
    (dict(step_size=None), "step_size"), (dict(step_size=-0.1), "step_size"),
    (dict(sampler="hmc"), "sampler"), (dict(replicas=0), "replicas"), (dict(n_steps=0), "n_steps"),
    (dict(record_every=1000), "record_every"), (dict(burn_in=100), "burn_in"),
    (dict(dtype="float16"), "dtype"), (dict(init="zeros"), "init"), (dict(friction=1.0, sampler="euler"), "friction"),
    (dict(X=np.full((5, 3), np.nan)), "NaN"), (dict(y=np.zeros(4)), "rows"),
    (dict(X_test=np.zeros((3, 4))), "columns"), (dict(y_test=np.zeros(3)), "X_test"),
    (dict(input_reduction="yes"), "input_reduction"), (dict(device="cuda:7" if not torch.cuda.is_available() else "bogus"), "device"),
    (dict(sampler="gibbs", step_size=None), "linear"),
])
def test_bad_input_raises_config_error(change, match):
    rng = np.random.default_rng(0)
    kw = dict(X=rng.standard_normal((5, 3)), y=rng.standard_normal(5), temperature=0.1, sampler="baoab",
              step_size=0.1, n_steps=100, replicas=2)
    kw.update(change)
    X, y = kw.pop("X"), kw.pop("y")
    with pytest.raises(ConfigError, match=match):
        finwidth.sample_posterior(Network([4], "erf"), X, y, **kw)
    with pytest.raises(ConfigError):
        finwidth.sample_posterior("not a network", X, y, temperature=0.1, step_size=0.1, n_steps=10)


@pytest.mark.filterwarnings("ignore::finwidth.errors.NotConvergedWarning")  # a short run: shapes and the burn-in rule
def test_predictions_without_test_labels_and_fixed_burn_in():
    X, y, Xt, _ = _data(P=10, N0=8, Pt=7)
    res = finwidth.sample_posterior(Network([12], "erf", bias=0.5), X, y, temperature=0.1, sampler="euler",
                                    step_size=0.01, n_steps=300, record_every=3, burn_in=60, X_test=Xt,
                                    replicas=2, dtype="float64")
    assert res.generalization_error is None and res.variance_reduction is None
    assert res.prediction_mean.shape == (7,) and res.prediction_mean_stderr.shape == (7,)
    assert res.diagnostics.burn_in_steps == 60 and res.diagnostics.burn_in_rule == "user"
    assert res.config["input_reduction"] is False  # rank 8 = N_0: nothing to reduce
    assert np.isfinite(float(res.train_error)) and np.isfinite(res.train_error.stderr)


def test_gibbs_runs_in_the_loop_and_resumes_bit_identically(tmp_path):
    """sampler='gibbs' goes through the same loop and recorder: its checkpoints (numpy generator
    state included) resume to the uninterrupted run's records, bit for bit."""
    from finwidth.simulate.config import run_config
    from finwidth.simulate.loop import build_run

    X, y, Xt, yt = _data(P=8, N0=12, Pt=6)
    net = Network([10, 6], "linear", priors=[1.0, 2.0, 0.5])
    kw = dict(temperature=0.1, sampler="gibbs", n_steps=60, record_every=2, X_test=Xt, y_test=yt, replicas=3,
              seed=4)
    full = finwidth.sample_posterior(net, X, y, **kw)
    cfg, data = run_config(net, X, y, checkpoint=tmp_path / "g.ckpt", checkpoint_every=20, **kw)
    half = build_run(net, data, cfg)
    half.initialize()
    half.cfg = cfg.replace(n_steps=20)  # killed after the first checkpoint
    half.run()
    payload = finwidth.simulate.checkpoint.load_checkpoint(tmp_path / "g.ckpt")
    payload["cfg"]["n_steps"] = 60
    finwidth.simulate.checkpoint.save_checkpoint(tmp_path / "g.ckpt", payload)
    resumed = finwidth.simulate.resume(tmp_path / "g.ckpt")
    for k in full.traces:
        np.testing.assert_array_equal(resumed.traces[k], full.traces[k], err_msg=k)
    assert full.config.sampler == "gibbs" and full.diagnostics.acceptance is None
    assert np.isfinite(float(full.generalization_error.total)) and full.generalization_error.total.stderr > 0


def test_default_record_every_follows_the_documented_rule():
    """record_every = max(⌈n/200⌉, ⌈8 ρ⌉) capped at n/50, ρ the record cost in steps (a multiply-add
    count): 50 to 200 records, and records spaced by the cost of evaluating the test set."""
    from finwidth.simulate.config import default_record_every, record_cost

    X, y, Xt, yt = _data(P=10, N0=8, Pt=7)
    net = Network([12], "erf")
    res = finwidth.sample_posterior(net, X, y, temperature=0.1, step_size=0.1, n_steps=1000, X_test=Xt, y_test=yt,
                                    replicas=2, progress=False)
    rho = record_cost(net, 10, 7, 8)
    assert res.config.record_every == default_record_every(1000, rho) == max(5, math.ceil(8 * rho))
    assert res.traces["energy"].shape[0] == 1000 // res.config.record_every
    for n in (100, 4000, 40_000, 10 ** 6):
        for cost in (0.0, 3.0, 30.0):
            every = default_record_every(n, cost)
            assert 50 <= n // every <= 200 or every == 1
            assert every >= min(8 * cost, n // 50)
    # the papers' size (P = 100, P_t = 1000, N_1 = 500, MNIST N_0 = 784 reduced to r = 100): 30 steps
    assert 25 < record_cost(Network([500], "erf"), 100, 1000, 784, rank=100) < 35
    assert default_record_every(40_000, record_cost(Network([500], "erf"), 100, 1000, 784, rank=100)) > 200


@pytest.mark.filterwarnings("ignore::finwidth.errors.NotConvergedWarning")  # a short run, on purpose
def test_progress_is_quiet_off_a_terminal_and_reports_to_a_callback(capsys):
    X, y, Xt, yt = _data(P=8, N0=6, Pt=5)
    kw = dict(temperature=0.1, step_size=0.1, n_steps=300, record_every=30, X_test=Xt, y_test=yt, replicas=2)
    finwidth.sample_posterior(Network([10], "erf"), X, y, **kw)  # progress="auto"; pytest's stderr is no TTY
    assert capsys.readouterr().err == ""
    finwidth.sample_posterior(Network([10], "erf"), X, y, progress=True, **kw)
    assert "300/300" in capsys.readouterr().err
    seen = []
    res = finwidth.sample_posterior(Network([10], "erf"), X, y, progress=seen.append, **kw)
    assert [p.step for p in seen] == list(range(30, 301, 30))
    assert seen[-1].eta_s == 0 and all(p.eta_s >= 0 and p.n_steps == 300 for p in seen)
    np.testing.assert_allclose([p.test_error for p in seen], res.traces["test_mse_rb"].mean(1))
    np.testing.assert_allclose([p.train_error for p in seen], res.traces["train_mse_rb"].mean(1))
    with pytest.raises(ConfigError, match="progress"):
        finwidth.sample_posterior(Network([10], "erf"), X, y, progress="yes", **kw)


def test_a_stuck_chain_warns_with_step_size_advice():
    """MALA with a far too large step rejects everything: no confident error bar without a warning."""
    X, y, Xt, yt = _data(P=10, N0=8, Pt=7)
    with pytest.warns(finwidth.NotConvergedWarning, match="step_size about 4x smaller"):
        res = finwidth.sample_posterior(Network([12], "erf"), X, y, temperature=0.1, sampler="mala", step_size=2.0,
                                        n_steps=300, record_every=5, X_test=Xt, y_test=yt, replicas=3)
    assert res.diagnostics.acceptance < 0.05 and not res.diagnostics.converged
    assert any("split-R̂ above" in p for p in res.diagnostics.problems)


@pytest.mark.filterwarnings("ignore::finwidth.errors.NotConvergedWarning")  # 60 steps: the bookkeeping, not a result
def test_resume_true_continues_a_matching_checkpoint_and_refuses_another_run(tmp_path):
    """sample_posterior(..., checkpoint=p, resume=True): with no file, an ordinary run; with the file of
    an interrupted run of the same call, the continuation (records equal to the uninterrupted run's);
    with the file of another run (other data, options or network), a ConfigError naming the difference."""
    from finwidth.simulate.config import run_config
    from finwidth.simulate.loop import build_run

    X, y, Xt, yt = _data(P=8, N0=12, Pt=6)
    net = Network([10], "erf")
    kw = dict(temperature=0.1, sampler="baoab", step_size=0.1, n_steps=60, record_every=2, X_test=Xt, y_test=yt,
              replicas=2, seed=4, progress=False)
    ck = tmp_path / "r.ckpt"
    full = finwidth.sample_posterior(net, X, y, **kw)
    fresh = finwidth.sample_posterior(net, X, y, checkpoint=ck, checkpoint_every=20, resume=True, **kw)
    np.testing.assert_array_equal(fresh.traces["energy"], full.traces["energy"])

    ck.unlink()
    cfg, data = run_config(net, X, y, checkpoint=ck, checkpoint_every=20,
                           **{k: v for k, v in kw.items() if k != "progress"})
    half = build_run(net, data, cfg)
    half.initialize()
    half.cfg = cfg.replace(n_steps=20)  # interrupted after its first checkpoint
    half.run()
    payload = finwidth.simulate.checkpoint.load_checkpoint(ck)
    payload["cfg"]["n_steps"] = 60
    finwidth.simulate.checkpoint.save_checkpoint(ck, payload)
    cont = finwidth.sample_posterior(net, X, y, checkpoint=ck, checkpoint_every=20, resume=True, **kw)
    for k in full.traces:
        np.testing.assert_array_equal(cont.traces[k], full.traces[k], err_msg=k)

    with pytest.raises(ConfigError, match="other data.*'y'"):
        finwidth.sample_posterior(net, X, -y, checkpoint=ck, checkpoint_every=20, resume=True, **kw)
    with pytest.raises(ConfigError, match="step_size: 0.1 there, 0.05 here"):
        finwidth.sample_posterior(net, X, y, checkpoint=ck, checkpoint_every=20, resume=True,
                                  **{**kw, "step_size": 0.05})
    with pytest.raises(ConfigError, match="another network"):
        finwidth.sample_posterior(Network([11], "erf"), X, y, checkpoint=ck, checkpoint_every=20, resume=True, **kw)
    with pytest.raises(ConfigError, match="resume=True needs checkpoint"):
        finwidth.sample_posterior(net, X, y, resume=True, **kw)
    with pytest.raises(ConfigError, match="resume must be True or False"):
        finwidth.sample_posterior(net, X, y, checkpoint=ck, resume="yes", **kw)
