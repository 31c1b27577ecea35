"""Validation of what users pass in, and the exact input reduction: the ground floor that the theories,
the simulations and the experiment specs all stand on (they never import each other).

Every validator returns the cleaned value or raises :class:`~finwidth.errors.ConfigError` naming the
argument (``what``) and the offending value, so that ``Network([nan])``, ``sample_posterior(...,
n_steps="10")`` and a sweep spec with ``network.width = "a"`` all fail the same way.

Input reduction (exact; docs/sampling.md, "Exact cost cuts"): when the training inputs span r < N_0
dimensions (always when P < N_0), write W^(0) = W_span Bᵀ + W_perp with B (N_0 × r) an orthonormal
basis of the row span of X. The likelihood only sees W_span; W_perp is independent of the data and stays
at its prior. The theories use the same basis to work in r instead of N_0 dimensions.

Truncated input reduction (an approximation, opt-in: ``InputReduction.from_inputs(X, rank=k)`` or
``tolerance=...``): keep only the k leading right singular directions V_k of X. Sampling with this
basis is exact sampling of the posterior of the network trained on the projected inputs
X_k = X V_k V_kᵀ (the dropped directions then carry no data, so their weights stay at the prior);
``dropped_energy`` = ‖X − X_k‖_F²/‖X‖_F² says how much of the inputs was left out.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from finwidth.errors import ConfigError

__all__ = [
    "InputReduction",
    "as_inputs",
    "check_truncation",
    "as_list",
    "float_sequence",
    "positive_float",
    "positive_int",
    "validate_targets",
    "validate_temperature",
]


# ------------------------------------------------------------------------------------ scalars
def positive_int(value: Any, what: str, *, allow_zero: bool = False) -> int:
    """A positive (or, with ``allow_zero``, non-negative) integer; bools, NaN, strings and
    non-integral floats are rejected with a ConfigError naming ``what``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        ok = math.isfinite(value) and float(value).is_integer() and (value > 0 or (allow_zero and value == 0))
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{what} must be a {kind} integer, got {value!r}")
    return int(value)


def positive_float(value: Any, what: str, *, allow_zero: bool = False) -> float:
    """A positive (or non-negative) finite real number; bools and strings are rejected."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        ok = math.isfinite(value) and (value > 0 or (allow_zero and value == 0))
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{what} must be a {kind} finite number, got {value!r}")
    return float(value)


def validate_temperature(value: Any, what: str = "temperature", *, allow_zero: bool = True) -> float:
    """The temperature T (the likelihood variance, docs/conventions.md): finite and ≥ 0 for the
    theories (T = 0 has closed forms), > 0 for sampling (``allow_zero=False``)."""
    if isinstance(value, (str, bytes, bool, np.bool_)):  # not numbers here
        raise ConfigError(f"{what} must be a non-negative number, got {value!r}")
    try:
        T = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be a non-negative number, got {value!r}") from exc
    if not math.isfinite(T) or T < 0:
        raise ConfigError(f"{what} must be finite and non-negative, got {T}")
    if T == 0 and not allow_zero:
        raise ConfigError(f"{what} must be positive for sampling (T = 0 is legal for the theories only), got {T}")
    return T


def as_list(value: Any, message: str) -> list:
    """``list(value)`` for a non-string iterable, else ConfigError(message)."""
    if isinstance(value, (str, bytes)):
        raise ConfigError(message)
    try:
        return list(value)
    except TypeError as exc:
        raise ConfigError(message) from exc


def float_sequence(value: Any, length: int, what: str, *, allow_zero: bool, label: Callable[[int], str] | None = None,
                   noun: str | None = None) -> tuple[float, ...]:
    """A number (repeated ``length`` times) or a sequence of ``length`` finite numbers, each > 0
    (or ≥ 0 with ``allow_zero``): priors, bias variances. ``label(i)`` names entry i in messages
    (default ``what[i]``) and ``noun`` says what an entry is (``"must be a positive precision"``)."""
    label = label or (lambda i: f"{what}[{i}]")
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        values = [value] * length
    else:
        values = as_list(value, f"{what} must be a number or a sequence of {length} numbers, got {value!r}")
        if len(values) != length:
            raise ConfigError(
                f"{what} must have length {length} (one per layer, readout last), got {len(values)}: {value!r}"
            )
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ConfigError(f"{label(i)} must be a number, got {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise ConfigError(f"{label(i)} must be finite, got {v}")
        if v < 0 or (v == 0 and not allow_zero):
            bound = "non-negative" if allow_zero else "positive"
            raise ConfigError(f"{label(i)} must be {f'a {bound} {noun}' if noun else bound}, got {v}")
        out.append(v)
    return tuple(out)


# ------------------------------------------------------------------------------------ arrays
def as_inputs(X: Any, what: str = "X") -> np.ndarray:
    """Inputs as a C-contiguous float64 (n_points, n_features) array; ConfigError naming the problem."""
    try:
        arr = np.asarray(X)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise ConfigError(f"{what} must be an array of shape (n_points, n_features)") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ConfigError(f"{what} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ConfigError(f"{what} must be real, got a complex array")
    if arr.ndim != 2:
        raise ConfigError(f"{what} must be 2-D of shape (n_points, n_features), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ConfigError(f"{what} must have at least one point and one feature, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ConfigError(f"{what} contains NaN or inf (first at row {bad[0]}, column {bad[1]})")
    return arr


def validate_targets(y: Any, n: int | None = None, what: str = "y", *, multi_output: bool = False) -> np.ndarray:
    """Targets as float64: (P,) for one output ((P, 1) is accepted and flattened); with
    ``multi_output=True`` also (P, D), returned as is. ConfigError on NaN/inf, a bad shape or a
    length that differs from ``n`` (the number of inputs)."""
    arr = np.asarray(y)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ConfigError(f"{what} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise ConfigError(f"{what} has shape {arr.shape}: zero outputs (D = 0); give at least one column")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 and not (multi_output and arr.ndim == 2):
        shapes = "(n_points,) or (n_points, n_outputs)" if multi_output else "(n_points,) or (n_points, 1) (one output)"
        raise ConfigError(f"{what} must have shape {shapes}, got {arr.shape}")
    if arr.shape[0] == 0:
        raise ConfigError(f"{what} is empty")
    if n is not None and arr.shape[0] != n:
        raise ConfigError(f"{what} has {arr.shape[0]} entries but there are {n} inputs (rows of X)")
    arr = np.array(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = f"index {bad[0]}" if arr.ndim == 1 else f"row {bad[0]}, output {bad[1]}"
        raise ConfigError(f"{what} contains NaN or inf (first at {where})")
    return arr


# ------------------------------------------------------------------------------------ input reduction
def check_truncation(rank: Any = None, tolerance: Any = None, n_features: int | None = None) -> tuple[int | None, float | None]:
    """Validate the truncation options of the input reduction: at most one of ``rank`` (an integer
    k with 1 ≤ k ≤ N_0 = ``n_features``) and ``tolerance`` (the largest fraction of the inputs'
    energy ‖X‖_F² that may be dropped, strictly between 0 and 1). Returns them cleaned; ConfigError
    naming the problem otherwise."""
    if rank is not None and tolerance is not None:
        raise ConfigError(f"give at most one of input_rank ({rank!r}) and input_tolerance ({tolerance!r}): "
                          "the rank is fixed by either")
    if rank is not None:
        rank = positive_int(rank, "input_rank")
        if n_features is not None and rank > n_features:
            raise ConfigError(f"input_rank={rank} exceeds the number of input features N_0 = {n_features}")
    if tolerance is not None:
        ok = isinstance(tolerance, numbers.Real) and not isinstance(tolerance, bool) and 0 < tolerance < 1
        if not ok:
            raise ConfigError(f"input_tolerance must be a number strictly between 0 and 1 (the fraction of "
                              f"the inputs' energy ‖X‖² that may be dropped), got {tolerance!r}")
        tolerance = float(tolerance)
    return rank, tolerance


def _kept_rank(s: np.ndarray, r: int, rank: int | None, tolerance: float | None) -> int:
    """k: ``rank`` (at most the numerical rank r), or the fewest leading directions whose dropped
    energy Σ_{i>k} s_i² / Σ s_i² is at most ``tolerance``; r when neither is given."""
    if rank is not None:
        return min(rank, r)
    if tolerance is None:
        return r
    e = s[:r] ** 2
    dropped = 1.0 - np.cumsum(e) / e.sum()  # dropped[k - 1]: energy outside the first k directions
    return min(int(np.argmax(dropped <= tolerance)) + 1, r)


@dataclass
class InputReduction:
    """Orthonormal basis of the training inputs' row span (see the module docstring), or of its k
    leading singular directions when truncated.

    Attributes
    ----------
    basis : np.ndarray
        B, shape (N_0, k), float64, orthonormal columns.
    rank : int
        k, the number of kept directions: the numerical rank r of X (singular values above
        ``1e-10 · s_max · max(P, N_0)``) for the exact reduction, fewer when truncated.
    train_lower : np.ndarray or None
        With ``form="lower"``: the training inputs in this basis, X B, which is lower trapezoidal
        (P × k, zero above the diagonal, nonnegative diagonal; the exact zeros are set), so the first
        layer's products cost about half (:class:`finwidth.simulate.trapezoid.LowerTrapezoid`).
    full_rank : int or None
        r, the numerical rank of X (None: equal to ``rank``, the exact reduction).
    dropped_energy : float
        ‖X − X B Bᵀ‖_F² / ‖X‖_F², the fraction of the inputs' energy outside the kept span
        (0 for the exact reduction, up to rounding).
    """

    basis: np.ndarray
    rank: int
    train_lower: np.ndarray | None = None
    full_rank: int | None = None
    dropped_energy: float = 0.0

    @property
    def truncated(self) -> bool:
        """True when directions of the inputs' span were dropped (an approximation)."""
        return self.full_rank is not None and self.rank < self.full_rank

    @classmethod
    def from_inputs(cls, X: np.ndarray, form: str = "lower", *, rank: int | None = None,
                    tolerance: float | None = None) -> InputReduction:
        """Basis of the span of the rows of X: ``form="lower"`` (X B lower trapezoidal with a
        nonnegative diagonal, an LQ decomposition) or ``"svd"`` (right singular vectors).

        ``rank`` (k ≥ 1; values above the numerical rank r keep all r) or ``tolerance`` (the largest
        dropped fraction of ‖X‖_F², in (0, 1)) truncates the basis to the k leading right singular
        directions: the reduction is then that of the projected inputs X V_k V_kᵀ, not of X (see
        the module docstring). Without either the reduction is exact.
        """
        if form not in ("lower", "svd"):
            raise ConfigError(f"input basis form must be 'lower' or 'svd', got {form!r}")
        X = np.asarray(X, dtype=np.float64)
        rank, tolerance = check_truncation(rank, tolerance, X.shape[1])
        _, s, vt = np.linalg.svd(X, full_matrices=False)
        tol = (s[0] if s.size else 0.0) * 1e-10 * max(X.shape)
        r = max(int(np.sum(s > tol)), 1)
        k = _kept_rank(s, r, rank, tolerance)
        total = float(np.sum(s ** 2))
        dropped = float(np.sum(s[k:] ** 2) / total) if total > 0 else 0.0
        extra = {} if rank is None and tolerance is None else {"full_rank": r, "dropped_energy": dropped}
        basis = vt[:k].T
        if form == "svd":
            return cls(basis=basis.copy(), rank=k, **extra)
        # (X V)ᵀ = Q R  =>  X (V Q) = Rᵀ, lower trapezoidal; any orthonormal basis of the span
        # gives the same sampled distribution (the prior and the noise are isotropic). Signs are
        # fixed (diagonal ≥ 0) so that the same span and rows give the same basis whatever the SVD.
        q, rt = np.linalg.qr((X @ basis).T)
        sign = np.where(np.diag(rt) < 0, -1.0, 1.0)
        q, rt = q * sign, rt * sign[:, None]
        return cls(basis=np.ascontiguousarray(basis @ q), rank=k, train_lower=np.tril(rt.T), **extra)

    def reduce(self, X: np.ndarray) -> np.ndarray:
        """X B, the coordinates of the inputs in the span (shape (n, r))."""
        return np.asarray(X, dtype=np.float64) @ self.basis

    def project(self, X: np.ndarray) -> np.ndarray:
        """X B Bᵀ, the inputs projected on the kept span (shape (n, N_0))."""
        return self.reduce(X) @ self.basis.T

    def perp_factor(self, X: np.ndarray) -> np.ndarray:
        """A matrix F (n × k) with F Fᵀ = X_perp X_perpᵀ, X_perp = X (1 − B Bᵀ).

        Then W_perp X_perpᵀ has the law of G Fᵀ with G iid N(0, 1/λ_0): k = rank of X_perp, at most
        min(n, N_0 − r) columns, so fresh draws cost less than a full first layer.
        """
        X = np.asarray(X, dtype=np.float64)
        xp = X - (X @ self.basis) @ self.basis.T
        if xp.size == 0:
            return np.zeros((X.shape[0], 0))
        q, r = np.linalg.qr(xp.T)  # xp = rᵀ qᵀ
        keep = np.abs(np.diag(r)) > 1e-12 * max(1.0, np.abs(r).max())
        return np.ascontiguousarray(r[keep].T)
