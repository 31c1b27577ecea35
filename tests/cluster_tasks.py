"""Task functions and helpers for the cluster tests (imported by name on Dask and Slurm workers,
which get ``tests/`` on their PYTHONPATH)."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

import numpy as np

from finwidth.experiments import ResultStore, TaskOutput

TIMING_KEYS = {"wall_s"}


def counted_task(config, checkpoint=None):
    """Sleeps a little and leaves a 'start' and an 'end' marker per run in $FINWIDTH_TEST_MARKS."""
    marks = Path(os.environ["FINWIDTH_TEST_MARKS"])
    marks.mkdir(parents=True, exist_ok=True)
    key = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    run = f"{abs(hash(key)) % 10**12}-{uuid.uuid4().hex[:8]}"
    tag = {"config": config.model_dump(mode="json"), "host": socket.gethostname(), "pid": os.getpid()}
    (marks / f"start-{run}.json").write_text(json.dumps(tag))
    time.sleep(1.5)
    n, T = config.network.widths[0], config.temperature
    (marks / f"end-{run}.json").write_text(json.dumps(tag))
    return TaskOutput(values={"value": n * T}, arrays={"a": np.arange(n, dtype=float)})


def sleepy_task(config):
    time.sleep(30)
    return {"value": 1.0}


def strip_timings(values):
    """A task's values without its timings (which differ between any two runs)."""
    if isinstance(values, dict):
        return {k: strip_timings(v) for k, v in values.items() if k not in TIMING_KEYS}
    return values


def run_here_and_there(spec, folder: Path, **remote) -> ResultStore:  # noqa: ANN001
    """Run ``spec`` serially here and with the executor options ``remote``; assert both stores hold
    the same records, every remote one computed by another process. Returns the remote store."""
    from finwidth.experiments import run_sweep

    local, there = ResultStore(folder / "local"), ResultStore(folder / "remote")
    n = len(spec.tasks())
    assert run_sweep(spec, local, executor="serial", progress=False).done == n
    report = run_sweep(spec, there, progress=False, **remote)
    assert (report.done, report.failed) == (n, {}), report.summary()
    assert assert_same_records(local, there) == n
    assert all(there.read(k)["meta"]["pid"] != os.getpid() for k in there.done_keys())
    return there


def assert_same_records(store_a: ResultStore, store_b: ResultStore) -> int:
    """Both stores hold the same tasks with identical values (timings aside) and identical arrays."""
    keys = store_a.done_keys()
    assert keys and keys == store_b.done_keys(), (sorted(keys), sorted(store_b.done_keys()))
    for key in keys:
        a, b = store_a.read(key), store_b.read(key)
        assert a["config"] == b["config"]
        assert strip_timings(a["values"]) == strip_timings(b["values"]), key
        arr_a, arr_b = store_a.read_arrays(key), store_b.read_arrays(key)
        assert arr_a.keys() == arr_b.keys()
        for name in arr_a:
            np.testing.assert_array_equal(arr_a[name], arr_b[name])
    return len(keys)
