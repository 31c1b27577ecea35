"""Run a sweep: expand the grid, skip the tasks already done, execute the rest on any executor.

Any :class:`concurrent.futures.Executor` works: the default is a local process pool sized to the
machine (``spawn`` start method, so that torch is never forked), :func:`make_executor` also builds a
thread pool, an in-process serial executor and a Dask executor (``finwidth[dask]``; a scheduler
address, a ``LocalCluster`` or a ``dask_jobqueue.SLURMCluster``). Each task runs
:func:`execute_task` on a worker, which writes the task's folder in the store itself, so results
survive the driver being killed; a restarted sweep recomputes only what is missing.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import importlib
import multiprocessing
import os
import platform
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
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
    "task_checkpoint_path",
]

TaskFn = Callable[[TaskConfig], "TaskOutput | dict[str, Any]"]

_current = threading.local()


def task_checkpoint_path() -> Path | None:
    """Where the running task may checkpoint (``STORE/checkpoints/<key>.ckpt``); None outside a sweep.

    A task function that checkpoints there is resumed after a kill instead of restarted; the file is
    removed once the task's result is stored.
    """
    return getattr(_current, "checkpoint", None)


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
) -> tuple[cf.Executor, Callable[[], None]]:
    """Build an executor and the function that shuts it down.

    Parameters
    ----------
    kind : {"process", "thread", "serial", "dask"}
        ``process``: a local process pool (``spawn``) with ``max_workers`` workers (default: the
        number of usable cores), each limited to cores/workers BLAS and torch threads.
        ``dask``: a ``distributed.Client`` executor connected to ``scheduler`` (an address such as
        ``tcp://10.0.0.1:8786``) or to ``cluster`` (a ``LocalCluster``, ``SLURMCluster``, ...);
        with neither, a ``LocalCluster`` on this machine.
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
    if kind == "dask":
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError("the dask executor needs the dask extra: pip install 'finwidth[dask]'") from None
        if scheduler is not None and cluster is not None:
            raise ConfigError("give a dask scheduler address or a cluster object, not both")
        client = Client(scheduler if scheduler is not None else cluster)
        ex = client.get_executor()

        def close() -> None:
            ex.shutdown(wait=True)
            client.close()

        return ex, close
    raise ConfigError(f"unknown executor {kind!r}: use process, thread, serial or dask")


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
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{module_name!r} has no callable {attr!r}")
    return fn


def _cost_hint(task: Task) -> float:
    """Rough relative cost of a task (for ordering only): a simulation step costs ~P·ΣN_l per replica."""
    cfg = task.config
    sim = cfg.simulation
    if sim is None:
        return float(cfg.data.n_train + cfg.data.n_test) ** 2  # kernel blocks; sub-second anyway
    return float(sim.n_steps) * sim.replicas * (cfg.data.n_train + 1) * (sum(cfg.network.widths) + 1) + 1e12


def execute_task(task_fn: TaskFn, store_root: str, key: str, config_json: str) -> dict[str, Any]:
    """Run one task on a worker and store its result; returns a small status record.

    A task that raises is recorded in ``failed/<key>.json`` (error and traceback) and reported, not
    re-raised, so one bad grid point does not stop a sweep. Already-done tasks are skipped.
    """
    store = ResultStore(store_root)
    if store.is_done(key):
        return {"key": key, "status": "skipped"}
    config = TaskConfig.model_validate_json(config_json)
    start = time.time()
    checkpoint = store.root / "checkpoints" / f"{key}.ckpt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    _current.checkpoint = checkpoint
    try:
        out = task_fn(config)
        if isinstance(out, dict):
            out = TaskOutput(values=out)
        if not isinstance(out, TaskOutput):
            raise TypeError(f"a task function must return TaskOutput or dict, got {type(out).__name__}")
    except Exception as exc:  # noqa: BLE001 - recorded and reported to the driver
        message = f"{type(exc).__name__}: {exc}"
        store.write_failure(key, config_json, message, traceback.format_exc())
        return {"key": key, "status": "failed", "error": message}
    finally:
        _current.checkpoint = None
    wall = time.time() - start
    from finwidth import __version__

    meta = {
        "wall_s": wall,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start)),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "finwidth": __version__,
        "python": platform.python_version(),
        "task_fn": f"{getattr(task_fn, '__module__', '?')}:{getattr(task_fn, '__qualname__', '?')}",
    }
    written = store.write(key, config_json, out.values, out.arrays, meta)
    checkpoint.unlink(missing_ok=True)
    return {"key": key, "status": "done" if written else "skipped", "wall_s": wall}


def run_sweep(
    spec: SweepSpec | Sequence[Task],
    store: ResultStore | str | Path,
    *,
    task_fn: TaskFn | str | None = None,
    executor: cf.Executor | str | None = None,
    max_workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    fail_fast: bool = False,
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
    executor : Executor or {"process", "thread", "serial", "dask"}, optional
        An executor you manage (not shut down here) or the kind to build with :func:`make_executor`.
        Default: ``"process"``, or ``"serial"`` when only one task is left.
    max_workers, scheduler
        Passed to :func:`make_executor` (pool size; Dask scheduler address).
    progress : bool
        Show a tqdm bar with the ETA of the sweep.
    fail_fast : bool
        Stop submitting after the first failed task.

    Returns
    -------
    SweepReport
        Counts of skipped, run and failed tasks (failures also in ``store/failed``).
    """
    store = store if isinstance(store, ResultStore) else ResultStore(store)
    fn = resolve_task_fn(task_fn)
    tasks = spec.tasks() if isinstance(spec, SweepSpec) else list(spec)
    start = time.time()
    store.root.mkdir(parents=True, exist_ok=True)
    if isinstance(spec, SweepSpec):
        store.save_spec(spec)
    store.cleanup_stale()
    # longest first: with a few workers, a long task started last would leave the others idle
    todo = sorted((t for t in tasks if not store.is_done(t.key)), key=_cost_hint, reverse=True)
    report = SweepReport(total=len(tasks), skipped=len(tasks) - len(todo))
    if not todo:
        report.wall_s = time.time() - start
        return report

    close: Callable[[], None] | None = None
    if executor is None or isinstance(executor, str):
        kind = executor or ("serial" if len(todo) == 1 else "process")
        workers = max_workers if max_workers is not None else (min(_cpu_count(), len(todo)) if kind == "process" else None)
        executor, close = make_executor(kind, max_workers=workers, scheduler=scheduler)
        if kind == "serial" and progress and task_fn is None:  # foreground: show each simulation's own bar
            fn = functools.partial(fn, progress=True)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="sweep", unit="task", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    futures: dict[cf.Future, Task] = {}
    try:
        for task in todo:
            futures[executor.submit(execute_task, fn, str(store.root), task.key, canonical_json(task.config))] = task
        for future in cf.as_completed(futures):
            task = futures[future]
            try:
                status = future.result()
            except Exception as exc:  # noqa: BLE001 - the worker itself died (e.g. killed, out of memory)
                status = {"key": task.key, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                store.write_failure(task.key, canonical_json(task.config), status["error"], traceback.format_exc())
            if status["status"] == "failed":
                report.failed[task.key] = status["error"]
                bar.write(f"task {task.key} failed: {status['error'].splitlines()[0]}", file=sys.stderr)
                if fail_fast:
                    for other in futures:
                        other.cancel()
                    break
            elif status["status"] == "done":
                report.done += 1
            else:
                report.skipped += 1
            bar.update(1)
    finally:
        bar.close()
        if close is not None:
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
