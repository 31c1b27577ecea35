"""The result store: one folder per task, written atomically, and a tidy table built from them.

Layout of a store rooted at ``ROOT``::

    ROOT/sweep.json              the sweep spec that was last run here (for status/collect/plot)
    ROOT/tasks/<key>/config.json the task's canonical config (its hash is <key>)
    ROOT/tasks/<key>/result.json scalar results and metadata (timings, host, versions)
    ROOT/tasks/<key>/arrays.npz  array results (may hold no arrays)
    ROOT/failed/<key>.json       the last failure of a task that is not done (error and traceback)
    ROOT/progress/<key>.json     where a running task stands (for the sweep's progress bar; removed at its end)

A task folder is first written under a temporary name in ``ROOT/tasks``, every file flushed and
fsync-ed, then renamed to ``<key>`` in one ``rename`` system call: a folder named by a key is always
complete, whatever moment a process is killed at. Each worker writes only its own folders, so
workers never share a database file, and a store on a cluster file system needs no locking. Two
workers finishing the same task race on the rename; exactly one wins and the other discards its copy.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finwidth.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from finwidth.experiments.spec import SweepSpec

__all__ = ["ResultStore", "TaskOutput", "flatten", "json_safe"]

_TMP_PREFIX = ".tmp-"


@dataclass
class TaskOutput:
    """What a task function returns: JSON-able scalars (nested dicts allowed) and named arrays."""

    values: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def json_safe(value: Any) -> Any:
    """Plain JSON types: numpy scalars → Python, tuples/arrays → lists, non-finite floats → None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ConfigError(f"task results must be JSON-able scalars, lists or dicts; got {type(value).__name__}: {value!r}")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts → dotted keys; lists become compact JSON text (one table cell each)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, name + "."))
        elif isinstance(v, list | tuple):
            out[name] = json.dumps(list(v), separators=(",", ":"))
        else:
            out[name] = v
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host can still write: running, not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's live process
        return True
    # A killed worker whose parent died stays a zombie until init reaps it (slowly in some
    # containers); it will never finish its write.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no procfs (macOS): trust kill(pid, 0)
        return True
    return state not in ("Z", "X")


class ResultStore:
    """A folder of task results (see the module docstring for the layout).

    Parameters
    ----------
    root : str or Path
        The store's folder; created on the first write.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    @property
    def tasks_dir(self) -> Path:
        return self.root / "tasks"

    @property
    def failed_dir(self) -> Path:
        return self.root / "failed"

    @property
    def progress_dir(self) -> Path:
        return self.root / "progress"

    def task_dir(self, key: str) -> Path:
        return self.tasks_dir / key

    # ---- state -----------------------------------------------------------------------------
    def is_done(self, key: str) -> bool:
        """True when the task's folder exists (it is complete by construction)."""
        return (self.task_dir(key) / "result.json").is_file()

    def done_keys(self) -> set[str]:
        """Keys of all completed tasks in the store."""
        if not self.tasks_dir.is_dir():
            return set()
        return {p.name for p in self.tasks_dir.iterdir() if not p.name.startswith(".") and (p / "result.json").is_file()}

    def failures(self) -> dict[str, dict[str, Any]]:
        """The recorded failures of tasks that are not done: key → {"error", "traceback", ...}."""
        out: dict[str, dict[str, Any]] = {}
        if not self.failed_dir.is_dir():
            return out
        for path in sorted(self.failed_dir.glob("*.json")):
            key = path.stem
            if self.is_done(key):
                continue
            try:
                out[key] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                out[key] = {"error": f"unreadable failure record {path}"}
        return out

    # ---- writing ---------------------------------------------------------------------------
    def _tmp_name(self, key: str) -> str:
        return f"{_TMP_PREFIX}{key}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"

    def write(
        self,
        key: str,
        config_json: str,
        values: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write a task's folder atomically. Returns False when the task was already done.

        The folder is built under a temporary name and renamed into place; a killed writer leaves
        only a temporary folder, removed later by :meth:`cleanup_stale`.
        """
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        if self.is_done(key):
            return False
        tmp = self.tasks_dir / self._tmp_name(key)
        tmp.mkdir()
        try:
            _write_bytes(tmp / "config.json", config_json.encode("utf-8"))
            arrays = {str(k): np.asarray(v) for k, v in (arrays or {}).items()}
            with open(tmp / "arrays.npz", "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            record = {"key": key, "values": json_safe(dict(values)), "meta": json_safe(dict(meta or {}))}
            _write_bytes(tmp / "result.json", json.dumps(record, indent=1, sort_keys=True, allow_nan=False).encode())
            _fsync_dir(tmp)
            try:
                os.rename(tmp, self.task_dir(key))
            except OSError:
                if self.is_done(key):  # another worker finished the same task first
                    shutil.rmtree(tmp, ignore_errors=True)
                    return False
                raise
            _fsync_dir(self.tasks_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.clear_failure(key)
        return True

    def write_failure(self, key: str, config_json: str, error: str, traceback: str = "") -> None:
        """Record (atomically) why a task failed; a later successful run clears it."""
        self.failed_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "key": key,
            "error": error,
            "traceback": traceback,
            "config": json.loads(config_json),
            "host": socket.gethostname(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp = self.failed_dir / f"{_TMP_PREFIX}{key}-{secrets.token_hex(4)}"
        _write_bytes(tmp, json.dumps(record, indent=1).encode())
        os.replace(tmp, self.failed_dir / f"{key}.json")

    def clear_failure(self, key: str) -> None:
        try:
            (self.failed_dir / f"{key}.json").unlink()
        except FileNotFoundError:
            pass

    # ---- progress of running tasks (a display, not a result: replaced in place, never fsync-ed) ---
    def write_progress(self, key: str, fraction: float, text: str = "") -> None:
        """Record that task ``key`` has done ``fraction`` (0..1) of its work; ``text`` says how
        (e.g. steps and the latest ε_g). The driver of a sweep reads it for its progress bar."""
        self.progress_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.progress_dir / f"{_TMP_PREFIX}{key}-{secrets.token_hex(4)}"
        tmp.write_text(json.dumps({"fraction": min(max(float(fraction), 0.0), 1.0), "text": str(text)}))
        os.replace(tmp, self.progress_dir / f"{key}.json")

    def read_progress(self, key: str) -> tuple[float, str] | None:
        """(fraction, text) of a running task, or None when it has reported nothing (or the
        record is being replaced)."""
        try:
            record = json.loads((self.progress_dir / f"{key}.json").read_text())
            return float(record["fraction"]), str(record.get("text", ""))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def clear_progress(self, key: str) -> None:
        (self.progress_dir / f"{key}.json").unlink(missing_ok=True)

    def save_spec(self, spec: SweepSpec) -> None:
        """Keep the sweep's spec beside its results (atomically), for status, collect and plot."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{_TMP_PREFIX}sweep-{secrets.token_hex(4)}.json"
        _write_bytes(tmp, json.dumps(spec.to_dict(), indent=1).encode())  # key order = axis order
        os.replace(tmp, self.root / "sweep.json")

    def load_spec(self) -> SweepSpec:
        """The spec saved by the last ``run`` into this store."""
        from finwidth.experiments.spec import parse_spec

        path = self.root / "sweep.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{self.root} holds no sweep.json: is it a result store written by `finwidth sweep run`?") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path} is unreadable or corrupt: {exc}") from None
        return parse_spec(raw, source=str(path))

    def cleanup_stale(self, *, max_age_s: float = 7 * 86400) -> int:
        """Remove temporary folders left by killed writers. Returns how many were removed.

        A temporary folder is stale when its writer ran on this host and is no longer alive, or
        when it is older than ``max_age_s`` (writers on other hosts). Live writers are left alone.
        """
        removed = 0
        host = socket.gethostname()
        for parent in (self.tasks_dir, self.failed_dir, self.progress_dir, self.root):
            if not parent.is_dir():
                continue
            for path in parent.iterdir():
                if not path.name.startswith(_TMP_PREFIX):
                    continue
                stale = False
                parts = path.name[len(_TMP_PREFIX) :].split("-")
                # tasks/.tmp-<key>-<host>-<pid>-<rand>; hostnames may contain '-'
                if parent == self.tasks_dir and len(parts) >= 4 and parts[-2].isdigit():
                    if "-".join(parts[1:-2]) == host:
                        stale = not _pid_alive(int(parts[-2]))
                try:
                    stale = stale or (time.time() - path.stat().st_mtime > max_age_s)
                except FileNotFoundError:
                    continue
                if parent != self.tasks_dir:  # small single files, written in well under a second
                    try:
                        stale = stale or (time.time() - path.stat().st_mtime > 3600)
                    except FileNotFoundError:
                        continue
                if stale:
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # ---- reading ---------------------------------------------------------------------------
    def read(self, key: str) -> dict[str, Any]:
        """A task's record: ``{"key", "config", "values", "meta"}``. DataError if missing or corrupt."""
        folder = self.task_dir(key)
        try:
            config = json.loads((folder / "config.json").read_text())
            record = json.loads((folder / "result.json").read_text())
        except FileNotFoundError:
            raise DataError(f"task {key} has no complete result in {self.tasks_dir}") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"the result folder {folder} is corrupt ({exc}); delete it and run the sweep again") from None
        if record.get("key") != key:
            raise DataError(f"the result folder {folder} holds the result of task {record.get('key')!r}; delete it")
        return {"key": key, "config": config, "values": record.get("values", {}), "meta": record.get("meta", {})}

    def read_arrays(self, key: str) -> dict[str, np.ndarray]:
        """A task's arrays (loaded into memory)."""
        path = self.task_dir(key) / "arrays.npz"
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except FileNotFoundError:
            raise DataError(f"task {key} has no arrays.npz in {self.tasks_dir}") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is corrupt ({exc}); delete the folder and run the sweep again") from None

    def collect(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """A tidy table: one row per completed task, config and result columns side by side.

        Columns: ``key``; the config flattened to dotted names (``data.n_train``,
        ``network.widths`` as JSON text, ...); derived axes ``P``, ``P_test``, ``T``, ``L``,
        ``N1`` (first hidden width), ``N_min``, ``lambda_0``, ``lambda_L``; the results flattened
        to dotted names (``nngp.total``, ``rkgp.qbar``, ``sim.total``, ``sim.total_stderr``, ...);
        ``wall_s``. Rows are sorted by the derived axes then the key, so the table does not depend
        on the order in which tasks finished.

        Parameters
        ----------
        keys : iterable of str, optional
            Only these tasks (those not done are left out); default all completed tasks.
        """
        import pandas as pd

        wanted = sorted(self.done_keys() if keys is None else set(keys) & self.done_keys())
        rows = []
        for key in wanted:
            rec = self.read(key)
            cfg = rec["config"]
            row: dict[str, Any] = {"key": key}
            row.update(_derived(cfg))
            row.update(flatten(cfg))
            row.update(flatten(rec["values"]))
            row["wall_s"] = rec["meta"].get("wall_s")
            rows.append(row)
        frame = pd.DataFrame(rows)
        if frame.empty:
            return frame
        order = [c for c in ("data.name", "data.teacher", "P", "L", "N1", "lambda_L", "T", "key") if c in frame]
        return frame.sort_values(order, kind="stable", na_position="first").reset_index(drop=True)


def _derived(cfg: Mapping[str, Any]) -> dict[str, Any]:
    net, data = cfg["network"], cfg["data"]
    widths, priors = net["widths"], net["priors"]
    return {
        "P": data["n_train"],
        "P_test": data["n_test"],
        "T": cfg["temperature"],
        "L": len(widths),
        "N1": widths[0],
        "N_min": min(widths),
        "lambda_0": priors[0],
        "lambda_L": priors[-1],
    }


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a collected table as CSV or Parquet (by suffix). Parquet needs the ``parquet`` extra."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}")
    if path.suffix == ".csv":
        frame.to_csv(tmp, index=False)
    elif path.suffix in {".parquet", ".pq"}:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("writing Parquet needs pyarrow: pip install 'finwidth[parquet]' (or write a .csv)") from None
        frame.to_parquet(tmp, index=False)
    else:
        raise ConfigError(f"unknown table format {path.suffix!r} for {path}: use .csv or .parquet")
    os.replace(tmp, path)
    return path
