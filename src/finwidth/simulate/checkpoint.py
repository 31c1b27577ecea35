"""Atomic checkpoints of sampling runs.

A checkpoint is one file written by ``torch.save`` of plain containers of tensors, numbers and
strings (no pickled code: it is read back with ``torch.load(weights_only=True)``). It is written to
a temporary file in the same directory, flushed to disk, then moved over the old one with
``os.replace``, so a run killed at any moment leaves either the previous or the new checkpoint,
never a truncated one. A run killed while writing leaves its temporary file (``.NAME.tmpPID``) behind:
:func:`remove_stale_temporaries` deletes those when the run resumes or restarts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from finwidth.errors import DataError

__all__ = ["FORMAT_VERSION", "load_checkpoint", "remove_stale_temporaries", "save_checkpoint"]

FORMAT_VERSION = 2  # 2: the run configuration as RunConfig fields, one recorder state (0.1.0.dev0)


def _to_saveable(obj):
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, dict):
        return {k: _to_saveable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_saveable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    return obj


def _from_saved(obj):
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            return obj["__ndarray__"].numpy()
        return {k: _from_saved(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_saved(v) for v in obj]
    return obj


def _temporary(path: Path, pid: int | None = None) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid() if pid is None else pid}")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers of the checkpoint ``path`` left behind (one run
    owns a checkpoint: whoever resumes or restarts it). Returns the files removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    gone = []
    for tmp in path.parent.glob(f".{path.name}.tmp*"):
        if tmp.name[len(path.name) + 5:].isdigit() and tmp != _temporary(path):
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    payload = {"format": "finwidth.simulate.checkpoint", "version": FORMAT_VERSION, "state": _to_saveable(state)}
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; ``DataError`` if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/foreign files
        raise DataError(f"checkpoint {str(path)!r} is corrupt or not a finwidth checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != "finwidth.simulate.checkpoint":
        raise DataError(f"{str(path)!r} is not a finwidth sampling checkpoint")
    if payload.get("version") != FORMAT_VERSION:
        raise DataError(f"checkpoint {str(path)!r} has format version {payload.get('version')}, "
                        f"this finwidth reads version {FORMAT_VERSION}")
    return _from_saved(payload["state"])
