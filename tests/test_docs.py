"""Every ```python block of README.md and docs/*.md runs as written (tests/snippets.py; how to mark a
block that is slow or illustrative only: docs/writing-docs.md).

Each page runs once, in a fresh interpreter, in an empty folder with an empty HOME and no FINWIDTH_DATA;
each block is one test item, so a failure names the block (page:line) and skips say why.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from snippets import Block, parse

from finwidth.data import locate
from finwidth.errors import DataError

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SLOW = os.environ.get("FINWIDTH_DOCS_SLOW") == "1"
PAGE_TIMEOUT_S = 1800 if SLOW else 600
BLOCKS = [b for page in PAGES for b in parse(page, REPO)]


def _data_root(names: tuple[str, ...]) -> str | None:
    """The first test data folder holding every data set named (full files, not the embedded subset)."""
    from conftest import shared_data_dirs

    for d in shared_data_dirs():
        if d.is_dir():
            try:
                if all(locate(n, d, embedded=False).paths[0].startswith(str(d)) for n in names):
                    return str(d)
            except DataError:
                continue
    return None


def _why_not(block: Block) -> str | None:
    if "skip" in block.options:
        return f"{block.id}: illustrative only: {block.reason}"
    if "slow" in block.options and not SLOW:
        return f"{block.id}: slow tier ({block.reason}): run with FINWIDTH_DOCS_SLOW=1"
    if block.data and _data_root(block.data) is None:
        return f"{block.id}: needs the {', '.join(block.data)} files (finwidth data fetch), not found"
    return None


@functools.cache
def _run_page(page: str, tmp: Path) -> list[dict]:
    blocks = [b for b in BLOCKS if b.page == page]
    plan = [{"id": b.id, "page": b.page, "line": b.line, "code": b.code, "fresh": "fresh" in b.options, "run": _why_not(b) is None,
             "data_env": _data_root(b.data) if b.data else None} for b in blocks]
    work = tmp / "work"
    (work / "home").mkdir(parents=True)
    (work / "examples").symlink_to(REPO / "examples")
    (tmp / "plan.json").write_text(json.dumps(plan))
    env = {k: v for k, v in os.environ.items() if k not in ("FINWIDTH_DATA", "XDG_CACHE_HOME", "KERAS_HOME", "TORCH_HOME")}
    env.update(HOME=str(work / "home"), MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "snippets.py"), str(tmp / "plan.json"),
                           str(tmp / "out.json")], cwd=work, env=env, capture_output=True, text=True,
                          timeout=PAGE_TIMEOUT_S)
    if not (tmp / "out.json").exists():
        raise RuntimeError(f"{page}: the snippet driver died (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads((tmp / "out.json").read_text())


# slow: each page runs in a fresh interpreter that imports finwidth (1-8 s of CPU a page, about 30 s in
# all; the README's tour samples real networks for about a minute); still in the default run
@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_snippet(block: Block, tmp_path_factory):
    why = _why_not(block)
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.getbasetemp() / ("docs-" + block.page.replace("/", "-"))
    result = _run_page(block.page, tmp)[[b.id for b in BLOCKS if b.page == block.page].index(block.id)]
    assert result["status"] == "ok", f"{block.id}: {result['status']}\n{result.get('detail', '')}"


def test_markers_are_parsed():
    from snippets import _MARK  # noqa: F401 - the module imports

    text = ("a\n<!-- snippet: skip; a signature -->\n```python\nf(x) -> y\n```\n"
            "<!-- snippet: slow data=mnist,cifar10; twenty minutes -->\n```python\nx = 1\n```\n```python\ny = 2\n```\n")
    page = REPO / "tests" / "_snippet_sample.md"
    try:
        page.write_text(text)
        a, b, c = parse(page, REPO)
    finally:
        page.unlink()
    assert (a.options, a.reason) == ({"skip"}, "a signature")
    assert (b.options, b.data, b.reason) == ({"slow", "data"}, ("mnist", "cifar10"), "twenty minutes")
    assert (c.options, c.reason, c.line) == (set(), "", 10)
