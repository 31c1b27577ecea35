"""The accuracy check of a truncated input reduction (``sample_posterior(..., input_rank=k)``).

Truncation keeps the k leading right singular directions V_k of the training inputs
(:meth:`finwidth.inputs.InputReduction.from_inputs`): the run samples the posterior of the network
trained on X_k = X V_k V_kᵀ, exactly, and evaluates it at the full test inputs (their part outside
the kept span meets first-layer weights at their prior, as under the exact reduction). How far
that posterior is from the one on X is measured, before any sampling, on the network's
infinite-width (NNGP) output kernel, which the posterior depends on through the data alone:

* ``kernel_change`` = ‖K(X_k) − K(X)‖_F / ‖K(X)‖_F on the training points,
* ``cross_kernel_change``: the same for the test × train block K(X_test, X_k) vs K(X_test, X).

Both are O(P² N_0) float64 work (two NNGP kernels), small next to a run. Above
:data:`KERNEL_CHANGE_WARN` an :class:`InputTruncationWarning` says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from finwidth.inputs import InputReduction
from finwidth.kernels import nngp

__all__ = ["KERNEL_CHANGE_WARN", "InputTruncationWarning", "TruncationCheck", "truncation_check"]

KERNEL_CHANGE_WARN = 1e-3
"""Relative change of the NNGP kernel (train or test × train block) above which a truncated run warns.
On MNIST 0/1 (P = 1000, 1HL erf, T = 1e-3 and 1e-2) the RKGP ε_g moved by 10–40 times the kernel
change: about 3% at 1e-3 (docs/sampling.md, "Truncated input reduction")."""


class InputTruncationWarning(UserWarning):
    """A truncated input reduction changes the network's kernel by more than
    :data:`KERNEL_CHANGE_WARN`: the sampled posterior may differ visibly from the exact one."""


@dataclass(frozen=True)
class TruncationCheck:
    """How much a truncated input reduction changes the problem (module docstring).

    Attributes
    ----------
    rank : int
        k, input directions kept.
    full_rank : int
        r, the numerical rank of the training inputs (what the exact reduction keeps).
    dropped_energy : float
        ‖X − X_k‖_F² / ‖X‖_F².
    kernel_change : float
        ‖K(X_k) − K(X)‖_F / ‖K(X)‖_F of the NNGP output kernel on the training points.
    cross_kernel_change : float or None
        The same for the test × train block (None without test inputs).
    """

    rank: int
    full_rank: int
    dropped_energy: float
    kernel_change: float
    cross_kernel_change: float | None = None

    @property
    def worst(self) -> float:
        """The larger of the two kernel changes."""
        return max(self.kernel_change, self.cross_kernel_change or 0.0)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    ref = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / ref if ref > 0 else float(np.linalg.norm(a))


def truncation_check(network, X: np.ndarray, reduction: InputReduction, X_test: np.ndarray | None = None, *,
                     warn: bool = True) -> TruncationCheck:
    """The kernel changes of a truncated ``reduction`` of the training inputs ``X`` for ``network``
    (a :class:`finwidth.Network`; float64 NNGP kernels, :func:`finwidth.kernels.nngp`), with an
    :class:`InputTruncationWarning` above :data:`KERNEL_CHANGE_WARN` when ``warn``."""
    X = np.asarray(X, dtype=np.float64)
    Xk = reduction.project(X)
    full, trunc = nngp(network, X, X_test), nngp(network, Xk, X_test)
    change = _relative(trunc.train, full.train)
    cross = None if X_test is None else _relative(trunc.test_train, full.test_train)
    check = TruncationCheck(rank=reduction.rank, full_rank=reduction.full_rank or reduction.rank,
                            dropped_energy=reduction.dropped_energy, kernel_change=change, cross_kernel_change=cross)
    if warn and check.worst > KERNEL_CHANGE_WARN:
        warnings.warn(
            f"input_rank={check.rank} (of {check.full_rank} input directions; {100 * check.dropped_energy:.2g}% of "
            f"‖X‖² dropped) changes the network's NNGP kernel by {check.kernel_change:.2g} on the training points"
            + ("" if cross is None else f" and {cross:.2g} on the test × train block")
            + f" (relative, above {KERNEL_CHANGE_WARN:g}): the sampled posterior is that of the projected "
            f"inputs and may differ visibly from the exact one; keep more directions (a larger input_rank or a "
            f"smaller input_tolerance)", InputTruncationWarning, stacklevel=4)
    return check
