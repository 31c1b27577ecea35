"""Package-level checks: import is light, the public names resolve, the version is consistent."""

import subprocess
import sys
import tomllib
from pathlib import Path

import finwidth

ROOT = Path(__file__).resolve().parents[1]


def test_import_does_not_pull_heavy_modules():
    code = (
        "import sys, finwidth; "
        "heavy = [m for m in ('torch', 'scipy', 'matplotlib', 'pandas', 'sklearn') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import finwidth imported heavy modules: {out.stdout.strip()}"


def test_version_matches_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert finwidth.__version__ == meta["project"]["version"]


def test_unknown_attribute_raises():
    try:
        finwidth.does_not_exist  # noqa: B018
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_lazy_errors_resolve():
    assert issubclass(finwidth.ConvergenceError, finwidth.FinwidthError)
    assert issubclass(finwidth.ConfigError, ValueError)
    err = finwidth.ConvergenceError("solve failed", residual=1e-3, suggestion="raise the temperature")
    assert "residual 0.001" in str(err) and "raise the temperature" in str(err)


def test_no_package_index_host_is_named():
    """pip's own configuration chooses the index; FINWIDTH_TORCH_INDEX is the one way to add one for torch."""
    hosts = ["pypi" + ".org", "pythonhosted" + ".org", "download." + "pytorch.org", "--index-url " + "http",
             "--extra-index-url " + "http"]
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix in (".npz", ".png", ".pdf", ".gz", ".bin", ".npy"):
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        offenders += [f"{name}: {h}" for h in hosts if h in text]
    assert offenders == []


def test_core_install_has_no_torch_and_the_scripts_add_sampling():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("torch") for d in meta["dependencies"])
    extras = meta["optional-dependencies"]
    assert extras["sampling"] == ["torch>=2.2"] and "sampling" in extras["all"][0]
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'extras="${1:-sampling,plot}"' in setup and '--extra-index-url "$FINWIDTH_TORCH_INDEX"' in setup
    assert 'setup.sh" "sampling,plot"' in (ROOT / "scripts" / "demo.sh").read_text()
    assert 'setup.sh" "test,plot,sampling"' in (ROOT / "scripts" / "test.sh").read_text()
