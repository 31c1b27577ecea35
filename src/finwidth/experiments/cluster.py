"""Sweeps on Dask and Slurm that never hang: connection, Slurm jobs, and a watch over both.

* :class:`SlurmOptions`: the resources of the Slurm jobs that host Dask workers (one worker per job),
  validated when they are given (bad walltime, memory, counts fail before anything is submitted).
* :class:`DaskExecutor`: a ``concurrent.futures`` executor on a ``distributed.Client`` that knows its
  cluster; :func:`connect` (a scheduler address or a cluster object) and :func:`start_slurm`
  (a ``dask_jobqueue.SLURMCluster`` scaled adaptively between 0 and ``jobs`` jobs) build one.
* :class:`Watch`: polled by :func:`finwidth.experiments.run_sweep` while tasks are pending. It
  reports a scheduler that stops answering, no worker for too long, and Slurm jobs that end
  without their worker ever connecting; the runner then fails the pending tasks with that message
  and the sweep ends with a report. Workers that die while running a task are Dask's business:
  the task is retried on another worker ``retries`` times, then fails with ``KilledWorker``, which
  :func:`explain` turns into advice (with the end of the worker logs for Slurm).

Slurm jobs of a driver that was killed (their scheduler lived in that driver) are cancelled by the
next driver that uses the same store on the same host: each driver records its job IDs in
``STORE/cluster/driver-<host>-<pid>.json``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from finwidth.errors import ConfigError

__all__ = ["DaskExecutor", "SlurmOptions", "Watch", "connect", "explain", "slurm_options", "start_slurm"]

_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d{1,2}):(\d{2}):(\d{2})$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)\s*$", re.IGNORECASE)
_ACTIVE_JOB = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "RESIZING", "SUSPENDED", "REQUEUED"}


class SlurmOptions(BaseModel):
    """Resources of the Slurm jobs that host the Dask workers (one worker per job, one task at a time).

    Give what one task needs: ``memory`` and ``walltime`` are per job and a job runs tasks one after
    the other until its walltime (then a new job takes over, started by the adaptive scaling).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = Field(default=None, description="Slurm partition (queue); default: the cluster's default")
    account: str | None = Field(default=None, description="account to charge")
    cores: int = Field(default=1, gt=0, description="CPU cores per job = BLAS/torch threads of its worker")
    memory: str = Field(default="4GB", description="memory per job, e.g. 4GB or 500MB")
    walltime: str = Field(default="01:00:00", description="time limit per job, [D-]HH:MM:SS")
    jobs: int = Field(default=4, gt=0, description="at most this many jobs at once (scaled between 0 and jobs)")
    interface: str | None = Field(default=None, description="network interface of scheduler and workers, e.g. ib0, lo")
    prologue: tuple[str, ...] = Field(default=(), description="shell lines run before the worker starts")
    job_extra: tuple[str, ...] = Field(default=(), description="further sbatch options, e.g. --gres=gpu:1")
    python: str | None = Field(default=None, description="the workers' Python (default: this interpreter)")
    log_directory: str | None = Field(default=None, description="job logs (default STORE/cluster/logs)")
    retries: int = Field(default=2, ge=0, description="re-runs of a task whose worker died, before it fails")
    death_timeout: float = Field(default=60.0, gt=0, description="seconds a worker waits for a lost scheduler")

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v: str) -> str:
        m = _WALLTIME.match(v.strip())
        if m is None or int(m.group(3)) >= 60 or int(m.group(4)) >= 60:
            raise ValueError(f"walltime must be [D-]HH:MM:SS, e.g. 04:00:00 or 1-00:00:00; got {v!r}")
        return v.strip()

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        m = _MEMORY.match(v)
        if m is None or float(m.group(1)) <= 0:
            raise ValueError(f"memory must be a positive amount with a unit, e.g. 4GB, 500MB or 2GiB; got {v!r}")
        return v.strip()

    @field_validator("python")
    @classmethod
    def _python(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("python must be the path of the workers' Python executable")
        return v


def slurm_options(value: SlurmOptions | dict[str, Any] | None) -> SlurmOptions:
    """Validate Slurm options given as a dict (or None: the defaults); ConfigError naming each bad key."""
    if isinstance(value, SlurmOptions):
        return value
    try:
        return SlurmOptions.model_validate(value or {})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown option (known: {', '.join(SlurmOptions.model_fields)})"
            lines.append(f"  slurm.{key}: {msg}")
        raise ConfigError("invalid Slurm options:\n" + "\n".join(lines)) from None


# ---- the executor -------------------------------------------------------------------------------------
class DaskExecutor(cf.Executor):
    """A ``concurrent.futures`` executor on a ``distributed.Client``, with what the watch needs.

    Parameters
    ----------
    client : distributed.Client
    cluster : object, optional
        The cluster the client talks to (closed with the executor when ``own_cluster``).
    slurm : _SlurmJobs, optional
        The Slurm jobs of a cluster started by :func:`start_slurm`.
    """

    def __init__(self, client: Any, *, cluster: Any = None, slurm: _SlurmJobs | None = None,
                 own_client: bool = True, own_cluster: bool = False):
        self.client = client
        self.cluster = cluster
        self.slurm = slurm
        self._inner = client.get_executor(pure=False)
        self._own_client = own_client
        self._own_cluster = own_cluster

    @property
    def address(self) -> str:
        return str(self.client.scheduler.address)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        return self._inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Wait for (or abandon) the submitted tasks, then close what this executor opened.

        Never blocks on a scheduler that does not answer: closing gives up after a few seconds.
        """
        if wait and not cancel_futures:
            self._inner.shutdown(wait=True)
        # otherwise no cancel round trip: the scheduler may be gone, and closing the client drops the tasks
        for own, obj in ((self._own_client, self.client), (self._own_cluster, self.cluster)):
            if own and obj is not None:
                try:
                    _call_with_timeout(obj.close, 20)
                except Exception:  # noqa: BLE001, S110 - closing a dead scheduler's client: nothing left to do
                    pass
        if self.slurm is not None:  # the cluster cancels its jobs on close; make sure, then drop the record
            self.slurm.cancel_all()
            self.slurm.forget()


def _call_with_timeout(fn: Callable[[], Any], timeout: float) -> Any:
    pool = cf.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn).result(timeout)
    finally:
        pool.shutdown(wait=False)


def connect(scheduler: str | None = None, cluster: Any = None, *, timeout: float = 20.0) -> DaskExecutor:
    """A :class:`DaskExecutor` on a scheduler address (``tcp://host:8786``), a cluster object
    (``LocalCluster``, ``SLURMCluster``, ...), or a new ``LocalCluster`` when neither is given.

    Raises :class:`ConfigError` when the scheduler cannot be reached within ``timeout`` seconds.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("the dask executor needs the dask extra: pip install 'finwidth[dask]'") from None
    if scheduler is not None and cluster is not None:
        raise ConfigError("give a dask scheduler address or a cluster object, not both")
    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler.strip():
            raise ConfigError(f"a Dask scheduler address looks like tcp://host:8786, got {scheduler!r}")
        _probe(scheduler, timeout)
        try:
            client = Client(scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s ({exc}); "
                              "check the address (tcp://HOST:PORT, as printed by `dask scheduler`), that the "
                              "scheduler is running and that this machine can reach that port") from None
        return DaskExecutor(client)
    return DaskExecutor(Client(cluster), cluster=cluster)


def _probe(address: str, timeout: float) -> None:
    """Fail at once on a refused TCP connection (Dask would retry it for the whole timeout)."""
    m = re.match(r"^tcp://\[?([^\]]+?)\]?:(\d+)$", address.strip())
    if m is None:
        return  # another protocol (tls://, ucx://, inproc://): Dask itself checks
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {address!r} ({exc}); check the address "
                          "(tcp://HOST:PORT, as printed by `dask scheduler`), that the scheduler is running and "
                          "that this machine can reach that port") from None


# ---- Slurm ----------------------------------------------------------------------------------------------
class _SlurmJobs:
    """The Slurm jobs of one SLURMCluster: their states, their logs, and the driver's record of them."""

    def __init__(self, cluster: Any, log_directory: Path, registry: Path):
        self.cluster = cluster
        self.log_directory = log_directory
        self.registry = registry
        self.known: set[str] = set()
        self.had_worker: set[str] = set()
        self.ended_without_worker: list[str] = []

    def current(self) -> dict[str, str]:
        """job ID → the Dask worker name its job was started under, for the cluster's current jobs."""
        out = {}
        for name, job in list(getattr(self.cluster, "workers", {}).items()):
            job_id = getattr(job, "job_id", None)
            if job_id:
                out[str(job_id)] = str(name)
        return out

    def states(self, ids: list[str]) -> dict[str, str]:
        """Slurm states of the given jobs (``ENDED`` for those squeue no longer lists)."""
        if not ids:
            return {}
        out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(ids)],
                             capture_output=True, text=True, timeout=30)
        states = dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)
        return {i: states.get(i, "ENDED") for i in ids}

    def update(self, worker_names: set[str]) -> None:
        """Note which jobs got a worker and which ended without one; keep the registry current."""
        current = self.current()
        for job_id, name in current.items():
            if any(w == name or w.startswith(name + "-") for w in worker_names):
                self.had_worker.add(job_id)
        ids = sorted(self.known | set(current))
        if set(current) - self.known:
            self.known |= set(current)
            self._save()
        for job_id, state in self.states(ids).items():
            if state not in _ACTIVE_JOB and job_id not in self.had_worker and job_id not in self.ended_without_worker:
                self.ended_without_worker.append(job_id)

    def active(self) -> int:
        return sum(s in _ACTIVE_JOB for s in self.states(sorted(self.current())).values())

    def log_hint(self) -> str:
        """The last error line of the newest job logs, e.g. ``ModuleNotFoundError: No module named 'x'``."""
        if not self.log_directory.is_dir():
            return ""
        logs = sorted(self.log_directory.glob("*.err"), key=lambda p: p.stat().st_mtime, reverse=True)
        logs += sorted(self.log_directory.glob("*.out"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in logs[:8]:
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            errors = [ln.strip() for ln in lines if re.search(r"\w+(Error|Exception)\b: |No such file|command not found|Permission denied", ln)]
            if errors:
                return f"; the worker log {path} ends with: {errors[-1][:300]}"
        return f"; see the worker logs in {self.log_directory}"

    def _save(self) -> None:
        self.registry.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.registry.with_name(f".tmp-{self.registry.name}")
        tmp.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "jobs": sorted(self.known)}))
        os.replace(tmp, self.registry)

    def forget(self) -> None:
        self.registry.unlink(missing_ok=True)

    def cancel_all(self) -> None:
        ids = sorted(self.known | set(self.current()))
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def cancel_orphaned_jobs(store_root: Path) -> list[str]:
    """Cancel the Slurm jobs recorded by drivers on this host that are no longer alive. Returns their IDs.

    Their workers served a scheduler that died with its driver: they can only hold nodes and race
    the new run for the same tasks.
    """
    from finwidth.experiments.store import _pid_alive

    folder = Path(store_root) / "cluster"
    cancelled: list[str] = []
    for path in sorted(folder.glob("driver-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if record.get("host") != socket.gethostname() or _pid_alive(int(record.get("pid", -1))):
            continue
        ids = [str(i) for i in record.get("jobs", [])]
        if ids and shutil.which("scancel"):
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
            deadline = time.monotonic() + 30  # let them go before new jobs ask for the same nodes
            while time.monotonic() < deadline:
                out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True)
                if not out.stdout.split():
                    break
                time.sleep(0.5)
            cancelled += ids
        path.unlink(missing_ok=True)
    return cancelled


def start_slurm(options: SlurmOptions | dict[str, Any] | None, store_root: str | Path) -> DaskExecutor:
    """A :class:`DaskExecutor` on a new ``dask_jobqueue.SLURMCluster`` (scheduler in this process).

    Jobs are scaled adaptively between 0 and ``options.jobs``; each runs one worker with
    ``options.cores`` threads for BLAS/torch and one task at a time. Jobs left by a killed driver of
    the same store are cancelled first (:func:`cancel_orphaned_jobs`).
    """
    opts = slurm_options(options)
    try:
        import dask
        from dask_jobqueue import SLURMCluster
        from distributed import Client
    except ImportError:
        raise ConfigError("the slurm executor needs the dask extra: pip install 'finwidth[dask]'") from None
    if shutil.which("sbatch") is None:
        raise ConfigError("the slurm executor needs Slurm's sbatch on the PATH (run the sweep on a login node)")
    store_root = Path(store_root).resolve()
    cancel_orphaned_jobs(store_root)
    logs = Path(opts.log_directory) if opts.log_directory else store_root / "cluster" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = str(opts.cores)
    prologue = [f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads}",
                f"export FINWIDTH_WORKER_THREADS={threads}", *opts.prologue]
    if os.environ.get("FINWIDTH_DATA"):
        prologue.insert(0, f"export FINWIDTH_DATA={_shell_quote(os.environ['FINWIDTH_DATA'])}")
    kwargs: dict[str, Any] = dict(
        cores=opts.cores, processes=1, memory=opts.memory, walltime=opts.walltime, queue=opts.partition,
        account=opts.account, interface=opts.interface, job_script_prologue=prologue,
        job_extra_directives=list(opts.job_extra), log_directory=str(logs), python=opts.python or sys.executable,
        death_timeout=opts.death_timeout, worker_extra_args=["--nthreads", "1"],
    )
    if opts.interface is not None:
        kwargs["scheduler_options"] = {"interface": opts.interface}
    with dask.config.set({"distributed.scheduler.allowed-failures": opts.retries}):
        try:
            cluster = SLURMCluster(**kwargs)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"cannot start a SLURMCluster with {opts.model_dump(exclude_defaults=True)}: {exc}") from None
    cluster.adapt(minimum_jobs=0, maximum_jobs=opts.jobs)
    jobs = _SlurmJobs(cluster, logs, store_root / "cluster" / f"driver-{socket.gethostname()}-{os.getpid()}.json")
    return DaskExecutor(Client(cluster), cluster=cluster, slurm=jobs, own_cluster=True)


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


# ---- the watch -------------------------------------------------------------------------------------------
class Watch:
    """Polled while tasks are pending; :meth:`check` returns why the sweep cannot go on, or None.

    Parameters
    ----------
    executor : DaskExecutor
    worker_timeout : float
        Seconds with tasks pending and no worker connected before the pending tasks fail. Slurm jobs
        waiting in the queue do not count (a queue may be long). When the last jobs ended without
        their worker ever connecting (nothing will replace them), ``grace_jobs_without_worker``
        seconds are enough.
    scheduler_timeout : float
        Seconds the scheduler may leave the watch's requests unanswered.
    """

    def __init__(self, executor: DaskExecutor, *, worker_timeout: float = 600.0, scheduler_timeout: float = 120.0,
                 grace_jobs_without_worker: float = 20.0):
        self.executor = executor
        self.worker_timeout = worker_timeout
        self.scheduler_timeout = scheduler_timeout
        self.grace_jobs_without_worker = grace_jobs_without_worker
        self.last_answer = time.monotonic()
        self.no_worker_since: float | None = None
        self.workers_seen: set[str] = set()
        try:  # the workers there at the start count as seen
            self.workers_seen |= set(self._identity().get("workers", {}))
        except Exception:  # noqa: BLE001, S110 - check() reports a silent scheduler
            pass

    def _identity(self) -> dict[str, Any]:
        client = self.executor.client
        return client.sync(client.scheduler.identity, callback_timeout=min(10.0, self.scheduler_timeout))

    def check(self) -> str | None:
        ex = self.executor
        now = time.monotonic()
        try:
            ident = self._identity()
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer counts as silence
            if now - self.last_answer > self.scheduler_timeout:
                return (f"the Dask scheduler at {ex.address} has not answered for {now - self.last_answer:.0f} s "
                        f"(last error: {type(exc).__name__}: {exc}); results of finished tasks are in the store: "
                        "restart the scheduler (or the cluster) and run the sweep again to finish the rest")
            return None
        self.last_answer = now
        workers = ident.get("workers", {})
        names = {str(w.get("name", addr)) for addr, w in workers.items()}
        self.workers_seen |= set(workers)
        slurm = ex.slurm
        if slurm is not None:
            slurm.update(names)
        if workers:
            self.no_worker_since = None
            return None
        if slurm is not None and slurm.active():
            self.no_worker_since = None  # jobs waiting in the queue or starting up
            return None
        if self.no_worker_since is None:
            self.no_worker_since = now
        waited = now - self.no_worker_since
        failed_jobs = slurm.ended_without_worker if slurm is not None else []
        # adaptive scaling replaces jobs whose worker left, not jobs whose worker never came
        limit = min(self.worker_timeout, self.grace_jobs_without_worker) if failed_jobs else self.worker_timeout
        if waited <= limit:
            return None
        if failed_jobs:
            return (f"{len(failed_jobs)} Slurm job(s) ({', '.join(failed_jobs)}) ended without their Dask worker "
                    "connecting, and no job or worker is left: the job's Python must import finwidth and "
                    "distributed (activate the environment in the prologue, or give the workers' python), and the "
                    "workers must reach the scheduler (interface)" + slurm.log_hint())
        seen = (f"{len(self.workers_seen)} worker(s) connected earlier and left" if self.workers_seen
                else "no worker ever connected")
        return (f"no Dask worker has been connected to {ex.address} for {waited:.0f} s ({seen}). Workers that exit "
                "as soon as they receive a task usually cannot unpickle it: the workers' Python must import "
                "finwidth and the task function's module (same environment; PYTHONPATH)"
                + (slurm.log_hint() if slurm is not None else "; see the workers' logs"))


def explain(exc: BaseException, executor: cf.Executor | None = None) -> str:
    """A one-paragraph message for a task that failed outside its task function (a lost worker, a
    task the scheduler could not unpickle, a lost scheduler), saying what to do about it."""
    name = type(exc).__name__
    text = f"{name}: {exc}".strip()
    hint = ""
    slurm = getattr(executor, "slurm", None)
    if name == "KilledWorker":
        hint = ("the workers running this task died (out of memory, killed at the job's walltime, or unable to "
                "unpickle the task: the workers must import finwidth and the task function's module); give the "
                "jobs more memory or walltime, or check the workers' logs")
    elif "deserializ" in str(exc).lower():
        hint = ("the scheduler could not unpickle the task: scheduler, workers and this driver need the same "
                "Python environment, with finwidth and the task function's module importable (PYTHONPATH)")
    elif isinstance(exc, cf.CancelledError) or name in {"CommClosedError", "FutureCancelledError"}:
        hint = "the task was cancelled, most likely because the connection to the Dask scheduler was lost; run the sweep again"
    if hint and slurm is not None:
        hint += slurm.log_hint()
    return f"{text.splitlines()[0] if text else name} -- {hint}" if hint else text
