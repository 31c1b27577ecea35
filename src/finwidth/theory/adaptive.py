"""Adaptive-kernel (AK) theory of Seroussi, Naveh & Ringel (Nat. Commun. 2023) for two-layer
networks: a fully connected network (:class:`finwidth.Network` with one hidden layer) and the
two-layer CNN with non-overlapping patches (:class:`finwidth.convnet.ConvNetwork`).

Model in finwidth's convention (docs/theories.md has the derivation and the map to the AK code):

    f(x) = s_out Σ_{c=1}^{N} Σ_{i=1}^{Ñ} a_{c,i} σ(u_c · x_i),      u_c = w_c / sqrt(S),

with w ~ N(0, I/λ_0), a ~ N(0, 1/λ_1), Gibbs posterior exp[−Σ_μ (y^μ − f^μ)²/(2T)] × prior.
The FCN is the case Ñ = 1, S = N_0, N = N_1. ``scaling="standard"``: s_out = 1/sqrt(N Ñ);
``scaling="mean_field"``: s_out = 1/(N sqrt(Ñ)) (output divided by N instead of sqrt(N)).
Integrating out the readout, the AK notation of the theory notes is
σ_w²/d = 1/(λ_0 S) (prior covariance of u), v_a = s_out²/λ_1 (readout variance), σ² = T.

Mean-field decoupling + one Gaussian u ~ N(0, Σ) per neuron/channel gives the equations of state

    Σ⁻¹ = λ_0 S · I − v_a ∇_Σ Tr[M Φ(Σ)],   Q̄ = N v_a Φ(Σ),   t̄ = (Q̄ + T)⁻¹ y,
    M = t̄ t̄ᵀ − (Q̄ + T)⁻¹,                 Φ(Σ)_{μν} = Σ_i κ(x_{μi}ᵀΣx_{μi}, x_{μi}ᵀΣx_{νi}, x_{νi}ᵀΣx_{νi}),

which are exactly the stationarity conditions of the AK free energy (−log Z up to constants)

    F(Σ) = (N/2) [λ_0 S Tr Σ − log det(λ_0 S Σ) − S] + ½ yᵀ(Q̄ + T)⁻¹ y + ½ log det(Q̄ + T),

(∂F/∂Σ = (N/2) × residual of the first equation). The predictor is the GP with the adapted
kernel Q̄ and noise T (:mod:`finwidth.theory.gp`). Infinite width in standard scaling gives the
NNGP (Σ = I/(λ_0 S)).

Numerics: for the FCN only the span of the training inputs adapts (the data term is Xᵀ B X), so
Σ is solved in an orthonormal basis of that span (r ≤ min(P, N_0) dimensions) and equals the
prior I/(λ_0 N_0) on the orthogonal complement. The unknown is the precision D = Σ⁻¹ (r×r or
S×S); the residual D − λ_0 S I + v_a ∇ is driven to zero (:mod:`finwidth.theory.adaptive_eos`)
by an Anderson-accelerated damped fixed-point iteration at the target width, and, only when that
stalls, by an inexact Newton–Krylov method continued in width from N_start ≫ N down to N
("annealing", as in the official AK code). Either way the returned point has a residual ≤ tol.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from finwidth.errors import ConfigError, ConvergenceError
from finwidth.theory.adaptive_eos import AnnealStage, EquationsOfState, StageFailed, patch_kernel
from finwidth.theory.base import Estimator, with_std
from finwidth.theory.gp import ErrorDecomposition, GPFit, generalization_error, gp_fit, gp_predict, validate_noise

__all__ = ["AdaptiveKernel", "covariance_summary", "patch_kernel"]

_TOL = 1e-9          # relative EoS residual accepted as converged
_SCALINGS = ("mean_field", "standard")


def covariance_summary(Sigma: Any, direction: Any = None) -> dict[str, float]:
    """Top eigenvalue of a weight covariance and its alignment with a direction.

    Used identically for the theory's Σ and for the sampled Σ̂ = (1/N) Σ_c ⟨u_c u_cᵀ⟩.

    Parameters
    ----------
    Sigma : array (m, m)
        Symmetric covariance (in the coordinates of u, the pre-activation weights).
    direction : array (m,), optional
        E.g. the teacher's weight vector.

    Returns
    -------
    dict with ``top_eigenvalue``, ``trace`` and, with a direction v, ``alignment`` = (e_1·v)²/|v|²
    (e_1 the top eigenvector; 1 when the spike points along v) and ``rayleigh`` = vᵀΣv/|v|².
    """
    S = np.asarray(Sigma, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or not np.all(np.isfinite(S)):
        raise ConfigError(f"Sigma must be a finite square matrix, got shape {S.shape}")
    w, V = np.linalg.eigh(0.5 * (S + S.T))
    out = {"top_eigenvalue": float(w[-1]), "trace": float(w.sum())}
    if direction is not None:
        v = np.asarray(direction, dtype=np.float64).ravel()
        if v.shape != (S.shape[0],) or not np.any(v):
            raise ConfigError(f"direction must be a non-zero vector of length {S.shape[0]}, got shape {v.shape}")
        v = v / np.linalg.norm(v)
        out["alignment"] = float((V[:, -1] @ v) ** 2)
        out["rayleigh"] = float(v @ S @ v)
    return out


class AdaptiveKernel(Estimator):
    """Adaptive-kernel theory (Seroussi–Naveh–Ringel) for two-layer FCNs and CNNs.

    Parameters
    ----------
    network : finwidth.Network (one hidden layer, no biases) or finwidth.convnet.ConvNetwork
        Width N (channels C for the CNN), activation, prior precisions (λ_0, λ_1).
    temperature : float
        T ≥ 0, the likelihood variance (AK's σ²). In mean-field scaling the regime where features
        are learned is T ∝ 1/N (Rubin et al.'s χ = N); T = 0 needs a non-singular adapted kernel.
    scaling : {"mean_field", "standard"}
        Readout normalisation 1/N (mean field, the AK theory's regime of validity) or 1/sqrt(N)
        (finwidth's :class:`~finwidth.Network` convention, where AK misses the kernel-amplitude
        renormalisation of the proportional limit; use :class:`~finwidth.RKGP` there).
        A mean-field network has the same function-space posterior as a standard one with readout
        precision λ_1 N (for the CNN: λ_1 C).
    anneal_start : float, optional
        Width at which the continuation (the fallback solver) starts (default 1e4 × N).
    anneal_ratio : float
        Initial ratio between successive widths of the continuation (default 2); halved in log on
        a failed stage.
    tol : float
        Relative residual ‖D − λ_0 S I + v_a ∇‖_F / (‖λ_0 S I‖_F + ‖v_a ∇‖_F) accepted (default 1e-9).

    Attributes
    ----------
    sigma_ : ndarray (m, m)
        Per-neuron covariance Σ of u (FCN: u = w/sqrt(N_0), an N_0 × N_0 matrix; CNN: u = w/sqrt(S),
        S × S).
    kernel_ : ndarray (P, P)
        Adapted kernel Q̄ on the training inputs.
    nngp_kernel_ : ndarray (P, P)
        The kernel at the prior Σ_0 = I/(λ_0 S) (the NNGP kernel in standard scaling).
    tbar_ : ndarray (P,)
        t̄ = (Q̄ + T)⁻¹ y.
    discrepancy_ : ndarray (P,)
        y − ⟨f⟩ on the training set (= T t̄).
    free_energy_ : float
        F(Σ) at the solution (module docstring), nats.
    adaptation_ : float
        ‖v_a ∇‖₂ / (λ_0 S): the data term of Σ⁻¹ relative to the prior term (≪ 1: GP-like; O(1):
        strong feature learning).
    residual_ : float
        Relative EoS residual at the returned point (≤ tol).
    solver_ : str
        ``"anderson"`` (the fast fixed-point path) or ``"newton-krylov"`` (the width continuation,
        used when the fixed-point iteration stalls).
    n_iterations_ : int
        Fixed-point iterations, or Newton steps summed over the continuation.
    n_evaluations_ : int
        Evaluations of the EoS (each: two Cholesky factorisations and the kernel gradient), over
        both solvers when the fallback ran.
    anneal_path_ : list[AnnealStage]
        The continuation's stages (empty when the fast path converged).

    Parameters are validated by :meth:`fit`; ``get_params``/``set_params``, ``score`` (R²) and
    ``clone`` follow scikit-learn (:mod:`finwidth.theory.base`).

    Examples
    --------
    >>> import numpy as np
    >>> from finwidth import Network
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((30, 5)); y = np.tanh(X[:, 0])
    >>> ak = AdaptiveKernel(Network([50], "erf"), temperature=0.02).fit(X, y)
    >>> mean, var = ak.predict(X[:3], return_var=True)
    """

    def __init__(self, network, temperature: float, *, scaling: str = "mean_field", anneal_start: float | None = None,
                 anneal_ratio: float = 2.0, tol: float = _TOL):
        self.network = network
        self.temperature = temperature
        self.scaling = scaling
        self.anneal_start = anneal_start
        self.anneal_ratio = anneal_ratio
        self.tol = tol

    def _check_params(self) -> None:
        from finwidth.convnet import ConvNetwork
        from finwidth.network import Network

        network = self.network
        if isinstance(network, Network):
            if network.depth != 1:
                raise ConfigError(f"AdaptiveKernel covers two-layer networks (one hidden layer); got depth {network.depth}")
            if network.bias is not None:
                raise ConfigError("AdaptiveKernel does not model biases; use a Network with bias=None")
            self._conv = False
        elif isinstance(network, ConvNetwork):
            if network.readout != "local":
                raise ConfigError("AdaptiveKernel models the CNN with a local readout (one weight per channel and patch); "
                                  f"got readout={network.readout!r}")
            self._conv = True
        else:
            raise ConfigError(f"network must be a finwidth.Network or ConvNetwork, got {type(network).__name__}")
        if self.scaling not in _SCALINGS:
            raise ConfigError(f"scaling must be 'mean_field' or 'standard', got {self.scaling!r}")
        validate_noise(self.temperature, "temperature")
        start, ratio, tol = self.anneal_start, self.anneal_ratio, self.tol
        if start is not None and (not math.isfinite(start) or start <= self.width):
            raise ConfigError(f"anneal_start must be a finite width above N = {self.width}, got {start!r}")
        if not (math.isfinite(ratio) and ratio > 1.0):
            raise ConfigError(f"anneal_ratio must be > 1, got {ratio!r}")
        if not (0 < tol < 1e-3):
            raise ConfigError(f"tol must be in (0, 1e-3), got {tol!r}")

    # -------------------------------------------------------------------------------- geometry
    @property
    def width(self) -> int:
        """N (channels C for the CNN)."""
        return self.network.channels if hasattr(self.network, "channels") else self.network.widths[0]

    def _fan_in(self) -> int:
        return self.network.patch_features if self._conv else self._n_inputs

    def _n_patches(self) -> int:
        return self.network.n_patches if self._conv else 1

    def _scales(self, N: float) -> tuple[float, float]:
        """(v_a, N v_a) at width N: the readout variance and the kernel prefactor."""
        power = 2.0 if self.scaling == "mean_field" else 1.0
        va = 1.0 / (self.network.priors[1] * self._n_patches() * N ** power)
        return va, N * va

    def _inputs(self, X: Any, what: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Patches in the coordinates of the unknown Σ, and the out-of-span variance (FCN)."""
        from finwidth.inputs import as_inputs

        if self._conv:
            return self.network.patches(X, what), None
        Xa = as_inputs(X, what)
        if Xa.shape[1] != self._n_inputs:
            raise ConfigError(f"{what} has {Xa.shape[1]} features, the training inputs had {self._n_inputs}")
        Z = Xa @ self.basis_
        perp = np.maximum(np.einsum("ij,ij->i", Xa, Xa) - np.einsum("ij,ij->i", Z, Z), 0.0)
        return Z[:, None, :], perp / self._a

    # -------------------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any) -> AdaptiveKernel:
        """Solve the equations of state on (X, y): Anderson-accelerated fixed point, else width
        continuation and Newton–Krylov.

        Parameters
        ----------
        X : array (P, N_0)
        y : array (P,)

        Returns
        -------
        self

        Raises
        ------
        ConvergenceError
            The fixed-point iteration stalled and a continuation stage failed even with the finest
            width steps; the message gives the width reached, the residual and what to try.
        """
        from finwidth.inputs import InputReduction, as_inputs, validate_targets

        self._check_params()
        Xa = as_inputs(X, "X")
        yv = validate_targets(y, Xa.shape[0])
        if self._conv:
            self._Z = self.network.patches(Xa)
        else:
            self._n_inputs = Xa.shape[1]
            red = InputReduction.from_inputs(Xa)
            self.basis_ = red.basis
            self._Z = red.reduce(Xa)[:, None, :]
        self._a = self.network.priors[0] * self._fan_in()
        eos = EquationsOfState(self.network.activation, self._Z, yv, self.temperature, self._a, self._scales, self.tol)
        N_target = float(self.width)
        path: list[AnnealStage] = []
        try:
            # fast path: Anderson-accelerated fixed point at the target width, from the prior precision
            D, st, iterations, _ = eos.anderson(self._a * np.eye(eos.m), N_target)
            self.solver_ = "anderson"
        except StageFailed:
            # fallback: Newton–Krylov continued in width from N_start ≫ N
            N_start = float(self.anneal_start) if self.anneal_start is not None else 1e4 * N_target
            try:
                D, st, path = eos.anneal(N_start, N_target, self.anneal_ratio)
            except StageFailed as exc:
                raise ConvergenceError(
                    f"adaptive-kernel EoS: the fixed-point iteration stalled, and Newton–Krylov {exc.reason}",
                    residual=exc.residual,
                    suggestion="raise the temperature, the width or anneal_start; a stalled continuation can "
                    "signal a first-order transition (multimodal weight posterior) where the Gaussian ansatz "
                    "fails") from None
            iterations = sum(stage.newton_steps for stage in path)
            self.solver_ = "newton-krylov"
        self.n_iterations_ = iterations
        self.n_evaluations_ = eos.n_evaluations
        self._finish(eos, D, st, yv, Xa, path)
        return self

    def _finish(self, eos: EquationsOfState, D, st, y, X, path) -> None:
        _, rel = eos.residual(D, st)
        if not rel <= self.tol:  # pragma: no cover - the continuation only accepts converged stages
            raise ConvergenceError("adaptive-kernel EoS not converged", residual=rel)
        N = float(self.width)
        S = st["Sigma"]
        # the predictor: the shared GP helper with the adapted kernel (checked solve)
        fit: GPFit = gp_fit(st["Q"], y, self.temperature)
        if not np.allclose(fit.alpha, st["tbar"], rtol=1e-6, atol=1e-9 * max(1.0, float(np.abs(st["tbar"]).max()))):
            raise ConvergenceError("the adapted kernel is too ill-conditioned: t̄ differs between two factorisations",
                                   suggestion="raise the temperature")
        va, qs = self._scales(N)
        m = D.shape[0]
        self.precision_reduced_ = D
        self.sigma_reduced_ = S
        if self._conv:
            self.sigma_ = S
        else:
            B = self.basis_
            n0 = self._n_inputs
            self.sigma_ = B @ (S - np.eye(m) / self._a) @ B.T + np.eye(n0) / self._a
        self.kernel_ = st["Q"]
        self.nngp_kernel_ = qs * patch_kernel(self.network.activation, np.eye(m) / self._a, self._Z)
        self.fit_ = fit
        self.tbar_ = fit.alpha
        self.discrepancy_ = self.temperature * fit.alpha
        self.y_train_ = y
        self.X_train_ = X
        prior = 0.5 * N * (self._a * np.trace(S) + st["logdetD"] - m * math.log(self._a) - m)
        data = 0.5 * float(y @ fit.alpha) + 0.5 * fit.factor.logdet
        self.free_energy_ = float(prior + data)
        self.adaptation_ = float(np.linalg.norm(st["shift"], 2) / self._a)
        self.residual_ = rel
        self.anneal_path_ = path

    # -------------------------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_"):
            raise ConfigError("this AdaptiveKernel is not fitted yet; call fit(X, y) first")

    def adapted_kernel(self, X1: Any, X2: Any = None) -> np.ndarray:
        """Q̄(x, x') = N v_a Φ(Σ)(x, x') between two sets of inputs (X2=None: X1 with itself)."""
        self._check_fitted()
        qs = self._scales(float(self.width))[1]
        act = self.network.activation
        if self._conv:
            Z1 = self.network.patches(X1, "X1")
            Z2 = None if X2 is None else self.network.patches(X2, "X2")
            return qs * patch_kernel(act, self.sigma_, Z1, Z2)
        # test points may overlap outside the training span: use the full N_0 × N_0 Σ
        Z1 = self._inputs(X1, "X1")[0]  # validation only
        X1a = np.asarray(X1, dtype=np.float64)[:, None, :]
        del Z1
        X2a = None if X2 is None else (self._inputs(X2, "X2"), np.asarray(X2, dtype=np.float64)[:, None, :])[1]
        return qs * patch_kernel(act, self.sigma_, X1a, X2a)

    def _diag(self, Z: np.ndarray, perp: np.ndarray | None) -> np.ndarray:
        v = np.einsum("nis,st,nit->ni", Z, self.sigma_reduced_, Z)
        if perp is not None:
            v = v + perp[:, None]
        return self._scales(float(self.width))[1] * self.network.activation.kappa_diag(v).sum(1)

    def predict(self, X_test: Any, return_var: bool = False, return_cov: bool = False, return_std: bool = False):
        """Posterior mean of f at X_test (GP with the adapted kernel and noise T); optionally the
        variance, covariance and standard deviation of f (no observation noise).

        Returns
        -------
        mean (P_t,), or a tuple: mean, then var, cov, std in this order, each if asked.
        """
        if return_std:
            return with_std(self.predict(X_test, return_var=True, return_cov=return_cov), return_var, return_cov)
        self._check_fitted()
        Zt, pt = self._inputs(X_test, "X_test")
        Ztr = self._Z
        qs = self._scales(float(self.width))[1]
        Ks = qs * patch_kernel(self.network.activation, self.sigma_reduced_, Zt, Ztr, pt, None)
        kd = self._diag(Zt, pt)
        Ktt = self.adapted_kernel(X_test) if return_cov else None
        return gp_predict(self.fit_, Ks, kd, K_test=Ktt, return_var=return_var, return_cov=return_cov)

    def generalization_error(self, X_test: Any, y_test: Any) -> ErrorDecomposition:
        """ε_g = mean[(y − ⟨f⟩)²] + mean[Var f] over the test set (bias + variance, no noise)."""
        from finwidth.inputs import validate_targets

        mean, var = self.predict(X_test, return_var=True)
        yt = validate_targets(y_test, mean.shape[0], "y_test")
        return generalization_error(yt, mean, var)

    def preactivation_variance(self, X: Any) -> np.ndarray:
        """Var(u·x_i) = x_iᵀ Σ x_i per input and patch, shape (n, Ñ): the Gaussian pre-activation
        law that the theory assumes (compare with sampled networks)."""
        self._check_fitted()
        Z, p = self._inputs(X, "X")
        v = np.einsum("nis,st,nit->ni", Z, self.sigma_reduced_, Z)
        return v if p is None else v + p[:, None]

    def weight_summary(self, direction: Any = None) -> dict[str, float]:
        """:func:`covariance_summary` of ``sigma_`` (top eigenvalue, teacher alignment)."""
        self._check_fitted()
        return covariance_summary(self.sigma_, direction)

