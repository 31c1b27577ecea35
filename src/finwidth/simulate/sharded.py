"""Replica groups advanced in parallel threads (the fast CPU path of the samplers).

Replicas never interact, so contiguous groups of them run in parallel between synchronisation
points (energy checks, records), each on its own thread with single-threaded torch and BLAS. With
per-replica :class:`~finwidth.simulate.samplers.NoiseStreams` the chains do not depend on the grouping.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

from finwidth.simulate.samplers import NoiseStreams, make_sampler

__all__ = ["ShardedSampler"]


def _split_state(state: dict, a: int, b: int, R: int) -> dict:
    """The part of a whole-run sampler state that belongs to replicas ``a .. b``."""
    out = {}
    for k, v in state.items():
        if isinstance(v, list):
            out[k] = [t[a:b] for t in v]
        elif isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == R:
            out[k] = v[a:b]
        else:
            out[k] = v
    return out


def _merge_states(states: list[dict]) -> dict:
    out = {}
    for k, v in states[0].items():
        if isinstance(v, list):
            out[k] = [torch.cat([st[k][i] for st in states]) for i in range(len(v))]
        elif isinstance(v, torch.Tensor) and v.dim() >= 1:
            out[k] = torch.cat([st[k] for st in states])
        else:
            out[k] = v
    return out


class ShardedSampler:
    """R replicas in contiguous groups, each advanced by its own sampler on its own thread.

    Replicas never interact, so the groups run in parallel between synchronisation points
    (energy checks, records), each with single-threaded torch and BLAS (``threads // groups`` each):
    on a few CPU cores this beats one multi-threaded batch, whose many small element-wise and
    BLAS calls leave cores idle or fighting for them. With per-replica :class:`NoiseStreams` the
    chains do not depend on the grouping, and ``state()`` is that of one sampler over all R.

    Same interface as the samplers (``start``, ``step``, ``advance``, ``params``, ``energy``,
    ``loss``, ``state``, ``load_state``, ``acceptance``).
    """

    def __init__(self, name, target, A0, y, step_size, streams: NoiseStreams, *, groups: int, friction=None):
        R = streams.replicas
        groups = max(1, min(int(groups), R, len(streams.blocks)))
        edges = [streams.blocks[round(i * len(streams.blocks) / groups)][0] for i in range(groups)] + [R]
        self.bounds = list(zip(edges[:-1], edges[1:]))
        self.R = R
        self.parts = [make_sampler(name, target, A0, y, step_size, streams.subset(a, b), friction=friction)
                      for a, b in self.bounds]
        self.name, self.h, self.T = self.parts[0].name, self.parts[0].h, self.parts[0].T
        self._pool = ThreadPoolExecutor(len(self.parts), thread_name_prefix="finwidth-replicas") \
            if len(self.parts) > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self):
        self.close()

    # ---------------------------------------------------------------- state
    def start(self, params):
        for part, (a, b) in zip(self.parts, self.bounds):
            part.start([p[a:b] for p in params])

    def state(self) -> dict:
        return _merge_states([part.state() for part in self.parts])

    def load_state(self, state: dict) -> None:
        for part, (a, b) in zip(self.parts, self.bounds):
            part.load_state(_split_state(state, a, b, self.R))

    @property
    def params(self) -> list[torch.Tensor]:
        return [torch.cat(ps) for ps in zip(*(part.params for part in self.parts))]

    @property
    def energy(self) -> torch.Tensor:
        return torch.cat(self._in_workers(lambda part: part.energy))

    @property
    def loss(self) -> torch.Tensor:
        return torch.cat(self._in_workers(lambda part: part.loss))

    def acceptance(self):
        acc = [part.acceptance() for part in self.parts]
        return None if acc[0] is None else np.concatenate(acc)

    # ---------------------------------------------------------------- dynamics
    def step(self) -> None:
        self.advance(1)

    def advance(self, n: int) -> None:
        """``n`` steps of every replica, the groups in parallel threads."""
        self._in_workers(lambda part: part.advance(n))

    def _in_workers(self, fn) -> list:
        """``[fn(part) for part in parts]``, each group on its own thread with ``threads // groups``
        torch and BLAS threads (one group: torch's thread count for both, so that
        ``torch.set_num_threads(1)`` means one thread for scipy's BLAS too); torch's thread
        setting is restored afterwards."""
        threads = torch.get_num_threads()
        if self._pool is None:  # one group, or closed: scipy's BLAS (the triangular products) gets torch's threads
            with _blas_threads(threads):
                return [fn(part) for part in self.parts]
        per = max(1, threads // len(self.parts))

        def work(part):
            torch.set_num_threads(per)  # this thread's torch (and MKL) pool
            return fn(part)

        try:
            with _blas_threads(per):
                return [f.result() for f in [self._pool.submit(work, part) for part in self.parts]]
        finally:
            torch.set_num_threads(threads)


_BLAS_LOCK = threading.Lock()
_BLAS_STATE = {"users": 0, "limiter": None, "controller": None}


@contextmanager
def _blas_threads(n: int):
    """Limit the BLAS libraries outside torch (scipy's, which computes the triangular products) to
    ``n`` threads, so that parallel replica groups do not oversubscribe the cores.

    The limit is process-wide: concurrent runs (sweep workers) share it, the first to enter sets
    it and the last to leave restores the previous setting.
    """
    with _BLAS_LOCK:
        st = _BLAS_STATE
        if st["controller"] is None:
            import scipy.linalg.cython_blas  # noqa: F401  (load scipy's BLAS so that it is controlled)
            from threadpoolctl import ThreadpoolController

            st["controller"] = ThreadpoolController()
        if st["users"] == 0:
            st["limiter"] = st["controller"].limit(limits=n, user_api="blas")
        st["users"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            st["users"] -= 1
            if st["users"] == 0:
                st["limiter"].restore_original_limits()
                st["limiter"] = None
