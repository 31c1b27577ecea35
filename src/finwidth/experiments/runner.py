"""Run a sweep: expand the grid, skip the tasks already done, execute the rest on any executor.

Any :class:`concurrent.futures.Executor` works: the default is a local process pool sized to the
machine (``spawn`` start method, so that torch is never forked), :func:`make_executor` also builds a
thread pool, an in-process serial executor, a Dask executor (``finwidth[dask]``; a scheduler
address, a ``LocalCluster`` or a ``dask_jobqueue.SLURMCluster``) and a Slurm executor (a
``SLURMCluster`` started here, see :mod:`finwidth.experiments.cluster`). Each task runs
:func:`execute_task` on a worker, which writes the task's folder in the store itself, so results
survive the driver being killed; a restarted sweep recomputes only what is missing. On Dask and
Slurm a :class:`~finwidth.experiments.cluster.Watch` makes sure a sweep ends, with a report, when
workers or the scheduler go away for good.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import importlib
import inspect
import math
import multiprocessing
import os
import platform
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finwidth.errors import ConfigError
from finwidth.experiments.spec import SweepSpec, Task, TaskConfig, canonical_json
from finwidth.experiments.store import ResultStore, TaskOutput

__all__ = [
    "SerialExecutor",
    "SweepReport",
    "execute_task",
    "make_executor",
    "resolve_task_fn",
    "run_sweep",
    "sweep_status",
]

TaskFn = Callable[..., "TaskOutput | dict[str, Any]"]
_POLL_S = 2.0  # how often a sweep on Dask looks at its workers and scheduler
_PROGRESS_POLL_S = 1.0  # how often a sweep with a progress bar reads its running tasks' progress


@dataclass
class SweepReport:
    """What a call to :func:`run_sweep` did."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.failed and self.skipped + self.done == self.total

    def summary(self) -> str:
        text = f"{self.total} tasks: {self.skipped} already done, {self.done} run now, {len(self.failed)} failed ({self.wall_s:.1f} s)"
        for key, err in self.failed.items():
            text += f"\n  failed {key}: {err.splitlines()[0] if err else ''}"
        return text


class SerialExecutor(cf.Executor):
    """Runs each task in the calling process at submission (debugging, one-task sweeps, tests)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _worker_threads(n_workers: int) -> int:
    """Threads per worker: the cores shared out, but never more than an ``OMP_NUM_THREADS`` the user set."""
    threads = max(1, _cpu_count() // n_workers)
    user = os.environ.get("OMP_NUM_THREADS", "")
    if user.isdigit() and int(user) >= 1:
        threads = min(threads, int(user))
    return threads


def _init_worker(threads: int) -> None:
    # one BLAS/torch thread pool per worker, sized so the workers do not oversubscribe the cores
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["FINWIDTH_WORKER_THREADS"] = str(threads)


def make_executor(
    kind: str = "process",
    *,
    max_workers: int | None = None,
    scheduler: str | None = None,
    cluster: Any = None,
    slurm: Any = None,
    store: str | Path | None = None,
) -> tuple[cf.Executor, Callable[[], None]]:
    """Build an executor and the function that shuts it down.

    Parameters
    ----------
    kind : {"process", "thread", "serial", "dask", "slurm"}
        ``process``: a local process pool (``spawn``) with ``max_workers`` workers (default: the
        number of usable cores), each limited to cores/workers BLAS and torch threads.
        ``dask``: a ``distributed.Client`` executor connected to ``scheduler`` (an address such as
        ``tcp://10.0.0.1:8786``; :class:`ConfigError` when it cannot be reached) or to ``cluster``
        (a ``LocalCluster``, ``SLURMCluster``, ...); with neither, a ``LocalCluster`` on this machine.
        ``slurm``: a ``dask_jobqueue.SLURMCluster`` started here with the resources ``slurm``
        (:class:`~finwidth.experiments.cluster.SlurmOptions` or a dict of its fields), its job logs
        and job records under ``store``/cluster.
    max_workers : int, optional
        Pool size for ``process`` and ``thread``.

    Returns
    -------
    (executor, close)
    """
    if max_workers is not None and max_workers < 1:
        raise ConfigError(f"max_workers must be a positive integer, got {max_workers}")
    if kind == "serial":
        ex = SerialExecutor()
        return ex, ex.shutdown
    if kind == "thread":
        ex = cf.ThreadPoolExecutor(max_workers=max_workers or _cpu_count())
        return ex, ex.shutdown
    if kind == "process":
        n = max_workers or _cpu_count()
        ex = cf.ProcessPoolExecutor(
            max_workers=n,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(_worker_threads(n),),
        )
        return ex, lambda: ex.shutdown(wait=True, cancel_futures=True)
    if kind in ("dask", "slurm"):
        from finwidth.experiments import cluster as dc

        if kind == "dask":
            dex = dc.connect(scheduler, cluster)
        else:
            if scheduler is not None or cluster is not None:
                raise ConfigError("the slurm executor starts its own cluster: give slurm options, not a scheduler or cluster")
            if store is None:
                raise ConfigError("the slurm executor needs the store folder (for its job logs and records)")
            dex = dc.start_slurm(slurm, store)
        return dex, dex.shutdown
    raise ConfigError(f"unknown executor {kind!r}: use process, thread, serial, dask or slurm")


def resolve_task_fn(ref: str | TaskFn | None) -> TaskFn:
    """A task function from ``"package.module:function"`` (or the callable itself; None → default).

    The default, :func:`finwidth.experiments.tasks.run_task`, evaluates the theories and the
    simulation of one :class:`TaskConfig`. Process pools and Dask need the function to be
    importable on the workers by that name.
    """
    if ref is None:
        from finwidth.experiments.tasks import run_task

        return run_task
    if callable(ref):
        return ref
    module_name, _, attr = str(ref).partition(":")
    if not module_name or not attr:
        raise ConfigError(f"a task function is given as 'package.module:function', got {ref!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import the task module {module_name!r}: {exc}") from None
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise ConfigError(f"{module_name!r} has no callable {attr!r}")
    return fn


def _task_ref(fn: TaskFn) -> TaskFn | str:
    """The task function as ``"module:qualname"`` when that name gives it back, else the function.

    Workers then import it inside :func:`execute_task`, where a missing module is a task failure
    with a message, instead of a worker that dies unpickling the task.
    """
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return fn
    ref = f"{module}:{qualname}"
    try:
        return ref if resolve_task_fn(ref) is fn else fn
    except ConfigError:
        return fn


def _accepts(fn: TaskFn, name: str) -> bool:
    """Whether ``fn`` takes the keyword ``name`` (or any keyword)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _describe(info: Any) -> str:
    """A short text for a :class:`finwidth.simulate.loop.ProgressInfo`: steps and the latest error."""
    text = f"{info.step}/{info.n_steps} steps"
    if getattr(info, "test_error", None) is not None:
        text += f", eps_g {info.test_error:.4g}"
    return text


class _ProgressFile:
    """The progress callback of a task on a worker: writes where the task stands into the store
    (:meth:`ResultStore.write_progress`, at most once per ``interval`` seconds and at the end), where
    the driver's bar reads it."""

    def __init__(self, store: ResultStore, key: str, interval: float = 1.0):
        self.store, self.key, self.interval = store, key, interval
        self.last = -math.inf

    def __call__(self, info: Any) -> None:
        now = time.monotonic()
        if info.step < info.n_steps and now - self.last < self.interval:
            return
        self.last = now
        try:
            self.store.write_progress(self.key, info.step / max(info.n_steps, 1), _describe(info))
        except OSError:  # a display only: never fail a task over it
            pass


def _cost_hint(task: Task) -> float:
    """Rough relative cost of a task (for ordering only): a simulation step costs ~P·ΣN_l per replica."""
    cfg = task.config
    sim = cfg.simulation
    if sim is None:
        return float(cfg.data.n_train + cfg.data.n_test) ** 2  # kernel blocks; sub-second anyway
    return float(sim.n_steps) * sim.replicas * (cfg.data.n_train + 1) * (sum(cfg.network.widths) + 1) + 1e12


def execute_task(task_fn: TaskFn | str, store_root: str, key: str, config_json: str,
                 progress: bool | Callable[[Any], None] = False) -> dict[str, Any]:
    """Run one task on a worker and store its result; returns a small status record.

    ``task_fn`` is a callable or its ``"module:function"`` name (imported here, on the worker). A
    function that accepts a ``checkpoint`` keyword gets ``STORE/checkpoints/<key>.ckpt``: a task
    that checkpoints there is resumed after a kill instead of restarted; the file is removed once
    the task's result is stored. A function that accepts a ``progress`` keyword gets, when
    ``progress`` is True, a callback that writes where it stands into ``STORE/progress/<key>.json``
    (what the driver's bar shows; :func:`finwidth.experiments.tasks.run_task` hands it to
    ``sample_posterior``, which calls it with a :class:`~finwidth.simulate.loop.ProgressInfo` after
    each record), or ``progress`` itself when it is a callable (a task run in the driver's process).
    A task that raises (or cannot be imported) is recorded in ``failed/<key>.json`` (error and
    traceback) and reported, not re-raised, so one bad grid point does not stop a sweep.
    Already-done tasks are skipped.
    """
    store = ResultStore(store_root)
    if store.is_done(key):
        return {"key": key, "status": "skipped"}
    start = time.time()
    checkpoint = store.root / "checkpoints" / f"{key}.ckpt"
    try:
        config = TaskConfig.model_validate_json(config_json)
        try:
            fn = resolve_task_fn(task_fn)
        except ConfigError as exc:
            raise ConfigError(
                f"{exc} (on host {socket.gethostname()}, Python {sys.executable}). The task function must be "
                "importable on every worker: install its package into the workers' environment, or add its "
                "folder to PYTHONPATH there (Slurm: --slurm-prologue 'export PYTHONPATH=/path/to/folder')"
            ) from None
        kwargs: dict[str, Any] = {}
        if _accepts(fn, "checkpoint"):
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            kwargs["checkpoint"] = checkpoint
        if progress and _accepts(fn, "progress"):
            kwargs["progress"] = progress if callable(progress) else _ProgressFile(store, key)
        try:
            out = fn(config, **kwargs)
        finally:
            if progress is True:
                store.clear_progress(key)
        if isinstance(out, dict):
            out = TaskOutput(values=out)
        if not isinstance(out, TaskOutput):
            raise TypeError(f"a task function must return TaskOutput or dict, got {type(out).__name__}")
    except Exception as exc:  # noqa: BLE001 - recorded and reported to the driver
        message = f"{type(exc).__name__}: {exc}"
        store.write_failure(key, config_json, message, traceback.format_exc())
        return {"key": key, "status": "failed", "error": message}
    wall = time.time() - start
    from finwidth import __version__

    meta = {
        "wall_s": wall,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start)),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "finwidth": __version__,
        "python": platform.python_version(),
        "task_fn": f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', '?')}",
    }
    written = store.write(key, config_json, out.values, out.arrays, meta)
    checkpoint.unlink(missing_ok=True)
    return {"key": key, "status": "done" if written else "skipped", "wall_s": wall}


class _SweepBar:
    """The sweep's progress bar, in tasks: finished tasks count 1, running ones the fraction they
    report (:func:`execute_task`), so the bar and its ETA move within long simulations too."""

    _FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total_fmt} tasks [{elapsed}<{remaining}{postfix}]"

    def __init__(self, store: ResultStore, n_tasks: int, enabled: bool):
        from tqdm.auto import tqdm

        self.store, self.enabled = store, enabled
        self.bar = tqdm(total=n_tasks, desc="sweep", disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                        bar_format=self._FORMAT, miniters=0)  # miniters=0: redraw on every report (≥ 0.1 s apart)
        self.finished = 0
        self.running: dict[str, tuple[float, str]] = {}

    def report(self, key: str, info: Any) -> None:
        """In-process progress of task ``key`` (a :class:`~finwidth.simulate.loop.ProgressInfo`)."""
        self.running[key] = (info.step / max(info.n_steps, 1), _describe(info))
        self._show()

    def poll(self, keys: Iterable[str]) -> None:
        """Read the progress that tasks on workers wrote into the store."""
        for key in keys:
            got = self.store.read_progress(key)
            if got is not None:
                self.running[key] = got
        self._show()

    def finish(self, key: str, message: str | None = None) -> None:
        self.running.pop(key, None)
        self.finished += 1
        if message:
            self.bar.write(message, file=sys.stderr)
        self._show()

    def _show(self) -> None:
        if not self.enabled:
            return
        texts = [text for _, text in self.running.values() if text]
        postfix = texts[0] if len(texts) == 1 else (f"{len(self.running)} running" if self.running else "")
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.update(self.finished + sum(f for f, _ in self.running.values()) - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _as_dask(executor: Any) -> Any:
    """The executor as a :class:`~finwidth.experiments.cluster.DaskExecutor` when it runs on Dask."""
    from finwidth.experiments.cluster import DaskExecutor

    if isinstance(executor, DaskExecutor):
        return executor
    client = getattr(executor, "_client", None)  # distributed's ClientExecutor (client.get_executor())
    if type(executor).__name__ == "ClientExecutor" and client is not None:
        return DaskExecutor(client, own_client=False)
    return None


def run_sweep(
    spec: SweepSpec | Sequence[Task],
    store: ResultStore | str | Path,
    *,
    task_fn: TaskFn | str | None = None,
    executor: cf.Executor | str | None = None,
    max_workers: int | None = None,
    scheduler: str | None = None,
    slurm: Any = None,
    progress: bool | str = "auto",
    fail_fast: bool = False,
    worker_timeout: float = 600.0,
    scheduler_timeout: float = 120.0,
) -> SweepReport:
    """Run every task of a sweep that is not done yet.

    Parameters
    ----------
    spec : SweepSpec or sequence of Task
        The sweep (its tasks are :meth:`SweepSpec.tasks`); a spec is also saved into the store.
    store : ResultStore or path
        Where results go. Tasks whose folder exists are skipped; stale temporary folders of killed
        writers are removed first.
    task_fn : callable or "module:function", optional
        ``task_fn(TaskConfig) -> TaskOutput | dict``; default :func:`finwidth.experiments.tasks.run_task`.
        A function with a ``checkpoint`` keyword receives its task's checkpoint file
        (:func:`execute_task`). Functions importable by name are sent to workers by name.
    executor : Executor or {"process", "thread", "serial", "dask", "slurm"}, optional
        An executor you manage (not shut down here) or the kind to build with :func:`make_executor`.
        Default: ``"process"``, or ``"serial"`` when only one task is left. A ``dask`` scheduler
        address is checked even when every task is already done.
    max_workers, scheduler, slurm
        Passed to :func:`make_executor` (pool size; Dask scheduler address; Slurm job options,
        validated before anything runs).
    progress : bool or "auto"
        Show a bar with the ETA of the sweep on stderr: ``"auto"`` (default) only when stderr is a
        terminal, so logs and CI stay quiet. It moves within each task too: a task function with a
        ``progress`` keyword (the default one) reports the steps of its simulation
        (:func:`execute_task`).
    fail_fast : bool
        Stop submitting after the first failed task.
    worker_timeout, scheduler_timeout : float
        Dask and Slurm only, in seconds: how long tasks may wait with no worker connected (Slurm
        jobs waiting in the queue do not count), and how long the scheduler may stay silent,
        before the pending tasks fail with a message saying what happened (see
        :class:`~finwidth.experiments.cluster.Watch`).

    Returns
    -------
    SweepReport
        Counts of skipped, run and failed tasks (failures also in ``store/failed``).
    """
    store = store if isinstance(store, ResultStore) else ResultStore(store)
    fn = resolve_task_fn(task_fn)
    if not (isinstance(progress, bool) or progress == "auto"):
        raise ConfigError(f"progress must be True, False or 'auto', got {progress!r}")
    show = progress is True or (progress == "auto" and sys.stderr.isatty())
    tasks = spec.tasks() if isinstance(spec, SweepSpec) else list(spec)
    start = time.time()
    if executor == "slurm":
        from finwidth.experiments.cluster import slurm_options

        slurm = slurm_options(slurm)  # bad options fail here, before anything is submitted
    elif slurm is not None:
        raise ConfigError("slurm options apply to executor='slurm' only")
    store.root.mkdir(parents=True, exist_ok=True)
    if isinstance(spec, SweepSpec):
        store.save_spec(spec)
    store.cleanup_stale()
    # longest first: with a few workers, a long task started last would leave the others idle
    todo = sorted((t for t in tasks if not store.is_done(t.key)), key=_cost_hint, reverse=True)
    report = SweepReport(total=len(tasks), skipped=len(tasks) - len(todo))
    if not todo and not (executor == "dask" and scheduler is not None):
        report.wall_s = time.time() - start
        return report

    close: Callable[[], None] | None = None
    if executor is None or isinstance(executor, str):
        kind = executor or ("serial" if len(todo) == 1 else "process")
        workers = max_workers if max_workers is not None else (min(_cpu_count(), len(todo)) if kind == "process" else None)
        executor, close = make_executor(kind, max_workers=workers, scheduler=scheduler, slurm=slurm, store=store.root)
    dask = _as_dask(executor) if not isinstance(executor, SerialExecutor | cf.ThreadPoolExecutor | cf.ProcessPoolExecutor) else None
    watch = None
    if dask is not None:
        from finwidth.experiments.cluster import Watch

        watch = Watch(dask, worker_timeout=worker_timeout, scheduler_timeout=scheduler_timeout)
    if not todo:  # a dask scheduler that was reachable: nothing else to do
        if close is not None:
            close()
        report.wall_s = time.time() - start
        return report

    from finwidth.experiments.cluster import explain

    bar = _SweepBar(store, len(todo), show)
    in_process = isinstance(executor, SerialExecutor)  # tasks run in this process: they report to the bar directly
    ref = _task_ref(fn)
    pending: dict[cf.Future, Task] = {}
    abandoned = True  # until the loop ends normally: then wait for the executor, else let go at once

    def record(task: Task, status: Mapping[str, Any]) -> bool:
        """Count a finished task; True when the sweep should stop (fail_fast)."""
        if status["status"] == "failed":
            report.failed[task.key] = status["error"]
            bar.finish(task.key, f"task {task.key} failed: {status['error'].splitlines()[0]}")
            return fail_fast
        if status["status"] == "done":
            report.done += 1
        else:
            report.skipped += 1
        bar.finish(task.key)
        return False

    def collect(future: cf.Future) -> bool:
        task = pending.pop(future)
        try:
            status = future.result()
        except BaseException as exc:  # noqa: BLE001 - the worker died, the scheduler lost it, ...
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            status = {"key": task.key, "status": "failed", "error": explain(exc, dask)}
            store.write_failure(task.key, canonical_json(task.config), status["error"], traceback.format_exc())
        return record(task, status)

    poll = _POLL_S if watch else None
    if show and not in_process:
        poll = min(poll or _PROGRESS_POLL_S, _PROGRESS_POLL_S)
    try:
        stop = False
        for task in todo:
            if show:
                store.clear_progress(task.key)  # what a killed earlier run of it left
                task_progress: bool | Callable[[Any], None] = (functools.partial(bar.report, task.key)
                                                                if in_process else True)
            else:
                task_progress = False
            future = executor.submit(execute_task, ref, str(store.root), task.key, canonical_json(task.config),
                                     task_progress)
            pending[future] = task
            if future.done() and collect(future):  # a serial executor has run it already: count it now
                stop = True
                break
        if stop:  # fail_fast
            for other in pending:
                other.cancel()
        while pending and not stop:
            done, _ = cf.wait(pending, timeout=poll, return_when=cf.FIRST_COMPLETED)
            for future in done:
                stop = collect(future) or stop
            if show and not in_process:
                bar.poll(t.key for t in pending.values())
            if stop:
                for other in pending:
                    other.cancel()
                break
            problem = watch.check() if watch is not None and pending else None
            if problem is not None:
                for future, task in pending.items():
                    store.write_failure(task.key, canonical_json(task.config), problem)
                    record(task, {"status": "failed", "error": problem})
                pending.clear()
                break
        else:
            abandoned = False
    finally:
        bar.close()
        if close is not None:
            if abandoned and dask is not None:
                dask.shutdown(wait=False)
            else:
                close()
    report.wall_s = time.time() - start
    return report


def sweep_status(spec: SweepSpec, store: ResultStore | str | Path) -> dict[str, Any]:
    """Progress of a sweep in a store: counts and the keys of the pending and failed tasks."""
    store = store if isinstance(store, ResultStore) else ResultStore(store)
    tasks = spec.tasks()
    done = store.done_keys()
    failures = store.failures()
    pending = [t.key for t in tasks if t.key not in done]
    return {
        "name": spec.name,
        "store": str(store.root),
        "total": len(tasks),
        "done": len(tasks) - len(pending),
        "pending": pending,
        "failed": {k: failures[k].get("error", "") for k in pending if k in failures},
        "extra": sorted(done - {t.key for t in tasks}),
    }
