"""The ``finwidth`` command, run as a real subprocess (``python -m finwidth``)."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TEACHER = ["--teacher", "linear", "--n-features", "10", "-P", "20", "--n-test", "15", "--data-seed", "3"]


def finwidth(*args, cwd=None, env=None, timeout=120):
    full_env = {k: v for k, v in os.environ.items() if k != "FINWIDTH_DATA"}  # only what a test passes
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "finwidth", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


def write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """The real MNIST files beside the checkout, else small generated files in the same IDX format."""
    if (SHARED / "mnist").is_dir() and not os.environ.get("FINWIDTH_TEST_FAKE_MNIST"):
        return SHARED
    root = tmp_path_factory.mktemp("data")
    (root / "mnist").mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 400), ("t10k", 1600)):
        write_idx(root / "mnist" / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 2051)
        write_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 3, 2049)
    return root


def test_help_lists_every_command():
    out = finwidth("--help")
    assert out.returncode == 0
    for cmd in ("theory", "simulate", "sweep", "demo", "exit codes"):
        assert cmd in out.stdout
    for sub in (("sweep", "--help"), ("sweep", "run", "--help"), ("sweep", "plot", "--help"), ("demo", "--help"),
                ("theory", "--help"), ("simulate", "--help")):
        res = finwidth(*sub)
        assert res.returncode == 0 and "usage: finwidth" in res.stdout, sub
    assert finwidth("sweep").returncode == 2  # missing action: argparse's usage error


@pytest.mark.slow
def test_theory_json_matches_the_library():
    out = finwidth("theory", *TEACHER, "-N", "30", "-T", "0.01", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    from finwidth import RKGP, Network
    from finwidth.data import teacher

    d = teacher("linear", n_features=10, n_train=20, n_test=15, seed=3)
    err = RKGP(Network([30], "erf"), 0.01).fit(d.X_train, d.y_train).generalization_error(d.X_test, d.y_test)
    assert res["results"]["rkgp"]["total"] == pytest.approx(err.total, rel=1e-12)
    assert res["config"]["network"]["widths"] == [30]
    table = finwidth("theory", *TEACHER, "-N", "30", "-T", "0.01")
    assert table.returncode == 0 and "rkgp" in table.stdout and "nngp" in table.stdout


@pytest.mark.slow
def test_simulate_one_run():
    out = finwidth("simulate", *TEACHER, "-N", "16", "-T", "0.05", "--step-size", "0.05", "--steps", "200",
                   "--replicas", "2", "--json")
    assert out.returncode == 0, out.stderr
    sim = json.loads(out.stdout)["results"]["sim"]
    assert np.isfinite(sim["total"]) and sim["total_stderr"] > 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("theory", *TEACHER, "-N", "-3"), "network.widths.0"),
        (("theory", *TEACHER, "-T", "-1"), "temperature"),
        (("theory", *TEACHER, "--activation", "softsign"), "unknown activation 'softsign'"),
        (("theory", "--teacher", "linear", "-P", "20"), "data.n_features is required"),
        (("sweep", "run", "no-such-spec.toml"), "cannot read the spec"),
        (("sweep", "status", "."), "no sweep.json"),
    ],
)
def test_user_mistakes_exit_2_without_traceback(args, fragment, tmp_path):
    out = finwidth(*args, cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert fragment in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.startswith("finwidth: error:")


def test_invalid_spec_names_the_key(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text("temperature = 1e-3\n[data]\nteacher = 'linear'\nn_features = 4\nn_train = 5\nn_test = 5\n"
                    "[network]\nwidth = [10, 20]\nactivaton = 'erf'\n")
    out = finwidth("sweep", "run", spec, "--store", tmp_path / "s")
    assert out.returncode == 2 and "network.activaton: unknown key" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_sweep_run_status_collect_plot(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(
        "temperature = 0.01\n[sweep]\nname = 'tiny'\n"
        "[data]\nteacher = 'linear'\nn_features = 10\nn_train = [12, 24]\nn_test = 15\n"
        "[network]\nwidth = [5, 20, 80]\n[theory]\nmodels = ['nngp', 'rkgp']\n"
    )
    run = finwidth("sweep", "run", spec, "--executor", "serial", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "6 tasks: 0 already done, 6 run now, 0 failed" in run.stderr
    store = tmp_path / "runs" / "tiny"  # the default store
    again = finwidth("sweep", "run", spec, "--executor", "serial", "--no-progress", cwd=tmp_path)
    assert "6 already done, 0 run now" in again.stderr
    status = finwidth("sweep", "status", spec, cwd=tmp_path)
    assert status.returncode == 0 and "6/6 done" in status.stdout
    st = json.loads(finwidth("sweep", "status", store, "--json").stdout)
    assert st["done"] == 6 and st["pending"] == []
    col = finwidth("sweep", "collect", store, "-o", tmp_path / "t.csv")
    assert col.returncode == 0, col.stderr
    table = pd.read_csv(tmp_path / "t.csv")
    assert len(table) == 6 and {"rkgp.total", "nngp.total", "N1", "P"} <= set(table.columns)
    plot = finwidth("sweep", "plot", store, "--x", "N1", "--format", "png,pdf", "-o", tmp_path / "fig")
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.pdf").read_bytes()[:4] == b"%PDF"
    bad = finwidth("sweep", "plot", store, "--x", "width")
    assert bad.returncode == 2 and "no column 'width'" in bad.stderr


@pytest.mark.slow
def test_demo_quick(mnist_root, tmp_path):
    out = finwidth("demo", "--quick", "--out", tmp_path / "demo", "--data-root", mnist_root, "--no-progress")
    assert out.returncode == 0, out.stderr
    for n in ("50", "100", "200", "500", "1000"):
        assert f"\n{n:>5}  " in out.stdout
    assert "Theory only." in out.stdout
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 0
    table = pd.read_csv(tmp_path / "demo" / "results.csv")
    assert list(table["N1"]) == [50, 100, 200, 500, 1000]
    assert (table["rkgp.total"] > 0).all() and table["nngp.total"].nunique() == 1


@pytest.mark.slow  # the demo twice in fresh interpreters
def test_without_data_the_demo_runs_on_the_embedded_subset_and_more_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"FINWIDTH_DATA": str(empty), "HOME": str(tmp_path)}
    out = finwidth("demo", "--quick", "--out", tmp_path / "demo", "--no-progress", env=env)
    assert out.returncode == 0, out.stderr
    assert "theory only" not in out.stdout and "1000" in out.stdout  # --quick; the table reaches N_1 = 1000
    out = finwidth("theory", "-P", "500", "--n-test", "10", env=env)  # more than the subset holds
    assert out.returncode == 2
    assert "mnist not found" in out.stderr and "finwidth data fetch mnist" in out.stderr
    assert "embedded in finwidth" in out.stderr and "Traceback" not in out.stderr
