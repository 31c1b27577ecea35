"""Experiments: declarative sweeps (TOML), a resumable result store, local and distributed runs, plots.

See ``docs/experiments.md``. The main entry points::

    from finwidth.experiments import load_spec, run_sweep, ResultStore
    spec = load_spec("examples/demo.toml")
    run_sweep(spec, "runs/demo")                  # local process pool; resumable
    table = ResultStore("runs/demo").collect()    # pandas DataFrame, one row per task
"""

from __future__ import annotations

import importlib
from typing import Any

from finwidth.experiments.runner import SweepReport, execute_task, make_executor, run_sweep, sweep_status
from finwidth.experiments.spec import SweepSpec, Task, TaskConfig, canonical_json, expand, load_spec, parse_spec, task_key
from finwidth.experiments.store import ResultStore, TaskOutput, write_table

__all__ = [
    "ResultStore",
    "SweepReport",
    "SweepSpec",
    "Task",
    "TaskConfig",
    "TaskOutput",
    "canonical_json",
    "execute_task",
    "expand",
    "load_spec",
    "make_executor",
    "parse_spec",
    "plot_sweep",
    "run_sweep",
    "run_task",
    "sweep_status",
    "task_key",
    "write_table",
]

_LAZY = {"run_task": "finwidth.experiments.tasks", "plot_sweep": "finwidth.experiments.plots"}


def __getattr__(name: str) -> Any:  # tasks pull torch/scipy and plots matplotlib: import on use
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'finwidth.experiments' has no attribute {name!r}")
