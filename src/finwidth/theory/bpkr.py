"""Back-propagating kernel renormalisation (Li & Sompolinsky, PRX 11, 031059, 2021): deep linear networks.

For the identity activation the renormalised-kernel action of Pacelli et al. is *exact* in the
proportional limit and equals the BPKR free energy with Q̄_l ≡ Q_l (theory notes, Part B). So
:class:`BPKR` is :class:`~finwidth.theory.rkgp.RKGP` with ``activation="linear"`` (any widths, one
scalar equation Q̄_l = 1 − α_l g(Π)) plus the predictions a simulation can measure directly:

* weight norms (BPKR notes §A.9, from ∂ log Z/∂λ_j):
  ⟨‖W^(j)‖_F²⟩ = (N_j N_{j+1} − P g)/λ_j for j = 0..L (N_{L+1} = 1), which gives
  ⟨|a|²⟩ λ_L / N_L = Q̄_L for the readout a = W^(L);
* hidden-layer kernels R_ℓ = h_ℓᵀ h_ℓ / N_ℓ on the training inputs (§A.8):
  ⟨R_ℓ⟩ = (1 − Σ_{j≤ℓ} 1/N_j) K_{ℓ−1} + (w_ℓ/Π) (∏_{j=ℓ}^{L} λ_j) (f̄ f̄ᵀ + Σ_tr),
  w_ℓ = Σ_{j≤ℓ} (∏_{k<j} Q̄_k)/N_j, with f̄ = Π K A⁻¹ y, Σ_tr = T Π K A⁻¹, A = Π K_L + T.

Indices: W^(j) maps layer j (width N_j, N_0 the input) to layer j+1; K_{ℓ−1} is the prior covariance
of the pre-activations h_ℓ (K_0 = C = XXᵀ/(λ_0 N_0)).

D outputs (targets of shape (P, D); notes A.7): the order parameters are commuting D×D matrices,
Q_l = 1 − α_l 𝒢 with one symmetric 𝒢 = 𝒬 ∂Φ/∂𝒬 / P (Φ the data term), exact for linear networks
(:mod:`finwidth.theory.multioutput`). The same derivative with respect to λ_j gives
⟨‖W^(j)‖_F²⟩ = (N_j N_{j+1} − P tr 𝒢)/λ_j (N_{L+1} = D), and with respect to a matrix readout precision
the readout's second moment ⟨V Vᵀ⟩ = N_L Q_L/λ_L (D×D; docs/theory.md).
"""

from __future__ import annotations

import numpy as np

from finwidth.errors import ConfigError
from finwidth.theory.rkgp import RKGP

__all__ = ["BPKR"]


class BPKR(RKGP):
    """Exact proportional-limit theory of deep linear Bayesian networks (Li–Sompolinsky).

    Parameters
    ----------
    network : finwidth.Network
        Must have the linear activation and no biases; any widths N_1..N_L.
    temperature : float
        T ≥ 0.

    Attributes
    ----------
    Those of :class:`RKGP` (``qbar_``, ``action_``, ``log_evidence_``, ``width_criterion_``, …), and
    g_ : float, or ndarray (D, D) with D outputs
        g(Π*) = N_l (1 − Q̄_l)/P (the same for every layer); with D outputs the matrix 𝒢 = N_l (1 − Q_l)/P.
    pi_ : float, or ndarray (D, D) with D outputs
        Π* = ∏ Q̄_l (with D outputs the matrix 𝒬 = ∏ Q_l, ``renormalization_``).

    Parameters are validated by :meth:`fit`; ``get_params``/``set_params``, ``score`` (R²) and
    ``clone`` follow scikit-learn (:mod:`finwidth.theory.base`).
    """

    # fixed for the linear theory (exact there), not parameters
    renormalization = "product"
    mean_correction = False
    solver = "auto"
    solver_options = None

    def __init__(self, network, temperature: float):
        self.network = network
        self.temperature = temperature

    def _check_params(self) -> bool:
        network = self.network
        activation = getattr(getattr(network, "activation", None), "name", None)
        if activation is not None and activation != "linear":
            raise ConfigError(f"BPKR is the theory of linear networks; got activation {activation!r}")
        if getattr(network, "bias", None) is not None:
            raise ConfigError("BPKR has no biases; use a network with bias=None")
        return super()._check_params()

    def fit(self, X, y) -> BPKR:
        """Solve Q̄_l = 1 − α_l g(Π) on (X, y); see :meth:`RKGP.fit`."""
        super().fit(X, y)
        P = self.X_train_.shape[0]
        if self.n_outputs_ > 1:
            self.pi_ = self.renormalization_
            self.g_ = self.network.widths[0] * (np.eye(self.n_outputs_) - self.qbar_[0]) / P
            return self
        self.pi_ = float(np.prod(self.qbar_))
        self.g_ = float(self.network.widths[0] * (1.0 - self.qbar_[0]) / P)
        return self

    def weight_norms(self) -> np.ndarray:
        """Predicted posterior means ⟨‖W^(j)‖_F²⟩ for j = 0..L (the last is the readout |a|²).

        Returns
        -------
        ndarray, shape (L+1,)
            In units of squared weights (prior mean N_j N_{j+1}/λ_j; the readout has N_{L+1} = D rows).
        """
        self._check_fitted()
        dims = [self.X_train_.shape[1], *self.network.widths, self.n_outputs_]
        P = self.X_train_.shape[0]
        lam = np.array(self.network.priors)
        fan = np.array([dims[j] * dims[j + 1] for j in range(len(dims) - 1)], dtype=float)
        return (fan - P * float(np.trace(np.atleast_2d(self.g_)))) / lam

    def readout_second_moment(self) -> np.ndarray:
        """Predicted ⟨V Vᵀ⟩ of the readout V (D × N_L): N_L Q_L / λ_L, shape (D, D) ((1, 1) for one output).

        λ_L ⟨V Vᵀ⟩/N_L = Q_L is the matrix form of the readout-norm identity (notes A.9), the direct
        simulation observable of the last layer's order parameter.
        """
        self._check_fitted()
        N_L = float(self.network.widths[-1])
        Q_L = np.atleast_2d(self.qbar_[-1]) if self.n_outputs_ > 1 else np.array([[float(self.qbar_[-1])]])
        return N_L * Q_L / float(self.network.priors[-1])

    def train_posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean f̄ and covariance Σ of f on the training inputs.

        Returns
        -------
        mean : ndarray, shape (P,)
            Π K A⁻¹ y.
        cov : ndarray, shape (P, P)
            T Π K A⁻¹ (zero at T = 0).
        """
        self._check_fitted()
        if self.n_outputs_ > 1:
            raise ConfigError("train_posterior and hidden_kernels are derived for one output; "
                              "fit with targets of shape (P,)")
        basis = self._prediction_basis()
        k = basis.values
        T = self.temperature
        x = self.pi_ * k
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(x > 0, x / (T + x), 0.0)  # Π k/(T + Π k); T = 0: 1 on the range of K
        U = basis.vectors
        mean = U @ (frac * basis.project(self.y_train_))
        cov = (U * (T * frac)) @ U.T
        return mean, cov

    def hidden_kernels(self) -> list[np.ndarray]:
        """Predicted posterior means ⟨R_ℓ⟩ = ⟨h_ℓᵀ h_ℓ⟩/N_ℓ on the training inputs, ℓ = 1..L.

        Returns
        -------
        list of ndarray, each (P, P)
        """
        self._check_fitted()
        widths = np.array(self.network.widths, dtype=float)
        lam = np.array(self.network.priors)
        from finwidth import kernels

        mean, cov = self.train_posterior()
        second = np.outer(mean, mean) + cov
        layers = kernels.nngp(self.network, self.X_train_, all_layers=True)
        out = []
        for ell in range(1, self.network.depth + 1):
            bulk = 1.0 - float(np.sum(1.0 / widths[:ell]))
            w = sum(float(np.prod(self.qbar_[: j - 1])) / widths[j - 1] for j in range(1, ell + 1))
            amp = w / self.pi_ * float(np.prod(lam[ell:]))
            out.append(bulk * np.asarray(layers[ell - 1].train) + amp * second)
        return out
