"""Sweeps with D outputs (one-hot labels): the task values are those of the estimators and the sampler,
a sweep collects and plots them. Data: small MNIST-format files with three classes (no real data needed)."""

from __future__ import annotations

import numpy as np
import pytest

from finwidth import RKGP, Network, sample_posterior
from finwidth.data import load
from finwidth.experiments import ResultStore, parse_spec, run_sweep
from finwidth.experiments.plots import plot_qbar, plot_sweep
from finwidth.experiments.spec import TaskConfig
from finwidth.experiments.tasks import run_task
from test_cli import write_idx

DATA = {"name": "mnist", "classes": [0, 1, 2], "labels": "onehot", "n_train": 24, "n_test": 15}


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "mnist").mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 60)):
        lab = np.arange(n) % 3
        img = rng.integers(0, 60, (n, 28, 28)) + 150 * (lab[:, None, None] == np.arange(28)[None, :, None] % 3)
        write_idx(root / "mnist" / f"{prefix}-images-idx3-ubyte.gz", img, 2051)
        write_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte.gz", lab, 2049)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINWIDTH_DATA", str(root))
        yield root


def test_multioutput_task_values_are_those_of_the_estimators_and_the_sampler(fake_mnist):
    sim = {"sampler": "gibbs", "n_steps": 150, "replicas": 4, "seed": 1}
    config = TaskConfig.model_validate({"temperature": 0.05, "data": DATA, "network": {"activation": "linear",
                                        "width": 20}, "theory": {"models": ["nngp", "rkgp"]}, "simulation": sim})
    out = run_task(config).values
    d = load("mnist", classes=[0, 1, 2], n_train=24, n_test=15, labels="onehot", root=fake_mnist)
    net = Network([20], "linear")
    m = RKGP(net, 0.05).fit(d.X_train, d.y_train)
    err = m.generalization_error(d.X_test, d.y_test)
    r = out["rkgp"]
    assert r["total"] == err.total and r["accuracy"] == err.accuracy
    assert r["bias_per_output"] == err.bias_per_output.tolist()
    assert r["qbar_L_matrix"] == m.qbar_[-1].tolist() and r["qbar_L"] == pytest.approx(np.trace(m.qbar_[-1]) / 3)
    assert r["output_correlation"] == m.output_correlation(d.X_test, average=True).tolist()
    assert len(r["r"]) == 3 and "accuracy" in out["nngp"]
    s = out["sim"]
    direct = sample_posterior(net, d.X_train, d.y_train, temperature=0.05, sampler="gibbs", n_steps=150, replicas=4,
                              seed=1, X_test=d.X_test, y_test=d.y_test)
    ge = direct.generalization_error
    assert s["total"] == float(ge.total) and s["accuracy"] == float(ge.accuracy)
    assert s["total_per_output"] == [float(e) for e in ge.total_per_output]
    assert sum(s["total_per_output"]) == pytest.approx(s["total"], rel=1e-12)
    assert s["qbar_matrix"] == direct.qbar_matrix.tolist()
    assert s["qbar_readout"] == pytest.approx(np.trace(direct.qbar_matrix) / 3, rel=1e-12)
    assert np.shape(s["output_correlation"]) == (3, 3) and np.shape(s["output_correlation_stderr"]) == (3, 3)


def test_multioutput_sweep_collects_and_plots(fake_mnist, tmp_path):
    spec = parse_spec({"temperature": 0.01, "data": DATA, "network": {"activation": "erf", "width": [10, 40]},
                       "theory": {"models": ["nngp", "rkgp"]}})
    report = run_sweep(spec, tmp_path / "store", executor="serial", progress=False)
    assert report.done == 2 and not report.failed
    frame = ResultStore(tmp_path / "store").collect()
    assert {"rkgp.accuracy", "rkgp.qbar_L", "rkgp.qbar_L_matrix", "nngp.accuracy"} <= set(frame.columns)
    paths = plot_sweep(frame, tmp_path / "fig", x="N1")
    assert sorted(p.name for p in paths) == ["fig.png", "fig_qbar.png"]
    assert "tr" in plot_qbar(frame, "N1").axes[0].get_ylabel()
