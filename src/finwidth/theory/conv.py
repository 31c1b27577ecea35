"""Renormalised-kernel theory of the two-layer CNN: local kernel renormalisation.

Aiudi, Pacelli, Baglioni, Vezzani, Burioni, Rotondo, Nat. Commun. 16 (2025), arXiv:2307.11807, in
finwidth's convention (docs/conventions.md; derivation in docs/theory.md, "Convolutional networks").
Network: :class:`finwidth.convnet.ConvNetwork` in standard scaling, C channels, Ñ patches.

**Local readout** (one readout weight per channel and patch). Integrating out the readout and then
the filters channel by channel (Gaussian equivalence of the Ñ patch variables) gives an Ñ×Ñ
symmetric positive-definite order parameter Q (Q = 1 at infinite width) and the action, normalised
as −2 log Z up to constants,

    S(Q) = C [tr Q − log det Q − Ñ] + log det(T + K_R) + yᵀ (T + K_R)⁻¹ y,
    K_R(Q) = (1/(λ_1 Ñ)) Σ_ij Q_ij K_ij          (K_ij: patch-pair blocks, :mod:`finwidth.conv_kernels`).

The physical Q minimises S (S → ∞ at the boundary of the cone and at infinity). Entrywise gradient
(symmetric, since K_ji = K_ijᵀ):

    ∂S/∂Q_ij = C (δ_ij − (Q⁻¹)_ij) + (1/(λ_1 Ñ)) ⟨K_ij, (T + K_R)⁻¹ − a aᵀ⟩,    a = (T + K_R)⁻¹ y.

Taking the trace of Q·∇S gives an exact sum rule at the saddle: tr Q / Ñ = 1 − (P/(C Ñ)) g_R with
g_R = [tr((T + K_R)⁻¹K_R) − aᵀK_R a]/P (the scalar theory's Q̄ = 1 − α g). The predictor is GP
regression with kernel K_R and noise T. One patch (Ñ = 1) is the fully connected 1HL theory with
N_1 = C exactly.

**Pooled readout** (global average pooling): one readout weight per channel makes the network a
one-hidden-layer net whose C "neurons" are the pooled channels; the theory is the scalar 1HL theory
with the pooled NNGP kernel K_pool = (1/(λ_1 Ñ²)) Σ_ij K_ij and width C: K_R = Q̄ K_pool (in the
local formula, the rank-one Q = (Q̄/Ñ) 11ᵀ). Only a global renormalisation, no local one.

Cost (local): building the store of the Ñ(Ñ+1)/2 symmetrised blocks (:mod:`patch_store`) is
Ñ²P²/2 evaluations of κ; each evaluation of S and ∇S is two passes over it (O(Ñ²P²/4) memory
traffic) plus one Cholesky and one inverse of the P×P matrix T + K_R (O(P³)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from finwidth.errors import ConfigError
from finwidth.theory.base import Estimator, with_std
from finwidth.theory.conv_action import ActionPoint, LocalAction
from finwidth.theory.gp import validate_noise

__all__ = ["ActionPoint", "ConvRKGP", "LocalAction", "LocalWidthCriterion", "WidthSensitivity"]

#: relative stationarity residual accepted as a verified saddle point (same as the scalar solvers)
RESIDUAL_TOL = 1e-9


@dataclass(frozen=True)
class LocalWidthCriterion:
    """What the training set alone says about width for the local CNN theory.

    Attributes
    ----------
    g_nngp : float
        g(1) = [tr((T + K)⁻¹K) − aᵀKa]/P at the NNGP kernel K (a = (T + K)⁻¹y). To first order in
        1/C the saddle is Q = 1 − D/C with tr D = P g(1): the mean diagonal of Q (the global
        renormalisation) falls below 1 iff g(1) > 0, as the scalar Q̄ of a fully connected net.
    r : float
        yᵀK⁺y/P: at T → 0, g(1) = 1 − r (the fully connected criterion's r).
    global_mode_decreases : bool
        g(1) > 0.

    Unlike the fully connected theory, the mean predictor of the CNN theory depends on the shape of
    Q even at T = 0, so the training set alone cannot say whether finite width generalises better.
    """

    g_nngp: float
    r: float
    global_mode_decreases: bool


@dataclass(frozen=True)
class WidthSensitivity:
    """dε_g/d(1/C) at infinite width (C → ∞), on a test set: the first-order effect of finite width.

    Attributes
    ----------
    total, bias, variance : float
        Derivatives of ε_g and of its two parts with respect to 1/C at 1/C = 0. ε_g(C) ≈ ε_g(∞) + total/C.
    finite_width_better : bool
        total < 0: wide but finite networks generalise better than the infinite-width limit. For one
        patch at T → 0 this is the fully connected criterion r < 1 (total = −P (1 − r) V_∞).
    """

    total: float
    bias: float
    variance: float
    finite_width_better: bool


# ----------------------------------------------------------------------------------------------
# the estimator
# ----------------------------------------------------------------------------------------------
#: float64 store up to this size under kernel_dtype="auto"; float32 beyond (measured effect: docs/benchmarks.md)
AUTO_FLOAT64_BYTES = 2 << 30
#: default bound on the store (ConfigError beyond, with the size needed)
DEFAULT_MAX_MEMORY = 8 << 30
#: the curvature check (Hessian's smallest eigenvalue) under check_minimum="auto": small problems only
AUTO_CHECK_UNKNOWNS = 300
AUTO_CHECK_POINTS = 2000


class ConvRKGP(Estimator):
    """Renormalised-kernel GP of a two-layer CNN (:class:`~finwidth.convnet.ConvNetwork`), module docstring.

    ``finwidth.RKGP(conv_network, temperature)`` builds and uses this estimator with its defaults;
    use it directly for the options below.

    Parameters
    ----------
    network : ConvNetwork
        Channels C (the width), patches, activation, priors (λ_0, λ_1), readout.
    temperature : float
        T ≥ 0 (T = 0 needs a non-singular NNGP kernel for the local readout).
    mean_correction : None or False
        The mean term of non-odd activations is not derived for CNNs (it would add a second Ñ×Ñ order
        parameter and a saddle instead of a minimum). Odd activations: ignored. Non-odd ones (relu …)
        raise ConfigError unless ``False``: the theory without that term, as deepbays' ``CONV_1HL``.
    kernel_dtype : {"auto", "float64", "float32"}
        Storage of the patch-pair blocks (local readout; sums always accumulate in float64).
        ``"auto"``: float64 up to 2 GiB of store, float32 beyond.
    max_memory : int, optional
        Largest store in bytes (default 8 GiB); ConfigError naming the size needed beyond it.
    tol : float
        Relative stationarity residual required (default 1e-9).
    check_minimum : bool or "auto"
        Also check that the Hessian at the answer is positive (a minimum, not a saddle). ``"auto"``:
        when it is cheap (≤ 300 unknowns Ñ(Ñ+1)/2 and P ≤ 2000).

    Attributes
    ----------
    qbar_ : ndarray
        Local readout: the Ñ×Ñ SPD patch–patch matrix Q (= 1 at infinite width). Pooled readout:
        ``[Q̄]``, shape (1,), the scalar of the 1HL theory with the pooled kernel.
    q_ : ndarray
        The conjugate variable at the saddle, Q⁻¹ − 1 (pooled: 1/Q̄ − 1).
    action_ : float
        S at the saddle (−2 log Z up to constants, as :class:`~finwidth.RKGP`).
    log_evidence_ : float
        −S/2 − (P/2) log 2π.
    residual_ : float
        Verified relative stationarity residual (≤ ``tol``).
    n_evaluations_ : int
        Evaluations of S and ∇S (each two passes over the store).
    min_curvature_ : float or None
        Smallest over largest |eigenvalue| of the Hessian in log Q (None when not checked).
    width_criterion_ : LocalWidthCriterion or finwidth.theory.rkgp.WidthCriterion
        Local: what the training set says about the global mode. Pooled: the 1HL criterion, exact.
    kernel_ : ndarray, shape (P, P)
        The renormalised kernel K_R on the training inputs.
    kernel_dtype_ : str
        Storage used for the blocks (local readout).
    store_bytes_ : int
        Size of that store (0 for the pooled readout).
    kind_ : str
        "conv-local" or "conv-pooled".

    Parameters are validated by :meth:`fit`; ``get_params``/``set_params`` (``network__channels`` …),
    ``score`` (R²) and ``clone`` follow scikit-learn (:mod:`finwidth.theory.base`).
    """

    def __init__(self, network, temperature: float, *, mean_correction=None, kernel_dtype: str = "auto",
                 max_memory: int | None = None, tol: float = RESIDUAL_TOL, check_minimum="auto"):
        self.network = network
        self.temperature = temperature
        self.mean_correction = mean_correction
        self.kernel_dtype = kernel_dtype
        self.max_memory = max_memory
        self.tol = tol
        self.check_minimum = check_minimum

    # ------------------------------------------------------------------------------ validation
    def _check_params(self) -> float:
        from finwidth.convnet import ConvNetwork

        net = self.network
        if not isinstance(net, ConvNetwork):
            raise ConfigError(f"network must be a finwidth.ConvNetwork, got {type(net).__name__}")
        T = validate_noise(self.temperature, "temperature")
        if self.mean_correction not in (None, False):
            raise ConfigError("mean_correction=True is not available for CNNs: the mean term of non-odd "
                              "activations is not derived for the patch-patch theory")
        if not net.activation.odd and self.mean_correction is None:
            raise ConfigError(
                f"{net.activation.name!r} is not odd: the CNN theory has no mean term for non-odd activations "
                "(finwidth derives it only for fully connected one-hidden-layer nets); pass mean_correction=False "
                "to use the theory without it (as deepbays CONV_1HL does), or use an odd activation")
        if self.kernel_dtype not in ("auto", "float64", "float32"):
            raise ConfigError(f"kernel_dtype must be 'auto', 'float64' or 'float32', got {self.kernel_dtype!r}")
        if self.max_memory is not None and not (isinstance(self.max_memory, (int, float, np.integer, np.floating))
                                                and not isinstance(self.max_memory, bool) and self.max_memory > 0):
            raise ConfigError(f"max_memory must be a positive number of bytes, got {self.max_memory!r}")
        if not (isinstance(self.tol, float) and 0 < self.tol < 1e-3):
            raise ConfigError(f"tol must be a float in (0, 1e-3), got {self.tol!r}")
        if self.check_minimum not in ("auto", True, False):
            raise ConfigError(f"check_minimum must be True, False or 'auto', got {self.check_minimum!r}")
        return T

    # ------------------------------------------------------------------------------ fit
    def fit(self, X, y) -> ConvRKGP:
        """Solve the saddle point on (X, y).

        Raises
        ------
        ConfigError
            Bad parameters, shapes or values; a store larger than ``max_memory``; T = 0 with a
            singular NNGP kernel.
        ConvergenceError
            No verified stationary point.
        """
        from finwidth.conv_kernels import PatchInputs
        from finwidth.inputs import as_inputs
        from finwidth.inputs import validate_targets

        T = self._check_params()
        self.__dict__.pop("_gp", None)  # a refit invalidates the cached factorisation of K_R
        X = as_inputs(X, "X")
        y = validate_targets(y, X.shape[0])
        self._train = PatchInputs(self.network, X, "X")
        self.X_train_, self.y_train_ = X, y
        if self.network.readout == "pooled":
            self._fit_pooled(y, T)
        else:
            self._fit_local(y, T)
        self.log_evidence_ = -0.5 * self.action_ - 0.5 * y.size * math.log(2 * math.pi)
        return self

    def _fit_pooled(self, y: np.ndarray, T: float) -> None:
        from finwidth.conv_kernels import nngp_weights, weighted_kernel
        from finwidth.theory import spectral
        from finwidth.theory.rkgp import width_criterion

        net = self.network
        K = weighted_kernel(self._train, None, nngp_weights(net) / (net.priors[1] * net.n_patches))
        basis = spectral.eigenbasis(K)
        y_t = basis.project(y)
        sol = spectral.solve_product(basis, y_t, T, [net.channels])
        self.width_criterion_ = width_criterion(basis, y_t, [net.channels])
        self.qbar_ = np.array([sol.pi])
        self.q_ = 1.0 / self.qbar_ - 1.0
        self.action_, self.residual_ = sol.action, sol.residual
        self.n_evaluations_, self.min_curvature_ = 0, None
        self.kernel_dtype_, self.store_bytes_ = "float64", 0
        self.kernel_ = sol.pi * K
        self.kind_ = "conv-pooled"
        g1 = spectral.g_of_pi(1.0, basis.values, y_t ** 2, T)[0]
        self._nngp = (K, np.array([[y.size * g1]]), y.size * g1 * K)  # dS_data/dQ̄ at Q̄ = 1 is P g(1)

    def _fit_local(self, y: np.ndarray, T: float) -> None:
        from finwidth.theory.patch_store import PatchPairStore, store_bytes
        from finwidth.theory.spd import minimize_spd

        net, n, P = self.network, self.network.n_patches, y.size
        limit = DEFAULT_MAX_MEMORY if self.max_memory is None else int(self.max_memory)
        dtype = self.kernel_dtype
        if dtype == "auto":
            dtype = "float64" if store_bytes(n, P, "float64") <= min(AUTO_FLOAT64_BYTES, limit) else "float32"
        need = store_bytes(n, P, dtype)
        if need > limit:
            raise ConfigError(
                f"the patch-pair kernel store needs {need / 2**30:.2f} GiB ({dtype}, Ñ = {n} patches, P = {P}) but "
                f"max_memory is {limit / 2**30:.2f} GiB: raise max_memory, use kernel_dtype='float32', fewer "
                "training points or fewer patches (a larger stride)")
        store = PatchPairStore(self._train, dtype)
        action = LocalAction(store, y, T, net.channels, net.priors[1])
        eye = np.eye(n)
        start = action.evaluate(eye)
        if not start.finite:
            raise ConfigError("the NNGP kernel (Q = 1) is singular and T = 0: the CNN theory needs T > 0 here "
                              "(duplicate inputs, or constant patches)")
        self.width_criterion_ = self._criterion(action, start, y)
        # for width_sensitivity: K at Q = 1, the data gradient D there, and Σ D_ij K_ij/(λ_1 Ñ)
        self._nngp = (action.kernel(eye), start.grad, action.kernel(start.grad))
        Q0 = self._start(action, start)

        def fun(Q):
            point = action.evaluate(Q)
            if not point.finite:
                return math.inf, point.grad
            return point.value, point.grad, action.scale(Q, point)

        check = self.check_minimum
        if check == "auto":
            check = n * (n + 1) // 2 <= AUTO_CHECK_UNKNOWNS and P <= AUTO_CHECK_POINTS
        sol = minimize_spd(fun, Q0, tol=self.tol, check_minimum=bool(check),
                           what=f"the CNN patch-patch order parameter (Ñ = {n})")
        Q = 0.5 * (sol.Q + sol.Q.T)
        self.qbar_ = Q
        self.q_ = np.linalg.inv(Q) - eye
        self.action_, self.residual_ = float(sol.value), float(sol.residual)
        self.n_evaluations_ = action.n_evaluations
        self.min_curvature_ = sol.min_curvature
        self.kernel_dtype_, self.store_bytes_ = dtype, store.nbytes
        self.kernel_ = action.kernel(Q)
        self.kind_ = "conv-local"
        del store, action  # the store is the big object; the predictor needs only K_R

    @staticmethod
    def _start(action: LocalAction, at_identity: ActionPoint) -> np.ndarray:
        """The identity or one fixed-point step Q = (1 + D(1)/C)⁻¹, whichever has the lower action."""
        n = at_identity.grad.shape[0]
        M = np.eye(n) + at_identity.grad / action.C
        w = np.linalg.eigvalsh(M)
        if not w[0] > 0:
            return np.eye(n)
        Q1 = np.linalg.inv(M)
        Q1 = 0.5 * (Q1 + Q1.T)
        return Q1 if action.evaluate(Q1, gradient=False).value < at_identity.value else np.eye(n)

    @staticmethod
    def _criterion(action: LocalAction, at_identity: ActionPoint, y: np.ndarray) -> LocalWidthCriterion:
        from finwidth.theory import spectral

        basis = spectral.eigenbasis(action.kernel(np.eye(action.n)))
        k, y_t = basis.values, basis.project(y)
        pos = k > 0
        r = float(np.sum(y_t[pos] ** 2 / k[pos])) / y.size
        g1 = at_identity.g_R
        return LocalWidthCriterion(g_nngp=g1, r=r, global_mode_decreases=bool(g1 > 0))

    # ------------------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "kernel_"):
            raise ConfigError("this ConvRKGP is not fitted yet; call fit(X, y) first")

    def patch_weights(self) -> np.ndarray:
        """W with K_R = Σ_ij W_ij K_ij: Q/(λ_1 Ñ) (local) or Q̄ 11ᵀ/(λ_1 Ñ²) (pooled)."""
        from finwidth.conv_kernels import nngp_weights

        self._check_fitted()
        net = self.network
        base = nngp_weights(net) * self.qbar_[0] if self.kind_ == "conv-pooled" else self.qbar_
        return base / (net.priors[1] * net.n_patches)

    def renormalized_kernel(self, X_test=None):
        """K_R on the training inputs and, with ``X_test``, its test×train block and test diagonal.

        Returns
        -------
        finwidth.kernels.KernelBlocks
        """
        from finwidth.conv_kernels import PatchInputs, weighted_diagonal, weighted_kernel
        from finwidth.kernels import KernelBlocks

        self._check_fitted()
        blocks = KernelBlocks(self.kernel_.copy())
        if X_test is not None:
            te = PatchInputs(self.network, X_test, "X_test")
            W = self.patch_weights()
            blocks.test_train = weighted_kernel(te, self._train, W)
            blocks.test_diag = weighted_diagonal(te, W)
        return blocks

    def predict(self, X_test, return_var: bool = False, return_cov: bool = False, return_std: bool = False):
        """Posterior mean (and variance) of f: the GP with kernel K_R and noise T.

        Returns
        -------
        mean : ndarray, shape (P_t,); var : ndarray, shape (P_t,) if ``return_var`` (noise T not added);
        std = √var last if ``return_std``.
        """
        from finwidth.theory.gp import gp_fit, gp_predict

        if return_std:
            return with_std(self.predict(X_test, return_var=True, return_cov=return_cov), return_var, return_cov)

        self._check_fitted()
        if return_cov:
            raise ConfigError("return_cov is not available for the CNN theory; use return_var=True")
        if not hasattr(self, "_gp"):
            self._gp = gp_fit(self.kernel_, self.y_train_, float(self.temperature))
        blocks = self.renormalized_kernel(X_test)
        return gp_predict(self._gp, blocks.test_train, blocks.test_diag, return_var=return_var)

    def width_sensitivity(self, X_test, y_test) -> WidthSensitivity:
        """dε_g/d(1/C) at C → ∞ on a test set, from infinite-width quantities only (docs/theory.md).

        To first order Q = 1 − D/C with D the data gradient of S at Q = 1 (pooled: Q̄ = 1 − P g(1)/C), so
        dε_g/d(1/C) is minus the derivative of ε_g along D: one test×train kernel with weights D.
        """
        from finwidth.conv_kernels import PatchInputs, nngp_weights, weighted_diagonal, weighted_kernel
        from finwidth.inputs import as_inputs
        from finwidth.inputs import validate_targets
        from finwidth.theory.gp import gp_fit

        self._check_fitted()
        X_test = as_inputs(X_test, "X_test")
        y_test = validate_targets(y_test, X_test.shape[0], "y_test")
        net, (K, D, dK) = self.network, self._nngp
        scale = 1.0 / (net.priors[1] * net.n_patches)
        W0 = nngp_weights(net) * scale
        Wd = D[0, 0] * W0 if self.kind_ == "conv-pooled" else D * scale
        te = PatchInputs(net, X_test, "X_test")
        kt, kd = weighted_kernel(te, self._train, W0), weighted_diagonal(te, W0)
        dkt, dkd = weighted_kernel(te, self._train, Wd), weighted_diagonal(te, Wd)
        fit = gp_fit(K, self.y_train_, float(self.temperature))
        a = fit.alpha
        G = fit.factor.solve(kt.T)  # A⁻¹ k_t, (P, P_t)
        mean = kt @ a
        dmean = dkt @ a - np.einsum("pt,pq,q->t", G, dK, a)
        dvar = dkd - 2.0 * np.einsum("tp,pt->t", dkt, G) + np.einsum("pt,pq,qt->t", G, dK, G)
        dbias = float(np.mean(-2.0 * (y_test - mean) * dmean))
        # Q moves by −D/C: dε/d(1/C) = −(derivative along D)
        bias, variance = -dbias, -float(np.mean(dvar))
        return WidthSensitivity(bias + variance, bias, variance, bool(bias + variance < 0))

    def generalization_error(self, X_test, y_test):
        """ε_g = bias + variance over the test set (noise T not added); ErrorDecomposition."""
        from finwidth.inputs import as_inputs
        from finwidth.inputs import validate_targets
        from finwidth.theory.gp import generalization_error

        X_test = as_inputs(X_test, "X_test")
        y_test = validate_targets(y_test, X_test.shape[0], "y_test")
        mean, var = self.predict(X_test, return_var=True)
        return generalization_error(y_test, mean, var)
