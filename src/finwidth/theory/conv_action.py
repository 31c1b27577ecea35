"""Action and gradient of the local CNN theory (:mod:`finwidth.theory.conv`) on a fixed training set.

    S(Q) = C [tr Q − log det Q − Ñ] + log det(T + K_R) + yᵀ (T + K_R)⁻¹ y,   K_R = (1/(λ_1 Ñ)) Σ_ij Q_ij K_ij,
    G = ∂S/∂Q:  G_ij = C (δ_ij − (Q⁻¹)_ij) + (1/(λ_1 Ñ)) ⟨K_ij, (T + K_R)⁻¹ − a aᵀ⟩,   a = (T + K_R)⁻¹ y,

with dS = tr(G dQ) for symmetric dQ (the convention of :func:`finwidth.theory.spd.minimize_spd`). The
blocks enter only through :class:`~finwidth.theory.patch_store.PatchPairStore`: one contraction for K_R
and one adjoint pass for the two data terms of G.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg

__all__ = ["ActionPoint", "LocalAction"]


@dataclass(frozen=True)
class ActionPoint:
    """S and its gradient at one Q (see :class:`LocalAction`).

    Attributes
    ----------
    value : float
        S(Q) (inf where Q or T + K_R is not positive definite).
    grad : ndarray, shape (Ñ, Ñ)
        G = ∂S/∂Q, symmetric, with dS = tr(G dQ) for symmetric dQ (each matrix entry counts once;
        the convention of :func:`finwidth.theory.spd.minimize_spd`).
    trace_part, label_part : ndarray, shape (Ñ, Ñ)
        The two data terms of G, (1/(λ_1 Ñ)) ⟨K_ij, (T + K_R)⁻¹⟩ and (1/(λ_1 Ñ)) aᵀK_ij a.
    g_R : float
        [tr((T + K_R)⁻¹K_R) − aᵀK_R a]/P (the sum rule's g).
    """

    value: float
    grad: np.ndarray
    trace_part: np.ndarray
    label_part: np.ndarray
    g_R: float

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)


class LocalAction:
    """S(Q) and ∇S of the local CNN theory on a fixed training set (module docstring).

    Parameters
    ----------
    store : finwidth.theory.patch_store.PatchPairStore
        The symmetrised patch-pair blocks of the training inputs.
    y : ndarray, shape (P,)
    temperature : float
        T ≥ 0 (T = 0 needs a non-singular renormalised kernel).
    channels : int
        C.
    readout_prior : float
        λ_1.
    """

    def __init__(self, store, y: np.ndarray, temperature: float, channels: int, readout_prior: float):
        self.store = store
        self.y = np.asarray(y, dtype=np.float64)
        self.T = float(temperature)
        self.C = float(channels)
        self.n = store.n_patches
        self.kscale = 1.0 / (float(readout_prior) * self.n)
        self.n_evaluations = 0

    def kernel(self, Q: np.ndarray) -> np.ndarray:
        """K_R(Q) on the training set, (P, P) symmetric."""
        i, j = self.store.pairs
        return self.store.contract(self.kscale * np.asarray(Q, dtype=np.float64)[i, j])

    def _factor(self, Q: np.ndarray):
        """(K_R, Cholesky of T + K_R) or None where T + K_R is not positive definite."""
        K = self.kernel(Q)
        A = K.copy()
        if self.T:
            A.flat[:: A.shape[0] + 1] += self.T
        try:
            L = linalg.cholesky(A, lower=True, check_finite=False)
        except linalg.LinAlgError:
            return K, None
        return K, L

    def evaluate(self, Q: np.ndarray, *, gradient: bool = True) -> ActionPoint:
        """S(Q), ∇S and the residual yardstick (value inf, gradient NaN outside the domain)."""
        Q = 0.5 * (np.asarray(Q, dtype=np.float64) + np.asarray(Q, dtype=np.float64).T)
        self.n_evaluations += 1
        nan = np.full((self.n, self.n), np.nan)
        outside = ActionPoint(math.inf, nan, nan, nan, math.nan)
        # the prior term C Σ_k (q_k − 1 − log q_k) over the eigenvalues of Q, written so that it keeps its
        # digits near Q = 1 (huge C): with u = q − 1, u − log1p(u)
        w, V = linalg.eigh(Q, check_finite=False)
        if not w[0] > 0:
            return outside
        K, L = self._factor(Q)
        if L is None:
            return outside
        u = w - 1.0
        a = linalg.cho_solve((L, True), self.y, check_finite=False)
        logdet_A = 2.0 * float(np.sum(np.log(np.diag(L))))
        value = self.C * float(np.sum(u - np.log1p(u))) + logdet_A + float(self.y @ a)
        if not gradient:
            return ActionPoint(value, nan, nan, nan, math.nan)
        Ainv = linalg.cho_solve((L, True), np.eye(L.shape[0]), check_finite=False)
        Ainv = 0.5 * (Ainv + Ainv.T)
        store = self.store
        parts = store.adjoint(np.stack([store.pack(Ainv), store.pack(np.outer(a, a))], axis=1))
        half = np.where(store.pairs[0] == store.pairs[1], 1.0, 0.5)  # ⟨K_ij, B⟩ = ⟨E_ij, B⟩/2 for i < j
        trace_part = store.pair_matrix(parts[:, 0] * half) * self.kscale
        label_part = store.pair_matrix(parts[:, 1] * half) * self.kscale
        prior = (V * (u / w)) @ V.T  # 1 − Q⁻¹
        grad = self.C * 0.5 * (prior + prior.T) + trace_part - label_part
        g_R = (float(np.sum(Ainv * K)) - float(a @ K @ a)) / self.y.size
        return ActionPoint(value, grad, trace_part, label_part, g_R)

    def scale(self, Q: np.ndarray, point: ActionPoint) -> float:
        """Size of the terms that cancel in Q^½ G Q^½ = C (Q − 1) + Q^½ (data terms) Q^½ at a stationary
        point: C (‖Q‖_F + ‖1‖_F) + ‖Q^½ D_trace Q^½‖_F + ‖Q^½ D_label Q^½‖_F (the residual's yardstick)."""
        w, V = linalg.eigh(Q)
        R = (V * np.sqrt(np.maximum(w, 0.0))) @ V.T
        return (self.C * (float(np.linalg.norm(Q)) + math.sqrt(self.n)) + float(np.linalg.norm(R @ point.trace_part @ R))
                + float(np.linalg.norm(R @ point.label_part @ R)))
