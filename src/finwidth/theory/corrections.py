"""Corrections to the one-hidden-layer saddle point of :class:`finwidth.RKGP` (issue 15).

Both corrections start from the fitted plain theory: the output NNGP kernel K = U diag(k) Uᵀ
(1/λ_1 included, one ``eigh`` shared with RKGP), labels ỹ = Uᵀy, temperature T, width N = N_1 and
the saddle Q̄. Everything is O(P) per evaluation in the eigenbasis; test blocks enter as
k̃* = k* U (test × train NNGP kernel in the eigenbasis) and the NNGP test diagonal k**.
Derivations and the measured effect against sampled networks: docs/theory.md ("Beyond the saddle
point") and docs/reproductions.md ("When does the saddle point break down").

``"kernel_shape"`` (deepbays ``FC_1HL_corrected``). With G = T + Q̄K and a = G⁻¹y, the hidden-feature
kernel is replaced by its first-order value under the single-neuron tilt of the Gaussian-equivalent
theory, K_c = K + (Q̄/N) K (a aᵀ − G⁻¹) K (test blocks alike: k*_c = k* + (Q̄/N) k*(a aᵀ − G⁻¹)K,
k**_c = k** + (Q̄/N)[(k*·a)² − k* G⁻¹ k*ᵀ]), and the predictor is the GP with Q̄ K_c and noise T.
In the eigenbasis K_c = diag(k e) + (Q̄/N) u uᵀ with e_i = 1 − Q̄k_i/(N(T + Q̄k_i)) and u = k ∘ ã, so
the GP solve is a Sherman–Morrison update. (deepbays adds the P_t × P_t matrix of the last bracket to
the test diagonal, broadcasting it: its variance is wrong; the mean is right.)

``"qbar_fluctuations"``. Under the Gaussian equivalence of the hidden features (exact for linear
activations), f | Q̄ ~ GP(0, Q̄K) with Q̄ ~ Gamma(N/2, rate N/2) a priori (theory notes §8), so the
posterior of u = log Q̄ is exactly p(u | y) ∝ exp(−S(eᵘ)/2) with S the RKGP action,
S(Q̄) = N(Q̄ − log Q̄ − 1) + Σ_i [log(T + Q̄k_i) + ỹ_i²/(T + Q̄k_i)]. The predictor is the mixture of the
GPs over this posterior (integrated on a uniform grid in u, to relative weight 1e-13 at its ends):
mean = E[m_Q̄], var = E[v_Q̄ + m_Q̄²] − mean². It is the exact posterior predictive of a one-hidden-layer
*linear* network at every width, and removes the saddle-point error of the Gaussian-equivalent
theory at any width; it cannot move the T → 0 mean (every GP of the mixture has the NNGP mean).
"""

from __future__ import annotations

import math

import numpy as np

from finwidth.errors import ConfigError, ConvergenceError

__all__ = ["CORRECTIONS", "KernelShape", "QbarMixture", "fit_correction"]

CORRECTIONS = ("kernel_shape", "qbar_fluctuations")


def _inverse(beta: np.ndarray) -> np.ndarray:
    """1/β where β > 0, 0 on exactly-null modes (T = 0 with a singular kernel)."""
    out = np.zeros_like(beta)
    pos = beta > 0
    out[pos] = 1.0 / beta[pos]
    return out


class KernelShape:
    """First-order kernel-shape correction (deepbays ``FC_1HL_corrected``; module docstring).

    Attributes
    ----------
    qbar : float
        The plain saddle Q̄ (deepbays keeps it too).
    relative_change : float
        ‖K_c − K‖_F / ‖K‖_F on the training set: the size of the correction.
    """

    def __init__(self, k: np.ndarray, y_t: np.ndarray, T: float, qbar: float, N: float):
        s = float(qbar)
        beta = T + s * k
        ib = _inverse(beta)
        a = y_t * ib
        self.e = 1.0 - s * k * ib / N
        self.u = k * a
        self.a, self.ib, self.s, self.N, self.T = a, ib, s, float(N), float(T)
        # training matrix T + s K_c = diag(D) + (s²/N) u uᵀ in the eigenbasis
        D = T + s * k * self.e
        self.iD = _inverse(D)
        c = s * s / N
        self.c = c
        uDu = float(np.sum(self.u ** 2 * self.iD))
        self.den = 1.0 + c * uDu
        self.qbar = s
        # ‖K_c − K‖_F with K_c − K = diag(k(e − 1)) + (s/N) u uᵀ
        dk = k * (self.e - 1.0)
        ch2 = float(np.sum(dk ** 2) + 2 * (s / N) * np.sum(dk * self.u ** 2) + (s / N) ** 2 * np.sum(self.u ** 2) ** 2)
        self.relative_change = math.sqrt(max(ch2, 0.0)) / max(float(np.linalg.norm(k)), 1e-300)
        self._y_t = y_t

    def _solve(self, B: np.ndarray) -> np.ndarray:
        """(T + s K_c)⁻¹ applied to the columns of B (eigenbasis), Sherman–Morrison."""
        DB = B * self.iD[:, None] if B.ndim == 2 else B * self.iD
        uDB = self.u @ DB
        corr = np.outer(self.u * self.iD, uDB) if B.ndim == 2 else (self.u * self.iD) * uDB
        return DB - self.c * corr / self.den

    def predict(self, kt_t: np.ndarray, kd: np.ndarray, return_var: bool):
        """Mean (and variance) at test points from the NNGP blocks k̃* (P_t, P) and k** (P_t,)."""
        s, N = self.s, self.N
        ka = kt_t @ self.a
        kc = kt_t * self.e + (s / N) * np.outer(ka, self.u)  # corrected k* in the eigenbasis
        alpha = self._solve(self._y_t)
        mean = s * (kc @ alpha)
        if not return_var:
            return mean
        kdc = kd + (s / N) * (ka ** 2 - (kt_t ** 2) @ self.ib)
        # s² kc (T + sK_c)⁻¹ kcᵀ, diagonal only
        DK = kc * self.iD
        uDK = kc @ (self.u * self.iD)
        quad = np.sum(kc * DK, axis=1) - self.c * uDK ** 2 / self.den
        var = s * kdc - s * s * quad
        return mean, np.maximum(var, 0.0)


class QbarMixture:
    """Exact integral over Q̄ of the Gaussian-equivalent theory (module docstring).

    Attributes
    ----------
    qbar_nodes, weights : ndarray
        Quadrature nodes Q̄_j and normalised weights of p(Q̄ | y).
    qbar_mean, qbar_std : float
        Posterior mean and standard deviation of Q̄.
    """

    _N_NODES = 96
    _TAIL = 60.0  # the grid ends where S − S_min ≥ 60, i.e. relative density e^{−30}

    def __init__(self, k: np.ndarray, y_t: np.ndarray, T: float, qbar: float, N: float):
        self.k, self.y_t, self.T, self.N = k, y_t, float(T), float(N)
        u0 = math.log(qbar)
        S0 = self._action(u0)
        if not math.isfinite(S0):
            raise ConfigError("qbar_fluctuations needs a finite action at the saddle (T = 0 with labels outside "
                              "the kernel's range); use T > 0")
        h = 1e-3
        curv = (self._action(u0 + h) - 2 * S0 + self._action(u0 - h)) / h ** 2
        width = math.sqrt(2.0 / curv) if curv > 0 else 1.0
        # walk out until the density is negligible on both sides (the posterior of log Q̄ is unimodal
        # when the saddle is unique; more roots would show up as interior bumps on the grid)
        lo = hi = None
        for sign in (-1.0, 1.0):
            step, x = width, u0
            for _ in range(200):
                x += sign * step
                if self._action(x) - S0 >= self._TAIL:
                    break
                step *= 1.3
            else:
                raise ConvergenceError("the posterior of log Q̄ does not decay (improper mixture)",
                                       suggestion="use correction=None")
            if sign < 0:
                lo = x
            else:
                hi = x
        u = np.linspace(lo, hi, self._N_NODES)
        S = np.array([self._action(x) for x in u])
        w = np.exp(-(S - S.min()) / 2)
        w[0] *= 0.5
        w[-1] *= 0.5
        w /= w.sum()
        if max(w[0], w[-1]) > 1e-12:  # pragma: no cover - guaranteed by the walk
            raise ConvergenceError("Q̄ quadrature grid does not cover the posterior")
        self.qbar_nodes = np.exp(u)
        self.weights = w
        self.qbar_mean = float(w @ self.qbar_nodes)
        self.qbar_std = float(math.sqrt(max(w @ self.qbar_nodes ** 2 - self.qbar_mean ** 2, 0.0)))

    def _action(self, u: float) -> float:
        q = math.exp(u)
        beta = self.T + q * self.k
        if np.any(beta <= 0):
            return math.inf
        return self.N * (q - u - 1.0) + float(np.sum(np.log(beta)) + np.sum(self.y_t ** 2 / beta))

    def predict(self, kt_t: np.ndarray, kd: np.ndarray, return_var: bool):
        q = self.qbar_nodes
        beta = self.T + np.outer(self.k, q)  # (P, nodes)
        ib = _inverse(beta)
        M = kt_t @ (self.y_t[:, None] * ib * q)  # (P_t, nodes): means of the component GPs
        mean = M @ self.weights
        if not return_var:
            return mean
        V = np.outer(kd, q) - (kt_t ** 2) @ (ib * q * q)
        var = (np.maximum(V, 0.0) + M ** 2) @ self.weights - mean ** 2
        return mean, np.maximum(var, 0.0)


def fit_correction(name: str, *, k: np.ndarray, y_t: np.ndarray, temperature: float, qbar: float, width: float):
    """Build the correction ``name`` (one of :data:`CORRECTIONS`) from the plain 1HL saddle."""
    if name == "kernel_shape":
        return KernelShape(k, y_t, temperature, qbar, width)
    if name == "qbar_fluctuations":
        return QbarMixture(k, y_t, temperature, qbar, width)
    raise ConfigError(f"correction must be None or one of {CORRECTIONS}, got {name!r}")
