"""The default task function (theory and simulation wiring) and figures from a tiny real sweep."""

import numpy as np
import pytest

from finwidth import NNGP, RKGP, Network, sample_posterior
from finwidth.data import teacher
from finwidth.experiments import ResultStore, parse_spec, run_sweep
from finwidth.experiments.plots import plot_errors, plot_sweep, save_figure
from finwidth.experiments.spec import TaskConfig
from finwidth.experiments.tasks import run_task

DATA = {"teacher": "linear", "n_features": 10, "n_train": 20, "n_test": 15, "seed": 3}


def test_theory_values_are_those_of_the_estimators():
    config = TaskConfig.model_validate(
        {"temperature": 0.01, "data": DATA, "network": {"activation": "erf", "width": 30, "prior": 1.5},
         "theory": {"models": ["nngp", "rkgp", "rkgp_nested"]}}
    )
    out = run_task(config).values
    d = teacher("linear", n_features=10, n_train=20, n_test=15, seed=3)
    net = Network([30], "erf", 1.5)
    for name, est in (("nngp", NNGP(net, 0.01)), ("rkgp", RKGP(net, 0.01)),
                      ("rkgp_nested", RKGP(net, 0.01, renormalization="nested"))):
        err = est.fit(d.X_train, d.y_train).generalization_error(d.X_test, d.y_test)
        assert out[name]["total"] == err.total
        assert out[name]["bias"] == err.bias and out[name]["variance"] == err.variance
        if name != "nngp":
            assert out[name]["qbar"] == list(est.qbar_) and out[name]["qbar_L"] == est.qbar_[-1]
            assert out[name]["r"] == est.width_criterion_.r
    assert out["data"]["N0"] == 10
    assert "sim" not in out


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::finwidth.errors.NotConvergedWarning")  # 300 steps: the settings, not a result
def test_simulation_is_passed_every_setting():
    sim = {"sampler": "baoab", "step_size": 0.05, "n_steps": 300, "burn_in": 100, "replicas": 4, "seed": 7,
           "dtype": "float64", "options": {"init": "prior"}}
    config = TaskConfig.model_validate(
        {"temperature": 0.05, "data": DATA, "network": {"activation": "erf", "width": 16},
         "theory": {"models": []}, "simulation": sim}
    )
    out = run_task(config)
    s = out.values["sim"]
    d = teacher("linear", n_features=10, n_train=20, n_test=15, seed=3)
    direct = sample_posterior(Network([16], "erf"), d.X_train, d.y_train, temperature=0.05, sampler="baoab",
                              step_size=0.05, n_steps=300, burn_in=100, replicas=4, seed=7, dtype="float64",
                              init="prior", X_test=d.X_test, y_test=d.y_test)
    ge = direct.generalization_error
    assert s["total"] == float(ge.total) and s["total_stderr"] == ge.total.stderr
    assert s["bias"] == float(ge.bias) and s["variance"] == float(ge.variance)
    assert s["qbar_readout"] == float(direct.qbar_readout) and s["qbar_readout_stderr"] == direct.qbar_readout.stderr
    assert s["train_error"] == float(direct.train_error)
    assert all(np.isfinite(s[k]) for k in ("total", "total_stderr", "qbar_readout", "wall_s"))
    assert any(k.startswith("rhat") for k in s)
    assert {f"trace_{k}" for k in direct.traces} == set(out.arrays)


@pytest.mark.filterwarnings("ignore::finwidth.errors.NotConvergedWarning")  # 200 steps: the wiring, not a result
def test_simulation_reports_its_steps_to_a_progress_callback(tmp_path):
    """run_task hands a progress callable to sample_posterior (how a sweep's bar moves within a task),
    fresh and when it resumes from a checkpoint."""
    sim = {"sampler": "baoab", "step_size": 0.05, "n_steps": 200, "replicas": 2, "record_every": 20}
    config = TaskConfig.model_validate(
        {"temperature": 0.05, "data": DATA, "network": {"activation": "erf", "width": 8},
         "theory": {"models": []}, "simulation": sim}
    )
    seen = []
    run_task(config, progress=seen.append)
    assert [info.step for info in seen] == list(range(20, 201, 20))
    assert all(info.n_steps == 200 and info.test_error is not None for info in seen)
    again = []
    ckpt = tmp_path / "task.ckpt"
    run_task(config, checkpoint=ckpt)  # leaves its finished checkpoint (the runner would delete it)
    run_task(config, progress=again.append, checkpoint=ckpt)  # resumes the finished run: reports once
    assert [info.step for info in again] == [200]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    spec = parse_spec({
        "temperature": 0.01,
        "data": dict(DATA, n_train=[12, 24]),
        "network": {"activation": "erf", "width": [5, 20, 80]},
        "theory": {"models": ["nngp", "rkgp"]},
    })
    report = run_sweep(spec, root / "store", executor="serial", progress=False)
    assert report.done == 6 and not report.failed
    return ResultStore(root / "store").collect()


def test_collected_theory_table(tiny_sweep):
    frame = tiny_sweep
    assert len(frame) == 6
    for _, row in frame.iterrows():
        assert row["rkgp.total"] == pytest.approx(row["rkgp.bias"] + row["rkgp.variance"], rel=1e-12)
        assert row["rkgp.qbar_L"] > 0
    # NNGP does not depend on the width: one level per P
    assert frame.groupby("P")["nngp.total"].nunique().eq(1).all()


@pytest.mark.slow
def test_plots_in_three_formats(tiny_sweep, tmp_path):
    paths = plot_sweep(tiny_sweep, tmp_path / "fig", x="N1", formats=("png", "svg", "pdf"), decomposition=True)
    names = sorted(p.name for p in paths)
    assert names == sorted(["fig.png", "fig.svg", "fig.pdf", "fig_qbar.png", "fig_qbar.svg", "fig_qbar.pdf"])
    for p in paths:
        head = p.read_bytes()[:64]
        assert {"png": head.startswith(b"\x89PNG"), "svg": b"<svg" in p.read_bytes()[:2000] or b"<?xml" in head,
                "pdf": head.startswith(b"%PDF")}[p.suffix[1:]]
    fig = plot_errors(tiny_sweep, "P")  # against P, one line per width
    axis = fig.axes[0]
    assert axis.get_xscale() == "log"
    assert len(axis.get_legend().get_texts()) == 2 + 3  # theory, NNGP; three width groups
    assert save_figure(fig, tmp_path / "p.svg")[0].suffix == ".svg"


def test_plot_errors_are_clear(tiny_sweep, tmp_path):
    from finwidth.errors import ConfigError

    with pytest.raises(ConfigError, match="no column 'width'"):
        plot_errors(tiny_sweep, "width")
    with pytest.raises(ConfigError, match="unknown figure format"):
        save_figure(plot_errors(tiny_sweep), tmp_path / "f", ["jpg"])
    with pytest.raises(ConfigError, match="no completed tasks"):
        plot_errors(tiny_sweep.iloc[0:0])


def test_demo_verdicts_follow_the_numbers():
    import io

    import pandas as pd

    from finwidth.experiments.demo import report

    frame = pd.DataFrame({
        "N1": [50, 100, 200, 1000], "P": [100] * 4, "rkgp.total": [0.02, 0.03, 0.04, 0.06], "nngp.total": [0.07] * 4,
        "rkgp.qbar_L": [0.3, 0.5, 0.6, 0.9], "sim.total": [0.01, 0.02, 0.0392, 0.0601],
        "sim.total_stderr": [0.0005, 0.0001, 0.0001, 0.0001], "sim.rhat_energy": [1.3, 1.5, 1.02, 1.03],
        "sim.rhat_test_mse_rb": [1.01, 1.54, 1.02, 1.03], "sim.ess_test_mse_rb": [400.0, 300.0, 250.0, 120.0],
    })
    out = io.StringIO()
    rows = report(frame, simulated=True, n_steps=100, replicas=4, stream=out)
    text = out.getvalue()
    assert [round(r["z"], 6) for r in rows] == [-20.0, -100.0, -8.0, 1.0]
    assert "Consistent within 3 s.e.: N_1 = 1000." in text
    assert "Within 3% of the theory: N_1 = 200 (deviations -2.0%" in text
    assert "Theory fails at N_1 = 50 (α_1 = P/N_1 = 2): the sampled networks are 50.0% below it" in text
    # R̂ of the test error 1.54: no verdict at N_1 = 100, whatever z says
    assert "N_1 = 100: not converged (R̂(ε_g) = 1.54, ESS(ε_g) = 300): no verdict" in text
    assert "N_1 = 100 (" not in text and "N_1 = 100." not in text
    assert "100 BAOAB steps × 4 replicas" in text and "R̂(ε_g) ≤ 1.05 and ESS(ε_g) ≥ 100" in text
    # too few effective samples is no verdict either; a missing diagnostic likewise
    few = frame.assign(**{"sim.ess_test_mse_rb": [40.0, 300.0, 250.0, 120.0]})
    out = io.StringIO()
    report(few, simulated=True, n_steps=100, replicas=4, stream=out)
    assert "N_1 = 50: not converged (R̂(ε_g) = 1.01, ESS(ε_g) = 40)" in out.getvalue()
    assert "Theory fails" not in out.getvalue()
    header = text.splitlines()[0]
    assert "R̂(ε_g)" in header and "ESS(ε_g)" in header


def test_plot_title_names_the_task(tiny_sweep, tmp_path):
    from finwidth.experiments.plots import describe_task

    # P varies in the tiny sweep (12, 24): against N1 the title leaves it to the legend
    assert describe_task(tiny_sweep, "N1") == "linear teacher (N_0 = 10), T = 0.01, erf"
    one_p = tiny_sweep[tiny_sweep["P"] == 12]
    assert describe_task(one_p, "N1") == "linear teacher (N_0 = 10), P = 12, T = 0.01, erf"
    fig = plot_errors(one_p, "N1", title=describe_task(one_p, "N1"))
    assert fig._suptitle.get_text() == "linear teacher (N_0 = 10), P = 12, T = 0.01, erf"
    mnist = one_p.assign(**{"data.name": "mnist", "data.classes": "[0,1]"}).drop(columns=["data.teacher"])
    assert describe_task(mnist, "N1").startswith("mnist 0/1, P = 12, T = 0.01, erf")
