"""The layers of docs/architecture.md, read from the source: theory/ and simulate/ never import each
other (they meet only in experiments/), and the ground floor imports neither."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import finwidth

ROOT = Path(finwidth.__file__).parent
GROUND = ["errors.py", "inputs.py", "scipy_ctypes.py", "network.py", "convnet.py", "conv_kernels.py", "activations.py", "kernels.py"]


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


# ---- docs/architecture.md names what exists, with the signatures the code has --------------------------
DOC = ROOT.parents[1] / "docs" / "architecture.md"
# documented in docs/data.md, not module by module here
UNLISTED = {"__init__", "__main__"}
UNLISTED_PACKAGES = {"data"}


def _module_file(dotted: str) -> Path | None:
    """The source of ``finwidth.a.b`` (a module or a package), or None."""
    parts = dotted.split(".")[1:]
    base = ROOT.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if parts and cand.exists():
            return cand
    return None


def _sections(text: str) -> dict[str, str]:
    out, head = {}, ""
    for chunk in re.split(r"^## ", text, flags=re.M):
        head, _, body = chunk.partition("\n")
        out[head] = body
    return out


def _package_table(text: str, package: str) -> list[str]:
    """Module names of the per-package table (``| `name` | serves |``) in the section about ``package``."""
    for head, body in _sections(text).items():
        if f"`finwidth.{package}`" in head:
            return re.findall(r"^\| `(\w+)` \|", body, flags=re.M)
    raise AssertionError(f"no section about finwidth.{package} in {DOC.name}")


def test_every_module_the_architecture_page_names_exists():
    text = DOC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(finwidth(?:\.\w+)*)` \|", text, flags=re.M)
    assert len(rows) > 20
    assert [r for r in rows if _module_file(r) is None] == []
    # every other dotted mention: a module, or a name the nearest module defines
    missing = []
    for name in set(re.findall(r"`(finwidth(?:\.\w+)+)", text)):
        parts = name.split(".")
        k = max((i for i in range(2, len(parts) + 1) if _module_file(".".join(parts[:i]))), default=None)
        if k is None:
            missing.append(name)
        elif k < len(parts):
            src = _module_file(".".join(parts[:k])).read_text(encoding="utf-8")
            if not re.search(rf"^\s*(class|def)\s+{parts[k]}\b|^{parts[k]}\s*[:=]|import.*\b{parts[k]}\b", src, flags=re.M):
                missing.append(name)
    assert missing == []
    for package in ("simulate", "experiments"):
        listed = _package_table(text, package)
        assert len(listed) > 5
        assert [m for m in listed if not (ROOT / package / f"{m}.py").exists()] == [], package


def test_every_module_is_on_the_architecture_page():
    """A new module gets a line on the page (data/ internals are in docs/data.md)."""
    text = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(finwidth(?:\.\w+)*)` \|", text, flags=re.M))
    for package in ("simulate", "experiments"):
        documented |= {f"finwidth.{package}.{m}" for m in _package_table(text, package)}
    modules = set()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("").parts
        if rel[-1] in UNLISTED or rel[0] in UNLISTED_PACKAGES:
            continue
        modules.add(".".join(("finwidth", *rel)))
    assert len(modules) > 40
    assert sorted(modules - documented) == []


def _signature_lines(body: str):
    """``name(params)`` lines at the start of a line of the section's python blocks, joined across lines."""
    for block in re.findall(r"```python\n(.*?)```", body, flags=re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"\s*(?:def )?([A-Za-z_]\w*)\(", lines[i])
            if not m:
                i += 1
                continue
            text, depth = "", 0
            while i < len(lines):
                line = lines[i].split("  #")[0]
                text += line + " "
                i += 1
                depth = text.count("(") - text.count(")")
                if depth <= 0:
                    break
            yield m.group(1), text[text.index("(") + 1:]


def _param_names(argtext: str) -> list[str]:
    depth, cur, parts = 0, "", []
    for ch in argtext:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                break
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    names = [re.split(r"[:=]", p)[0].strip() for p in parts]
    return [n for n in names if n and n not in ("*", "...", "self")]


SIGNATURE_SECTIONS = {  # section of the page -> where its names are defined ("module:Class" for methods)
    "`finwidth.activations`": ["finwidth.activations", "finwidth.activations:Activation"],
    "`finwidth.kernels`": ["finwidth.kernels"],
    "`finwidth.convnet`": ["finwidth.convnet", "finwidth.conv_kernels"],
    "`finwidth.theory.conv`": ["finwidth.theory.conv", "finwidth.theory.conv_action", "finwidth.theory.patch_store"],
    "`finwidth.data`": ["finwidth.data"],
    "`finwidth.simulate`": ["finwidth.simulate.api", "finwidth.simulate.models:Model"],
    "`finwidth.experiments`": ["finwidth.experiments.runner", "finwidth.experiments.tasks",
                               "finwidth.experiments.store"],
}


def test_signatures_on_the_architecture_page_match_the_code():
    """Every ``name(params)`` line of the page's signature blocks names the parameters the code has."""
    import importlib
    import inspect

    pytest.importorskip("torch")  # simulate/ needs it
    checked, wrong = 0, []
    for head, body in _sections(DOC.read_text(encoding="utf-8")).items():
        where = next((mods for key, mods in SIGNATURE_SECTIONS.items() if key in head), None)
        if where is None:
            continue
        modules = []
        for m in where:
            mod, _, cls = m.partition(":")
            modules.append(getattr(importlib.import_module(mod), cls) if cls else importlib.import_module(mod))
        for name, args in _signature_lines(body):
            obj = next((getattr(m, name) for m in modules if hasattr(m, name)), None)
            if obj is None:
                wrong.append(f"{head.split(chr(10))[0]}: {name} is not in {where}")
                continue
            actual = [p for p in inspect.signature(obj).parameters if p != "self"]
            documented = _param_names(args)
            if "..." in args:  # the leading parameters only
                actual = actual[: len(documented)]
            if documented != actual:
                wrong.append(f"{name}: documented {documented}, code {actual}")
            checked += 1
    assert wrong == [], "\n".join(wrong)
    assert checked > 15
