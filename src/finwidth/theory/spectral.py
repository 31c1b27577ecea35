"""Eigenbasis machinery shared by the renormalised-kernel solvers.

One symmetric eigendecomposition of the output kernel K_L = U diag(k) Uᵀ serves the one-hidden-layer
theory, the deep product form and BPKR: with ỹ = Uᵀy every evaluation of the action and its derivatives
is O(P) afterwards. This module owns

* :func:`eigenbasis` — ``eigh`` with numerically-null eigenvalues set to exactly 0 (they otherwise
  create spurious roots at Π ~ T/k_tiny, see the BPKR notes §A.12);
* :func:`scan_roots` — root finding of a scalar function in log space: a bracketing scan, every sign
  change refined by a safeguarded method (bisection into the feasible region, then Brent), the number
  of roots reported;
* the product-form / BPKR scalar problem: ``g(Π)``, the action ``D(Π)`` and :func:`solve_product`,
  which returns a verified saddle point or raises :class:`~finwidth.errors.ConvergenceError`.

Conventions (docs/theory.md): Q̄_l > 0, = 1 at infinite width; Π = ∏_l Q̄_l; the renormalised kernel
is Π K_L with K_L the NNGP output kernel *including* every 1/λ_l; the action is normalised as
−2 log Z (up to constants),

    S(Q̄) = Σ_l N_l (Q̄_l − log Q̄_l − 1) + log det(T + Π K_L) + yᵀ (T + Π K_L)⁻¹ y,

so S(1, …, 1) is twice the GP negative log marginal likelihood without its P log 2π term.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import optimize

from finwidth.errors import ConditioningWarning, ConfigError, ConvergenceError

#: eigenvalues below this fraction of the largest are treated as exact zeros
NULL_RTOL = 1e-10
#: relative stationarity residual accepted as a verified saddle point
RESIDUAL_TOL = 1e-9


class MultipleRootsWarning(RuntimeWarning):
    """The saddle-point equation has more than one root; the physical one (lowest action) was kept."""


@dataclass(frozen=True)
class Eigenbasis:
    """Eigendecomposition K = U diag(values) Uᵀ with null modes zeroed.

    Attributes
    ----------
    values : ndarray, shape (P,)
        Eigenvalues in ascending order; those below ``null_rtol · max`` are exactly 0.
    vectors : ndarray, shape (P, P), or None
        Orthonormal eigenvectors (columns); None where only the spectrum was computed (the
        product-form and non-odd fits of :class:`~finwidth.theory.rkgp.RKGP`).
    n_null : int
        Number of eigenvalues set to zero.
    """

    values: np.ndarray
    vectors: np.ndarray | None
    n_null: int

    @property
    def rank(self) -> int:
        return int(self.values.size - self.n_null)

    def project(self, v: np.ndarray) -> np.ndarray:
        """Uᵀ v (coordinates of v in the eigenbasis)."""
        if self.vectors is None:
            raise ConfigError("this eigenbasis has no eigenvectors (spectrum only)")
        return self.vectors.T @ v


def eigenbasis(K: np.ndarray, *, null_rtol: float = NULL_RTOL) -> Eigenbasis:
    """Symmetric eigendecomposition of a kernel matrix with numerically-null modes zeroed.

    Parameters
    ----------
    K : ndarray, shape (P, P)
        Symmetric positive semi-definite kernel (float64).
    null_rtol : float
        Eigenvalues below ``null_rtol · λ_max`` (including round-off negatives) become exactly 0.

    Raises
    ------
    ConfigError
        If K is not square, not finite, or has a clearly negative eigenvalue (not a covariance).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise ConfigError(f"the kernel must be a non-empty square matrix, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ConfigError("the kernel contains NaN or inf entries; check the inputs and priors")
    values, vectors = np.linalg.eigh(K)
    values, n_null = checked_spectrum(values, null_rtol=null_rtol)
    return Eigenbasis(values=values, vectors=vectors, n_null=n_null)


def checked_spectrum(values: np.ndarray, *, null_rtol: float = NULL_RTOL) -> tuple[np.ndarray, int]:
    """Ascending eigenvalues of a kernel with the numerically-null ones set to 0, and their number.

    Raises
    ------
    ConfigError
        No positive eigenvalue, NaN, or a clearly negative one (not a covariance).
    """
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ConfigError("the kernel contains NaN or inf entries; check the inputs and priors")
    top = float(values[-1]) if values.size else 0.0
    if top <= 0.0:
        raise ConfigError("the kernel has no positive eigenvalue (all inputs zero?); nothing can be learned")
    if values[0] < -1e-6 * top:
        raise ConfigError(
            f"the kernel is not positive semi-definite (eigenvalue {values[0]:.3g} against {top:.3g}); "
            "it is not a covariance"
        )
    null = values < null_rtol * top
    return np.where(null, 0.0, values), int(null.sum())


@dataclass
class RootScan:
    """Result of :func:`scan_roots`: every root found, in increasing order of the variable."""

    roots: list[float]
    n_sign_changes: int
    grid: np.ndarray = field(repr=False)


def _refine(h: Callable[[float], float], a: float, b: float, ha: float, hb: float, xtol: float) -> float:
    """Root in [a, b] where h changes sign; non-finite values count by their sign (−inf: infeasible)."""
    # bisection until both ends are finite (the infeasible side of a boundary returns ±inf)
    for _ in range(200):
        if math.isfinite(ha) and math.isfinite(hb):
            break
        m = 0.5 * (a + b)
        hm = h(m)
        if math.isnan(hm):
            raise ConvergenceError(f"the saddle-point function is NaN at log-variable {m:.6g}",
                                   suggestion="check the kernel and labels for NaN/inf")
        if hm == 0.0:
            return m
        if (hm > 0) == (ha > 0):
            a, ha = m, hm
        else:
            b, hb = m, hm
        if b - a < xtol:
            return 0.5 * (a + b)
    if ha == 0.0:
        return a
    if hb == 0.0:
        return b
    return float(optimize.brentq(h, a, b, xtol=xtol, rtol=4 * np.finfo(float).eps, maxiter=500))


def scan_roots(
    h: Callable[[float], float],
    lo: float = -60.0,
    hi: float = 60.0,
    *,
    n_grid: int = 241,
    xtol: float = 1e-14,
) -> RootScan:
    """All roots of a scalar function of a log variable z on [lo, hi], found by a grid scan.

    Each sign change on the grid is refined with bisection (through infeasible regions, where
    ``h`` returns ±inf) and then Brent's method. Roots closer than the grid spacing to each other
    can be missed; the callers check the stationarity residual at the answer independently.

    Parameters
    ----------
    h : callable
        Scalar function of z = log(variable); may return ±inf where the variable is infeasible.
    lo, hi : float
        Scan interval in z.
    n_grid : int
        Number of scan points (uniform in z).
    xtol : float
        Absolute tolerance on z.
    """
    grid = np.linspace(lo, hi, n_grid)
    vals = np.array([h(float(z)) for z in grid])
    if np.any(np.isnan(vals)):
        bad = grid[np.isnan(vals)][0]
        raise ConvergenceError(f"the saddle-point function is NaN at log-variable {bad:.6g}",
                               suggestion="check the kernel and labels for NaN/inf")
    sign = np.sign(vals)
    roots: list[float] = []
    for i in range(n_grid - 1):
        if sign[i] == 0:
            roots.append(float(grid[i]))
        elif sign[i] * sign[i + 1] < 0:
            roots.append(_refine(h, float(grid[i]), float(grid[i + 1]), float(vals[i]), float(vals[i + 1]), xtol))
    if sign[-1] == 0:
        roots.append(float(grid[-1]))
    return RootScan(roots=roots, n_sign_changes=len(roots), grid=grid)


# ----------------------------------------------------------------------------------------------
# product form / BPKR: renormalised kernel Π K_L, one scalar unknown Π
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpectralMeasure:
    """What the product-form equations need from the kernel K: tr f(K) and yᵀ f(K) y for any f.

    tr f(K) = Σ_j w_j f(θ_j) over the trace nodes and yᵀ f(K) y = Σ_j c_j f(ϑ_j) over the label nodes.
    From an eigendecomposition K = U diag(k) Uᵀ both are exact: θ = ϑ = k, w = 1, c = (Uᵀy)²
    (:meth:`from_eigenbasis`). Matrix-free fits (:mod:`finwidth.theory.scalable`) fill them with
    Lanczos quadrature rules instead (stochastic for the trace).

    Attributes
    ----------
    trace_nodes, trace_weights : ndarray, shape (M,)
    label_nodes, label_weights : ndarray, shape (n,)
    size : int
        P, the dimension of K (normalises g).
    """

    trace_nodes: np.ndarray
    trace_weights: np.ndarray
    label_nodes: np.ndarray
    label_weights: np.ndarray
    size: int

    @classmethod
    def from_eigenbasis(cls, k: np.ndarray, y2: np.ndarray) -> SpectralMeasure:
        """The exact measure of an eigenbasis: eigenvalues k (null modes exactly 0) and y2 = (Uᵀy)²."""
        k = np.asarray(k, dtype=float)
        return cls(k, np.ones_like(k), k, np.asarray(y2, dtype=float), int(k.size))

    def g(self, pi: float, temperature: float) -> tuple[float, float, float]:
        """g(Π) = Π D'(Π)/P and the absolute size of its two parts (see :func:`g_of_pi`)."""
        P = self.size
        pos_t = self.trace_nodes > 0
        pos_l = self.label_nodes > 0
        kt, kl = self.trace_nodes[pos_t], self.label_nodes[pos_l]
        if temperature > 0:
            xt, xl = pi * kt, pi * kl
            tr = float(np.sum(self.trace_weights[pos_t] * (xt / (temperature + xt))))
            dl = temperature + xl
            lab = float(np.sum(self.label_weights[pos_l] * xl / (dl * dl)))
        else:
            tr = float(np.sum(self.trace_weights[pos_t]))
            lab = float(np.sum(self.label_weights[pos_l] / kl)) / pi
        return (tr - lab) / P, tr / P, lab / P

    @property
    def rank(self) -> float:
        """The trace measure's mass on positive nodes (rank K for an eigenbasis)."""
        return float(np.sum(self.trace_weights[self.trace_nodes > 0]))

    def label_mass_in_range(self) -> tuple[float, float]:
        """(‖P_range y‖², ‖y‖²): the labels' mass on positive nodes, and in all."""
        return float(np.sum(self.label_weights[self.label_nodes > 0])), float(np.sum(self.label_weights))

    def roundoff_sensitivity(self, pi: float, temperature: float) -> float:
        """See :func:`roundoff_sensitivity`."""
        P = self.size
        top = max(float(np.max(self.trace_nodes, initial=0.0)), float(np.max(self.label_nodes, initial=0.0)))
        delta = np.finfo(float).eps * math.sqrt(P) * top
        d = temperature + pi * self.label_nodes
        ok = d > 0
        w = self.label_weights[ok] / d[ok]
        total = float(np.sum(w))
        if total == 0.0:
            return 0.0
        return float(np.sum(w * (pi * delta) / d[ok])) / total

    def data_term(self, pi: float, temperature: float) -> float:
        """D(Π) = log det(T + Π K) + yᵀ(T + Π K)⁻¹ y (−inf/inf where singular)."""
        with np.errstate(divide="ignore"):
            logdet = float(np.sum(self.trace_weights * np.log(temperature + pi * self.trace_nodes)))
        d = temperature + pi * self.label_nodes
        if temperature > 0:
            quad = float(np.sum(self.label_weights / d))
        else:
            pos = self.label_nodes > 0
            if np.any(self.label_weights[~pos] > 1e-24 * max(1.0, float(np.sum(self.label_weights)))):
                quad = math.inf
            else:
                quad = float(np.sum(self.label_weights[pos] / d[pos]))
        return logdet + quad


def g_of_pi(pi: float, k: np.ndarray, y2: np.ndarray, temperature: float) -> tuple[float, float, float]:
    """The BPKR function g(Π) = Π D'(Π)/P and the absolute size of its two parts.

    g(Π) = (1/P) Σ_i [Π k_i/(T + Π k_i) − ỹ_i² Π k_i/(T + Π k_i)²]. At T = 0 the limit is taken
    mode by mode (null modes contribute 0, the others 1 − ỹ_i²/(Π k_i)).

    Returns
    -------
    g, trace_part, label_part : float
        g = trace_part − label_part (both ≥ 0), used to scale residuals.
    """
    return SpectralMeasure.from_eigenbasis(k, y2).g(pi, temperature)


def action_data_term(pi: float, k: np.ndarray, y2: np.ndarray, temperature: float) -> float:
    """D(Π) = log det(T + Π K) + yᵀ(T + Π K)⁻¹ y in the eigenbasis (−inf/inf where singular)."""
    return SpectralMeasure.from_eigenbasis(k, y2).data_term(pi, temperature)


@dataclass
class ProductSaddle:
    """Verified saddle point of the product-form (or BPKR / one-hidden-layer) action.

    Attributes
    ----------
    qbar : ndarray, shape (L,)
        Q̄_l = 1 − α_l g(Π).
    pi : float
        Π = ∏ Q̄_l (the renormalisation of the output kernel).
    g : float
        g(Π) at the root.
    action : float
        S at the saddle, normalised as −2 log Z (module docstring).
    residual : float
        Largest relative stationarity residual over the layers.
    roots : list of float
        Every root Π found by the scan (the physical one is ``pi``).
    """

    qbar: np.ndarray
    pi: float
    g: float
    action: float
    residual: float
    roots: list[float]


def _measure_action(qbar: np.ndarray, widths: np.ndarray, measure: SpectralMeasure, temperature: float) -> float:
    qbar = np.asarray(qbar, dtype=float)
    prior = float(np.sum(widths * (qbar - np.log(qbar) - 1.0)))
    return prior + measure.data_term(float(np.prod(qbar)), temperature)


def product_action(qbar: np.ndarray, widths: np.ndarray, k: np.ndarray, y2: np.ndarray, temperature: float) -> float:
    """S(Q̄) = Σ N_l (Q̄_l − log Q̄_l − 1) + D(∏ Q̄_l) (module docstring)."""
    return _measure_action(qbar, widths, SpectralMeasure.from_eigenbasis(k, y2), temperature)


def product_gradient(qbar: np.ndarray, widths: np.ndarray, k: np.ndarray, y2: np.ndarray, temperature: float) -> np.ndarray:
    """∂S/∂Q̄_l = N_l (1 − 1/Q̄_l) + P g(Π)/Q̄_l."""
    qbar = np.asarray(qbar, dtype=float)
    g, _, _ = g_of_pi(float(np.prod(qbar)), k, y2, temperature)
    return widths * (1.0 - 1.0 / qbar) + k.size * g / qbar


def solve_product(
    basis: Eigenbasis,
    y_tilde: np.ndarray,
    temperature: float,
    widths,
    *,
    z_range: tuple[float, float] = (-60.0, 60.0),
) -> ProductSaddle:
    """Solve the product-form saddle point Q̄_l = 1 − α_l g(Π), Π = ∏ Q̄_l (any widths).

    One scalar equation h(z) = Σ_l log(1 − α_l g(e^z)) − z = 0 in z = log Π (−inf where some
    Q̄_l ≤ 0). h → +∞ as z → −∞ and h → −∞ at the feasibility boundary or as z → ∞, so a root is
    bracketed; every sign change on a log grid is refined and the root of lowest action is kept.

    Parameters
    ----------
    basis : Eigenbasis
        Eigendecomposition of the output NNGP kernel K_L (all 1/λ_l included), null modes zeroed.
    y_tilde : ndarray, shape (P,)
        Labels in the eigenbasis, Uᵀ y.
    temperature : float
        T ≥ 0 (T = 0 uses the mode-by-mode limit of g, the closed-form T → 0 theory).
    widths : sequence of int
        Hidden widths N_1..N_L (``math.inf`` allowed: that layer stays at Q̄ = 1).

    Returns
    -------
    ProductSaddle

    Raises
    ------
    ConvergenceError
        No root in the scan range, or the stationarity residual at the root exceeds the tolerance.
    """
    if temperature == 0 and basis.rank == 0:
        raise ConfigError("the kernel is zero: nothing to solve")
    y2 = np.asarray(y_tilde, dtype=float) ** 2
    return solve_product_measure(SpectralMeasure.from_eigenbasis(basis.values, y2), temperature, widths,
                                 z_range=z_range)


def solve_product_measure(
    measure: SpectralMeasure,
    temperature: float,
    widths,
    *,
    z_range: tuple[float, float] = (-60.0, 60.0),
    with_action: bool = True,
) -> ProductSaddle:
    """:func:`solve_product` on any :class:`SpectralMeasure` (exact eigenbasis or quadrature rules).

    The stationarity residual is that of the equations on this measure; how far a quadrature measure
    is from the exact one is the caller's to bound (:mod:`finwidth.theory.scalable`). With
    ``with_action=False`` the action is evaluated only to choose between several roots (else NaN).
    """
    P = measure.size
    widths = np.asarray(widths, dtype=float)
    alphas = P / widths

    def h(z: float) -> float:
        g, _, _ = measure.g(math.exp(z), temperature)
        q = 1.0 - alphas * g
        if np.any(q <= 0):
            return -math.inf
        return float(np.sum(np.log(q))) - z

    if temperature == 0 and np.max(alphas) * measure.rank / P >= 1.0:
        in_range, total = measure.label_mass_in_range()
        # labels in the kernel's null space up to round-off: g(Π) = ρ for every Π, so Q̄_l = 1 − α_l ρ ≤ 0
        # and the action falls without bound as Q̄ → 0
        if in_range <= (1e-12) ** 2 * total:
            raise ConvergenceError(
                f"at T = 0 the labels have no component in the range of the kernel (to round-off) and "
                f"α_l·rank(K)/P = {np.max(alphas) * measure.rank / P:.3g} ≥ 1: the action has no saddle point "
                "(its T → 0 limit is Q̄ → 0)",
                suggestion="use T > 0, or check the labels (all zero, or only in the kernel's null space)",
            )
    lo, hi = z_range
    scan = scan_roots(h, lo, hi)
    # widen once if the root sits beyond the range (huge labels or tiny kernels)
    if not scan.roots:
        scan = scan_roots(h, 3 * lo, 3 * hi, n_grid=721)
    if not scan.roots:
        r = measure.g(1.0, 0.0)[2] if temperature == 0 else math.nan
        rho = measure.rank / P
        raise ConvergenceError(
            f"no root of the product-form saddle-point equation for log Π in [{3 * lo}, {3 * hi}] "
            f"(yᵀK⁺y/P = {r:.3g}, rank(K)/P = {rho:.3g}, max α_l = {np.max(alphas):.3g})",
            suggestion="rescale the labels or the priors so that y and K are O(1)",
        )
    candidates = []
    finite = np.isfinite(widths)
    for z in scan.roots:
        g, _, _ = measure.g(math.exp(z), temperature)
        qbar = 1.0 - alphas * g
        if np.any(qbar <= 0):
            continue
        # the returned point is Q̄ (and Π = ∏ Q̄_l): its stationarity in every Q̄_l, each equation
        # relative to the size of its terms. (Where Q̄_l ≪ 1, Q̄_l = 1 − α_l g loses digits to
        # cancellation; this measure is what is left of that, not |log ∏ Q̄_l − z|.)
        pi = float(np.prod(qbar))
        g, tr, lab = measure.g(pi, temperature)
        grad = widths * (qbar - 1.0) + P * g  # = Q̄_l ∂S/∂Q̄_l
        scale = widths * (qbar + 1.0) + P * (tr + lab)
        rel = np.abs(grad[finite]) / scale[finite] if np.any(finite) else np.zeros(1)
        residual = float(np.max(rel, initial=0.0))
        candidates.append([math.nan, pi, g, qbar, residual])
    if not candidates:
        raise ConvergenceError("every root of the product-form equation has a non-positive Q̄_l",
                               suggestion="report this case; it should not happen for a valid kernel")
    if with_action or len(candidates) > 1:
        for c in candidates:
            c[0] = _measure_action(c[3], np.where(finite, widths, 0.0), measure, temperature)
    candidates.sort(key=lambda c: (not math.isfinite(c[0]), c[0]))
    action, pi, g, qbar, residual = candidates[0]
    if len(candidates) > 1:
        warnings.warn(
            f"the product-form saddle-point equation has {len(candidates)} roots Π = "
            f"{[float(f'{c[1]:.6g}') for c in sorted(candidates, key=lambda c: c[1])]}; "
            f"kept the one of lowest action (Π = {pi:.6g})",
            MultipleRootsWarning,
            stacklevel=3,
        )
    if not residual <= RESIDUAL_TOL:
        raise ConvergenceError(
            f"the product-form saddle point at Π = {pi:.6g} does not satisfy the stationarity equations",
            residual=residual,
            suggestion="rescale labels/priors to O(1) or use a larger temperature",
        )
    return ProductSaddle(
        qbar=np.asarray(qbar, dtype=float), pi=pi, g=g, action=action, residual=residual,
        roots=sorted(c[1] for c in candidates),
    )


#: relative round-off sensitivity above which a fit warns (ConditioningWarning)
ROUNDOFF_WARN = 1e-6


def roundoff_sensitivity(basis: Eigenbasis, y_tilde: np.ndarray, temperature: float, pi: float) -> float:
    """Relative error that round-off in the kernel's eigenvalues can put on yᵀ(T + Π K)⁻¹y.

    ``eigh`` returns each eigenvalue with an absolute error of about δ = ε √P k_max (numerically-null
    ones included: their true value lies anywhere in [0, δ]), so each mode's weight 1/(T + Π k_i) is
    uncertain by the relative amount Π δ/(T + Π k_i). Weighted by the labels' share of the quadratic
    form, E = Σ_i w_i Π δ/(T + Π k_i) / Σ_i w_i with w_i = ỹ_i²/(T + Π k_i) (modes with T + Π k_i = 0
    are excluded: at T = 0 the null modes are outside the theory's range). E ≪ 1 for a well-posed
    problem; E ~ 1 means the answer is set by round-off (e.g. N_0 = 2–3 with T ≤ 1e-6, where the
    kernel's spectrum falls below ε k_max).
    """
    return SpectralMeasure.from_eigenbasis(basis.values, np.asarray(y_tilde, dtype=float) ** 2).roundoff_sensitivity(
        pi, temperature)


def warn_if_ill_conditioned(sensitivity: float, what: str, stacklevel: int = 3) -> None:
    """A :class:`~finwidth.errors.ConditioningWarning` when ``sensitivity`` exceeds ``ROUNDOFF_WARN``."""
    if sensitivity > ROUNDOFF_WARN:
        warnings.warn(
            f"{what} is near-singular in float64: round-off in the kernel's eigenvalues can change the labels' "
            f"quadratic form by a relative {sensitivity:.1e} (the answer is set by round-off where this is ~1). "
            "Raise the temperature, remove duplicated or nearly collinear inputs, or use more input features",
            ConditioningWarning, stacklevel=stacklevel,
        )


def t0_one_layer_qbar(alpha: float, r: float, rho: float = 1.0) -> float:
    """Closed-form T → 0 saddle of one layer, Q̄ = [(1 − αρ) + √((1 − αρ)² + 4αr)]/2.

    ρ = rank(K)/P (1 for an invertible kernel) and r = y_∥ᵀ K⁺ y / P. This is the positive root
    of Q̄² − (1 − αρ) Q̄ − α r = 0 (Pacelli et al. §4.5; Li–Sompolinsky for linear networks).
    """
    b = 1.0 - alpha * rho
    s = math.sqrt(b * b + 4.0 * alpha * r)
    # the same root written without cancellation when b < 0 (α ρ > 1 and a small r: Q̄ ≪ 1)
    return 0.5 * (b + s) if b >= 0 else 2.0 * alpha * r / (s - b)
