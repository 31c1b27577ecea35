"""Capping the threads of the linear algebra under finwidth (BLAS/OpenMP via threadpoolctl, and torch).

The theories are dense factorisations of P×P matrices. On a shared or small machine more BLAS threads
can be much slower than one (on a loaded 2-core machine, ``eigh`` ran 10–18× slower with 2 threads
than with 1), so cap them::

    import finwidth
    with finwidth.threads(1):                  # inside the block only
        rk = finwidth.RKGP(net, temperature=1e-3).fit(X, y)
    finwidth.set_num_threads(1)                # for the rest of the process (and its child processes)

Both cap every BLAS and OpenMP library already loaded (numpy's and SciPy's: SciPy is loaded first so
its own BLAS is included) and, when torch is imported, torch's intra-op threads. Libraries loaded later
are not capped by :func:`threads`; :func:`set_num_threads` also sets ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS``, which later processes (sweep workers) and libraries
read when they start. Setting those variables before Python starts remains the most complete way.
"""

from __future__ import annotations

import numbers
import os
import sys
from types import TracebackType

from finwidth.errors import ConfigError

__all__ = ["set_num_threads", "threads"]

_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(f"the number of threads must be a positive integer, got {n!r}")
    return int(n)


class threads:  # noqa: N801 - used like a function: `with finwidth.threads(1):`
    """Cap BLAS/OpenMP and torch threads at ``n`` from now until the ``with`` block ends (or
    :meth:`restore`).

    Parameters
    ----------
    n : int
        Threads per library, ≥ 1.
    """

    def __init__(self, n: int):
        n = _count(n)
        import scipy.linalg  # noqa: F401 - load SciPy's BLAS so that the cap covers it too
        from threadpoolctl import threadpool_limits

        self.n = n
        torch = sys.modules.get("torch")
        self._torch = torch
        # read torch's count first: capping its OpenMP runtime below changes what torch reports
        self._torch_before = torch.get_num_threads() if torch is not None else None
        self._blas = threadpool_limits(limits=n)
        if torch is not None:
            torch.set_num_threads(n)

    def restore(self) -> None:
        """Give every library back the thread count it had before."""
        self._blas.restore_original_limits()
        if self._torch is not None and self._torch_before is not None:
            self._torch.set_num_threads(self._torch_before)

    def __enter__(self) -> threads:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.restore()

    def __repr__(self) -> str:
        return f"finwidth.threads({self.n})"


def set_num_threads(n: int) -> None:
    """Cap BLAS/OpenMP and torch threads at ``n`` for the rest of the process, and set the
    ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` variables for child processes."""
    threads(n)
    for var in _ENV:
        os.environ[var] = str(n)
