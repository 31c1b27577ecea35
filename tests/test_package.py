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
