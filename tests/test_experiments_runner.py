"""Runner and result store: skip-done, atomic folders, failures, resume after SIGKILL, collect, Dask.

The task functions here are module-level so that spawned workers can import them by name
(``test_experiments_runner:slow_task`` with ``tests/`` on PYTHONPATH).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from finwidth.errors import ConfigError, DataError
from finwidth.experiments import ResultStore, TaskOutput, parse_spec, run_sweep, sweep_status, write_table
from finwidth.experiments.runner import execute_task, make_executor
from finwidth.experiments.spec import canonical_json

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def expected(config):
    """What the toy tasks compute: a closed form of the config (the check of every stored result)."""
    n, T, P = config.network.widths[0], config.temperature, config.data.n_train
    return n * T + P, np.arange(n, dtype=float) * T


def fast_task(config):
    value, arr = expected(config)
    return TaskOutput(values={"toy": {"value": value, "nested": [1, 2]}, "n": config.network.widths[0]},
                      arrays={"arr": arr})


def slow_task(config):
    time.sleep(0.15)
    return fast_task(config)


def failing_task(config):
    if config.network.widths[0] == 20:
        raise RuntimeError("boom at width 20")
    return fast_task(config)


def spec_dict(widths=(10, 20, 40), temps=(1e-3, 1e-2)):
    return {
        "temperature": list(temps),
        "sweep": {"name": "toy"},
        "data": {"teacher": "linear", "n_features": 4, "n_train": 6, "n_test": 5},
        "network": {"width": list(widths)},
        "theory": {"models": ["nngp"]},
    }


def check_store(store, tasks):
    """Every task has exactly one complete, correct folder; no temporary leftovers."""
    names = sorted(p.name for p in store.tasks_dir.iterdir())
    assert names == sorted(t.key for t in tasks), names
    for t in tasks:
        rec = store.read(t.key)
        assert rec["config"] == json.loads(canonical_json(t.config))
        value, arr = expected(t.config)
        assert rec["values"]["toy"]["value"] == pytest.approx(value, rel=0, abs=0)
        np.testing.assert_array_equal(store.read_arrays(t.key)["arr"], arr)


def test_serial_run_then_skip_done(tmp_path):
    spec = parse_spec(spec_dict())
    store = ResultStore(tmp_path / "s")
    report = run_sweep(spec, store, task_fn=fast_task, executor="serial", progress=False)
    assert (report.total, report.done, report.skipped, report.failed) == (6, 6, 0, {})
    check_store(store, spec.tasks())
    mtimes = {p.name: p.stat().st_mtime_ns for p in store.tasks_dir.iterdir()}
    again = run_sweep(spec, store, task_fn=fast_task, executor="serial", progress=False)
    assert (again.done, again.skipped) == (0, 6)
    assert {p.name: p.stat().st_mtime_ns for p in store.tasks_dir.iterdir()} == mtimes
    # a larger sweep reuses the finished tasks
    bigger = parse_spec(spec_dict(widths=(10, 20, 40, 80)))
    rep = run_sweep(bigger, store, task_fn=fast_task, executor="thread", max_workers=2, progress=False)
    assert (rep.done, rep.skipped) == (2, 6)
    check_store(store, bigger.tasks())


def test_failures_are_recorded_reported_and_retried(tmp_path):
    spec = parse_spec(spec_dict())
    store = ResultStore(tmp_path / "s")
    report = run_sweep(spec, store, task_fn=failing_task, executor="serial", progress=False)
    assert report.done == 4 and len(report.failed) == 2
    assert all("boom at width 20" in e for e in report.failed.values())
    status = sweep_status(spec, store)
    assert status["done"] == 4 and set(status["failed"]) == set(report.failed)
    assert "RuntimeError" in store.failures()[next(iter(report.failed))]["traceback"]
    report = run_sweep(spec, store, task_fn=fast_task, executor="serial", progress=False)
    assert report.done == 2 and not report.failed and store.failures() == {}
    check_store(store, spec.tasks())


def test_atomic_write_race_and_stale_cleanup(tmp_path):
    store = ResultStore(tmp_path / "s")
    spec = parse_spec(spec_dict(widths=(10,), temps=(1e-3,)))
    (task,) = spec.tasks()
    cj = canonical_json(task.config)
    assert store.write(task.key, cj, {"a": 1.0}, {"x": np.ones(3)})
    assert not store.write(task.key, cj, {"a": 2.0})  # second writer loses the race, first result kept
    assert store.read(task.key)["values"] == {"a": 1.0}
    # a writer killed mid-write leaves a temporary folder: never counted as done, removed later
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    tmp = store.tasks_dir / f".tmp-{'0' * 16}-{socket.gethostname()}-{dead.pid}-abcd"
    tmp.mkdir()
    (tmp / "config.json").write_text("{")
    live = store.tasks_dir / f".tmp-{'1' * 16}-{socket.gethostname()}-{os.getpid()}-abcd"
    live.mkdir()
    assert store.done_keys() == {task.key}
    assert store.cleanup_stale() == 1
    assert not tmp.exists() and live.exists()  # a live writer's folder is left alone


def test_corrupt_results_raise_data_error(tmp_path):
    store = ResultStore(tmp_path / "s")
    spec = parse_spec(spec_dict(widths=(10,), temps=(1e-3,)))
    (task,) = spec.tasks()
    run_sweep(spec, store, task_fn=fast_task, executor="serial", progress=False)
    (store.task_dir(task.key) / "result.json").write_text('{"key": ')
    with pytest.raises(DataError, match="corrupt"):
        store.collect()
    with pytest.raises(DataError, match="no sweep.json"):
        ResultStore(tmp_path / "nothing").load_spec()


def test_collect_table_and_files(tmp_path):
    spec = parse_spec(spec_dict())
    store = ResultStore(tmp_path / "s")
    run_sweep(spec, store, task_fn=fast_task, executor="serial", progress=False)
    frame = store.collect()
    assert len(frame) == 6 and frame["key"].is_unique
    assert {"P", "T", "N1", "L", "lambda_L", "toy.value", "toy.nested", "network.widths", "wall_s"} <= set(frame.columns)
    for _, row in frame.iterrows():
        assert row["toy.value"] == row["N1"] * row["T"] + row["P"]
    assert list(frame["N1"]) == sorted(frame["N1"])  # sorted by the axes, not by completion order
    assert store.load_spec().tasks() == spec.tasks()
    csv = write_table(frame, tmp_path / "t.csv")
    import pandas as pd

    back = pd.read_csv(csv, dtype={"key": str})
    assert list(back["key"]) == list(frame["key"])
    with pytest.raises(ConfigError, match="use .csv or .parquet"):
        write_table(frame, tmp_path / "t.xlsx")


@pytest.mark.slow
def test_resume_after_sigkill_of_a_running_sweep(tmp_path):
    """Kill the whole sweep (driver and spawned workers) mid-run; the rerun completes it exactly."""
    raw = spec_dict(widths=(10, 20, 40, 80, 160, 320), temps=(1e-3, 1e-2))
    spec_path = tmp_path / "toy.toml"
    spec_path.write_text(
        "temperature = [0.001, 0.01]\n[sweep]\nname = 'toy'\n"
        "[data]\nteacher = 'linear'\nn_features = 4\nn_train = 6\nn_test = 5\n"
        "[network]\nwidth = [10, 20, 40, 80, 160, 320]\n[theory]\nmodels = ['nngp']\n"
    )
    spec = parse_spec(raw)
    store = ResultStore(tmp_path / "store")
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{ROOT / 'src'}")
    cmd = [sys.executable, "-m", "finwidth", "sweep", "run", str(spec_path), "--store", str(store.root),
           "--task", "test_experiments_runner:slow_task", "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(store.done_keys()) < 3:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the process group this test created: driver and workers
    proc.wait()
    done_at_kill = store.done_keys()
    assert 3 <= len(done_at_kill) < 12, f"kill did not land mid-sweep ({len(done_at_kill)} of 12 done)"
    for key in done_at_kill:  # whatever was there at the kill is complete and correct
        store.read(key)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{len(done_at_kill)} already done" in out.stderr
    check_store(store, spec.tasks())
    assert not list(store.root.rglob(".tmp-*"))
    assert len(store.collect()) == 12


def test_execute_task_passes_and_removes_its_checkpoint(tmp_path):
    seen = []

    def task(config, checkpoint):
        checkpoint.write_text("partial state")
        seen.append(checkpoint)
        return fast_task(config)

    spec = parse_spec(spec_dict(widths=(10,), temps=(1e-3,)))
    (t,) = spec.tasks()
    status = execute_task(task, str(tmp_path), t.key, canonical_json(t.config))
    assert status["status"] == "done"
    assert seen[0] == tmp_path / "checkpoints" / f"{t.key}.ckpt" and not seen[0].exists()
    # a task function without a checkpoint keyword is called with the config alone
    status = execute_task(fast_task, str(tmp_path / "other"), t.key, canonical_json(t.config))
    assert status["status"] == "done"


def reporting_task(config, progress=None):
    """Reports a quarter of its work at a time, as run_task does with each record of its simulation."""
    for step in (25, 50, 75, 100):
        if progress is not None:
            progress(SimpleNamespace(step=step, n_steps=100, test_error=0.5))
        time.sleep(0.15)  # longer than the bar's minimum redraw interval (0.1 s)
    return fast_task(config)


def waiting_task(config, progress):
    """Reports half of its work, then waits until the driver's bar (on the captured stderr) shows it."""
    progress(SimpleNamespace(step=50, n_steps=100, test_error=None))
    deadline = time.monotonic() + 60
    while "0.50/1" not in sys.stderr.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    return fast_task(config)


def test_sweep_bar_moves_within_each_task_in_process(tmp_path, capsys):
    """Serial executor: the task's progress callback moves the sweep's bar in quarters of a task."""
    spec = parse_spec(spec_dict(widths=(10, 20), temps=(1e-3,)))
    report = run_sweep(spec, ResultStore(tmp_path), task_fn=reporting_task, executor="serial", progress=True)
    assert report.done == 2
    err = capsys.readouterr().err
    # each report comes 0.15 s after the previous one, later than the bar's minimum redraw interval
    for shown in ("0.50/2", "0.75/2", "1.50/2", "1.75/2", "2.00/2"):
        assert shown in err, err
    assert "75/100 steps, eps_g 0.5" in err


def test_sweep_bar_reads_progress_that_workers_write(tmp_path, capsys):
    """Pool executors: the worker writes STORE/progress/<key>.json and the driver's bar shows it while
    the task runs; the file is gone once the task is stored."""
    spec = parse_spec(spec_dict(widths=(10,), temps=(1e-3,)))
    store = ResultStore(tmp_path)
    report = run_sweep(spec, store, task_fn=waiting_task, executor="thread", progress=True)
    assert report.done == 1
    err = capsys.readouterr().err
    assert "0.50/1" in err and "50/100 steps" in err, err
    assert list(store.progress_dir.iterdir()) == []


def test_progress_auto_is_quiet_off_a_terminal(tmp_path, capsys):
    spec = parse_spec(spec_dict(widths=(10,), temps=(1e-3,)))
    assert run_sweep(spec, ResultStore(tmp_path), task_fn=reporting_task, executor="serial").done == 1  # "auto"
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="progress"):
        run_sweep(spec, ResultStore(tmp_path), task_fn=reporting_task, progress="yes")


def test_task_function_by_name_fails_cleanly_where_it_cannot_be_imported(tmp_path):
    """A worker that cannot import the task module records a failure that says what to do."""
    spec = parse_spec(spec_dict(widths=(10,), temps=(1e-3,)))
    (t,) = spec.tasks()
    status = execute_task("no_such_module_here:task", str(tmp_path), t.key, canonical_json(t.config))
    assert status["status"] == "failed"
    assert "no_such_module_here" in status["error"] and "PYTHONPATH" in status["error"]
    assert "no_such_module_here" in ResultStore(tmp_path).failures()[t.key]["error"]


def test_dask_local_cluster(tmp_path):
    import distributed  # in the test extra
    spec = parse_spec(spec_dict())
    store = ResultStore(tmp_path / "s")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        executor, close = make_executor("dask", cluster=cluster)
        try:
            report = run_sweep(spec, store, task_fn=fast_task, executor=executor, progress=False)
        finally:
            close()
    assert report.done == 6 and not report.failed
    check_store(store, spec.tasks())


def test_executor_errors():
    with pytest.raises(ConfigError, match="unknown executor"):
        make_executor("mpi")
    with pytest.raises(ConfigError, match="package.module:function"):
        run_sweep(parse_spec(spec_dict()), "/nonexistent", task_fn="no_colon")


def test_worker_threads_honour_user_setting(monkeypatch):
    from finwidth.experiments import runner

    monkeypatch.setattr(runner, "_cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert runner._worker_threads(2) == 4
    assert runner._worker_threads(16) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert runner._worker_threads(2) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert runner._worker_threads(2) == 4


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="zombie detection reads /proc (Linux)")
def test_zombie_writer_counts_as_dead():
    """A killed worker not yet reaped is a zombie: its temporary folder is stale, not in progress."""
    from finwidth.experiments.store import _pid_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while _pid_alive(child.pid) and time.time() < deadline:  # exited but not reaped: a zombie
        time.sleep(0.01)
    try:
        assert not _pid_alive(child.pid)
        with open(f"/proc/{child.pid}/stat") as fh:  # still there as a zombie, which kill(pid, 0) accepts
            assert fh.read().rsplit(")", 1)[1].split()[0] == "Z"
        os.kill(child.pid, 0)
    finally:
        child.wait()
    assert _pid_alive(os.getpid())


@pytest.mark.slow  # two driver processes
def test_two_drivers_writing_the_same_store_at_once(tmp_path):
    """Two sweeps of the same spec into one store, concurrently: every task stored once, complete and right."""
    spec_path = tmp_path / "toy.toml"
    spec_path.write_text(
        "temperature = [0.001, 0.01]\n[sweep]\nname = 'toy'\n"
        "[data]\nteacher = 'linear'\nn_features = 4\nn_train = 6\nn_test = 5\n"
        "[network]\nwidth = [10, 20, 40, 80]\n[theory]\nmodels = ['nngp']\n"
    )
    store = ResultStore(tmp_path / "store")
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{ROOT / 'src'}")
    cmd = [sys.executable, "-m", "finwidth", "sweep", "run", str(spec_path), "--store", str(store.root),
           "--task", "test_experiments_runner:slow_task", "--executor", "thread", "--workers", "2", "--no-progress"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    spec = parse_spec(dict(spec_dict(widths=(10, 20, 40, 80))))
    check_store(store, spec.tasks())
    assert not list(store.root.rglob(".tmp-*")) and store.failures() == {}
    for _, err in outs:  # each driver accounts for every task: run by it, or found done (by the other)
        assert "8 tasks:" in err and "0 failed" in err


def test_slurm_options_are_validated_before_anything_runs(tmp_path, capsys):
    from finwidth.cli import main
    from finwidth.experiments.cluster import SlurmOptions, slurm_options

    store = tmp_path / "store"
    code = main(["sweep", "run", str(tmp_path / "missing.toml"), "--store", str(store), "--executor", "slurm",
                 "--slurm-walltime", "25:00", "--slurm-memory", "lots", "--slurm-jobs", "0"])
    err = capsys.readouterr().err
    assert code == 2 and not store.exists()
    for flag in ("--slurm-walltime", "--slurm-memory", "--slurm-jobs"):
        assert flag in err
    assert "missing.toml" not in err  # the options fail first, before the spec is read
    assert main(["sweep", "run", "x.toml", "--slurm-cores", "2"]) == 2
    assert "apply to --executor slurm only" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="slurm.nodes: unknown option"):
        slurm_options({"nodes": 2})
    with pytest.raises(ConfigError, match="slurm.memory"):
        run_sweep(parse_spec(spec_dict()), store, task_fn=fast_task, executor="slurm", slurm={"memory": "4"})
    assert not store.exists()
    ok = slurm_options({"walltime": "1-02:00:00", "memory": "2GiB", "prologue": ["source env/bin/activate"]})
    assert isinstance(ok, SlurmOptions) and ok.walltime == "1-02:00:00" and ok.jobs == 4
