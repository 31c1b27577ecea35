"""Minimisation over symmetric positive-definite matrices: the solver of every matrix order parameter.

The multi-output theory (a D×D matrix Q), the convolutional theory (an Ñ×Ñ patch–patch Q) and the deep
equivalent-Wishart forms all minimise an action S(Q) over the cone of n×n symmetric positive-definite
matrices, with S → ∞ at the boundary of the cone and at infinity. :func:`minimize_spd` does that from a
callable returning S and its gradient, and returns a verified stationary point or raises
:class:`~finwidth.errors.ConvergenceError`.

Gradient convention
-------------------
``fun(Q)`` returns ``(S, G)`` (or ``(S, G, scale)``, below) where G is the symmetric n×n matrix with

    dS = tr(G dQ) = Σ_ab G_ab dQ_ab      for every *symmetric* perturbation dQ.

Every entry of the matrix counts once: moving the off-diagonal pair Q_ab = Q_ba (a ≠ b) together by ε
changes S by 2 G_ab ε, so the derivative with respect to that single free variable is 2 G_ab, while the
derivative with respect to a diagonal entry Q_aa is G_aa. This is the gradient of S written for
unconstrained matrices and symmetrised: S = tr(A Q) gives G = (A + Aᵀ)/2, S = log det Q gives G = Q⁻¹,
S = tr(B Q⁻¹) gives G = −Q⁻¹ B Q⁻¹. (deepbays' ``FC_1HL_multiclass`` differentiates with respect to the
upper-triangle entries instead, which doubles the off-diagonal components.)

Parametrisation: the matrix logarithm
-------------------------------------
The unknowns are X = log Q (symmetric, unconstrained), Q = exp(X), stored as the n(n+1)/2 entries of
the upper triangle with off-diagonals scaled by √2, so that the Euclidean inner product of the vector
is the Frobenius inner product of the matrices. Why the logarithm rather than a Cholesky factor:

* it treats every basis alike: Q → O Q Oᵀ for an orthogonal O maps X → O X Oᵀ, so no ordering of
  outputs or patches is preferred, and the identity (infinite width) is X = 0;
* the order parameters are scales: log-coordinates make multiplicative changes of Q additive (the
  scalar solvers work in log Q̄ for the same reason), and the prior term tr Q − log det Q becomes
  tr e^X − tr X, strictly convex in X with its minimum at X = 0;
* S → ∞ at the boundary of the cone becomes S → ∞ as ‖X‖ → ∞: no constraint is left.

The chain rule is the Daleckii–Krein formula: with X = V diag(x) Vᵀ,
∂S/∂X = V [E ∘ (Vᵀ G V)] Vᵀ, E_ab = (e^{x_a} − e^{x_b})/(x_a − x_b) (= e^{x_a} on the diagonal), written
as e^{(x_a + x_b)/2} sinh(d)/d with d = (x_a − x_b)/2 so that nearly equal eigenvalues lose no digits.
One ``eigh`` of an n×n matrix per evaluation: nothing next to the evaluation of S for n ≤ ~50.

Algorithm
---------
1. L-BFGS (memory 20) with a strong-Wolfe line search (bracketing and safeguarded interpolation; a
   non-finite S counts as "too far"), until the residual is below ``switch`` (1e-6), the line search
   stalls at round-off, or the residual has not halved in 50 iterations (ill-conditioning).
2. Newton trust region with a truncated (Steihaug–Toint) conjugate-gradient inner solver. Hessian-vector
   products are forward differences of the analytic gradient (one evaluation each); near the solution,
   where changes of S are at round-off, a step is accepted when it lowers the stationarity residual.
   This reaches the round-off floor of the gradient in a few iterations, which L-BFGS alone cannot.
3. Verification: the residual below; optionally (``check_minimum``) the smallest eigenvalue of the
   Hessian in X (dense by forward differences of the gradient, which vanishes there, for up to 300
   unknowns: one evaluation per unknown; Lanczos beyond). A saddle
   (negative curvature) is left along its most negative direction and the minimisation resumed.

Residual: ``‖Q^{1/2} G Q^{1/2}‖_F / scale``. Q^{1/2} G Q^{1/2} is the change of S per relative change of
Q (dQ = Q^{1/2} E Q^{1/2} gives dS = tr(Q^{1/2} G Q^{1/2} E)), hence invariant under Q → A Q Aᵀ
reparametrisations. ``scale`` is the third element returned by ``fun`` when it returns three: the
size of the terms that cancel in Q^{1/2} G Q^{1/2} (e.g. N (‖Q‖_F + ‖1‖_F) + the size of the data terms),
which makes the residual a relative one; otherwise the residual is absolute (scale 1).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import linalg
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from finwidth.errors import ConfigError, ConvergenceError

__all__ = ["GradientCheck", "SPDSolution", "check_gradient", "minimize_spd", "smat", "stationarity_residual", "svec"]

_EPS = np.finfo(np.float64).eps
_SQRT2 = math.sqrt(2.0)
#: largest number of unknowns for which the curvature check builds the dense finite-difference Hessian
DENSE_HESSIAN_MAX = 300
#: relative Hessian eigenvalue below which a stationary point counts as a saddle
SADDLE_RTOL = 1e-7


# ----------------------------------------------------------------------------------------------
# isometric vectorisation of symmetric matrices
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _triu(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = np.triu_indices(n)
    weights = np.where(rows == cols, 1.0, _SQRT2)
    for a in (rows, cols, weights):
        a.setflags(write=False)
    return rows, cols, weights


def svec(M: np.ndarray) -> np.ndarray:
    """Upper triangle of a symmetric matrix as a vector, off-diagonals times √2 (an isometry).

    ``svec(A) @ svec(B) == tr(A B)`` for symmetric A, B. Inverse: :func:`smat`.
    """
    M = np.asarray(M, dtype=np.float64)
    rows, cols, w = _triu(M.shape[0])
    return M[rows, cols] * w


def smat(v: np.ndarray, n: int | None = None) -> np.ndarray:
    """The symmetric matrix of a vector made by :func:`svec`."""
    v = np.asarray(v, dtype=np.float64)
    if n is None:
        n = int(round((math.sqrt(8 * v.size + 1) - 1) / 2))
    rows, cols, w = _triu(n)
    M = np.zeros((n, n))
    M[rows, cols] = v / w
    M[cols, rows] = v / w
    return M


def _exp_divided_differences(x: np.ndarray) -> np.ndarray:
    """E_ab = (e^{x_a} − e^{x_b})/(x_a − x_b), e^{x_a} on the diagonal, without cancellation."""
    half = 0.5 * (x[:, None] - x[None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        sinhc = np.where(half == 0.0, 1.0, np.sinh(half) / np.where(half == 0.0, 1.0, half))
    return np.exp(0.5 * (x[:, None] + x[None, :])) * sinhc


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SPDSolution:
    """A verified minimiser of S over symmetric positive-definite matrices.

    Attributes
    ----------
    Q : ndarray, shape (n, n)
        The minimiser (symmetric positive definite).
    value : float
        S(Q).
    grad : ndarray, shape (n, n)
        ∂S/∂Q at Q (module docstring for the convention).
    residual : float
        ‖Q^{1/2} G Q^{1/2}‖_F / scale, at most ``tol``.
    scale : float
        The scale returned by ``fun`` at Q (1 when it returns none).
    n_evaluations : int
        Calls of ``fun`` (line searches, Hessian-vector products and the curvature check included).
    n_iterations : int
        L-BFGS plus Newton iterations.
    min_curvature : float or None
        Smallest eigenvalue of the Hessian of S in the log-coordinates X = log Q, divided by the
        largest in absolute value (None when not checked). Positive: a strict local minimum; near 0: a
        flat direction; negative would be a saddle (never returned).
    log_Q : ndarray, shape (n, n)
        X = log Q, the solver's own coordinates.
    message : str
        How the solver stopped.
    """

    Q: np.ndarray
    value: float
    grad: np.ndarray
    residual: float
    scale: float
    n_evaluations: int
    n_iterations: int
    min_curvature: float | None
    log_Q: np.ndarray = field(repr=False)
    message: str = ""


@dataclass(frozen=True)
class GradientCheck:
    """Result of :func:`check_gradient`.

    Attributes
    ----------
    max_rel_error : float
        Largest |analytic − numeric| / max(|analytic|, |numeric|, floor) over the directions.
    analytic : ndarray
        tr(G E) for each direction E.
    numeric : ndarray
        5-point central differences of S along each direction.
    """

    max_rel_error: float
    analytic: np.ndarray
    numeric: np.ndarray


# ----------------------------------------------------------------------------------------------
# the problem in log coordinates
# ----------------------------------------------------------------------------------------------
@dataclass
class _Point:
    x: np.ndarray
    value: float
    gx: np.ndarray | None = None  # gradient in the isometric log coordinates
    Q: np.ndarray | None = None
    G: np.ndarray | None = None
    residual: float = math.inf
    scale: float = 1.0

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)


class _LogProblem:
    """S as a function of x = svec(log Q), with its gradient and the verified residual."""

    def __init__(self, fun: Callable, n: int, what: str, max_evaluations: int):
        self.fun = fun
        self.n = n
        self.what = what
        self.max_evaluations = max_evaluations
        self.n_evaluations = 0

    def evaluate(self, x: np.ndarray) -> _Point:
        if self.n_evaluations >= self.max_evaluations:
            raise _Budget()
        X = smat(x, self.n)
        if not np.all(np.isfinite(X)):
            return _Point(x=x, value=math.inf)
        w, V = np.linalg.eigh(X)
        if w[-1] > 700.0 or w[0] < -700.0:  # e^{±700}: Q is no longer representable
            return _Point(x=x, value=math.inf)
        ew = np.exp(w)
        Q = (V * ew) @ V.T
        Q = 0.5 * (Q + Q.T)
        self.n_evaluations += 1
        out = self.fun(Q)
        value, G, scale = _unpack(out, self.n, self.what)
        if not math.isfinite(value) or G is None or not np.all(np.isfinite(G)):
            return _Point(x=x, value=math.inf)
        Gt = V.T @ G @ V
        gX = V @ (_exp_divided_differences(w) * Gt) @ V.T
        root = np.sqrt(ew)
        residual = float(np.linalg.norm(root[:, None] * Gt * root[None, :])) / scale
        return _Point(x=x, value=value, gx=svec(0.5 * (gX + gX.T)), Q=Q, G=G, residual=residual, scale=scale)


class _Budget(Exception):
    """The evaluation budget is spent."""


def _unpack(out, n: int, what: str) -> tuple[float, np.ndarray | None, float]:
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise ConfigError(f"{what}: fun(Q) must return (value, grad) or (value, grad, scale)")
    value = float(out[0])
    if not math.isfinite(value):
        return value, None, 1.0
    G = np.asarray(out[1], dtype=np.float64)
    if G.shape != (n, n):
        raise ConfigError(f"{what}: fun(Q) returned a gradient of shape {G.shape}, expected ({n}, {n})")
    G = 0.5 * (G + G.T)
    scale = 1.0
    if len(out) == 3:
        scale = float(out[2])
        if not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"{what}: fun(Q) returned a non-positive or non-finite scale {scale!r}")
    return value, G, scale


# ----------------------------------------------------------------------------------------------
# L-BFGS with a strong-Wolfe line search
# ----------------------------------------------------------------------------------------------
def _line_search(prob: _LogProblem, p0: _Point, d: np.ndarray, a1: float, c1: float = 1e-4, c2: float = 0.9,
                 max_steps: int = 30) -> _Point | None:
    """A point satisfying the strong Wolfe conditions along d (Nocedal & Wright, Alg. 3.5/3.6), or None."""
    f0, d0 = p0.value, float(p0.gx @ d)
    if not d0 < 0:
        return None

    def at(a: float) -> tuple[_Point, float]:
        pt = prob.evaluate(p0.x + a * d)
        return pt, (float(pt.gx @ d) if pt.finite else math.nan)

    def zoom(lo, flo, dlo, hi, fhi, dhi, steps):
        for _ in range(steps):
            width = hi - lo
            a = None
            if math.isfinite(fhi):  # quadratic through f(lo), f'(lo), f(hi)
                denom = 2.0 * (fhi - flo - dlo * width)
                if denom > 0:
                    a = lo - dlo * width * width / denom
            if a is None or not (min(lo, hi) + 0.1 * abs(width) <= a <= max(lo, hi) - 0.1 * abs(width)):
                a = lo + 0.5 * width
            pt, da = at(a)
            if not pt.finite or pt.value > f0 + c1 * a * d0 or pt.value >= flo:
                hi, fhi, dhi = a, pt.value, da
            else:
                if abs(da) <= -c2 * d0:
                    return pt
                if da * (hi - lo) >= 0:
                    hi, fhi, dhi = lo, flo, dlo
                lo, flo, dlo = a, pt.value, da
                best[0] = pt
            if abs(hi - lo) * np.max(np.abs(d)) < 1e-15 * (1.0 + np.max(np.abs(p0.x))):
                break
        return None

    best = [None]
    a_prev, f_prev, d_prev = 0.0, f0, d0
    a = a1
    for i in range(max_steps):
        pt, da = at(a)
        if not pt.finite or pt.value > f0 + c1 * a * d0 or (i > 0 and pt.value >= f_prev):
            res = zoom(a_prev, f_prev, d_prev, a, pt.value, da, max_steps)
            return res if res is not None else best[0]
        if abs(da) <= -c2 * d0:
            return pt
        best[0] = pt
        if da >= 0:
            res = zoom(a, pt.value, da, a_prev, f_prev, d_prev, max_steps)
            return res if res is not None else best[0]
        a_prev, f_prev, d_prev = a, pt.value, da
        a *= 2.0
    return best[0]


def _lbfgs(prob: _LogProblem, p: _Point, tol: float, max_iter: int, memory: int = 20,
           patience: int = 50) -> tuple[_Point, int]:
    """L-BFGS until the residual is below ``tol``, the line search stalls, or the residual has not
    halved in ``patience`` iterations (an ill-conditioned problem: Newton is faster from there)."""
    S: list[np.ndarray] = []
    Y: list[np.ndarray] = []
    it = 0
    best_res, best_it = p.residual, 0
    while it < max_iter and p.residual > tol and it - best_it < patience:
        # two-loop recursion
        q = p.gx.copy()
        alphas = []
        for s, y in zip(reversed(S), reversed(Y)):
            a = float(s @ q) / float(y @ s)
            alphas.append(a)
            q -= a * y
        if S:
            q *= float(S[-1] @ Y[-1]) / float(Y[-1] @ Y[-1])
        else:
            q /= max(1.0, float(np.linalg.norm(p.gx)))  # first step: length at most 1 in log Q
        for (s, y), a in zip(zip(S, Y), reversed(alphas)):
            b = float(y @ q) / float(y @ s)
            q += (a - b) * s
        d = -q
        if not float(d @ p.gx) < 0:  # lost descent (round-off): restart from steepest descent
            S.clear()
            Y.clear()
            d = -p.gx / max(1.0, float(np.linalg.norm(p.gx)))
        new = _line_search(prob, p, d, 1.0)
        it += 1
        if new is None or not new.value <= p.value:
            break
        s, y = new.x - p.x, new.gx - p.gx
        if float(s @ y) > 1e-12 * float(np.linalg.norm(s)) * float(np.linalg.norm(y)):
            S.append(s)
            Y.append(y)
            if len(S) > memory:
                S.pop(0)
                Y.pop(0)
        p = new
        if p.residual < 0.5 * best_res:
            best_res, best_it = p.residual, it
    return p, it


# ----------------------------------------------------------------------------------------------
# Newton trust region, truncated CG, finite-difference Hessian-vector products
# ----------------------------------------------------------------------------------------------
def _hessvec(prob: _LogProblem, p: _Point, v: np.ndarray) -> np.ndarray | None:
    nv = float(np.linalg.norm(v))
    if nv == 0:
        return np.zeros_like(v)
    h = math.sqrt(_EPS) * (1.0 + float(np.max(np.abs(p.x))))
    q = prob.evaluate(p.x + (h / nv) * v)
    if not q.finite:
        q = prob.evaluate(p.x - (h / nv) * v)
        if not q.finite:
            return None
        return (p.gx - q.gx) * (nv / h)
    return (q.gx - p.gx) * (nv / h)


def _steihaug(prob: _LogProblem, p: _Point, radius: float, max_cg: int) -> tuple[np.ndarray, float] | None:
    """Approximate minimiser of the quadratic model within ‖s‖ ≤ radius; returns (s, predicted decrease)."""
    g = p.gx
    gnorm = float(np.linalg.norm(g))
    forcing = min(0.5, math.sqrt(gnorm)) * gnorm
    s = np.zeros_like(g)
    r = g.copy()
    d = -r
    Hs = np.zeros_like(g)
    for _ in range(max_cg):
        Hd = _hessvec(prob, p, d)
        if Hd is None:
            return None
        dHd = float(d @ Hd)
        if dHd <= 0:  # negative curvature: go to the boundary
            tau = _to_boundary(s, d, radius)
            s, Hs = s + tau * d, Hs + tau * Hd
            break
        a = float(r @ r) / dHd
        if float(np.linalg.norm(s + a * d)) >= radius:
            tau = _to_boundary(s, d, radius)
            s, Hs = s + tau * d, Hs + tau * Hd
            break
        s, Hs = s + a * d, Hs + a * Hd
        r_new = r + a * Hd
        if float(np.linalg.norm(r_new)) <= forcing:
            break
        d = -r_new + (float(r_new @ r_new) / float(r @ r)) * d
        r = r_new
    pred = -(float(g @ s) + 0.5 * float(s @ Hs))
    return s, pred


def _to_boundary(s: np.ndarray, d: np.ndarray, radius: float) -> float:
    a, b, c = float(d @ d), 2.0 * float(s @ d), float(s @ s) - radius * radius
    return (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)


def _newton(prob: _LogProblem, p: _Point, tol: float, max_iter: int) -> tuple[_Point, int]:
    m = p.x.size
    radius = max(1.0, float(np.linalg.norm(p.gx)))
    radius = min(radius, 2.0)
    it = 0
    stalls = 0
    while it < max_iter and p.residual > tol and stalls < 4:
        it += 1
        step = _steihaug(prob, p, radius, max_cg=min(m, 200) + 5)
        if step is None:
            break
        s, pred = step
        new = prob.evaluate(p.x + s)
        if not new.finite:
            radius *= 0.25
            stalls += 1
            continue
        ared = p.value - new.value
        noise = 100.0 * _EPS * (abs(p.value) + 1.0)
        at_roundoff = pred <= noise or abs(ared) <= noise
        if at_roundoff:
            # changes of S at round-off: judge the step by the stationarity residual
            accept = new.residual < p.residual
            rho = 1.0 if accept else 0.0
        else:
            rho = ared / pred
            accept = rho > 1e-4
        snorm = float(np.linalg.norm(s))
        if rho < 0.25:
            radius = 0.25 * snorm
        elif rho > 0.75 and snorm >= 0.99 * radius:
            radius = min(2.0 * radius, 100.0)
        if accept:
            progress = not at_roundoff or new.residual < 0.5 * p.residual
            stalls = 0 if progress else stalls + 1
            p = new
        else:
            stalls += 1
    return p, it


# ----------------------------------------------------------------------------------------------
# curvature check
# ----------------------------------------------------------------------------------------------
def _curvature(prob: _LogProblem, p: _Point) -> tuple[float, np.ndarray | None]:
    """(smallest / largest |eigenvalue| of the Hessian in x, the eigenvector of the smallest)."""
    m = p.x.size
    if m <= DENSE_HESSIAN_MAX:
        H = np.empty((m, m))
        for j in range(m):
            e = np.zeros(m)
            e[j] = 1.0
            hv = _hessvec(prob, p, e)  # forward differences: the gradient vanishes at p
            if hv is None:
                return math.nan, None
            H[:, j] = hv
        H = 0.5 * (H + H.T)
        w, U = linalg.eigh(H)
        top = float(np.max(np.abs(w)))
        if top == 0:
            return 0.0, U[:, 0]
        return float(w[0]) / top, U[:, 0]

    def mv(v):
        hv = _hessvec(prob, p, np.asarray(v, dtype=np.float64).ravel())
        if hv is None:
            raise _Budget()
        return hv

    op = LinearOperator((m, m), matvec=mv, dtype=np.float64)
    try:
        top = float(abs(eigsh(op, k=1, which="LM", tol=1e-3, maxiter=50 * m, return_eigenvectors=False)[0]))
        vals, vecs = eigsh(op, k=1, which="SA", tol=1e-4, maxiter=50 * m)
    except ArpackNoConvergence:
        return math.nan, None
    if top == 0:
        return 0.0, vecs[:, 0]
    return float(vals[0]) / top, vecs[:, 0]


def _escape(prob: _LogProblem, p: _Point, direction: np.ndarray) -> _Point | None:
    """A point of lower S along ± a negative-curvature direction, or None."""
    u = direction / float(np.linalg.norm(direction))
    noise = 100.0 * _EPS * (abs(p.value) + 1.0)
    for t in (0.01, 0.03, 0.1, 0.3, 1.0):
        for sign in (1.0, -1.0):
            q = prob.evaluate(p.x + sign * t * u)
            if q.finite and q.value < p.value - noise:
                return q
    return None


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------
def _check_start(Q0, what: str) -> np.ndarray:
    Q0 = np.asarray(Q0, dtype=np.float64)
    if Q0.ndim != 2 or Q0.shape[0] != Q0.shape[1] or Q0.shape[0] == 0:
        raise ConfigError(f"{what}: the starting matrix must be square (n, n) with n ≥ 1, got shape {Q0.shape}")
    if not np.all(np.isfinite(Q0)):
        raise ConfigError(f"{what}: the starting matrix contains NaN or inf")
    asym = float(np.max(np.abs(Q0 - Q0.T)))
    if asym > 1e-10 * max(1.0, float(np.max(np.abs(Q0)))):
        raise ConfigError(f"{what}: the starting matrix is not symmetric (max |Q0 − Q0ᵀ| = {asym:.3g})")
    Q0 = 0.5 * (Q0 + Q0.T)
    w = linalg.eigvalsh(Q0)
    if not w[0] > 0:
        raise ConfigError(
            f"{what}: the starting matrix is not positive definite (smallest eigenvalue {w[0]:.3g}); "
            "start from the identity or another symmetric positive-definite matrix"
        )
    return Q0


def stationarity_residual(Q, G, scale: float = 1.0) -> float:
    """‖Q^{1/2} G Q^{1/2}‖_F / scale: the residual :func:`minimize_spd` verifies, for answers found otherwise
    (closed forms).

    Parameters
    ----------
    Q : array_like, shape (n, n)
        Symmetric positive definite.
    G : array_like, shape (n, n)
        ∂S/∂Q at Q (module docstring for the convention).
    scale : float
        Size of the terms that cancel in Q^{1/2} G Q^{1/2}.
    """
    w, V = linalg.eigh(np.asarray(Q, dtype=np.float64))
    if not w[0] > 0:
        raise ConfigError(f"stationarity_residual: Q is not positive definite (smallest eigenvalue {w[0]:.3g})")
    Gt = V.T @ (0.5 * (np.asarray(G) + np.asarray(G).T)) @ V
    root = np.sqrt(w)
    return float(np.linalg.norm(root[:, None] * Gt * root[None, :])) / float(scale)


def minimize_spd(
    fun: Callable[[np.ndarray], tuple],
    Q0,
    *,
    tol: float = 1e-10,
    switch: float = 1e-6,
    max_iter: int = 2000,
    max_evaluations: int = 100_000,
    check_minimum: bool = True,
    what: str = "the matrix order parameter",
) -> SPDSolution:
    """Minimise S(Q) over symmetric positive-definite n×n matrices; verified or ConvergenceError.

    Parameters
    ----------
    fun : callable
        ``fun(Q) -> (S, G)`` or ``(S, G, scale)``: the value (float; ``inf`` where S is not defined),
        the symmetric gradient G = ∂S/∂Q with dS = tr(G dQ) (module docstring: each matrix entry counts
        once) and optionally a positive ``scale`` that makes the residual relative.
    Q0 : array_like, shape (n, n)
        Symmetric positive-definite start (ConfigError otherwise). n = 1 is allowed.
    tol : float
        Largest accepted residual ‖Q^{1/2} G Q^{1/2}‖_F / scale.
    switch : float
        Residual at which L-BFGS hands over to the Newton phase (it also hands over when its residual
        has not halved in 50 iterations).
    max_iter : int
        Iterations of each phase (L-BFGS, Newton).
    max_evaluations : int
        Budget of calls of ``fun``.
    check_minimum : bool
        Compute the Hessian's smallest eigenvalue at the answer (in log coordinates; one evaluation per
        unknown up to 300 unknowns, a Lanczos run beyond) and leave saddle points.
    what : str
        Name of the problem, used in error messages.

    Returns
    -------
    SPDSolution

    Raises
    ------
    ConfigError
        Q0 not symmetric positive definite, or ``fun`` returns the wrong shapes.
    ConvergenceError
        S not finite at the start, no point with residual ≤ ``tol`` within the budget, or a saddle
        that could not be left; the message gives the residual reached and what to try.
    """
    Q0 = _check_start(Q0, what)
    if not (math.isfinite(tol) and tol > 0):
        raise ConfigError(f"tol must be positive and finite, got {tol!r}")
    n = Q0.shape[0]
    w, V = linalg.eigh(Q0)
    prob = _LogProblem(fun, n, what, int(max_evaluations))
    p = prob.evaluate(svec((V * np.log(w)) @ V.T))
    if not p.finite:
        raise ConvergenceError(f"{what}: the action is not finite at the starting matrix",
                               suggestion="start from another SPD matrix (the identity, or a scalar multiple)")
    iterations = 0
    min_curv = None
    message = ""
    try:
        for _escape_round in range(4):
            p, it = _lbfgs(prob, p, max(tol, switch), max_iter)
            iterations += it
            if p.residual > tol:
                p, it = _newton(prob, p, tol, max_iter)
                iterations += it
            if p.residual > tol:
                raise ConvergenceError(
                    f"{what}: no stationary point reached after {iterations} iterations and "
                    f"{prob.n_evaluations} evaluations (S = {p.value:.17g})",
                    residual=p.residual,
                    suggestion="check the gradient with finwidth.theory.spd.check_gradient, rescale the problem "
                    "to O(1) entries, or start from another SPD matrix",
                )
            message = "converged"
            if not check_minimum:
                break
            min_curv, u = _curvature(prob, p)
            if not math.isfinite(min_curv) or min_curv >= -SADDLE_RTOL:
                break
            moved = _escape(prob, p, u) if u is not None else None
            if moved is None:
                raise ConvergenceError(
                    f"{what}: the stationary point found is a saddle (relative Hessian eigenvalue {min_curv:.3g}) "
                    "and no lower point was found along its negative-curvature direction",
                    residual=p.residual, suggestion="start from another SPD matrix",
                )
            p = moved
            min_curv = None
        else:
            raise ConvergenceError(f"{what}: the solver kept landing on saddle points", residual=p.residual,
                                   suggestion="start from another SPD matrix")
    except _Budget:
        raise ConvergenceError(
            f"{what}: the evaluation budget ({max_evaluations}) ran out", residual=p.residual,
            suggestion="raise max_evaluations, or start closer to the solution",
        ) from None
    return SPDSolution(
        Q=p.Q, value=p.value, grad=p.G, residual=p.residual, scale=p.scale, n_evaluations=prob.n_evaluations,
        n_iterations=iterations, min_curvature=min_curv, log_Q=smat(p.x, n), message=message,
    )


def check_gradient(
    fun: Callable[[np.ndarray], tuple],
    Q,
    *,
    n_directions: int = 6,
    rel_step: float = 1e-3,
    seed: int = 0,
) -> GradientCheck:
    """Compare the gradient returned by ``fun`` with finite differences of its value (a test utility).

    Directions E = Q^{1/2} Z Q^{1/2}, Z random symmetric with ‖Z‖_F = 1 (so Q ± t E stays positive
    definite for small t); the numeric derivative is the 5-point central difference of S(Q + t E) with
    t = ``rel_step``, the analytic one tr(G E) (module docstring: this is the convention being checked).

    Returns
    -------
    GradientCheck
    """
    Q = _check_start(Q, "check_gradient")
    n = Q.shape[0]
    rng = np.random.default_rng(seed)
    root = linalg.sqrtm(Q).real
    value, G, _ = _unpack(fun(Q), n, "check_gradient")
    if G is None:
        raise ConfigError("check_gradient: the action is not finite at Q")
    analytic, numeric = [], []
    for _ in range(n_directions):
        Z = rng.standard_normal((n, n))
        Z = Z + Z.T
        Z /= np.linalg.norm(Z)
        E = root @ Z @ root
        E = 0.5 * (E + E.T)
        h = rel_step
        f = [float(_unpack(fun(Q + k * h * E), n, "check_gradient")[0]) for k in (-2, -1, 1, 2)]
        numeric.append((f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h))
        analytic.append(float(np.sum(G * E)))
    a, b = np.array(analytic), np.array(numeric)
    floor = 1e-12 * max(1.0, abs(value))
    err = np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    return GradientCheck(max_rel_error=float(np.max(err)), analytic=a, numeric=b)
