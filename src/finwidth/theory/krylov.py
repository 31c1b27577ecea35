"""Krylov methods on a symmetric positive semi-definite operator K given only by products K V.

Three tools serve the matrix-free theory (:mod:`finwidth.theory.scalable`):

* **Lanczos quadrature.** m steps of Lanczos from a start vector v give a tridiagonal J_m whose
  eigenvalues θ_j and first eigenvector components s_j define the Gauss rule
  vᵀ f(K) v ≈ ‖v‖² Σ_j s_j² f(θ_j), exact for polynomials of degree ≤ 2m − 1. One run serves every f,
  in particular the whole family f(x) = 1/(T + Π x) over Π: the saddle-point equation is solved on
  the rule, never with one linear solve per trial Π. For f whose even derivatives are positive and
  odd ones negative on [0, ∞) (1/(s + x), 1/(s + x)²), the Gauss rule is a lower bound and the
  Gauss–Radau rule with a node fixed at 0 ≤ λ_min(K) an upper bound (Golub & Meurant, *Matrices,
  Moments and Quadrature*, 2010, Thm 6.4): :class:`JacobiSet` evaluates both, so every quadrature
  carries a bracket (rigorous in exact arithmetic; in floating point Lanczos without
  reorthogonalisation converges later but to the same values, Knizhnerman 1996). A block version
  (:class:`BlockLanczos`) gives Yᵀ f(K) Y for a block Y of D start vectors.
* **Stochastic trace estimation.** tr f(K) = E[zᵀ f(K) z] for Rademacher z (Hutchinson); each probe
  is one Lanczos run (stochastic Lanczos quadrature, Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl.
  38, 2017). The spread over probes gives the standard error.
* **Conjugate gradients** for (T + Π K) X = B with many right-hand sides at once, optionally
  preconditioned (a randomized Nyström approximation of K, Frangella, Tropp & Udell, SIAM J. Matrix
  Anal. Appl. 44, 2023), with the true residual checked at the end.

All recurrences run in lockstep so that one product K V with a block V serves every start vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import linalg
from scipy.linalg import lapack

from finwidth.errors import ConfigError, ConvergenceError

__all__ = [
    "BlockLanczos",
    "JacobiSet",
    "block_jacobi",
    "CGResult",
    "Deflation",
    "NystromPreconditioner",
    "ScalarLanczos",
    "block_cg",
    "rademacher",
    "run_lanczos",
    "top_eigenpairs",
]

MatMat = Callable[[np.ndarray], np.ndarray]
_TINY = 1e-300


def rademacher(P: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n independent Rademacher vectors (entries ±1) as the columns of a (P, n) float64 array."""
    return rng.integers(0, 2, size=(P, n)).astype(np.float64) * 2.0 - 1.0


class JacobiSet:
    """n Jacobi (symmetric tridiagonal) matrices J_i of a Lanczos run and their masses ‖v_i‖².

    Each J_i is padded to a common size with decoupled rows, so that the Gauss rule
    ‖v_i‖² e₁ᵀ f(J_i) e₁ of every column is evaluated at once: for resolvents by the continued
    fraction of (s + J)⁻¹ from the bottom (O(m n) per shift, no eigendecomposition), for any f
    through :meth:`rules`.

    Parameters
    ----------
    alpha, beta : ndarray, shape (M, n)
        Diagonals and off-diagonals (beta[k] couples rows k and k+1) of each column, top-aligned;
        rows k ≥ m_i of column i are padding (ignored).
    steps : ndarray of int, shape (n,)
        m_i, the size of J_i.
    masses : ndarray, shape (n,)
    """

    def __init__(self, alpha: np.ndarray, beta: np.ndarray, steps: np.ndarray, masses: np.ndarray):
        M, n = alpha.shape
        rows = np.arange(M)[:, None]
        inside = rows < steps[None, :]
        self.alpha = np.where(inside, alpha, 1.0)
        self.beta = np.where(rows < steps[None, :] - 1, beta, 0.0)
        self._last_beta = beta[np.maximum(steps - 1, 0), np.arange(n)]
        self.steps = np.asarray(steps, dtype=int)
        self.masses = np.asarray(masses, dtype=float)
        self._rules: list | None = None

    @property
    def n(self) -> int:
        return int(self.masses.size)

    def resolvent(self, s: float) -> tuple[np.ndarray, np.ndarray]:
        """(‖v‖² e₁ᵀ(s + J)⁻¹e₁, ‖v‖² e₁ᵀ(s + J)⁻²e₁) per column (s + J positive definite)."""
        if self.n == 1 and self.alpha.shape[0] > 64:
            # one long matrix (a label run, or a full tridiagonalisation): LAPACK's O(m) solve
            m = int(self.steps[0])
            rhs = np.zeros((m, 1))
            rhs[0, 0] = 1.0
            _, _, x, info = lapack.dptsv(self.alpha[:m, 0] + s, self.beta[: m - 1, 0], rhs)
            if info == 0:
                x = x[:, 0]
                return self.masses * x[0], self.masses * float(x @ x)
        d = self.alpha[-1] + s
        dd = np.ones_like(d)
        for k in range(self.alpha.shape[0] - 2, -1, -1):
            t = self.beta[k] ** 2 / d
            dd = 1.0 + t * dd / d
            d = self.alpha[k] + s - t
        return self.masses / d, self.masses * dd / (d * d)

    def radau(self) -> JacobiSet:
        """The Gauss–Radau matrices: each J_i extended by one row so that 0 is an eigenvalue.

        α̃ = β_m²/p_m with p_m the last pivot of J_i = L D Lᵀ (Golub & Meurant 2010, §6.2). A column
        whose J_i is not numerically positive definite gets α̃ = +inf (no bracket).
        """
        M, n = self.alpha.shape
        p = self.alpha[0].copy()
        for k in range(1, M):
            live = k < self.steps
            p = np.where(live, self.alpha[k] - self.beta[k - 1] ** 2 / np.where(p != 0, p, 1e-300), p)
        with np.errstate(divide="ignore"):
            at = np.where(p > 0, self._last_beta ** 2 / p, np.inf)
        A = np.vstack([self.alpha, np.ones((1, n))])
        B = np.vstack([self.beta, np.zeros((1, n))])
        cols = np.arange(n)
        A[self.steps, cols] = at
        B[self.steps - 1, cols] = self._last_beta
        return JacobiSet(A, B, self.steps + 1, self.masses)

    def rules(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Gauss rules (θ, w) per column from eigendecompositions (O(m²) to O(m³) each; cached)."""
        if self._rules is None:
            out = []
            for i in range(self.n):
                m = int(self.steps[i])
                a, b = self.alpha[:m, i], self.beta[: m - 1, i]
                if m > 1:
                    try:
                        theta, S = linalg.eigh_tridiagonal(a, b, lapack_driver="stemr")
                    except linalg.LinAlgError:  # MRRR can fail on tight clusters; QL does not
                        theta, S = linalg.eigh_tridiagonal(a, b, lapack_driver="stev")
                    w = self.masses[i] * S[0] ** 2
                else:
                    theta, w = a.copy(), self.masses[i : i + 1].copy()
                out.append((theta, w))
            self._rules = out
        return self._rules


class ScalarLanczos:
    """n independent Lanczos recurrences in lockstep (no reorthogonalisation: O(P n) memory).

    Parameters
    ----------
    V0 : ndarray, shape (P, n)
        Start vectors (columns, nonzero).

    Attributes
    ----------
    norms2 : ndarray, shape (n,)
        ‖v_i‖² of the start vectors (the total mass of each quadrature).
    n_steps : ndarray of int, shape (n,)
        Steps taken by each recurrence.
    exhausted : ndarray of bool, shape (n,)
        The recurrence found an invariant subspace (β = 0): its rule is exact.
    """

    def __init__(self, V0: np.ndarray):
        V0 = np.asarray(V0, dtype=np.float64)
        if V0.ndim != 2:
            raise ConfigError("ScalarLanczos needs start vectors as columns of a (P, n) array")
        norms = np.linalg.norm(V0, axis=0)
        if np.any(norms == 0):
            raise ConfigError("a Lanczos start vector is zero")
        self.norms2 = norms ** 2
        self.P, self.n = V0.shape
        self._q = V0 / norms
        self._q_prev = np.zeros_like(self._q)
        self._beta_prev = np.zeros(self.n)
        # coefficients by step (rows) and recurrence (columns); NaN where a recurrence did not step
        self._alpha = np.full((64, self.n), np.nan)
        self._beta = np.full((64, self.n), np.nan)
        self._rows = 0
        self.n_steps = np.zeros(self.n, dtype=int)
        self.exhausted = np.zeros(self.n, dtype=bool)
        self.scale = 0.0  # largest |α| seen: the size of K for the breakdown test

    def current(self, cols: np.ndarray) -> np.ndarray:
        """The vectors to multiply by K next (for the recurrences ``cols``)."""
        return self._q[:, cols]

    def advance(self, cols: np.ndarray, KQ: np.ndarray) -> None:
        """One step for the recurrences ``cols`` given K times their current vectors."""
        q, qp = self._q[:, cols], self._q_prev[:, cols]
        w = KQ - qp * self._beta_prev[cols]
        a = np.einsum("ij,ij->j", q, w)
        w -= q * a
        # one pass of local reorthogonalisation against the last two vectors keeps the recurrence stable
        c = np.einsum("ij,ij->j", q, w)
        w -= q * c
        a = a + c
        b = np.linalg.norm(w, axis=0)
        self.scale = max(self.scale, float(np.max(np.abs(a), initial=0.0)))
        if self._rows == self._alpha.shape[0]:
            grow = np.full_like(self._alpha, np.nan)
            self._alpha = np.concatenate([self._alpha, grow])
            self._beta = np.concatenate([self._beta, grow.copy()])
        self._alpha[self._rows, cols] = a
        self._beta[self._rows, cols] = b
        self._rows += 1
        self.n_steps[cols] += 1
        dead = b <= 1e-13 * max(self.scale, _TINY)
        self.exhausted[cols[dead]] = True
        b_safe = np.where(dead, 1.0, b)
        self._q_prev[:, cols] = q
        self._q[:, cols] = w / b_safe
        self._beta_prev[cols] = b

    def coefficients(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(α (m,), β (m,)) of recurrence i; β[m−1] couples to the next (unused) vector."""
        a = self._alpha[: self._rows, i]
        keep = ~np.isnan(a)
        return a[keep], self._beta[: self._rows, i][keep]

    def jacobi(self) -> JacobiSet:
        """The Jacobi matrices of every recurrence (steps so far), as a :class:`JacobiSet`."""
        A = self._alpha[: self._rows]
        B = self._beta[: self._rows]
        order = np.argsort(np.isnan(A), axis=0, kind="stable")  # each column's steps to the top
        A = np.nan_to_num(np.take_along_axis(A, order, axis=0), nan=1.0)
        B = np.nan_to_num(np.take_along_axis(B, order, axis=0), nan=0.0)
        return JacobiSet(A, B, self.n_steps.copy(), self.norms2)


class BlockLanczos:
    """Block Lanczos from a start block Y (P, D) with full reorthogonalisation (for the labels).

    Gives the block Gauss rule Yᵀ f(K) Y ≈ Σ_j f(θ_j) z_j z_jᵀ (:meth:`rule`). Memory: the basis,
    m·D vectors of length P.
    """

    def __init__(self, Y: np.ndarray):
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim != 2:
            raise ConfigError("BlockLanczos needs a (P, D) start block")
        Q, R = np.linalg.qr(Y)
        if np.min(np.abs(np.diag(R)), initial=math.inf) <= 1e-12 * max(float(np.max(np.abs(R))), _TINY):
            raise ConfigError("the label columns are linearly dependent (or zero); drop the redundant outputs")
        self.P, self.D = Y.shape
        self.R0 = R
        self._basis = [Q]
        self._A: list[np.ndarray] = []
        self._B: list[np.ndarray] = []
        self.exhausted = False
        self.n_steps = 0

    def current(self) -> np.ndarray:
        return self._basis[-1]

    def advance(self, KQ: np.ndarray) -> None:
        Q = self._basis[-1]
        W = KQ - (self._basis[-2] @ self._B[-1].T if len(self._basis) > 1 else 0.0)
        A = Q.T @ W
        A = 0.5 * (A + A.T)
        W = W - Q @ A
        for _ in range(2):  # full reorthogonalisation, twice is enough (Kahan–Parlett)
            for Qk in self._basis:
                W -= Qk @ (Qk.T @ W)
        Qn, B = np.linalg.qr(W)
        self._A.append(A)
        self._B.append(B)
        self.n_steps += 1
        scale = max(float(np.max(np.abs(a))) for a in self._A)
        if np.min(np.abs(np.diag(B))) <= 1e-13 * max(scale, _TINY) or self.n_steps * self.D >= self.P:
            self.exhausted = True
        self._basis.append(Qn)

    def _eig(self, steps: int | None) -> tuple[np.ndarray, np.ndarray]:
        m = self.n_steps if steps is None else min(steps, self.n_steps)
        D = self.D
        J = np.zeros((m * D, m * D))
        for j in range(m):
            J[j * D:(j + 1) * D, j * D:(j + 1) * D] = self._A[j]
            if j + 1 < m:
                J[(j + 1) * D:(j + 2) * D, j * D:(j + 1) * D] = self._B[j]
                J[j * D:(j + 1) * D, (j + 1) * D:(j + 2) * D] = self._B[j].T
        return np.linalg.eigh(J)

    def rule(self, steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(θ (mD,), Z (mD, D)) with Yᵀ f(K) Y ≈ Zᵀ diag(f(θ)) Z from the first ``steps`` steps."""
        theta, S = self._eig(steps)
        return theta, S[: self.D, :].T @ self.R0


def run_lanczos(
    matmat: MatMat,
    steps: int,
    *,
    block: BlockLanczos | None = None,
    probes: list[tuple[ScalarLanczos, np.ndarray]] = (),  # type: ignore[assignment]
    project: Callable[[np.ndarray], np.ndarray] | None = None,
) -> int:
    """Advance a label block and the given columns of probe recurrences by up to ``steps`` steps,
    with one product K V per step for all of them together. Returns the number of products.

    ``project`` (e.g. :meth:`Deflation.project`) is applied to the probes' vectors before and after
    the product: their recurrences then run on the compression (I − XXᵀ) K (I − XXᵀ)."""
    n_products = 0
    for _ in range(steps):
        parts = []
        use_block = block is not None and not block.exhausted
        if use_block:
            parts.append(block.current())
        live = []
        for rec, cols in probes:
            cols = cols[~rec.exhausted[cols]]
            if cols.size:
                live.append((rec, cols))
                parts.append(rec.current(cols))
        if not parts:
            break
        if project is not None and live:
            lo = block.D if use_block else 0
            V = np.concatenate(parts, axis=1)
            V[:, lo:] = project(V[:, lo:])
            KV = matmat(V)
            KV[:, lo:] = project(KV[:, lo:])
        else:
            KV = matmat(np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0])
        n_products += 1
        off = 0
        if use_block:
            block.advance(KV[:, : block.D])
            off = block.D
        for rec, cols in live:
            rec.advance(cols, KV[:, off:off + cols.size])
            off += cols.size
    return n_products


def block_jacobi(block: BlockLanczos) -> JacobiSet:
    """The Jacobi matrix of a one-column :class:`BlockLanczos` (D = 1) as a :class:`JacobiSet`."""
    if block.D != 1:
        raise ConfigError("block_jacobi needs one start vector (D = 1)")
    a = np.array([A[0, 0] for A in block._A])[:, None]
    b = np.abs(np.array([B[0, 0] for B in block._B]))[:, None]
    return JacobiSet(a, b, np.array([a.shape[0]]), np.array([float(block.R0[0, 0] ** 2)]))


# ----------------------------------------------------------------------------------------------
# deflation: the top of the spectrum by block Lanczos, verified
# ----------------------------------------------------------------------------------------------


@dataclass
class Deflation:
    """Orthonormal X (P, k) with its Rayleigh–Ritz values θ = eig(XᵀKX) and residual R = K X − X diag(θ).

    The trace estimators of :mod:`finwidth.theory.scalable` split tr f(K) = Σ_i f(θ_i) + tr_⊥ f(K_⊥)
    with K_⊥ = (I − XXᵀ) K (I − XXᵀ) on the complement of X (Hutchinson there, on projected probes).
    That is tr f(K̃) for the block-diagonal part K̃ = K − E of K, E = R Xᵀ + X Rᵀ. The first-order
    change tr f'(K̃) E vanishes (f'(K̃) is block diagonal, E is not), and the second derivative of
    tr f along K̃ + tE is Σ_ij |E_ij|² f'[a_i, a_j] (divided differences of f', Daleckii–Krein), so
    |tr f(K) − tr f(K̃)| ≤ ½ ‖E‖_F² max|f''| = ``residual2`` · max|f''| on [0, ∞), with no
    assumption on gaps (K̃ + tE is positive semi-definite for t ∈ [0, 1]).

    Attributes
    ----------
    vectors : ndarray, shape (P, k)
    values : ndarray, shape (k,)
        θ, descending.
    residual2 : float
        ‖R‖_F², computed from one explicit product K X.
    n_products : int
        Products K V spent to find them.
    """

    vectors: np.ndarray
    values: np.ndarray
    residual2: float
    n_products: int

    @classmethod
    def none(cls, P: int, n_products: int = 0) -> Deflation:
        """No pair deflated (k = 0): the plain Hutchinson estimator; ``n_products`` spent looking for pairs."""
        return cls(np.zeros((P, 0)), np.zeros(0), 0.0, n_products)

    @property
    def k(self) -> int:
        return int(self.values.size)

    def project(self, V: np.ndarray) -> np.ndarray:
        """(I − XXᵀ) V, twice (classical Gram–Schmidt needs the second pass to stay orthogonal)."""
        X = self.vectors
        for _ in range(2):
            V = V - X @ (X.T @ V)
        return V

    def complete(self, values: np.ndarray, masses: np.ndarray, f_values: np.ndarray, size: int) -> np.ndarray:
        """Each projected probe's estimate of tr f(K), from its estimate of tr_⊥ f(K_⊥).

        A probe z' = (I − XXᵀ) z of mass m = ‖z'‖² (in the estimator's units) estimates tr_⊥ f(K_⊥)
        by its Gauss rule (``values``); the deflated part Σ_i f(θ_i) (``f_values`` = f(θ)) is added,
        and the control variate ĉ (m − (P − k)) subtracted (E m = P − k exactly), ĉ the least-squares
        coefficient of the values on the masses over the probes: it removes the spread of ‖z'‖²
        (the Hutchinson variance of the projector I − XXᵀ, ~2k) as far as the values follow it. The
        estimated coefficient makes the mean biased by O(1/n) of the variance, far below the standard
        error for the n ≥ 32 probes used here.
        """
        values = np.asarray(values, dtype=float)
        if self.k == 0:
            return values
        dm = np.asarray(masses, dtype=float) - (size - self.k)
        out = values + float(np.sum(f_values))
        if values.size > 2:
            c = dm - dm.mean()
            out = out - float(np.dot(values - values.mean(), c) / max(np.dot(c, c), _TINY)) * dm
        return out


def top_eigenpairs(
    matmat: MatMat,
    P: int,
    *,
    above: float,
    residual_budget: float,
    max_vectors: int,
    max_pairs: int | None = None,
    block: int = 64,
    rng: np.random.Generator,
) -> Deflation:
    """The leading eigenpairs of K by block Lanczos (full reorthogonalisation), verified.

    Block Lanczos from a Gaussian block of ``block`` columns runs until the leading Ritz pairs whose
    estimated residuals sum (in square) to at most ``residual_budget`` reach below ``above``, or
    the basis would exceed ``max_vectors`` columns. The kept vectors are then re-orthonormalised,
    multiplied by K once more, and the Rayleigh–Ritz step and the residual ‖K X − X Θ‖_F² are
    recomputed from that product (not from the recurrence); pairs are dropped from the bottom until
    that residual is within the budget.

    Parameters
    ----------
    matmat : callable
        V ↦ K V, (P, c) → (P, c).
    P : int
    above : float
        Deflate the eigenvalues above this (units of K).
    residual_budget : float
        Bound on ‖K X − X Θ‖_F² (units of K²).
    max_vectors : int
        Memory budget: basis vectors of length P.
    max_pairs : int, optional
        At most this many pairs.
    block : int
    rng : numpy.random.Generator

    Returns
    -------
    Deflation
        Possibly with k = 0 (nothing above ``above``, or nothing verified).
    """
    b = int(max(1, min(block, P // 4, max_vectors // 8)))  # at least ~8 block steps within the budget
    cap = int(min(max_vectors, P - b))
    if cap < 2 * b or (max_pairs is not None and max_pairs < 1):
        return Deflation.none(P)
    bl = BlockLanczos(rng.standard_normal((P, b)))
    n_products = 0
    keep = 0
    while True:
        bl.advance(matmat(bl.current()))
        n_products += 1
        m = bl.n_steps
        last = bl.exhausted or (m + 1) * b > cap
        if not last and m < 2:
            continue
        theta, S = bl._eig(None)
        theta, S = theta[::-1], S[:, ::-1]
        res2 = np.sum((bl._B[-1] @ S[(m - 1) * b:m * b, :]) ** 2, axis=0)
        wanted = int(np.sum(theta > above)) if max_pairs is None else min(int(np.sum(theta > above)), max_pairs)
        keep = min(int(np.sum(np.cumsum(res2) <= residual_budget)), wanted, m * b // 2)
        covered = 0 < keep == wanted  # every wanted pair converged (they converge from the top)
        if last or covered:
            break
    if keep == 0:
        return Deflation.none(P, n_products)
    basis = np.concatenate(bl._basis[:m], axis=1)
    X, _ = np.linalg.qr(basis @ S[:, :keep])
    W = matmat(X)
    n_products += 1
    H = X.T @ W
    vals, U = np.linalg.eigh(0.5 * (H + H.T))
    vals, U = vals[::-1], U[:, ::-1]
    X, W = X @ U, W @ U
    r2 = np.sum((W - X * vals) ** 2, axis=0)
    k = int(np.sum(np.cumsum(r2) <= residual_budget))
    k = min(k, int(np.sum(vals > 0)))
    return Deflation(np.ascontiguousarray(X[:, :k]), vals[:k].copy(), float(np.sum(r2[:k])), n_products)


# ----------------------------------------------------------------------------------------------
# conjugate gradients
# ----------------------------------------------------------------------------------------------


class NystromPreconditioner:
    """Randomized Nyström preconditioner for μ I + K (Frangella, Tropp & Udell 2023).

    K ≈ U diag(λ̂) Uᵀ of rank r from one product K Ω; the preconditioner applies
    M⁻¹ = U diag((λ̂_r + μ)/(λ̂ + μ)) Uᵀ + (I − U Uᵀ), exact on the captured subspace.

    Parameters
    ----------
    matmat : callable
        V ↦ K V.
    P : int
    rank : int
        r, the sketch size.
    rng : numpy.random.Generator
    """

    def __init__(self, matmat: MatMat, P: int, rank: int, rng: np.random.Generator):
        rank = int(min(rank, P))
        Omega, _ = np.linalg.qr(rng.standard_normal((P, rank)))
        Y = matmat(Omega)
        nu = math.sqrt(P) * np.finfo(np.float64).eps * float(np.linalg.norm(Y, 2))
        Y += nu * Omega
        C = linalg.cholesky(Omega.T @ Y, lower=False, check_finite=False)
        B = linalg.solve_triangular(C, Y.T, trans="T", lower=False, check_finite=False).T
        U, s, _ = linalg.svd(B, full_matrices=False, check_finite=False)
        self.U = U
        self.values = np.maximum(s ** 2 - nu, 0.0)
        self.rank = rank

    def apply(self, R: np.ndarray, mu: float) -> np.ndarray:
        """M⁻¹ R for the shifted operator μ I + K (μ > 0)."""
        lam_r = self.values[-1]
        c = self.U.T @ R
        return R + self.U @ (((lam_r + mu) / (self.values + mu) - 1.0)[:, None] * c)


@dataclass
class CGResult:
    """Solution of (shift·I + scale·K) X = B by conjugate gradients.

    Attributes
    ----------
    X : ndarray, shape (P, c)
    iterations : int
    residual : ndarray, shape (c,)
        True relative residuals ‖B − A X‖/‖B‖ per column, recomputed from X at the end.
    """

    X: np.ndarray
    iterations: int
    residual: np.ndarray


def block_cg(
    matmat: MatMat,
    B: np.ndarray,
    shift: float,
    scale: float = 1.0,
    *,
    rtol: float = 1e-9,
    max_iter: int = 5000,
    preconditioner: NystromPreconditioner | None = None,
) -> CGResult:
    """Solve (shift·I + scale·K) X = B, every column by its own CG, sharing the products K V.

    Converged columns stop; the true residual of every column is recomputed at the end and must be
    ≤ 10·rtol, else :class:`~finwidth.errors.ConvergenceError`.
    """
    if not shift > 0 or not scale > 0:
        raise ConfigError(f"CG needs a positive definite system: shift {shift} and scale {scale} must be > 0")
    B = np.asarray(B, dtype=np.float64)
    one = B.ndim == 1
    B2 = B[:, None] if one else B
    P, c = B2.shape
    mu = shift / scale

    def A(V: np.ndarray) -> np.ndarray:
        return shift * V + scale * matmat(V)

    def Minv(R: np.ndarray) -> np.ndarray:
        return R if preconditioner is None else preconditioner.apply(R, mu) / scale

    X = np.zeros_like(B2)
    bnorm = np.linalg.norm(B2, axis=0)
    bnorm_safe = np.where(bnorm > 0, bnorm, 1.0)
    R = B2.copy()
    Z = Minv(R)
    Pd = Z.copy()
    rz = np.einsum("ij,ij->j", R, Z)
    active = np.flatnonzero(bnorm > 0)
    it = 0
    while active.size and it < max_iter:
        it += 1
        AP = A(Pd[:, active])
        denom = np.einsum("ij,ij->j", Pd[:, active], AP)
        step = rz[active] / denom
        X[:, active] += Pd[:, active] * step
        R[:, active] -= AP * step
        rn = np.linalg.norm(R[:, active], axis=0) / bnorm_safe[active]
        done = rn <= rtol
        Zs = Minv(R[:, active])
        rz_new = np.einsum("ij,ij->j", R[:, active], Zs)
        Pd[:, active] = Zs + Pd[:, active] * (rz_new / rz[active])
        rz[active] = rz_new
        active = active[~done]
    true_res = np.linalg.norm(B2 - A(X), axis=0) / bnorm_safe
    if np.any(true_res > 10 * rtol):
        raise ConvergenceError(
            f"conjugate gradients did not reach relative residual {rtol:g} in {it} iterations "
            f"(worst true residual {float(np.max(true_res)):.3g})",
            suggestion="raise max_iter, use a preconditioner (a larger rank), or a larger temperature",
        )
    return CGResult(X=X[:, 0] if one else X, iterations=it, residual=true_res)
