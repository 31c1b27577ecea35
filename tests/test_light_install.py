"""A plain install (no extras) has no torch: the whole theory, the data and `finwidth demo` (theory part)
work in an empty folder on a machine without data sets, and sampling fails with a FinwidthError that
says how to install it.

The package is built into a wheel from a copy of the sources, the wheel is unpacked into a folder of its
own (an installed copy: its files are only those the wheel ships), and fresh interpreters run from it
with the extras' packages (torch, matplotlib, dask) hidden by an import hook, as if they were not
installed, an empty HOME and no FINWIDTH_DATA.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel and runs fresh interpreters from it

REPO = Path(__file__).resolve().parents[1]

# the packages of the extras (sampling, plot, dask) as if they were not installed
HIDE_EXTRAS = '''
import sys
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "matplotlib", "dask", "distributed"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NotInstalled())
'''

SCRIPT = '''
import io, sys, numpy as np, finwidth
from finwidth import BPKR, NNGP, RKGP, Network
from finwidth.data import load

assert finwidth.__file__.startswith(sys.argv[1]), finwidth.__file__      # the installed copy
rng = np.random.default_rng(0)
X, Xt = rng.normal(size=(40, 6)), rng.normal(size=(20, 6))
f = lambda Z: np.tanh(Z[:, 0])
for est in (NNGP(Network([30]), 0.1), RKGP(Network([30], "relu"), 0.1),
            RKGP(Network([30, 30]), 0.1, renormalization="nested"), BPKR(Network([30], "linear"), 0.1)):
    assert est.fit(X, f(X)).score(Xt, f(Xt)) > 0.3, est
d = load("mnist", classes=(0, 1), n_train=100, n_test=1000)
assert d.source_format == "embedded"
with finwidth.threads(1):
    RKGP(Network([100]), 1e-3).fit(d.X_train, d.y_train).generalization_error(d.X_test, d.y_test)
try:
    finwidth.sample_posterior
except finwidth.FinwidthError as exc:
    assert isinstance(exc, ImportError) and type(exc).__name__ == "MissingDependencyError"
    for words in ("pip install", "finwidth[sampling]", "CPU-only", "FINWIDTH_TORCH_INDEX"):
        assert words in str(exc), (words, str(exc))
else:
    raise AssertionError("sampling without torch did not raise")
assert "torch" not in sys.modules and "matplotlib" not in sys.modules
print("OK")
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package built into a wheel and unpacked: site/finwidth/..."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # with the venv's setuptools when it can build wheels (no index needed); otherwise pip builds in isolation
    isolation = ["--no-build-isolation"] if _can_build_wheels() else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(tmp / "dist"),
                    str(src)], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp / "dist").glob("finwidth-*.whl")
    site = tmp / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def _can_build_wheels() -> bool:
    """setuptools ≥ 70.1 builds wheels by itself; older ones need the wheel package."""
    import importlib.metadata
    import importlib.util

    try:
        major, minor = (int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _env(tmp_path: Path, site: Path) -> dict[str, str]:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HIDE_EXTRAS)
    env = {k: v for k, v in os.environ.items() if k not in ("FINWIDTH_DATA", "XDG_CACHE_HOME", "PYTHONPATH")}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=f"{hook}{os.pathsep}{site}", MPLBACKEND="Agg")
    return env


def test_wheel_metadata_and_data(installed):
    (meta,) = installed.glob("finwidth-*.dist-info/METADATA")
    requires = [line for line in meta.read_text().splitlines() if line.startswith("Requires-Dist:")]
    torch = [line for line in requires if "torch" in line]
    assert torch == ['Requires-Dist: torch>=2.2; extra == "sampling"'], torch
    assert any("extra == \"all\"" in line and "sampling" in line for line in requires)
    embedded = installed / "finwidth" / "data" / "embedded"
    assert (embedded / "mnist01.npz").stat().st_size < 1_000_000 and (embedded / "README.md").exists()


def test_theory_data_and_errors_without_torch(installed, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(installed)], cwd=work, env=_env(tmp_path, installed),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip().endswith("OK"), run.stdout + run.stderr


def test_cli_demo_and_simulate_without_torch(installed, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    env = _env(tmp_path, installed)
    demo = subprocess.run([sys.executable, "-m", "finwidth", "demo", "--out", "demo", "--no-progress"], cwd=work,
                          env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "theory only" in demo.stdout and "pip install 'finwidth[sampling]'" in demo.stdout
    assert "data: the MNIST 0/1 subset shipped with finwidth" in demo.stdout
    assert "no plot: plots need matplotlib" in demo.stdout and "finwidth[plot]" in demo.stdout
    assert "1000" in demo.stdout and (work / "demo" / "results.csv").exists()  # the table reached N_1 = 1000
    sim = subprocess.run([sys.executable, "-m", "finwidth", "simulate", "-P", "20", "--n-test", "10"], cwd=work,
                         env=env, capture_output=True, text=True, timeout=600)
    assert sim.returncode == 2 and "needs PyTorch" in sim.stderr and "finwidth[sampling]" in sim.stderr, sim.stderr


AK_SCRIPT = """
import sys, numpy as np
from finwidth import AdaptiveKernel, Network
X = np.random.default_rng(0).normal(size=(40, 6))
assert AdaptiveKernel(Network([30]), 0.1).fit(X, np.tanh(X[:, 0])).score(X, np.tanh(X[:, 0])) > 0.3
assert "torch" not in sys.modules
print("OK")
"""


def test_adaptive_kernel_without_torch(installed, tmp_path):
    run = subprocess.run([sys.executable, "-c", AK_SCRIPT], cwd=tmp_path, env=_env(tmp_path, installed),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip().endswith("OK"), run.stdout + run.stderr
