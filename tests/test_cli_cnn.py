"""CNN tasks from the command line (issue 14.7): ``--patch``/``--image-shape``/``--stride``/``--readout``
turn ``finwidth theory``/``simulate`` into the two-layer ConvNetwork of a ``[network.conv]`` table, and
``finwidth sweep plot`` draws a CNN table, its Ñ×Ñ Q as heat maps included."""

import json
import warnings

import numpy as np
import pytest

from finwidth.convnet import ConvNetwork
from finwidth.data import teacher
from finwidth.errors import ConfigError
from finwidth.experiments.plots import plot_patch_q, plot_sweep
from finwidth.experiments.store import ResultStore
from finwidth.theory.conv import ConvRKGP
from finwidth.theory.nngp import NNGP
from test_cli import finwidth

IMAGE = ["--teacher", "linear", "--n-features", "16", "-P", "14", "--n-test", "9", "--data-seed", "2", "-T", "0.05"]
CONV = ["--patch", "2", "2", "--image-shape", "4", "4", "--stride", "2"]


def test_theory_of_a_cnn_matches_the_library():
    out = finwidth("theory", *IMAGE, *CONV, "-N", "6", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["config"]["network"]["conv"] == {"patch_size": [2, 2], "image_shape": [4, 4], "stride": 2,
                                                "readout": "local"}
    d = teacher("linear", n_features=16, n_train=14, n_test=9, seed=2)
    net = ConvNetwork(16, (2, 2), 6, "erf", image_shape=(4, 4), stride=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # validity diagnostics: the numbers are compared, not judged
        th = ConvRKGP(net, 0.05).fit(d.X_train, d.y_train)
        nngp = NNGP(net, 0.05).fit(d.X_train, d.y_train)
    r = res["results"]
    assert r["rkgp"]["total"] == pytest.approx(th.generalization_error(d.X_test, d.y_test).total, rel=1e-10)
    assert r["nngp"]["total"] == pytest.approx(nngp.generalization_error(d.X_test, d.y_test).total, rel=1e-10)
    np.testing.assert_allclose(r["rkgp"]["qbar"], th.qbar_, rtol=1e-8, atol=1e-12)
    table = finwidth("theory", *IMAGE, *CONV, "-N", "6")
    assert table.returncode == 0, table.stderr
    assert f"tr/Ñ {r['rkgp']['qbar_L']:.5g} (Ñ = 4)" in table.stdout  # the Q column of a CNN


@pytest.mark.parametrize("readout", ["local", "pooled"])
def test_simulate_a_cnn(readout):
    out = finwidth("simulate", *IMAGE, *CONV, "--readout", readout, "-N", "6", "--step-size", "0.05", "--steps",
                   "200", "--burn-in", "50", "--replicas", "2", "--dtype", "float64", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["config"]["network"]["conv"]["readout"] == readout
    sim = res["results"]["sim"]
    assert np.isfinite(sim["total"]) and sim["total_stderr"] > 0
    if readout == "local":  # the Ñ×Ñ Q̂ and its global mode
        Q = np.asarray(sim["qbar_patches"])
        assert Q.shape == (4, 4) and np.trace(Q) / 4 == pytest.approx(sim["qbar_readout"], rel=1e-10)
    else:
        assert "qbar_patches" not in sim


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--stride", "2"), "--stride: CNN options; give the patch size with --patch"),
        (("--patch", "2", "2"), "--patch KH KW (2-D windows) needs --image-shape"),
        (("--patch", "2", "2", "2", "--image-shape", "4", "4"), "--patch takes one value"),
        (("--patch", "3", "3", "--image-shape", "4", "4"), "network.conv"),  # 3×3 windows do not tile 4×4
        (("--patch", "1", "1", "--image-shape", "3", "3"), "has 9 pixels but data.n_features is 16"),
        (("--patch", "4", "--models", "rkgp_nested"), "'rkgp_nested' is a form of the deep fully connected theory"),
    ],
)
def test_cnn_option_mistakes_exit_2_without_traceback(args, fragment):
    out = finwidth("theory", *IMAGE, "-N", "6", *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert fragment in out.stderr and "Traceback" not in out.stderr


def test_sweep_plot_of_a_cnn_table_draws_q_as_heat_maps(tmp_path):
    spec = tmp_path / "conv.toml"
    spec.write_text(
        "temperature = 0.05\n[sweep]\nname = 'conv'\n"
        "[data]\nteacher = 'linear'\nn_features = 16\nn_train = 14\nn_test = 9\nseed = 2\n"
        "[network]\nwidth = [6, 12]\n[network.conv]\npatch_size = [2, 2]\nimage_shape = [4, 4]\nstride = 2\n"
        "[theory]\nmodels = ['nngp', 'rkgp']\n"
    )
    run = finwidth("sweep", "run", spec, "--executor", "serial", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    plot = finwidth("sweep", "plot", tmp_path / "runs" / "conv", "-o", tmp_path / "fig")
    assert plot.returncode == 0, plot.stderr
    for name in ("fig.png", "fig_qbar.png", "fig_patch_q.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    frame = ResultStore(tmp_path / "runs" / "conv").collect()
    from finwidth.experiments.plots import _has_patch_q, _plot_sweep_patch_q

    assert _has_patch_q(frame)
    fig = _plot_sweep_patch_q(frame, "N1", None)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["theory, C = 6", "theory, C = 12"]
    assert fig.axes[0].get_xlabel() == "patch"
    paths = plot_sweep(frame, tmp_path / "again", x="N1", formats=("svg",))
    assert [p.name for p in paths] == ["again.svg", "again_qbar.svg", "again_patch_q.svg"]


def test_plot_patch_q_draws_q_minus_the_identity_on_one_scale():
    Q = np.array([[0.5, 0.1], [0.1, 1.2]])
    fig = plot_patch_q([("theory", Q), ("sampled", np.eye(2))], image_grid=(1, 2))
    images = [ax.images[0] for ax in fig.axes if ax.images]
    np.testing.assert_allclose(images[0].get_array(), Q - np.eye(2))
    np.testing.assert_allclose(images[1].get_array(), 0.0)
    assert images[0].norm.vmin == pytest.approx(-0.5) and images[0].norm.vmax == pytest.approx(0.5)
    assert images[1].norm is images[0].norm  # one colour scale for all panels
    with pytest.raises(ConfigError, match="not a finite square matrix"):
        plot_patch_q([("bad", np.ones((2, 3)))])
    with pytest.raises(ConfigError, match="no matrices"):
        plot_patch_q([])
