"""Equations of state of the adaptive-kernel theory and their solvers (used by
:class:`finwidth.theory.adaptive.AdaptiveKernel`; notation in that module's docstring).

The unknown is the precision D = Σ⁻¹ of one neuron's (channel's) pre-activation weights, an m×m
matrix (m = rank of the FCN inputs, or the CNN filter size). The EoS is the fixed point

    D = G(D) = λ_0 S I − v_a ∇_Σ Tr[M Φ(Σ)],   Σ = D⁻¹,   M = t̄t̄ᵀ − (Q̄ + T)⁻¹,   t̄ = (Q̄ + T)⁻¹ y,

with relative residual ‖D − G(D)‖_F / (‖λ_0 S I‖_F + ‖G(D) − λ_0 S I‖_F). Two solvers:

* :meth:`EquationsOfState.anderson` (the fast path): Anderson-accelerated, damped fixed-point
  iteration at the target width, started from the prior precision. One evaluation of G per step
  (two Cholesky factorisations and the kernel's vector–Jacobian product).
* :meth:`EquationsOfState.anneal` (the fallback, when the fast path stalls): inexact Newton–Krylov
  (GMRES on finite-difference Jacobian products, a backtracking line search that never leaves D ≻ 0),
  continued in width from N_start ≫ N down to N, as in the official AK code. Each Newton step costs
  tens to hundreds of evaluations of G.

Both return only a point whose residual is ≤ tol; the caller re-verifies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.sparse.linalg import LinearOperator, gmres

from finwidth import kernels

#: Newton steps per annealing stage (fallback)
MAX_NEWTON = 60
#: fixed-point iterations of the fast path before it is declared stalled
MAX_FIXED_POINT = 400
#: Anderson memory and damping (mixing) of the fast path
ANDERSON_MEMORY = 12
ANDERSON_DAMPING = 0.2
#: the fast path aims this far below tol (a few cheap extra steps), and accepts tol when it stalls
ANDERSON_MARGIN = 1e-2


class StageFailed(Exception):
    """A solver could not reach the tolerance; carries the reason and the best residual."""

    def __init__(self, reason: str, residual: float):
        super().__init__(reason)
        self.reason = reason
        self.residual = residual


@dataclass
class AnnealStage:
    """One stage of the width continuation: width, Newton steps, final relative residual."""

    width: float
    newton_steps: int
    residual: float


def patch_kernel(activation, Sigma: np.ndarray, Z1: np.ndarray, Z2: np.ndarray | None = None,
                 perp1: np.ndarray | None = None, perp2: np.ndarray | None = None) -> np.ndarray:
    """Φ(Σ)_{μν} = Σ_i E_{u~N(0,Σ)}[σ(u·z_{μi}) σ(u·z_{νi})] (no readout scale).

    Parameters
    ----------
    activation : Activation
    Sigma : ndarray (m, m)
        Covariance of u (symmetric positive semi-definite).
    Z1, Z2 : ndarray (n1, Ñ, m), (n2, Ñ, m)
        Patches (FCN: Ñ = 1). ``Z2=None`` means Z2 = Z1 (a symmetric train kernel whose diagonal
        is evaluated with ``kappa_diag``, exact at coincident points).
    perp1, perp2 : ndarray (n1,), (n2,), optional
        Extra variance added to the diagonal of each point's pre-activation (FCN test points:
        the part of |x|²/(λ_0 N_0) outside the adapted span).

    Returns
    -------
    ndarray (n1, n2), float64
    """
    ZS1 = Z1 @ Sigma  # (n1, Ñ, m): matrix products, not a three-operand einsum (O(n² m²))
    v1 = np.einsum("nis,nis->ni", ZS1, Z1)
    if perp1 is not None:
        v1 = v1 + perp1[:, None]
    if Z2 is None:
        out = np.zeros((Z1.shape[0], Z1.shape[0]))
        for i in range(Z1.shape[1]):
            c = ZS1[:, i, :] @ Z1[:, i, :].T
            k = activation.kappa(v1[:, i][:, None], c, v1[:, i][None, :])
            np.fill_diagonal(k, activation.kappa_diag(v1[:, i]))
            out += k
        return 0.5 * (out + out.T)
    v2 = np.einsum("nis,nis->ni", Z2 @ Sigma, Z2)
    if perp2 is not None:
        v2 = v2 + perp2[:, None]
    out = np.zeros((Z1.shape[0], Z2.shape[0]))
    for i in range(Z1.shape[1]):
        out += activation.kappa(v1[:, i][:, None], ZS1[:, i, :] @ Z2[:, i, :].T, v2[:, i][None, :])
    return out


def kernel_gradient(activation, Sigma: np.ndarray, Z: np.ndarray, M: np.ndarray) -> np.ndarray:
    """∇_Σ Tr[M Φ(Σ)] = Σ_i Z_iᵀ B_i Z_i for symmetric M, with B_i = ∂Tr[M κ(C_i)]/∂C_i at the
    patch covariance C_i = Z_i Σ Z_iᵀ (:func:`finwidth.kernels.propagate_vjp`)."""
    G = np.zeros_like(Sigma)
    for i in range(Z.shape[1]):
        Zi = Z[:, i, :]
        B = kernels.propagate_vjp(Zi @ Sigma @ Zi.T, activation, M)
        G += Zi.T @ B @ Zi
    return 0.5 * (G + G.T)


class EquationsOfState:
    """The AK equations of state on one training set.

    Parameters
    ----------
    activation : Activation
    Z : ndarray (P, Ñ, m)
        Training patches in the coordinates of the unknown.
    y : ndarray (P,)
    temperature : float
    prior_precision : float
        a = λ_0 S (the prior precision of u).
    scales : callable
        N ↦ (v_a, N v_a): the readout variance and the kernel prefactor at width N.
    tol : float
        Relative residual accepted.
    """

    def __init__(self, activation, Z: np.ndarray, y: np.ndarray, temperature: float, prior_precision: float,
                 scales: Callable[[float], tuple[float, float]], tol: float):
        self.activation = activation
        self.Z = Z
        self.y = y
        self.T = float(temperature)
        self.a = float(prior_precision)
        self.scales = scales
        self.tol = float(tol)
        self.m = Z.shape[2]
        self.n_evaluations = 0

    # ---------------------------------------------------------------------------- one evaluation
    def state(self, D: np.ndarray, N: float, need_grad: bool = True) -> dict | None:
        """Everything at precision D and width N; None if D is not positive definite or Q̄ + T is singular."""
        self.n_evaluations += 1
        # numpy LAPACK in the inner loop: small matrices, called many times
        try:
            cD = np.linalg.cholesky(D)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(cD)):
            return None
        Li = np.linalg.inv(cD)
        Sigma = Li.T @ Li
        va, qs = self.scales(N)
        Q = qs * patch_kernel(self.activation, Sigma, self.Z)
        if not np.all(np.isfinite(Q)):
            return None
        A = Q.copy()
        A.flat[:: A.shape[0] + 1] += self.T
        try:
            cA = np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            return None
        if np.min(np.diagonal(cA)) <= 1e-7 * np.max(np.diagonal(cA)):
            return None  # Q̄ + T singular to working precision (T = 0 with a rank-deficient kernel)
        LAi = np.linalg.inv(cA)
        Ainv = LAi.T @ LAi
        t = Ainv @ self.y
        state = {"Sigma": Sigma, "Q": Q, "tbar": t, "logdetD": 2.0 * float(np.sum(np.log(np.diagonal(cD)))),
                 "logdetA": 2.0 * float(np.sum(np.log(np.diagonal(cA))))}
        if need_grad:
            M = np.outer(t, t) - Ainv
            state["shift"] = va * kernel_gradient(self.activation, Sigma, self.Z, M)
        return state

    def residual(self, D: np.ndarray, st: dict) -> tuple[np.ndarray, float]:
        """(R, relative residual) with R = D − G(D) = D − a I + v_a ∇."""
        R = D - self.a * np.eye(D.shape[0]) + st["shift"]
        scale = self.a * math.sqrt(D.shape[0]) + np.linalg.norm(st["shift"])
        return R, float(np.linalg.norm(R) / scale)

    # ---------------------------------------------------------------------------- packed unknowns
    def _pack(self, D: np.ndarray) -> np.ndarray:
        """D/a as the vector of its upper triangle, off-diagonals × sqrt 2 (Euclidean norm = Frobenius)."""
        iu = np.triu_indices(self.m)
        return D[iu] * np.where(iu[0] == iu[1], 1.0, math.sqrt(2.0)) / self.a

    def _unpack(self, x: np.ndarray) -> np.ndarray:
        iu = np.triu_indices(self.m)
        A = np.zeros((self.m, self.m))
        A[iu] = x / np.where(iu[0] == iu[1], 1.0, math.sqrt(2.0))
        return self.a * (A + np.triu(A, 1).T)

    def _at(self, x: np.ndarray, N: float):
        """(D, state, packed residual D − G(D), relative residual) at packed x; None if not admissible."""
        D = self._unpack(x)
        st = self.state(D, N)
        if st is None:
            return None
        R, rel = self.residual(D, st)
        return D, st, self._pack(R), rel

    # ---------------------------------------------------------------------------- fast path
    def anderson(self, D0: np.ndarray, N: float) -> tuple[np.ndarray, dict, int, float]:
        """Anderson-accelerated damped fixed-point iteration D ← G(D) at width N from D0.

        Type-II Anderson mixing (memory ``ANDERSON_MEMORY``, damping ``ANDERSON_DAMPING``) on the
        packed upper triangle of D/a. A step that leaves D ≻ 0 (or makes Q̄ + T singular) is halved;
        when the accelerated step does not reduce the residual the history is dropped and the
        damping halved. Returns (D, state, iterations, relative residual); raises
        :class:`StageFailed` after ``MAX_FIXED_POINT`` iterations or when no admissible step exists.
        """
        def F(x):
            out = self._at(x, N)
            return None if out is None else (out[0], out[1], -out[2], out[3])  # f = G(x) − x

        x = self._pack(D0)
        cur = F(x)
        if cur is None:
            raise StageFailed("the starting point is not admissible (Σ not positive definite or Q̄ + T singular)",
                              math.inf)
        beta = ANDERSON_DAMPING
        dX: list[np.ndarray] = []
        dF: list[np.ndarray] = []
        best_rel = cur[3]
        since_best = 0
        best = cur
        for it in range(MAX_FIXED_POINT + 1):
            D, st, f, rel = cur
            if rel <= ANDERSON_MARGIN * self.tol:
                return D, st, it, rel
            if it == MAX_FIXED_POINT:
                break
            step = beta * f
            if dX:
                Xm = np.stack(dX, axis=1)
                Fm = np.stack(dF, axis=1)
                gamma, *_ = np.linalg.lstsq(Fm, f, rcond=None)
                step = step - (Xm + beta * Fm) @ gamma
            t, new = 1.0, None
            for _ in range(8):
                new = F(x + t * step)
                if new is not None:
                    break
                t *= 0.5
            if new is None:
                raise StageFailed("no admissible fixed-point step (Σ or Q̄ + T lost positive definiteness)", best_rel)
            if new[3] > 2.0 * rel and dX:
                # the extrapolation misled: restart from plain damped steps, more strongly damped
                dX.clear()
                dF.clear()
                beta = max(0.5 * beta, 1.0 / 64)
                continue
            dX.append(t * step)
            dF.append(new[2] - f)
            if len(dX) > ANDERSON_MEMORY:
                dX.pop(0)
                dF.pop(0)
            x = x + t * step
            cur = new
            if new[3] < best[3]:
                best = new
            if new[3] < 0.5 * best_rel:
                best_rel, since_best = new[3], 0
            else:
                best_rel = min(best_rel, new[3])
                since_best += 1
                if since_best > 60:
                    break
        if best[3] <= self.tol:
            return best[0], best[1], it, best[3]
        raise StageFailed(f"the fixed-point iteration stalled after {it} steps", best_rel)

    # ---------------------------------------------------------------------------- fallback
    def newton(self, D0: np.ndarray, N: float) -> tuple[np.ndarray, dict, int, float]:
        """Inexact Newton–Krylov on the EoS at width N from D0; raises :class:`StageFailed`."""
        def F(v):
            out = self._at(v, N)
            return (None, None) if out is None else (out[2], (out[1], out[3]))

        x = self._pack(D0)
        r, info = F(x)
        if r is None:
            raise StageFailed("the starting point is not admissible (Σ not positive definite or Q̄ + T singular)", np.inf)
        for it in range(MAX_NEWTON + 1):
            st, rel = info
            if rel <= self.tol:
                return self._unpack(x), st, it, rel
            if it == MAX_NEWTON:
                break
            nr = float(np.linalg.norm(r))
            nx = float(np.linalg.norm(x))

            def matvec(v, x=x, r=r, nx=nx):
                nv = float(np.linalg.norm(v))
                if nv == 0:
                    return np.zeros_like(v)
                h = math.sqrt(np.finfo(float).eps) * max(1.0, nx) / nv
                for _ in range(20):
                    rh, _ = F(x + h * v)
                    if rh is not None:
                        return (rh - r) / h
                    h *= 0.25
                raise StageFailed("Jacobian probe left the admissible region", rel)

            J = LinearOperator((x.size, x.size), matvec=matvec, dtype=np.float64)
            eta = min(0.1, max(nr, 1e-12))
            dx, _ = gmres(J, -r, rtol=eta, atol=0.0, restart=min(60, x.size), maxiter=5)
            if not np.all(np.isfinite(dx)) or not np.any(dx):
                raise StageFailed("GMRES returned no descent direction", rel)
            s = 1.0
            while s >= 1.0 / 1024:
                rn, infon = F(x + s * dx)
                if rn is not None and np.linalg.norm(rn) <= (1.0 - 1e-4 * s) * nr:
                    break
                s *= 0.5
            else:
                raise StageFailed("the line search found no decrease of the residual", rel)
            x, r, info = x + s * dx, rn, infon
        raise StageFailed(f"no convergence in {MAX_NEWTON} Newton steps", info[1])

    def anneal(self, N_start: float, N_target: float, ratio: float) -> tuple[np.ndarray, dict, list[AnnealStage]]:
        """Newton–Krylov continued in width from N_start down to N_target, from the prior precision.

        Raises
        ------
        StageFailed
            At the start, or when a stage fails with width steps below a ratio of e^(1e-4); the
            reason names the width reached.
        """
        D = self.a * np.eye(self.m)
        N = float(N_start)
        path: list[AnnealStage] = []
        log_step = math.log(ratio)
        try:
            D, st, k, rel = self.newton(D, N)
        except StageFailed as exc:
            raise StageFailed(f"at the start of the continuation (N = {N:.4g}): {exc.reason}", exc.residual) from None
        path.append(AnnealStage(N, k, rel))
        while N > N_target:
            N_next = max(N_target, N * math.exp(-log_step))
            try:
                D_new, st_new, k, rel = self.newton(D, N_next)
            except StageFailed as exc:
                log_step *= 0.5
                if log_step < 1e-4:
                    raise StageFailed(f"continuation stalled at width {N:.6g} (target {N_target:g}): {exc.reason}",
                                      exc.residual) from None
                continue
            D, st, N = D_new, st_new, N_next
            path.append(AnnealStage(N, k, rel))
            log_step = min(log_step * 1.5, math.log(ratio) * 2)
        return D, st, path
