"""Sweeps on a real one-node Slurm (started by the test set-up, see ``slurm_local.py``) through
``dask_jobqueue.SLURMCluster(..., interface="lo")``: the same records as a local run; a task the
workers cannot import and jobs that end without a worker end the sweep with a report; a driver
killed mid-sweep and restarted loses nothing and runs nothing twice.

Marked ``slurm``. The set-up installs ``slurm-wlm`` and ``munge`` when they are missing (as root) and
skips with the reason when it cannot; under CI (``CI`` set) it fails instead, so a broken set-up
never passes as a skip. Hard timeouts (pytest-timeout) guard every test.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster_tasks import run_here_and_there
from finwidth.experiments import ResultStore, parse_spec, run_sweep
from slurm_local import LocalSlurm, SlurmUnavailable
from test_cluster_dask import SMALL_SWEEP, TOY_SWEEP, driver_only_module, worker_env  # noqa: F401 - fixture

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
pytest.importorskip("dask_jobqueue")

HERE = Path(__file__).resolve().parent
# small jobs on the loopback interface; workers give up 10 s after losing their scheduler
JOBS = {"cores": 1, "memory": "1500MB", "walltime": "00:10:00", "jobs": 2, "interface": "lo", "death_timeout": 10}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail(f"Slurm could not be set up on CI: {exc}")
        pytest.skip(f"no Slurm: {exc}")
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PYTHONPATH")}
    os.environ.update(cluster.env())
    os.environ["PYTHONPATH"] = worker_env()["PYTHONPATH"]  # sbatch passes the environment to the jobs
    try:
        yield cluster
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        cluster.stop()
        assert all(p.poll() is not None for p in cluster.procs.values())


def _no_jobs_left(slurm: LocalSlurm, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while slurm.jobs() and time.monotonic() < deadline:
        time.sleep(0.5)
    return not slurm.jobs()


@pytest.mark.timeout(300)
# SMALL_SWEEP samples 300 steps: it checks that records match across executors, not a converged ε_g
@pytest.mark.filterwarnings("ignore::finwidth.errors.NotConvergedWarning")
def test_slurm_sweep_gives_the_local_records(slurm, tmp_path):
    store = run_here_and_there(parse_spec(SMALL_SWEEP), tmp_path, executor="slurm", slurm=JOBS)
    logs = list((store.root / "cluster" / "logs").glob("*.out")) + list((store.root / "cluster" / "logs").glob("*.err"))
    assert logs, "the job logs land in STORE/cluster/logs"
    assert not list((store.root / "cluster").glob("driver-*.json"))  # a driver that ends forgets its jobs
    assert _no_jobs_left(slurm)


@pytest.mark.timeout(300)
def test_slurm_task_the_workers_cannot_import_ends_with_a_report(slurm, driver_only_module, tmp_path):  # noqa: F811
    spec = parse_spec(dict(TOY_SWEEP, temperature=1e-3))
    # by name: the worker reports the missing module as the task's failure
    report = run_sweep(spec, tmp_path / "a", task_fn=driver_only_module.task, executor="slurm", slurm=JOBS,
                       progress=False)
    assert report.done == 0 and len(report.failed) == 2, report.summary()
    assert all("driver_only_tasks" in e and "PYTHONPATH" in e for e in report.failed.values())
    assert _no_jobs_left(slurm)
    # pickled by reference: the worker dies unpickling it (its job ends with exit code 0); no retry
    report = run_sweep(spec, tmp_path / "b", task_fn=functools.partial(driver_only_module.task), executor="slurm",
                       slurm=dict(JOBS, retries=0), progress=False)
    assert report.done == 0 and len(report.failed) == 2, report.summary()
    for err in report.failed.values():
        assert "KilledWorker" in err and "No module named 'driver_only_tasks'" in err, err
    assert _no_jobs_left(slurm)
    # jobs whose worker never starts (a wrong Python): the sweep ends once no job is left
    report = run_sweep(spec, tmp_path / "c", task_fn="cluster_tasks:counted_task", executor="slurm",
                       slurm=dict(JOBS, jobs=3, python=str(tmp_path / "no-such-python")), progress=False)
    assert report.done == 0 and len(report.failed) == 2, report.summary()
    for err in report.failed.values():
        assert "ended without their Dask worker connecting" in err and "no-such-python: No such file" in err, err
    assert _no_jobs_left(slurm)


@pytest.mark.timeout(420)
def test_slurm_resume_after_the_driver_is_killed(slurm, tmp_path):
    """SIGKILL the driver mid-sweep; the restart cancels the orphaned jobs, skips what is done, runs the rest."""
    spec_file = tmp_path / "toy.toml"
    spec_file.write_text("temperature = [0.001, 0.01]\n[sweep]\nname = 'toy'\n[data]\nteacher = 'linear'\n"
                         "n_features = 4\nn_train = 6\nn_test = 5\n[network]\nwidth = [10, 20, 30, 40, 50]\n"
                         "[theory]\nmodels = ['nngp']\n")
    store = ResultStore(tmp_path / "store")
    marks = tmp_path / "marks"
    env = worker_env(FINWIDTH_TEST_MARKS=str(marks), **slurm.env())
    cmd = [sys.executable, "-m", "finwidth", "sweep", "run", str(spec_file), "--store", str(store.root),
           "--task", "cluster_tasks:counted_task", "--executor", "slurm", "--no-progress",
           "--slurm-jobs", "2", "--slurm-cores", "1", "--slurm-memory", "1GB", "--slurm-walltime", "00:10:00",
           "--slurm-interface", "lo"]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(store.done_keys()) < 3 and driver.poll() is None:
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver (and its scheduler); the workers live in Slurm jobs
    driver.wait()
    done_at_kill = store.done_keys()
    assert 3 <= len(done_at_kill) < 10, f"the kill did not land mid-sweep ({len(done_at_kill)} of 10 done)"
    orphans = slurm.jobs()
    assert orphans, "the killed driver's jobs are still there"
    kill_time = time.time()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # skipped: what was done at the kill, plus what an orphaned worker finished before it was cancelled
    skipped = int(re.search(r"(\d+) already done", out.stderr).group(1))
    assert len(done_at_kill) <= skipped < 10, out.stderr
    assert set(orphans).isdisjoint(slurm.jobs())  # cancelled by the restart
    tasks = parse_spec({"temperature": [1e-3, 1e-2], "data": {"teacher": "linear", "n_features": 4, "n_train": 6,
                                                              "n_test": 5}, "network": {"width": [10, 20, 30, 40, 50]},
                        "theory": {"models": ["nngp"]}}).tasks()
    assert store.done_keys() == {t.key for t in tasks}
    for t in tasks:  # every result complete and right
        assert store.read(t.key)["values"]["value"] == t.config.network.widths[0] * t.config.temperature
    assert not list(store.root.rglob(".tmp-*"))
    # nothing run twice: no task finished before the kill was started again
    started_after = []
    for path in marks.glob("start-*.json"):
        if path.stat().st_mtime > kill_time:
            started_after.append(json.loads(path.read_text())["config"])
    keys_after = {t.key for t in tasks if t.config.model_dump(mode="json") in started_after}
    assert keys_after.isdisjoint(done_at_kill)
    assert len(keys_after) == len(started_after)  # and none twice after the restart
    assert _no_jobs_left(slurm)
