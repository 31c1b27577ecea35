"""The layers of docs/architecture.md, read from the source: theory/ and simulate/ never import each
other (they meet only in experiments/), and the ground floor imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import finwidth

ROOT = Path(finwidth.__file__).parent
GROUND = ["errors.py", "inputs.py", "network.py", "convnet.py", "conv_kernels.py", "activations.py", "kernels.py"]


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative imports resolved), at any depth."""
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _offenders(files, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for f in files:
        hits = sorted(m for m in _imports(f) if any(m == p or m.startswith(p + ".") for p in forbidden))
        if hits:
            bad[str(f.relative_to(ROOT))] = hits
    return bad


@pytest.mark.parametrize("package,forbidden", [
    ("theory", ("finwidth.simulate", "finwidth.experiments")),
    ("simulate", ("finwidth.theory", "finwidth.experiments")),
])
def test_theory_and_simulate_never_import_each_other(package, forbidden):
    files = sorted((ROOT / package).rglob("*.py"))
    assert len(files) > 3
    assert _offenders(files, forbidden) == {}


def test_ground_floor_imports_no_upper_floor():
    files = [ROOT / f for f in GROUND]
    assert all(f.exists() for f in files)
    assert _offenders(files, ("finwidth.theory", "finwidth.simulate", "finwidth.experiments")) == {}


def test_the_checker_sees_imports():
    """The parser finds absolute, relative and function-level imports (a checker that finds
    nothing would pass vacuously)."""
    found = _imports(ROOT / "theory" / "adaptive.py")
    assert "finwidth.inputs" in found  # imported inside a method
    assert "finwidth.theory.gp" in found
    assert "finwidth.simulate.loop" in _imports(ROOT / "simulate" / "api.py")
