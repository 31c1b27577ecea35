"""The Markdown snippet runner behind tests/test_docs.py (how to mark blocks: docs/writing-docs.md).

Every ```python block of README.md and docs/*.md runs as written. The blocks of one page share one
namespace and run in order, in a fresh interpreter whose working folder is an empty temporary folder
(with ``examples/`` of the repository linked in), with an empty HOME and no ``FINWIDTH_DATA``: what a
new user has after the README's set-up. An HTML comment on the line right above a block changes that:

    <!-- snippet: skip; why it is not run -->          illustrative only (signatures, a cluster): never run
    <!-- snippet: slow; why it is slow -->             run only when FINWIDTH_DOCS_SLOW=1 (the slow tier)
    <!-- snippet: data=mnist,cifar10 -->               needs the full data files: FINWIDTH_DATA is set for
                                                       it to the test data folder (skipped when absent)
    <!-- snippet: fresh -->                            start a new namespace at this block

Options combine (``slow data=mnist; reason``). Run as a script, this module is the driver that executes
one page's blocks and writes what happened to a JSON file.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

OPTIONS = {"skip", "slow", "fresh", "data"}
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_MARK = re.compile(r"<!--\s*snippet:((?:(?!-->).)*)-->[ \t]*\n\Z", re.S)  # right above the fence


@dataclass
class Block:
    """One ```python block: where it is, its code and its marker."""

    page: str
    line: int
    code: str
    options: set[str] = field(default_factory=set)
    data: tuple[str, ...] = ()
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def parse(path: Path, root: Path) -> list[Block]:
    """The Python blocks of a Markdown file with their markers; a malformed marker is a ValueError."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()]
        line = before.count("\n") + 1
        block = Block(str(path.relative_to(root)), line, m.group(1))
        mark = _MARK.search(before[-500:])
        if mark:
            spec, _, reason = mark.group(1).strip().partition(";")
            block.reason = reason.strip()
            for word in spec.split():
                key, _, value = word.partition("=")
                if key not in OPTIONS or (key == "data") != bool(value):
                    raise ValueError(f"{block.id}: unknown snippet option {word!r}; use {sorted(OPTIONS)} "
                                     "(data=NAME[,NAME])")
                block.options.add(key)
                if key == "data":
                    block.data = tuple(value.split(","))
            if {"skip", "slow"} & block.options and not block.reason:
                raise ValueError(f"{block.id}: a skip or slow block must say why: <!-- snippet: skip; reason -->")
        blocks.append(block)
    return blocks


def run_page(blocks: list[dict], out: str) -> None:
    """Driver: run ``blocks`` (dicts: code, run, fresh, data_env) in order; write results to ``out``."""
    results = []
    namespace: dict = {}
    failed = None
    for b in blocks:
        if b["fresh"]:
            namespace = {}
        if not b["run"]:
            results.append({"status": "skipped"})
            continue
        if failed is not None:
            results.append({"status": "not run", "detail": f"an earlier block of the page failed ({failed})"})
            continue
        if b["data_env"]:
            os.environ["FINWIDTH_DATA"] = b["data_env"]
        else:
            os.environ.pop("FINWIDTH_DATA", None)
        namespace.setdefault("__name__", "__main__")
        start = time.perf_counter()
        try:
            # padded so that tracebacks give the line numbers of the Markdown page
            code = "\n" * b["line"] + b["code"]
            exec(compile(code, b["page"], "exec"), namespace)  # noqa: S102 - the project's own docs
        except BaseException:  # noqa: BLE001 - reported, not swallowed
            failed = b["id"]
            results.append({"status": "error", "detail": traceback.format_exc(), "seconds": time.perf_counter() - start})
            continue
        results.append({"status": "ok", "seconds": time.perf_counter() - start})
    Path(out).write_text(json.dumps(results))


if __name__ == "__main__":
    run_page(json.loads(Path(sys.argv[1]).read_text()), sys.argv[2])
