"""Nested deep renormalised kernel (Pacelli et al. §6.2): action, analytic gradient, solver.

The renormalised kernels are K_l^R = (Q̄_l/λ_l) κ(K_{l−1}^R) + σ²_{b,l}, K_0^R = C (the input
kernel), and the action (normalised as −2 log Z up to constants, as in :mod:`~finwidth.theory.spectral`)

    S(Q̄) = Σ_l N_l (Q̄_l − log Q̄_l − 1) + log det(T + K_L^R) + yᵀ (T + K_L^R)⁻¹ y.

Each evaluation costs one Cholesky factorisation of T + K_L^R, its inverse, the forward recursion
and its adjoint (:func:`finwidth.kernels.propagate_vjp`); the input kernel C and κ(C) (which does
not depend on Q̄) are built once.

The solver works in x = log Q̄. It starts from the product-form saddle (exact for relu and linear,
close for erf) with that form's Hessian (O(P) in the output eigenbasis), and takes quasi-Newton
steps: the prior part of the Hessian, diag(N_l Q̄_l), is exact; the data part starts from the
product form's and is corrected by symmetric-rank-one secant updates. With L ≤ a few unknowns and
a good start this needs a handful of factorisations. If it stalls, L-BFGS from the best point
takes over, and the quasi-Newton steps polish its answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg, optimize

from finwidth import kernels
from finwidth.errors import ConvergenceError

#: relative stationarity residual the solver aims at, and the one it accepts
TARGET_RESIDUAL = 1e-9
ACCEPT_RESIDUAL = 1e-7


@dataclass
class NestedPoint:
    """The action at one point x = log Q̄: value, gradient in x, and the size of the gradient's terms."""

    x: np.ndarray
    action: float
    grad: np.ndarray
    scale: np.ndarray
    top_curvature: float = math.nan  # ∂²S_data/∂x_L², when asked for
    trace_inv: float = math.nan  # Tr (T + K_L^R)⁻¹ (for the effective degrees of freedom P − T Tr(·))

    @property
    def residual(self) -> float:
        """max_l |∂S/∂x_l| / (size of its terms): the relative stationarity residual."""
        return float(np.max(np.abs(self.grad) / self.scale))


def nested_kernels(network, qbar, X, X_test=None) -> list[kernels.KernelBlocks]:
    """[K_0^R = C, K_1^R, …, K_L^R] on X (and X_test) at order parameters Q̄ (biases un-renormalised)."""
    bias = network.bias_variances()
    blocks = kernels.input_kernel(network, X, X_test)
    chain = [blocks]
    for l in range(1, network.depth + 1):
        blocks = kernels.propagate(blocks, network.activation, qbar[l - 1] / network.priors[l], bias[l])
        chain.append(blocks)
    return chain


def _fill_upper(A: np.ndarray, rows: int = 256) -> None:
    """Copy the lower triangle of a square matrix onto its upper triangle, in place, by row blocks."""
    P = A.shape[0]
    for i0 in range(0, P, rows):
        i1 = min(i0 + rows, P)
        A[i0:i1, i1:] = A[i1:, i0:i1].T
        d = A[i0:i1, i0:i1]
        iu = np.triu_indices(i1 - i0, 1)
        d[iu] = d.T[iu]


class NestedAction:
    """S(log Q̄) and its analytic gradient on one training set; counts the Cholesky factorisations.

    Parameters
    ----------
    network : finwidth.Network
    X : array (P, N_0)
    y : array (P,)
    temperature : float
        T ≥ 0 (T = 0 needs a non-singular K_L^R).
    device : torch.device or None
        Factorise T + K_L^R on this device (:func:`finwidth.theory.device_linalg.cholesky_parts`); the kernel
        recursion and its adjoint (O(P²) per step) stay on the CPU.
    """

    def __init__(self, network, X, y, temperature: float, device=None):
        self.network = network
        # K_1^R = Q̄_1 κ(C)/λ_1 + σ²_b,1: the first layer's κ does not depend on Q̄ and is computed once
        C = kernels.KernelBlocks(kernels.input_kernel(network, X).train)
        self.kappa1 = kernels.propagate(C, network.activation, 1.0 / network.priors[1], inplace=True).train
        self.y = np.asarray(y, dtype=np.float64)
        self.T = float(temperature)
        self.widths = np.array(network.widths, dtype=float)
        self.n_factorizations = 0
        self.device = device

    def nngp_kernel(self) -> np.ndarray:
        """The NNGP output kernel K_L (all Q̄_l = 1), built from the stored first layer."""
        return self._chain(np.ones(self.network.depth))[-1]

    def _chain(self, qbar: np.ndarray) -> list:
        """[None, K_1^R, …, K_L^R] (the input kernel is not needed once κ(C) is stored)."""
        net = self.network
        bias = net.bias_variances()
        K1 = self.kappa1 * qbar[0]
        if bias[1]:
            K1 += bias[1]
        chain = [None, K1]
        for l in range(2, net.depth + 1):
            nxt = kernels.propagate(kernels.KernelBlocks(chain[-1]), net.activation, qbar[l - 1] / net.priors[l], bias[l])
            chain.append(nxt.train)
        return chain

    def evaluate(self, x: np.ndarray, *, top_curvature: bool = False) -> NestedPoint | None:
        """The action at x = log Q̄; None where T + K_L^R is not positive definite.

        ``top_curvature``: also the exact second derivative of the data term along x_L (O(P²)).
        """
        net = self.network
        x = np.asarray(x, dtype=float)
        qbar = np.exp(x)
        chain = self._chain(qbar)
        KR = chain[-1]
        G = KR.copy()
        if self.T > 0:
            G.flat[:: G.shape[0] + 1] += self.T
        self.n_factorizations += 1
        parts = self._factorize(G)
        if parts is None:
            return None
        logdet, a, Ginv = parts
        S = float(np.sum(self.widths * (qbar - x - 1.0))) + logdet + float(self.y @ a)
        if not math.isfinite(S):
            return None
        trace_inv = float(np.trace(Ginv))
        bias = net.bias_variances()
        # size of the data terms of the top layer's equation, for the relative residual
        b = bias[-1]
        aK = float(a @ KR @ a) - b * float(a.sum()) ** 2
        scale_out = abs(float(np.vdot(Ginv, KR)) - b * float(Ginv.sum())) + abs(aK)
        curv = self._top_curvature(Ginv, a, b) if top_curvature else math.nan
        gam = linalg.blas.dger(-1.0, a, a, a=Ginv.T, overwrite_a=1).T  # ∂D/∂K_L^R = G⁻¹ − a aᵀ, in place
        grad = np.empty_like(x)
        for l in range(net.depth, 0, -1):
            # Σ Γ ∘ (K_l^R − σ²_b,l) = Σ Γ ∘ (Q̄_l/λ_l) κ(K_{l−1}^R)
            grad[l - 1] = self.widths[l - 1] * (qbar[l - 1] - 1.0) + float(np.vdot(gam, chain[l])) - bias[l] * float(gam.sum())
            if l > 1:
                gam = kernels.propagate_vjp(chain[l - 1], net.activation, gam, qbar[l - 1] / net.priors[l])
        return NestedPoint(x=x, action=S, grad=grad, scale=self.widths * (qbar + 1.0) + scale_out, top_curvature=curv,
                           trace_inv=trace_inv)

    def _factorize(self, G: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
        """(log det G, G⁻¹y, G⁻¹) with G = T + K_L^R (overwritten), on the CPU or the device; None if G is not
        positive definite."""
        if self.device is not None:
            from finwidth.theory import device_linalg

            return device_linalg.cholesky_parts(G, self.y, self.device)
        try:
            cf = linalg.cho_factor(G, lower=True, overwrite_a=True, check_finite=False)
        except linalg.LinAlgError:
            return None
        a = linalg.cho_solve(cf, self.y, check_finite=False)
        logdet = 2.0 * float(np.sum(np.log(np.diag(cf[0]))))
        Ginv, info = linalg.lapack.dpotri(cf[0], lower=1, overwrite_c=1)
        if info != 0:
            return None
        _fill_upper(Ginv)
        return logdet, a, Ginv

    def _top_curvature(self, Ginv: np.ndarray, a: np.ndarray, b: float) -> float:
        """∂²D/∂x_L² from G⁻¹ alone: x_L scales A = K_L^R − b 11ᵀ = G − T − b 11ᵀ, so with
        B = T G⁻¹ + b u 1ᵀ (u = G⁻¹1) and v = A a, ∂²D/∂x_L² = tr B − tr B² − aᵀv + 2 vᵀG⁻¹v."""
        T = self.T
        u = Ginv.sum(axis=1)
        trB = T * float(np.trace(Ginv)) + b * float(u.sum())
        trB2 = T * T * float(np.vdot(Ginv, Ginv)) + 2.0 * T * b * float(u @ u) + b * b * float(u.sum()) ** 2
        v = self.y - T * a - b * float(a.sum())
        return trB - trB2 - float(a @ v) + 2.0 * float(v @ (Ginv @ v))


def _secant_sr1(H: np.ndarray, s: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Symmetric-rank-one update of H towards H s = r (skipped when ill-defined)."""
    v = r - H @ s
    den = float(v @ s)
    if abs(den) <= 1e-8 * float(np.linalg.norm(v) * np.linalg.norm(s)) or not math.isfinite(den):
        return H
    return H + np.outer(v, v) / den


def _newton_step(prior_diag: np.ndarray, H_data: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """−H⁻¹ ∇S with H = diag(prior) + H_data, shifted towards the prior's diagonal until positive definite."""
    H = np.diag(prior_diag) + H_data
    shift = 0.0
    for _ in range(60):
        try:
            c = linalg.cho_factor(H + shift * np.diag(prior_diag), check_finite=False)
            return -linalg.cho_solve(c, grad, check_finite=False)
        except linalg.LinAlgError:
            shift = 1e-3 if shift == 0.0 else 4.0 * shift
    return -grad / prior_diag


def _quasi_newton(action: NestedAction, point: NestedPoint, H_data: np.ndarray, max_iter: int) -> NestedPoint:
    """Line-searched quasi-Newton descent from ``point``; returns the best point reached."""
    widths = action.widths
    best = point
    for _ in range(max_iter):
        if point.residual <= TARGET_RESIDUAL:
            break
        prior = widths * np.exp(point.x)  # exact Hessian of Σ N_l (Q̄_l − x_l − 1)
        p = _newton_step(prior, H_data, point.grad)
        big = float(np.max(np.abs(p)))
        if big > 1.0:  # Q̄ moves by at most a factor e per step
            p *= 1.0 / big
        slope = float(point.grad @ p)
        if not slope < 0:
            break
        # round-off of S (a sum of O(N + P) terms) allows a tiny increase near the solution
        noise = 1e-13 * (abs(point.action) + float(np.sum(widths * (np.exp(point.x) + 1.0))))
        t, new = 1.0, None
        for _ in range(12):
            trial = action.evaluate(point.x + t * p)
            if trial is not None and trial.action <= point.action + 1e-4 * t * slope + noise:
                new = trial
                break
            t *= 0.5
        if new is None:
            break
        s = new.x - point.x
        r = (new.grad - widths * (np.exp(new.x) - 1.0)) - (point.grad - widths * (np.exp(point.x) - 1.0))
        H_data = _secant_sr1(H_data, s, r)
        point = new
        if point.residual < best.residual:
            best = point
    return best


def solve_nested(action: NestedAction, x0: np.ndarray) -> NestedPoint:
    """Verified stationary point of the nested action (relative residual ≤ 1e-7, aimed at 1e-9).

    Parameters
    ----------
    action : NestedAction
    x0 : array (L,)
        Start, log Q̄ (the product-form saddle).

    Raises
    ------
    ConvergenceError
        T + K_L^R not positive definite at the start or the answer, or no stationary point to 1e-7.
    """
    L = x0.size
    start = action.evaluate(x0, top_curvature=True)
    if start is None:
        raise ConvergenceError("the nested renormalised kernel is not positive definite at the product-form start",
                               suggestion="use T > 0 or renormalization='product'")
    # initial data Hessian h_LL r rᵀ: exact along x_L, the other layers by their share r_l of the
    # data gradient (exact for the product form, where every r_l = 1)
    d = start.grad - action.widths * (np.exp(x0) - 1.0)
    H0 = np.zeros((L, L))
    if math.isfinite(start.top_curvature) and d[-1] != 0 and np.all(np.isfinite(d)):
        r = d / d[-1]
        H0 = start.top_curvature * np.outer(r, r)
    best = _quasi_newton(action, start, H0, max_iter=30)
    message = "quasi-Newton"
    if best.residual > TARGET_RESIDUAL:
        # fallback: L-BFGS from the best point, then quasi-Newton polish
        def fun(x):
            pt = action.evaluate(x)
            if pt is None:
                return 1e300, np.zeros_like(x)
            return pt.action, pt.grad

        res = optimize.minimize(fun, best.x, jac=True, method="L-BFGS-B",
                                options={"maxiter": 200, "gtol": 1e-12, "ftol": 1e-15, "maxcor": 10})
        message = f"L-BFGS: {res.message}"
        pt = action.evaluate(res.x)
        if pt is not None:
            pt = _quasi_newton(action, pt, np.zeros((L, L)), max_iter=10)
            if pt.residual < best.residual:
                best = pt
    if not best.residual <= ACCEPT_RESIDUAL:
        raise ConvergenceError(
            f"the nested saddle point did not converge ({message})", residual=best.residual,
            suggestion="use renormalization='product', a larger temperature, or rescale labels to O(1)",
        )
    return best
