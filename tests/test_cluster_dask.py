"""Sweeps on a Dask scheduler and worker running as separate processes on 127.0.0.1 (not LocalCluster).

Same records as a local run; a task the workers cannot import, a worker that dies and a scheduler
that stops answering each end the sweep with a report instead of a hang; a bad scheduler address
fails even when every task is already done. Hard timeouts (pytest-timeout) guard every test.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster_tasks import run_here_and_there
from finwidth.errors import ConfigError
from finwidth.experiments import ResultStore, parse_spec, run_sweep
from slurm_local import die_with_parent

pytest.importorskip("distributed")

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

# theory (NNGP, RKGP) and a short sampling run per width: what a real sweep does, in seconds
SMALL_SWEEP = {
    "temperature": 0.05,
    "sweep": {"name": "small"},
    "data": {"teacher": "linear", "n_features": 6, "n_train": 10, "n_test": 8, "seed": 1},
    "network": {"activation": "erf", "width": [8, 16]},
    "theory": {"models": ["nngp", "rkgp"]},
    "simulation": {"sampler": "baoab", "step_size": 0.05, "n_steps": 300, "replicas": 2, "record_every": 5,
                   "seed": 3},
}
TOY_SWEEP = {
    "temperature": [1e-3, 1e-2],
    "sweep": {"name": "toy"},
    "data": {"teacher": "linear", "n_features": 4, "n_train": 6, "n_test": 5},
    "network": {"width": [10, 20]},
    "theory": {"models": ["nngp"]},
}


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of worker processes: tests/ and src/ importable, one BLAS thread."""
    path = os.pathsep.join([str(HERE), str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                **extra)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskProcesses:
    """``dask scheduler`` and ``dask worker`` (no nanny) as child processes; stopped by PID (and by
    SIGTERM if the test process dies first)."""

    def __init__(self, folder: Path, n_workers: int = 1):
        self.folder = folder
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.scheduler = self._spawn("scheduler", ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                                                   self.address.rsplit(":", 1)[1], "--no-dashboard"])
        self.workers = [self.add_worker(i) for i in range(n_workers)]
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(n_workers, timeout=60)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=self.folder, env=worker_env(),
                                preexec_fn=die_with_parent)  # noqa: PLW1509 - one async-signal-safe call
        log.close()
        return proc

    def add_worker(self, i: int) -> subprocess.Popen:
        return self._spawn(f"worker{i}", ["distributed.cli.dask_worker", self.address, "--nthreads", "1",
                                          "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"])

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                proc.terminate()
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # a worker busy in a task does not stop gracefully
                proc.kill()
                proc.wait(10)


pytestmark = pytest.mark.slow  # separate scheduler and worker processes: an integration test


@pytest.fixture(scope="module")
def dask_processes(tmp_path_factory):
    procs = DaskProcesses(tmp_path_factory.mktemp("dask"))
    yield procs
    procs.stop()


@pytest.fixture()
def driver_only_module(tmp_path, monkeypatch):
    """A task module importable here (the driver) but not on the workers."""
    folder = tmp_path / "driver_only"
    folder.mkdir()
    (folder / "driver_only_tasks.py").write_text("def task(config):\n    return {'value': 1.0}\n")
    monkeypatch.syspath_prepend(str(folder))
    import driver_only_tasks

    yield driver_only_tasks
    sys.modules.pop("driver_only_tasks", None)


@pytest.mark.timeout(240)
# SMALL_SWEEP samples 300 steps: it checks that records match across executors, not a converged ε_g
@pytest.mark.filterwarnings("ignore::finwidth.errors.NotConvergedWarning")
def test_separate_scheduler_and_worker_give_the_local_records(dask_processes, tmp_path):
    remote = run_here_and_there(parse_spec(SMALL_SWEEP), tmp_path, executor="dask", scheduler=dask_processes.address)
    values = remote.read(next(iter(remote.done_keys())))["values"]
    assert {"nngp", "rkgp", "sim"} <= set(values) and values["sim"]["total"] > 0


@pytest.mark.timeout(120)
def test_task_the_workers_cannot_import_fails_with_advice(dask_processes, driver_only_module, tmp_path):
    spec = parse_spec(TOY_SWEEP)
    # by name (how the CLI and module-level functions travel): the worker reports the missing module
    report = run_sweep(spec, tmp_path / "a", task_fn=driver_only_module.task, executor="dask",
                       scheduler=dask_processes.address, progress=False)
    assert report.done == 0 and len(report.failed) == 4
    for err in report.failed.values():
        assert "driver_only_tasks" in err and "PYTHONPATH" in err
    # pickled by reference (a partial): the separate scheduler cannot unpickle it and says so
    report = run_sweep(spec, tmp_path / "b", task_fn=functools.partial(driver_only_module.task), executor="dask",
                       scheduler=dask_processes.address, progress=False)
    assert report.done == 0 and len(report.failed) == 4
    for err in report.failed.values():
        assert "could not unpickle" in err and "same Python environment" in err
    assert len(ResultStore(tmp_path / "b").failures()) == 4
    # the worker survived both
    assert all(w.poll() is None for w in dask_processes.workers)


@pytest.mark.timeout(120)
def test_bad_scheduler_address_fails_even_when_every_task_is_done(dask_processes, tmp_path):
    spec = parse_spec(TOY_SWEEP)
    store = tmp_path / "s"
    assert run_sweep(spec, store, executor="serial", progress=False).done == 4
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:"):
        run_sweep(spec, store, executor="dask", scheduler=f"tcp://127.0.0.1:{free_port()}", progress=False)
    from finwidth.cli import main

    spec_file = tmp_path / "toy.toml"
    spec_file.write_text("temperature = [0.001, 0.01]\n[sweep]\nname = 'toy'\n[data]\nteacher = 'linear'\n"
                         "n_features = 4\nn_train = 6\nn_test = 5\n[network]\nwidth = [10, 20]\n"
                         "[theory]\nmodels = ['nngp']\n")
    assert main(["sweep", "run", str(spec_file), "--store", str(store), "--executor", "dask", "--scheduler",
                 "tcp://127.0.0.1:1", "--no-progress"]) == 2
    # the good address, with nothing left to do: connects, skips everything
    report = run_sweep(spec, store, executor="dask", scheduler=dask_processes.address, progress=False)
    assert (report.skipped, report.done) == (4, 0)


def _sweep_hit_mid_task(folder: Path, hit, **timeouts):  # noqa: ANN001, ANN202
    """Run a sweep of long tasks on fresh separate processes; ``hit(procs)`` once a task runs.

    Returns the report, the store and the seconds the sweep took.
    """
    folder.mkdir()
    procs = DaskProcesses(folder, n_workers=1)
    try:
        hitter = _after(lambda: len(_running(procs)) > 0, lambda: hit(procs))
        start = time.monotonic()
        report = run_sweep(parse_spec(dict(TOY_SWEEP, temperature=1e-3)), folder / "store",
                           task_fn="cluster_tasks:sleepy_task", executor="dask", scheduler=procs.address,
                           progress=False, **timeouts)
        hitter.join()
        return report, ResultStore(folder / "store"), time.monotonic() - start
    finally:
        procs.stop()


@pytest.mark.timeout(180)
def test_lost_worker_and_silent_scheduler_end_the_sweep_with_a_report(tmp_path):
    report, store, took = _sweep_hit_mid_task(tmp_path / "lost", lambda p: p.workers[0].kill(), worker_timeout=3)
    assert took < 60 and report.done == 0 and len(report.failed) == 2
    for err in report.failed.values():
        assert "no Dask worker has been connected" in err and "left" in err
    report, store, took = _sweep_hit_mid_task(tmp_path / "silent", lambda p: os.kill(p.scheduler.pid, signal.SIGSTOP),
                                              scheduler_timeout=4)
    assert took < 60 and report.done == 0 and len(report.failed) == 2
    for err in report.failed.values():
        assert "has not answered" in err and "run the sweep again" in err
    assert len(store.failures()) == 2


def _running(procs: DaskProcesses) -> list[str]:
    """Keys of the tasks the workers are processing (asked with a short connect timeout)."""
    from distributed import Client

    try:
        with Client(procs.address, timeout="5s") as client:
            return [k for k, s in client.processing().items() for _ in s]
    except OSError:
        return []


def _after(condition, action):  # noqa: ANN001, ANN202
    """Run ``action`` in a thread once ``condition()`` holds (polled)."""
    import threading

    def run() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not condition():
            time.sleep(0.2)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
