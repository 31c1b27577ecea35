"""D outputs: the renormalised-kernel theory with a D×D matrix order parameter per layer.

Network f_a(x) = Σ_i V_ai σ(h_i^(L)(x))/√N_L, a = 1..D, V_ai ~ N(0, 1/λ_L), loss Σ_μ Σ_a (y_a^μ − f_a^μ)²/(2T)
(docs/conventions.md, with D readout rows). Integrating the readout and then each hidden layer with one
Wishart step per layer (Li–Sompolinsky; Pacelli et al.; the equivalent-Wishart ansatz of Baglioni et al.
2026 for non-linear layers) gives, normalised as −2 log Z up to constants like the scalar theory,

    S = Σ_l N_l [tr Q_l − log det Q_l − D] + log det A + vec(Y)ᵀ A⁻¹ vec(Y),   A = T·1 + 𝒬 ⊗ K_L,

vec(Y) stacking the outputs one after another and 𝒬 = ∏_l Q_l the D×D renormalisation of the output
kernel (K_L the NNGP output kernel, every 1/λ_l included). docs/theory.md has the derivation; the facts
this module relies on:

* **One matrix for any widths.** At a stationary point all Q_l commute and N_l (Q_l − 1) = C is the same
  symmetric matrix for every layer, so Q_l = 1 + C/N_l. The unknown is the narrowest layer's
  Q_n = 1 + C/N_min; every other layer is the spectral function Q_l = 1 + (N_min/N_l)(Q_n − 1) (positive
  definite whenever Q_n is) and 𝒬 = f(Q_n), f(q) = ∏_l (1 + r_l (q − 1)), r_l = N_min/N_l. Every stationary
  point of S(Q_n) is a stationary point of the full action in the L matrices (docs/theory.md). Equal widths
  give 𝒬 = Q_n^L and S = N [L tr 𝒬^{1/L} − log det 𝒬 − LD] + …, the EWA form; L = 1 gives Q_n = 𝒬.
* **O(P D² + D³) per evaluation after one eigh.** With K_L = U diag(k) Uᵀ and 𝒬 = V diag(π) Vᵀ,
  A = (V ⊗ U) diag(T + π_a k_i) (V ⊗ U)ᵀ: log det A = Σ_ai log β_ia, the quadratic form is
  Σ_ai Z_ia²/β_ia with Z = Uᵀ Y V and β_ia = T + π_a k_i, and ∂Φ/∂𝒬 = V (diag(t) − W) Vᵀ with
  t_a = Σ_i k_i/β_ia, W_ab = Σ_i k_i Z_ia Z_ib/(β_ia β_ib).
* **Predictor.** Mean F(x) = 𝒬 (k(x)ᵀ ⊗ 1) A⁻¹ vec(Y), i.e. F = (k_*ᵀ U)(Z π/β) Vᵀ; the D×D covariance at
  x is V diag(π_a k_** − π_a² Σ_i (k_*ᵀU)_i²/β_ia) Vᵀ: diagonal in the eigenbasis of 𝒬 at every x.
* **T = 0** (mode by mode): the stationary 𝒬 commutes with R = Yᵀ K⁺ Y / P, and each eigen-direction of R
  solves the scalar T = 0 equation with r_a, its eigenvalue (BPKR notes A.7).

The solver is :func:`finwidth.theory.spd.minimize_spd` from the identity (infinite width) and from the
best isotropic 𝒬 (the scalar theory with D·P modes); the lowest action is kept.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from finwidth.errors import ConfigError, ConvergenceError
from finwidth.theory import spectral
from finwidth.theory.spd import SADDLE_RTOL, minimize_spd, stationarity_residual

__all__ = [
    "MultiOutputAction",
    "solve_from_starts",
    "MultiOutputSaddle",
    "OutputWidthCriterion",
    "solve_multioutput",
    "width_criterion",
]

#: distinct solutions closer than this (relative Frobenius distance of 𝒬) count as one
_SAME_ROOT = 1e-6


def _factor_divided_differences(q: np.ndarray, ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-layer eigenvalues q_l = 1 + r_l (q − 1), π = ∏ q_l and the divided differences of π(q).

    The product rule (fg)[a, b] = f[a, b] g(b) + f(a) g[a, b], with each factor linear, is free of
    cancellation for nearly equal eigenvalues (and gives π'(q_a) on the diagonal).
    """
    layers = 1.0 + ratios[:, None] * (q[None, :] - 1.0)
    value = np.ones_like(q)
    dd = np.zeros((q.size, q.size))
    for r, ql in zip(ratios, layers):
        dd = dd * ql[None, :] + r * value[:, None]
        value = value * ql
    return layers, value, dd


class MultiOutputAction:
    """S(Q_n) of the module docstring in the eigenbasis of K_L, with its gradient and scale.

    Parameters
    ----------
    k : ndarray, shape (P,)
        Eigenvalues of K_L (null modes exactly 0, :func:`finwidth.theory.spectral.eigenbasis`).
    Y_t : ndarray, shape (P, D)
        Uᵀ Y, the targets in the eigenbasis.
    temperature : float
        T ≥ 0. At T = 0 the null modes of K_L are left out: their log T and Y²/T terms do not depend on
        𝒬 (the T → 0 limit of the stationarity equations); ``value`` is then +inf if Y has a component
        there.
    widths : sequence
        N_1..N_L.
    trace : (nodes, weights) or None
        A quadrature of the trace measure, Σ_i f(k_i) ≈ Σ_j w_j f(θ_j), for the log det A and tr terms
        (T > 0 only). Default: the nodes k with unit weights (exact for an eigenbasis). With it, ``k`` and
        ``Y_t`` may be any label rule: nodes θ_j and D-vectors z_j (rows) with
        Yᵀ f(K) Y ≈ Σ_j f(θ_j) z_j z_jᵀ (block Lanczos, :mod:`finwidth.theory.multioutput_krylov`): every
        term of S is a sum of f(k_i) or of f(k_i) Ỹ_i Ỹ_iᵀ over the modes.

    Calling it with Q_n (D×D, positive definite) returns (S, ∂S/∂Q_n, scale) in the convention of
    :mod:`finwidth.theory.spd`; scale is the size of the terms of Q_n^{1/2} G Q_n^{1/2}.
    """

    def __init__(self, k: np.ndarray, Y_t: np.ndarray, temperature: float, widths, *, trace=None):
        self.k = np.asarray(k, dtype=np.float64)
        self.Y_t = np.asarray(Y_t, dtype=np.float64)
        self.T = float(temperature)
        self.widths = np.asarray(widths, dtype=np.float64)
        self.narrowest = int(np.argmin(self.widths))
        self.n_min = float(self.widths[self.narrowest])
        self.ratios = self.n_min / self.widths
        self.D = self.Y_t.shape[1]
        if trace is not None and not self.T > 0:
            raise ConfigError("a quadrature of the trace measure needs T > 0")
        if self.T > 0:
            self.modes = np.ones(self.k.size, dtype=bool)
            self.outside = 0.0
        else:
            self.modes = self.k > 0
            y2 = float(np.sum(self.Y_t ** 2))
            self.outside = float(np.sum(self.Y_t[~self.modes] ** 2))
            self.outside = self.outside if self.outside > 1e-24 * max(1.0, y2) else 0.0
        self.k_m = self.k[self.modes]
        self.Y_m = self.Y_t[self.modes]
        self.trace_given = trace is not None
        if trace is None:
            self.trace_nodes, self.trace_weights = self.k_m, np.ones_like(self.k_m)
        else:
            self.trace_nodes = np.asarray(trace[0], dtype=np.float64)
            self.trace_weights = np.asarray(trace[1], dtype=np.float64)

    # -------------------------------------------------------------------------------------------
    def layers(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per-layer eigenvalues (L, D), eigenvalues π (D,) of 𝒬) for eigenvalues q of Q_n."""
        layers, pi, _ = _factor_divided_differences(np.asarray(q, dtype=np.float64), self.ratios)
        return layers, pi

    def data_terms(self, pi: np.ndarray, V: np.ndarray):
        """log det A, the quadratic form, t and W (module docstring) for 𝒬 = V diag(π) Vᵀ."""
        Z = self.Y_m @ V
        beta = self.T + self.k_m[:, None] * pi[None, :]
        Zb = Z / beta
        quad = float(np.sum(Z * Zb))
        Wm = (Zb * self.k_m[:, None]).T @ Zb
        if self.trace_given:
            beta_t = self.T + self.trace_nodes[:, None] * pi[None, :]
            logdet = float(self.trace_weights @ np.sum(np.log(beta_t), axis=1))
            t = (self.trace_weights * self.trace_nodes) @ (1.0 / beta_t)
        else:  # the eigenbasis: the label nodes with unit weights
            logdet = float(np.sum(np.log(beta)))
            t = self.k_m @ (1.0 / beta)
        return logdet, quad, t, Wm

    def __call__(self, Qn: np.ndarray) -> tuple[float, np.ndarray, float]:
        q, V = np.linalg.eigh(Qn)
        if not q[0] > 0:
            return math.inf, np.zeros_like(Qn), 1.0
        layers, pi, dd = _factor_divided_differences(q, self.ratios)
        N = self.widths[:, None]
        prior = float(np.sum(N * (layers - np.log(layers) - 1.0)))
        logdet, quad, t, Wm = self.data_terms(pi, V)
        value = prior + logdet + quad + (math.inf if self.outside else 0.0)
        # ∂Ψ/∂Q_n is spectral; ∂Φ/∂Q_n by the Daleckii–Krein rule through 𝒬 = π(Q_n)
        prior_grad = np.sum(N * self.ratios[:, None] * (1.0 - 1.0 / layers), axis=0)
        Gphi = np.diag(t) - Wm
        Gt = np.diag(prior_grad) + dd * Gphi
        G = V @ Gt @ V.T
        root = np.sqrt(q)
        prior_size = q * np.sum(N * self.ratios[:, None] * (1.0 + 1.0 / layers), axis=0)
        data_size = (root[:, None] * root[None, :]) * dd * (np.diag(np.abs(t)) + np.abs(Wm))
        scale = float(np.linalg.norm(prior_size) + np.linalg.norm(data_size))
        return value, 0.5 * (G + G.T), scale

    def hessian(self, Qn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Analytic Hessian of S with respect to 𝒬 = f(Q_n), in O(P D³ + D⁶).

        Returns (H, V): d²S/dt² along 𝒬 + t V E Vᵀ is svec(E)ᵀ H svec(E) (``finwidth.theory.spd.svec``),
        V the eigenvectors of 𝒬. At a stationary point its inertia is that of the Hessian in any other
        coordinates (Q_n, log Q_n), so its smallest eigenvalue decides minimum or saddle. Terms:
        −tr(A⁻¹dA A⁻¹dA) + 2 αᵀ dA A⁻¹ dA α with dA = dE ⊗ K, and the second derivative of the spectral
        prior Σ_a ψ(π_a) (ψ' on the diagonal, divided differences of ψ' off it), ψ'(π) = c/π with
        c = N_l (q_l − 1) the common layer shift.
        """
        q, V = np.linalg.eigh(Qn)
        layers, pi, _ = _factor_divided_differences(q, self.ratios)
        D = q.size
        c = self.n_min * (q - 1.0)
        dpsi = c / pi
        dc = 1.0 / (pi * np.sum(1.0 / (self.widths[:, None] * layers), axis=0))  # dc/dπ
        d2psi = (dc * pi - c) / pi ** 2
        gap = pi[:, None] - pi[None, :]
        close = np.abs(gap) <= 1e-8 * np.max(pi)
        with np.errstate(invalid="ignore", divide="ignore"):
            dd = np.where(close, 0.5 * (d2psi[:, None] + d2psi[None, :]),
                          (dpsi[:, None] - dpsi[None, :]) / np.where(close, 1.0, gap))
        Z = self.Y_m @ V
        beta = self.T + self.k_m[:, None] * pi[None, :]
        Zt = Z / beta
        k2b = self.k_m[:, None] ** 2 / beta  # k_i² / β_ib
        if self.trace_given:
            beta_t = self.T + self.trace_nodes[:, None] * pi[None, :]
            M = (self.trace_weights[:, None] * self.trace_nodes[:, None] ** 2 / beta_t).T @ (1.0 / beta_t)
        else:
            M = k2b.T @ (1.0 / beta)  # Σ_i k_i²/(β_ia β_ib)
        C = np.einsum("ib,ia,ic->bac", k2b, Zt, Zt)  # C[b, a, c] = Σ_i k_i² Zt_ia Zt_ic / β_ib
        # quadratic form over general E (index (a, b) -> a·D + b), then restricted to symmetric E
        full = np.diag((dd - M).ravel())
        for b in range(D):
            full[np.ix_(np.arange(D) * D + b, np.arange(D) * D + b)] += 2.0 * C[b]
        rows, cols = np.triu_indices(D)
        w = np.where(rows == cols, 1.0, math.sqrt(2.0))  # svec weights
        B = np.zeros((D * D, rows.size))
        B[rows * D + cols, np.arange(rows.size)] = 1.0 / w
        B[cols * D + rows, np.arange(rows.size)] = 1.0 / w
        H = B.T @ full @ B
        return 0.5 * (H + H.T), V

    def curvature(self, Qn: np.ndarray) -> float:
        """Smallest over largest absolute eigenvalue of :meth:`hessian` (> 0: a strict local minimum)."""
        w = np.linalg.eigvalsh(self.hessian(Qn)[0])
        top = float(np.max(np.abs(w)))
        return float(w[0]) / top if top > 0 else 0.0


# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputWidthCriterion:
    """T → 0 width criterion with D outputs (the matrix analogue of ``WidthCriterion``).

    Attributes
    ----------
    R : ndarray, shape (D, D)
        Yᵀ K_L⁺ Y / P (K_L the NNGP output kernel, pseudo-inverse over its non-null modes).
    r : ndarray, shape (D,)
        Eigenvalues of R (ascending); the direction ``directions[:, a]`` of output space behaves like a
        single output with r = r[a].
    directions : ndarray, shape (D, D)
        Orthonormal eigenvectors of R (columns).
    finite_width_better_per_direction : ndarray of bool, shape (D,)
        r_a < 1: along that direction the T → 0 variance falls below the NNGP one.
    finite_width_better : bool or None
        tr Π_t0 < D: at T → 0 the bias is width-independent and the summed variance is tr(Π_t0)·V_NNGP,
        so finite width beats infinite width on the summed ε_g iff this holds. None where Π_t0 is not
        defined.
    pi_t0 : ndarray, shape (D, D), or None
        The T = 0 renormalisation 𝒬 = ∏ Q_l for this network's widths; None where a direction with
        r_a = 0 (e.g. centred one-hot targets) makes the T = 0 limit degenerate (its Q → 0).
    """

    R: np.ndarray
    r: np.ndarray
    directions: np.ndarray
    finite_width_better_per_direction: np.ndarray
    finite_width_better: bool | None
    pi_t0: np.ndarray | None


@dataclass(frozen=True)
class MultiOutputSaddle:
    """A verified stationary point (the minimum of lowest action) of the multi-output action.

    Attributes
    ----------
    qbar : ndarray, shape (L, D, D)
        Q_l for each layer (= 1 at infinite width).
    renormalization : ndarray, shape (D, D)
        𝒬 = ∏_l Q_l, the factor in 𝒬 ⊗ K_L.
    pi : ndarray, shape (D,)
        Eigenvalues of 𝒬 (ascending).
    vectors : ndarray, shape (D, D)
        Its orthonormal eigenvectors (columns), shared by every Q_l.
    action : float
        S at the saddle (+inf at T = 0 when Y has a component outside the range of K_L).
    residual : float
        Verified relative residual ‖Q_n^{1/2} G Q_n^{1/2}‖/scale.
    roots : list of ndarray
        Every distinct 𝒬 found (the kept one first).
    n_evaluations : int
    method : str
        ``"minimize_spd"`` or ``"t0_closed_form"``.
    min_curvature : float or None
        Smallest over largest Hessian eigenvalue at the answer (log coordinates; > 0: a strict minimum);
        None for the T = 0 closed form (each direction's scalar equation has one root).
    """

    qbar: np.ndarray
    renormalization: np.ndarray
    pi: np.ndarray
    vectors: np.ndarray
    action: float
    residual: float
    roots: list
    n_evaluations: int
    method: str
    min_curvature: float | None = None


def _sym(M: np.ndarray) -> np.ndarray:
    return 0.5 * (M + M.T)


def _layer_matrices(action: MultiOutputAction, Qn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    q, V = linalg.eigh(Qn)
    layers, pi = action.layers(q)
    order = np.argsort(pi)
    V, layers, pi = V[:, order], layers[:, order], pi[order]
    qbar = np.stack([_sym((V * ql) @ V.T) for ql in layers])
    return qbar, _sym((V * pi) @ V.T), pi, V


def width_criterion(basis: spectral.Eigenbasis, Y_t: np.ndarray, widths) -> OutputWidthCriterion:
    """The T → 0 criterion of :class:`OutputWidthCriterion` from the eigenbasis of K_L and Uᵀ Y."""
    k = basis.values
    pos = k > 0
    P, D = Y_t.shape
    Yp = Y_t[pos]
    R = _sym((Yp / k[pos, None]).T @ Yp / P)
    r, W = linalg.eigh(R)
    try:
        pi_t0 = _t0_modes(basis, r, widths)[1]
    except ConvergenceError:
        pi_t0 = None
    pi_mat = None if pi_t0 is None else _sym((W * pi_t0) @ W.T)
    better = None if pi_t0 is None else bool(np.sum(pi_t0) < D)
    return OutputWidthCriterion(R=R, r=r, directions=W, finite_width_better_per_direction=r < 1.0,
                                finite_width_better=better, pi_t0=pi_mat)


def _t0_modes(basis: spectral.Eigenbasis, r: np.ndarray, widths):
    """Per eigen-direction of R the scalar T = 0 saddle: (qbar (L, D), π (D,)).

    At T = 0, g(Π) = ρ − r/Π (ρ = rank K/P; BPKR notes A.5), so Q̄_l = 1 − α_l ρ + α_l r/Π and
    Π = ∏_l Q̄_l: one monotone equation in log Π per direction (closed form at L = 1).
    """
    P = basis.values.size
    rho = basis.rank / P
    alphas = P / np.asarray(widths, dtype=float)
    qbars, pis = [], []
    for ra in r:
        if not ra > 0:
            raise ConvergenceError(f"no positive T = 0 order parameter for r = {ra:.3g}")
        if alphas.size == 1:
            q = np.array([spectral.t0_one_layer_qbar(float(alphas[0]), float(ra), rho)])
        else:
            def h(z):
                # decreasing in z; beyond the feasibility boundary (some Q̄_l ≤ 0, large z) it counts as −∞
                q = 1.0 - alphas * rho + alphas * ra * math.exp(-z)
                return -math.inf if np.any(q <= 0) else float(np.sum(np.log(q))) - z

            lo, hi = -1.0, 1.0
            for _ in range(12):  # |log Π| up to 4096
                if h(lo) > 0:
                    break
                lo *= 2.0
            for _ in range(12):
                if h(hi) < 0:
                    break
                hi *= 2.0
            z = spectral.scan_roots(h, lo, hi, n_grid=3).roots
            if len(z) != 1:
                raise ConvergenceError(f"no T = 0 order parameter found for r = {ra:.3g}")
            z = z[0]
            q = 1.0 - alphas * rho + alphas * ra * math.exp(-z)
        if not np.all(q > 0):
            raise ConvergenceError(f"no positive T = 0 order parameter for r = {ra:.3g}")
        qbars.append(q)
        pis.append(float(np.prod(q)))
    return np.array(qbars).T, np.array(pis)


def _scalar_start(basis: spectral.Eigenbasis, Y_t: np.ndarray, T: float, widths) -> np.ndarray:
    """Q̄_l of the best isotropic 𝒬 = π·1. On that line S/D is the scalar product-form action with the
    same widths and labels of squared size Σ_a Ỹ_ia²/D per mode (every log det term appears D times)."""
    D = Y_t.shape[1]
    return spectral.solve_product(basis, np.sqrt(np.sum(Y_t ** 2, axis=1) / D), T, widths).qbar


def solve_multioutput(basis: spectral.Eigenbasis, Y_t: np.ndarray, temperature: float, widths) -> MultiOutputSaddle:
    """Solve the multi-output saddle point (module docstring); verified, else ConvergenceError.

    Parameters
    ----------
    basis : Eigenbasis
        Of the NNGP output kernel K_L (all 1/λ_l included), null modes zeroed.
    Y_t : ndarray, shape (P, D)
        Uᵀ Y.
    temperature : float
        T ≥ 0 (T = 0: the mode-by-mode closed form of the T → 0 limit).
    widths : sequence
        N_1..N_L (any, unequal allowed).
    """
    widths = np.asarray(widths, dtype=float)
    if not np.all(np.isfinite(widths)):
        raise ConfigError("the multi-output theory needs finite widths (an infinite layer has Q_l = 1: drop it)")
    action = MultiOutputAction(basis.values, Y_t, temperature, widths)
    D = Y_t.shape[1]
    if temperature == 0:
        return _solve_t0(action, basis, Y_t, widths)
    n = action.narrowest
    starts = [np.eye(D)]
    try:
        starts.append(_scalar_start(basis, Y_t, temperature, widths)[n] * np.eye(D))
    except ConvergenceError:
        pass
    return solve_from_starts(action, starts)


def solve_from_starts(action: MultiOutputAction, starts: list) -> MultiOutputSaddle:
    """Minimise S from each start Q_n (D×D); the lowest verified minimum, checked by the analytic Hessian.

    Shared by the eigenbasis solver and the matrix-free one (:mod:`finwidth.theory.multioutput_krylov`),
    whose ``action`` is built on quadrature rules. ConvergenceError if no start converges.
    """
    sols, failures, evaluations = [], [], 0
    for Q0 in starts:
        try:
            sol = minimize_spd(action, Q0, tol=spectral.RESIDUAL_TOL, check_minimum=False,
                               what="the multi-output saddle point")
        except ConvergenceError as exc:
            failures.append(exc)
            continue
        evaluations += sol.n_evaluations
        sols.append(sol)
    if not sols:
        raise failures[0]
    sols.sort(key=lambda s: s.value)
    # a minimum, not a saddle: the analytic Hessian at the solution kept (the generic finite-difference
    # check of minimize_spd, which also leaves saddles, only where that fails)
    curvature = action.curvature(sols[0].Q)
    if not curvature > -SADDLE_RTOL:
        checked = minimize_spd(action, sols[0].Q, tol=spectral.RESIDUAL_TOL, what="the multi-output saddle point")
        evaluations += checked.n_evaluations
        sols.insert(0, checked)
        curvature = action.curvature(checked.Q)
    roots = []
    for s in sols:
        Qprod = _layer_matrices(action, s.Q)[1]
        if not any(np.linalg.norm(Qprod - r) <= _SAME_ROOT * np.linalg.norm(r) for r in roots):
            roots.append(Qprod)
    if len(roots) > 1:
        warnings.warn(
            f"the multi-output action has {len(roots)} distinct minima from the starts tried (identity, scalar "
            f"solution); kept the one of lowest action S = {sols[0].value:.12g}",
            spectral.MultipleRootsWarning, stacklevel=3,
        )
    best = sols[0]
    qbar, Qprod, pi, V = _layer_matrices(action, best.Q)
    return MultiOutputSaddle(qbar=qbar, renormalization=Qprod, pi=pi, vectors=V, action=best.value,
                             residual=best.residual, roots=roots, n_evaluations=evaluations, method="minimize_spd",
                             min_curvature=curvature)


def _solve_t0(action: MultiOutputAction, basis: spectral.Eigenbasis, Y_t: np.ndarray, widths) -> MultiOutputSaddle:
    crit = width_criterion(basis, Y_t, widths)
    W = crit.directions
    try:
        qbars, pis = _t0_modes(basis, crit.r, widths)
    except ConvergenceError as exc:
        raise ConvergenceError(
            "at T = 0 an output direction has no positive order parameter: its labels are (nearly) zero "
            f"(eigenvalues of Yᵀ K⁺ Y / P: {np.array2string(crit.r, precision=3)}) while rank(K) exceeds the "
            "narrowest width, so its Q → 0 (e.g. centred one-hot targets, whose rows sum to zero)",
            suggestion="use T > 0, or uncentred one-hot targets",
        ) from exc
    n = action.narrowest
    Qn = _sym((W * qbars[n]) @ W.T)
    value, G, scale = action(Qn)
    residual = stationarity_residual(Qn, G, scale)
    if not residual <= spectral.RESIDUAL_TOL:
        raise ConvergenceError("the T = 0 multi-output closed form does not satisfy the stationarity equations",
                               residual=residual, suggestion="use a small positive temperature")
    qbar, Qprod, pi, V = _layer_matrices(action, Qn)
    return MultiOutputSaddle(qbar=qbar, renormalization=Qprod, pi=pi, vectors=V, action=value, residual=residual,
                             roots=[Qprod], n_evaluations=1, method="t0_closed_form")
