"""Renormalised-kernel Gaussian process (Pacelli et al., Nat. Mach. Intell. 2023).

Finite-width Bayesian networks in the proportional limit (P, N_l → ∞, α_l = P/N_l fixed) predict
like a GP whose kernel is renormalised by order parameters Q̄_l > 0 (= 1 at infinite width), fixed
by a saddle point of the effective action (normalised as −2 log Z up to constants):

    S(Q̄) = Σ_l N_l (Q̄_l − log Q̄_l − 1) + log det(T + K_L^R) + yᵀ (T + K_L^R)⁻¹ y.

Cases (docs/theory.md has the equations and references):

* ``renormalization="product"``: K_L^R = (∏_l Q̄_l) K_L with K_L the NNGP output kernel (all 1/λ_l
  included). One ``eigh``; one scalar equation in log Π for any widths (Li–Sompolinsky form
  Q̄_l = 1 − α_l g(Π)); O(P) per evaluation. Exact for linear (= BPKR) and, by homogeneity, equal
  to the nested form for relu. At L = 1 this *is* the one-hidden-layer theory.
* ``renormalization="nested"``: K_l^R = (Q̄_l/λ_l) κ(K_{l−1}^R) + σ²_{b,l}; quasi-Newton on log Q̄
  from the product-form saddle with the analytic gradient back-propagated through the kernel
  recursion, one Cholesky per evaluation (:mod:`finwidth.theory.nested`).
* one hidden layer, non-odd activation with the mean term (``mean_correction``):
  K_R = Q̄ (K − M) + M/(1 + Q), M = m mᵀ/λ_1, m_μ = E σ(h), h ~ N(0, C_μμ); a genuine saddle in
  (Q̄, Q), solved as a root of the gradient with Sherman–Morrison in the eigenbasis (O(P)).

T = 0 is legal: the product form uses the mode-by-mode T → 0 limit (closed form at L = 1), the
others evaluate the same formulas with T = 0 (the kernel must then be non-singular).

Biases (not in the papers): the kernels include them (C = XXᵀ/(λ_0 N_0) + σ²_{b,0},
K_l = κ(K_{l−1})/λ_l + σ²_{b,l}). The nested form leaves each layer's bias variance un-renormalised
(a bias is one Gaussian variable, not a sum over N_l neurons, so it carries no width fluctuation);
the product and one-hidden-layer forms multiply the whole K_L, biases included, by Π. A first-layer
bias is the same as a constant input feature, so it is exact there; for deeper biases the product
form is an approximation and the nested form the derived choice.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from finwidth.errors import ConfigError, ConvergenceError
from finwidth.inputs import as_inputs as _as_X
from finwidth.theory import device_linalg, nested, scalable, spectral, tridiagonal
from finwidth.theory.base import Estimator, with_std
from finwidth.theory.gp import validate_noise, validate_targets
from finwidth.theory.multioutput_estimator import MultiOutputMixin

__all__ = ["RKGP", "WidthCriterion", "width_criterion"]

_NONODD_STARTS = ((1.0, 0.0), (0.5, 1.0), (2.0, -0.5), (0.2, 4.0), (5.0, -0.8))


@dataclass(frozen=True)
class WidthCriterion:
    """T → 0 width criterion of the renormalised-kernel theory (Pacelli et al. §8).

    Attributes
    ----------
    r : float
        r = yᵀ K_out⁺ y / P with K_out the NNGP output kernel (all 1/λ included; pseudo-inverse over
        the non-null modes).
    finite_width_better : bool
        True iff r < 1: at T → 0 the bias is width-independent and the variance is Π* V_NNGP with
        Π* < 1 iff r < 1, so the test error *increases* with width towards the NNGP value.
    pi_t0 : float
        Π* at T = 0 for this network's widths (product form).
    student_t_factor : float or None
        Student-t process variance factor (ν + P r − 2)/(ν + P − 2) with ν = N_1 (one hidden layer
        only; None otherwise), to be compared with ``pi_t0``.
    """

    r: float
    finite_width_better: bool
    pi_t0: float
    student_t_factor: float | None


def width_criterion(basis: spectral.Eigenbasis, y_t: np.ndarray, widths) -> WidthCriterion:
    """The T → 0 width criterion of the product-form theory with output kernel ``basis`` (Pacelli et al. §8).

    ``widths`` are N_1..N_L; the Student-t factor is given for one hidden layer only.
    """
    return measure_width_criterion(spectral.SpectralMeasure.from_eigenbasis(basis.values, np.asarray(y_t) ** 2), widths)


def measure_width_criterion(measure, widths) -> WidthCriterion:
    """:func:`width_criterion` from a spectral measure of the output kernel (eigenbasis or tridiagonal)."""
    widths = np.asarray(widths, dtype=float)
    P = measure.size
    r = measure.g(1.0, 0.0)[2]  # the label part of g at T = 0, Π = 1: yᵀ K⁺ y / P
    try:
        pi0 = spectral.solve_product_measure(measure, 0.0, widths).pi
    except ConvergenceError:
        pi0 = float("nan")
    stf = None
    if widths.size == 1:
        nu = widths[0]
        stf = (nu + P * r - 2.0) / (nu + P - 2.0)
    return WidthCriterion(r=r, finite_width_better=bool(r < 1.0), pi_t0=pi0, student_t_factor=stf)


class RKGP(MultiOutputMixin, Estimator):
    """Renormalised-kernel GP estimator (finite-width Bayesian network, proportional limit).

    With targets of shape (P, D), D ≥ 2, the order parameters are D×D matrices (kernel shape renormalisation
    across outputs, :mod:`finwidth.theory.multioutput`; attributes in :class:`MultiOutputMixin`).

    Parameters
    ----------
    network : finwidth.Network or finwidth.ConvNetwork
        Widths N_1..N_L, activation, prior precisions λ_0..λ_L, optional bias variances. A
        ``ConvNetwork`` gets the local kernel renormalisation of :mod:`finwidth.theory.conv`
        (``qbar_`` is then the Ñ×Ñ patch–patch matrix; ``renormalization`` does not apply and
        ``mean_correction`` must be None or False); its options are on ``ConvRKGP``.
    temperature : float
        T ≥ 0, the likelihood variance of the Gibbs posterior (docs/conventions.md). T = 0 is legal.
    renormalization : {"product", "nested"}
        Deep renormalised kernel (module docstring). Identical at L = 1 without biases, and for
        relu/linear at any depth (homogeneity).
    mean_correction : bool or None
        Mean term of non-odd activations (two order parameters). ``None``: on for non-odd
        activations at L = 1, off otherwise. ``True`` requires L = 1 and a non-odd activation.
    solver : {"auto", "dense", "krylov"}
        ``"dense"``: one eigendecomposition of the P×P output kernel (exact). ``"krylov"``: matrix-free
        Lanczos quadrature on a tiled kernel (:mod:`finwidth.theory.scalable`; product form and one
        hidden layer without the mean term, T > 0), with error bars ``qbar_stderr_``,
        ``qbar_quadrature_error_`` and ``qbar_product_error_``; with D outputs
        :mod:`finwidth.theory.multioutput_krylov` (error bars ``renormalization_stderr_`` …).
        ``"auto"``: krylov above :data:`finwidth.theory.scalable.KRYLOV_ABOVE_P` training points
        where it applies (docs/large-p.md).
    solver_options : dict or None
        Options of the matrix-free path (:data:`finwidth.theory.scalable.SOLVER_OPTIONS`): target
        accuracy ``rtol`` (default 1e-3, relative on Q̄), probes, deflation of K's leading eigenpairs
        (``deflate``), storage of the kernel tiles, …
    correction : {None, "kernel_shape", "qbar_fluctuations"}
        Beyond the saddle point, one hidden layer only (:mod:`finwidth.theory.corrections`):
        the first-order kernel-shape correction of deepbays' ``FC_1HL_corrected``, or the exact
        integral over Q̄ (a mixture of GPs; exact for linear activations). Predictions use it;
        ``qbar_``, ``action_`` and the evidence stay those of the saddle point.
    device : None, str or torch.device
        ``None`` (default): numpy. ``"cuda"``, ``"cuda:1"``, ``"cpu"``, a ``torch.device``: the kernel and the
        dense linear algebra run there in float64 with the numpy answers to rounding (docs/large-p.md, "On a
        GPU"; torch is imported only then): the training kernel, one ``eigh`` of it (eigenvalues and the label
        coordinates; the O(P) saddle-point equations stay in numpy), and the predictions' Cholesky, test ×
        train kernel and solves. The nested form factorises T + K_L^R there at every step (its kernel
        recursion and adjoint stay on the CPU); ``correction`` and several outputs take the eigenbasis from
        the device and sum over the modes on the CPU; ``solver="krylov"`` runs its kernel tiles and products
        there (:class:`finwidth.kernel_operator.KernelOperator`). A ``ConvNetwork`` is not supported
        (ConfigError). Fitted attributes are numpy.

    Attributes
    ----------
    qbar_ : ndarray, shape (L,)
        Order parameters Q̄_l (= 1 at infinite width).
    q_ : ndarray, shape (L,)
        Conjugate variables Q_l (= 1/Q̄_l − 1 where eliminated; solved for in the non-odd case).
    action_ : float
        S at the saddle point (normalisation in the module docstring).
    log_evidence_ : float or None
        −S/2 − (P/2) log 2π, the saddle-point log marginal likelihood of the labels (the GP log
        evidence at infinite width); None where S is infinite (T = 0 with a singular kernel).
    width_criterion_ : WidthCriterion
    roots_ : list
        Every stationary point found (product form: values of Π; non-odd: (Q̄, Q) pairs).
    residual_ : float
        Relative stationarity residual at the returned point (≤ 1e-9 product/non-odd, ≤ 1e-7 nested).
    n_factorizations_ : int
        Cholesky factorisations done by the nested solver (0 for the eigenbasis forms).
    roundoff_sensitivity_ : float
        Relative error that round-off in the output kernel's eigenvalues can put on the fit
        (:func:`finwidth.theory.spectral.roundoff_sensitivity`, with Π = ∏ Q̄_l); above 1e-6 the fit
        emits a :class:`~finwidth.errors.ConditioningWarning`.
    kind_ : str
        "product", "nested" or "nonodd".
    mean_correction_ : bool
        Whether the mean term was used (``mean_correction`` resolved).
    solver_ : str
        "dense" or "krylov" (``solver`` resolved).
    qbar_stderr_, qbar_quadrature_error_, qbar_product_error_ : ndarray, shape (L,)
        Accuracy of Q̄ on the matrix-free path: standard error from the stochastic trace, bound from
        the quadrature, and estimated effect of float32 products (zeros on the dense path).
        ``log_evidence_stderr_`` likewise. With D outputs: ``renormalization_stderr_`` and
        ``renormalization_quadrature_error_`` (D, D), :class:`MultiOutputMixin`.
    correction_ : object or None
        The fitted correction (``KernelShape`` or ``QbarMixture``), None without one.
    validity_ : finwidth.theory.validity.Validity or None
        Validity diagnostic: the effective load α_eff = df/N_L of the renormalised GP and the kernel's
        effective rank per hidden unit; where both say the saddle point is unreliable, ``fit`` warns
        with :class:`finwidth.ValidityWarning` (rule and its measured error rates: docs/validity.md).
        None for several outputs and for a ConvNetwork (where the rule was not calibrated), and on the
        matrix-free path (``solver_ == "krylov"``), which has no eigenvalues.

    Parameters are validated by :meth:`fit`; ``get_params``/``set_params``, ``score`` (R²) and
    ``clone`` follow scikit-learn (:mod:`finwidth.theory.base`).
    """

    def __init__(self, network, temperature: float, *, renormalization: str = "product", mean_correction=None,
                 correction=None, solver: str = "auto", solver_options=None, device=None):
        self.network = network
        self.temperature = temperature
        self.renormalization = renormalization
        self.mean_correction = mean_correction
        self.correction = correction
        self.solver = solver
        self.solver_options = solver_options
        self.device = device

    def _check_params(self) -> bool:
        """Validate the parameters (ConfigError); returns whether the mean term is used."""
        from finwidth.network import Network

        network, mean_correction = self.network, self.mean_correction
        if type(network).__name__ == "ConvNetwork":  # the CNN theory (finwidth.theory.conv) validates in fit
            return False
        if not isinstance(network, Network):
            raise ConfigError(f"network must be a finwidth.Network, got {type(network).__name__}")
        validate_noise(self.temperature)
        if self.renormalization not in ("product", "nested"):
            raise ConfigError(f"renormalization must be 'product' or 'nested', got {self.renormalization!r}")
        act = network.activation
        if mean_correction is None:
            return (not act.odd) and network.depth == 1
        if mean_correction:
            if network.depth != 1:
                raise ConfigError("mean_correction=True is implemented for one hidden layer only (L = 1)")
            if act.odd:
                raise ConfigError(f"mean_correction=True needs a non-odd activation; {act.name!r} is odd (zero mean)")
        return bool(mean_correction)

    # ------------------------------------------------------------------------------------------
    def fit(self, X, y) -> RKGP:
        """Solve the saddle point on the training set (X, y).

        Parameters
        ----------
        X : array, shape (P, N_0)
        y : array, shape (P,) or (P, D)
            D ≥ 2 columns: D outputs (matrix order parameters); (P, 1) is one output.

        Returns
        -------
        self

        Raises
        ------
        ConfigError
            Bad shapes or non-finite values.
        ConvergenceError
            No verified saddle point (the message gives the residual and what to try).
        """
        from finwidth import kernels

        self.mean_correction_ = self._check_params()
        self._conv = None
        self.n_outputs_ = 1
        self.correction_ = self.validity_ = None  # neither is defined for CNNs or several outputs
        is_conv = type(self.network).__name__ == "ConvNetwork"
        if not is_conv:
            X = _as_X(X, "X")
            y = validate_targets(y, X.shape[0], multi_output=True)
        if getattr(self, "correction", None) is not None and (is_conv or y.ndim == 2):
            raise ConfigError(f"correction={self.correction!r} is implemented for one output of a fully connected "
                              "network; use correction=None here")
        self._device = self._resolve_device(is_conv)
        if is_conv:
            return self._fit_conv(X, y)
        if y.ndim == 2:
            return self._fit_multioutput(X, y)  # chooses its solver (dense or krylov) after its own checks
        net = self.network
        P = X.shape[0]
        L = net.depth
        T = self.temperature
        widths = np.array(net.widths, dtype=float)
        correction = getattr(self, "correction", None)  # subclasses (BPKR) may not take the parameter
        if correction is not None and self.solver == "krylov":
            raise ConfigError(f"correction={correction!r} sums over the kernel's eigenmodes: use solver='dense' or 'auto'")
        self.solver_ = scalable.choose_solver(
            self.solver, P, temperature=T,
            product_form=correction is None and not self.mean_correction_
            and (self.renormalization == "product" or L == 1 and net.bias is None),
        )
        scalable.solver_options(self.solver_options)
        if self.solver_ == "krylov":
            scalable.fit_rkgp(self, X, y)
            return self
        self.qbar_stderr_ = self.qbar_quadrature_error_ = self.qbar_product_error_ = np.zeros(L)
        self.log_evidence_stderr_ = 0.0
        # only the output layer is kept as a P×P matrix; the lower layers enter through their diagonals
        # (the nested form keeps the input kernel too, and builds K_out from it)
        is_nested = not self.mean_correction_ and self.renormalization == "nested" and (L > 1 or net.bias is not None)
        action = nested.NestedAction(net, X, y, T, device=self._device) if is_nested else None
        self._train_diags = kernels.layer_diagonals(net, X)
        K_out = self._output_kernel(X, action)
        self.X_train_ = X
        self.y_train_ = y
        self.n_factorizations_ = 0

        if correction is None:
            # the spectrum without eigenvectors (docs/large-p.md): product form, non-odd theory, and the
            # nested form's start
            spectrum = self._spectrum(K_out, y)
            del K_out  # the device's copy is released before the solve; numpy's memory holds the reflectors
            self._fit_spectral(spectrum, X, y, widths, action)
            return self._set_evidence(P)

        # a correction beyond the saddle point (one hidden layer, product form: checked by _fit_correction
        # before anything is solved) sums over the modes: the output NNGP eigenbasis
        self.kind_ = "nonodd" if self.mean_correction_ else "nested" if is_nested else "product"
        self._fit_correction(None, None)
        basis = spectral.eigenbasis(K_out) if self._device is None else device_linalg.eigenbasis(K_out)
        del K_out
        y_t = basis.project(y)
        self._criterion(basis, y_t, widths)
        sol = spectral.solve_product(basis, y_t, T, widths)
        self.qbar_ = sol.qbar
        self.q_ = 1.0 / sol.qbar - 1.0
        self.action_ = sol.action
        self.residual_ = sol.residual
        self.roots_ = sol.roots
        self._pred_basis = basis
        self._pred_scale = sol.pi
        # near-singular problems: how much can round-off in the output kernel's spectrum move the fit?
        self._warn_roundoff(spectral.roundoff_sensitivity(basis, y_t, T, sol.pi))
        self.correction_ = self._fit_correction(basis, y_t)
        self.validity_ = self._validity(basis.values)
        return self._set_evidence(P)

    def _resolve_device(self, is_conv: bool):
        """The torch device asked for (None: numpy); ConfigError for a bad one or one the fit cannot use."""
        device = getattr(self, "device", None)  # subclasses (BPKR) may not take the parameter
        if device is None:
            return None
        from finwidth.device import resolve_device

        dev = resolve_device(device)
        if is_conv:
            raise ConfigError(f"device={device!r}: the CNN theory (finwidth.theory.conv) runs on the CPU only; "
                              "use device=None for a ConvNetwork")
        return dev

    def _output_kernel(self, X: np.ndarray, action: nested.NestedAction | None):
        """The NNGP output kernel K_L on the training set: numpy, or a tensor on the device (the nested form
        builds it from its stored first layer, on the CPU)."""
        from finwidth import kernels

        if action is not None:
            K = action.nngp_kernel()
            return K if self._device is None else device_linalg.as_tensor(K, self._device)
        if self._device is not None:
            return device_linalg.train_kernel(self.network, X, self._train_diags, self._device)
        return np.asarray(kernels.nngp(self.network, X).train, dtype=np.float64)

    def _warn_roundoff(self, sensitivity: float, stacklevel: int = 4) -> None:
        self.roundoff_sensitivity_ = sensitivity
        spectral.warn_if_ill_conditioned(sensitivity, "this RKGP fit", stacklevel=stacklevel)

    def _set_evidence(self, P: int) -> RKGP:
        P_half_log = 0.5 * P * math.log(2 * math.pi)
        if not math.isfinite(self.action_):
            self.action_ = math.nan  # T = 0 with labels outside the kernel's range: S is not defined
        self.log_evidence_ = None if not math.isfinite(self.action_) else -0.5 * self.action_ - P_half_log
        return self

    def _spectrum(self, K_out, y: np.ndarray):
        """(eigenvalues, number of null ones, coordinates of [y, m] or None, Householder spectrum or None) of
        the output kernel: one in-place Householder tridiagonalisation (K_out destroyed; coordinates only where
        needed), or one eigh on the device."""
        vecs = [y, self._mean_vector(self._train_diags[0])] if self.mean_correction_ else [y]
        if self._device is not None:
            raw, coords = device_linalg.eigh_coordinates(K_out, np.stack(vecs, axis=1))
            return (*spectral.checked_spectrum(raw), coords, None)
        hs = tridiagonal.householder_spectrum(K_out, y)
        values, n_null = spectral.checked_spectrum(hs.values)
        coords = hs.coordinates(np.stack(vecs, axis=1)) if self.mean_correction_ or n_null else None
        return values, n_null, coords, hs

    def _fit_spectral(self, spectrum, X: np.ndarray, y: np.ndarray, widths: np.ndarray,
                      action: nested.NestedAction | None = None) -> None:
        """Product form, non-odd theory or (with ``action``) the nested form, from one in-place
        Householder tridiagonalisation of the output NNGP kernel (or one eigh on the device).

        The eigenvalues come from the tridiagonal matrix; the labels enter through its continued
        fractions (y is its first basis vector), or, where coordinates are needed (the non-odd theory's
        mean vector, numerically-null modes), through the reflectors and the tridiagonal eigenvectors.
        The nested form starts from the product-form saddle on this spectrum (exact for relu/linear,
        close for erf). ``spectrum`` comes from :meth:`_spectrum` (on a device: one eigh, with the
        coordinates); predictions rebuild what they need (:meth:`_deferred_predict`).
        """
        T = self.temperature
        values, n_null, coords, hs = spectrum
        m_t = None
        if coords is not None:
            basis = spectral.Eigenbasis(values=values, vectors=None, n_null=n_null)
            y_t = coords[:, 0]
            m_t = coords[:, 1] if self.mean_correction_ else None
            measure = spectral.SpectralMeasure.from_eigenbasis(values, y_t ** 2)
        else:
            measure = tridiagonal.TridiagonalMeasure(hs)
        self.width_criterion_ = measure_width_criterion(measure, widths)
        if T == 0 and n_null == values.size:
            raise ConfigError("the kernel is zero: nothing to solve")
        if self.mean_correction_:
            self.kind_ = "nonodd"
            self._fit_nonodd(basis, y_t, X, m_t=m_t)
        elif action is not None:
            self.kind_ = "nested"
            if T == 0 and n_null:
                raise ConfigError(
                    f"the NNGP kernel has {n_null} null eigenvalues (duplicate inputs, or P > N_0 for "
                    "linear layers); the nested form at T = 0 needs a non-singular kernel: use T > 0 or "
                    "renormalization='product'"
                )
            self._fit_nested(action, spectral.solve_product_measure(measure, T, widths))
        else:
            self.kind_ = "product"
            sol = spectral.solve_product_measure(measure, T, widths)
            self.qbar_ = sol.qbar
            self.q_ = 1.0 / sol.qbar - 1.0
            self.action_ = sol.action
            self.residual_ = sol.residual
            self.roots_ = sol.roots
            self._pred_scale = sol.pi
        # near-singular problems: how much can round-off in the output kernel's spectrum move the fit?
        # (the NNGP spectrum scaled by ∏ Q̄_l: exact for the product form, an estimate otherwise)
        self._warn_roundoff(measure.roundoff_sensitivity(float(np.prod(self.qbar_)), T), stacklevel=5)
        self.correction_ = None
        self.validity_ = self._validity(values, m_t, stacklevel=5)
        self._pred_basis = None
        self._pred_cache = {}  # filled by the first predict (a mutable holder: predict leaves __dict__ alone)

    def _fit_conv(self, X, y) -> RKGP:
        """A ConvNetwork: the local kernel renormalisation (finwidth.theory.conv.ConvRKGP, its defaults)."""
        from finwidth.theory.conv import ConvRKGP

        if self.solver == "krylov":
            raise ConfigError("solver='krylov' covers fully connected networks only; use solver='dense' for a ConvNetwork")
        self.solver_ = "dense"
        self._conv = ConvRKGP(self.network, self.temperature, mean_correction=self.mean_correction).fit(X, y)
        for name in ("qbar_", "q_", "action_", "log_evidence_", "residual_", "width_criterion_", "kind_",
                     "X_train_", "y_train_", "n_evaluations_"):
            setattr(self, name, getattr(self._conv, name))
        self.roots_, self.n_factorizations_ = [self.qbar_], 0
        return self

    # ------------------------------------------------------------------------------------------
    def _criterion(self, basis: spectral.Eigenbasis, y_t: np.ndarray, widths: np.ndarray) -> None:
        self.width_criterion_ = width_criterion(basis, y_t, widths)

    def _validity(self, k: np.ndarray, m_t: np.ndarray | None = None, stacklevel: int = 4):
        """The diagnostic of finwidth.theory.validity; ``k``: the NNGP output kernel's eigenvalues, ``m_t``:
        the mean vector's coordinates in its eigenbasis (non-odd theory)."""
        from finwidth.theory import validity

        T = float(self.temperature)
        if self.kind_ == "nested":
            # K_R is not a multiple of K here: df = Tr[K_R (T + K_R)⁻¹] = P − T Tr (T + K_R)⁻¹, with the
            # trace from the solver's last factorisation (no second kernel build or eigendecomposition)
            P = k.size
            dof = float(P) if T == 0 else P - T * self._nested_trace_inv
        else:
            c = self._mean_coefficient() if self.kind_ == "nonodd" else 0.0
            dof = validity.effective_dof(np.maximum(k, 0.0), self._pred_scale, T,
                                         m_t=m_t if self.kind_ == "nonodd" else None, c=c)
        return validity.assess(dof, k, self.network.widths[-1],
                               gaussian_features=self.network.activation.name == "linear", stacklevel=stacklevel)

    def _fit_correction(self, basis: spectral.Eigenbasis | None, y_t: np.ndarray | None):
        from finwidth.theory import corrections

        correction = getattr(self, "correction", None)  # subclasses (BPKR) may not take the parameter
        if correction is None:
            return None
        if correction not in corrections.CORRECTIONS:
            raise ConfigError(f"correction must be None or one of {corrections.CORRECTIONS}, got {correction!r}")
        if self.network.depth != 1 or self.kind_ != "product":
            raise ConfigError(f"correction={correction!r} is implemented for one hidden layer without the "
                              f"non-odd mean term (this fit is {self.kind_!r} at depth {self.network.depth}); "
                              "use mean_correction=False or correction=None")
        if basis is None:  # only the check, before the fit
            return None
        return corrections.fit_correction(correction, k=basis.values, y_t=y_t, temperature=float(self.temperature),
                                          qbar=float(self.qbar_[0]), width=float(self.network.widths[0]))

    # ------------------------------------------------------------------------------------------
    # one hidden layer, non-odd activation: (Q̄, Q) saddle with Sherman–Morrison
    # ------------------------------------------------------------------------------------------
    def _mean_coefficient(self) -> float:
        """c = Q̄_1 − 1/(1 + Q_1): the non-odd renormalised kernel is Q̄_1 K − c m mᵀ (m from :meth:`_mean_vector`)."""
        return float(self.qbar_[0] - 1.0 / (1.0 + self.q_[0]))

    def _mean_vector(self, c_diag: np.ndarray) -> np.ndarray:
        """m/√λ_1 with m_μ = E σ(h), h ~ N(0, C_μμ)."""
        return np.asarray(self.network.activation.mean(c_diag), dtype=np.float64) / math.sqrt(self.network.priors[1])

    def _fit_nonodd(self, basis: spectral.Eigenbasis, y_t: np.ndarray, X: np.ndarray, m_t=None) -> None:
        T = self.temperature
        N = float(self.network.widths[0])
        k = basis.values
        if T == 0 and basis.n_null:
            raise ConfigError(
                f"the output kernel has {basis.n_null} null eigenvalues (duplicate inputs?); the mean-corrected "
                "theory at T = 0 needs a non-singular kernel: use T > 0 or mean_correction=False"
            )
        if m_t is None:
            m_t = basis.project(self._mean_vector(self._train_diags[0]))
        nz = NonOddSaddle(k, y_t, m_t, T, N)
        roots = []
        # the fixed starts, and the saddle of the theory without the mean term (Q = 1/Q̄ − 1 there): it
        # reaches solutions far from (1, 0), e.g. Q̄ ~ 1e-7 when T = 0 and the labels are tiny
        starts = list(_NONODD_STARTS)
        plain = self._plain_one_layer_qbar(basis, y_t, N)
        if plain is not None:
            starts.append((plain, 1.0 / plain - 1.0))
        for qb0, q0 in starts:
            try:
                root = nz.solve(qb0, q0)
            except ConvergenceError:
                continue
            if not any(abs(root[0] - r[0]) < 1e-7 * (1 + abs(r[0])) and abs(root[1] - r[1]) < 1e-7 * (1 + abs(r[1]))
                       for r in roots):
                roots.append(root)
        if not roots:
            grad = nz.gradient(1.0, 0.0)
            where = "" if plain is None else f", including the plain theory's saddle Q̄ = {plain:.3g}"
            raise ConvergenceError(
                f"no stationary point of the non-odd (mean-corrected) action found from any of {len(starts)} "
                f"starts{where}; residual at (Q̄, Q) = (1, 0) in the message",
                residual=float(np.max(np.abs(grad))),
                suggestion="use mean_correction=False (plain theory), or a larger temperature",
            )
        # the physical saddle: the one continuously connected to (1, 0) — closest in log Q̄
        roots.sort(key=lambda r: abs(math.log(r[0])) + abs(math.log1p(r[1])))
        if len(roots) > 1:
            warnings.warn(
                f"the non-odd saddle-point equations have {len(roots)} solutions {roots}; kept {roots[0]}",
                spectral.MultipleRootsWarning, stacklevel=3,
            )
        qbar, q = roots[0]
        self.qbar_ = np.array([qbar])
        self.q_ = np.array([q])
        self.roots_ = roots
        self.residual_ = nz.residual(qbar, q)
        self.action_ = nz.action(qbar, q)
        self._pred_basis = basis
        self._pred_scale = qbar
        self._nonodd = nz

    def _plain_one_layer_qbar(self, basis: spectral.Eigenbasis, y_t: np.ndarray, N: float) -> float | None:
        """Q̄ of the one-hidden-layer theory without the mean term, or None if it has no verified root."""
        try:
            return float(spectral.solve_product(basis, y_t, self.temperature, [N]).qbar[0])
        except ConvergenceError:
            if self.temperature > 0:
                return None
        # T = 0: the closed form (the scan's verification can fail by round-off where Q̄ ≪ 1)
        k = basis.values
        pos = k > 0
        P = k.size
        r = float(np.sum(y_t[pos] ** 2 / k[pos])) / P
        return spectral.t0_one_layer_qbar(P / N, r, basis.rank / P)

    # ------------------------------------------------------------------------------------------
    # nested deep form (finwidth.theory.nested): quasi-Newton on log Q̄ from the product saddle
    # ------------------------------------------------------------------------------------------
    def _nested_kernels(self, qbar: np.ndarray, X: np.ndarray, X_test=None):
        return nested.nested_kernels(self.network, qbar, X, X_test)

    def _nested_value_grad(self, logq: np.ndarray, X: np.ndarray, y: np.ndarray, widths: np.ndarray):
        """(S, ∂S/∂log Q̄, size of the gradient's terms) at log Q̄; (inf, 0, None) if not positive definite."""
        pt = nested.NestedAction(self.network, X, y, self.temperature).evaluate(logq)
        if pt is None:
            return math.inf, np.zeros_like(logq), None
        return pt.action, pt.grad, pt.scale

    def _fit_nested(self, action: nested.NestedAction, start: spectral.ProductSaddle) -> None:
        try:
            pt = nested.solve_nested(action, np.log(start.qbar))
        finally:
            self.n_factorizations_ = action.n_factorizations
        qbar = np.exp(pt.x)
        self.qbar_ = qbar
        self.q_ = 1.0 / qbar - 1.0
        self.action_ = pt.action
        self.residual_ = pt.residual
        self.roots_ = [tuple(qbar)]
        self._nested_trace_inv = pt.trace_inv
        self._pred_basis = None  # the renormalised kernel's eigenbasis: built by the first predict
        self._pred_scale = 1.0

    # ------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "qbar_"):
            raise ConfigError("this RKGP is not fitted yet; call fit(X, y) first")

    def renormalized_kernel(self, X_test=None):
        """Renormalised output-kernel blocks K_L^R (train, test×train, test diagonal) at the saddle.

        Returns
        -------
        finwidth.kernels.KernelBlocks
        """
        from finwidth import kernels

        self._check_fitted()
        if getattr(self, "_conv", None) is not None:
            return self._conv.renormalized_kernel(X_test)
        if getattr(self, "n_outputs_", 1) > 1:
            raise ConfigError("with several outputs the renormalised kernel is renormalization_ ⊗ K_L: use "
                              "renormalization_ and finwidth.kernels.nngp")
        X_test = None if X_test is None else _as_X(X_test, "X_test")
        if X_test is not None and X_test.shape[1] != self.X_train_.shape[1]:
            raise ConfigError(f"X_test has {X_test.shape[1]} features, the training inputs {self.X_train_.shape[1]}")
        if self.kind_ == "nested":
            return self._nested_kernels(self.qbar_, self.X_train_, X_test)[-1]
        out = kernels.nngp(self.network, self.X_train_, X_test)
        if self.kind_ == "product":
            s = self._pred_scale
            return kernels.KernelBlocks(
                train=s * out.train,
                test_train=None if out.test_train is None else s * out.test_train,
                test_diag=None if out.test_diag is None else s * out.test_diag,
            )
        qbar, c = self.qbar_[0], self._mean_coefficient()
        m = self._mean_vector(self._train_diags[0])
        train = qbar * out.train - c * np.outer(m, m)
        if X_test is None:
            return kernels.KernelBlocks(train=train, test_train=None, test_diag=None)
        mt = self._mean_vector(kernels.layer_diagonals(self.network, X_test)[0])
        return kernels.KernelBlocks(
            train=train, test_train=qbar * out.test_train - c * np.outer(mt, m), test_diag=qbar * out.test_diag - c * mt ** 2
        )

    def predict(self, X_test, return_var: bool = False, return_cov: bool = False, return_std: bool = False):
        """Posterior mean (and variance) of f at test inputs: the GP with the renormalised kernel.

        Parameters
        ----------
        X_test : array, shape (P_t, N_0)
        return_var : bool
            Also return the posterior variance of f (observation noise T not added).
        return_cov : bool
            With D outputs: also the D×D posterior covariance of the outputs at each test point. Not
            available for one output (raises ConfigError); use the variance.
        return_std : bool
            Also return the posterior standard deviation of f, √var (last in the tuple).

        Returns
        -------
        mean : ndarray, shape (P_t,), or (P_t, D) with D outputs
        var : ndarray, shape (P_t,) or (P_t, D), if ``return_var``
        cov : ndarray, shape (P_t, D, D), if ``return_cov`` (D outputs)
        std : ndarray, shape of ``mean``, if ``return_std``
        """
        from finwidth import kernels

        if return_std:
            return with_std(self.predict(X_test, return_var=True, return_cov=return_cov), return_var, return_cov)

        self._check_fitted()
        if getattr(self, "_conv", None) is not None:
            return self._conv.predict(X_test, return_var=return_var, return_cov=return_cov)
        if getattr(self, "n_outputs_", 1) > 1:
            return self._predict_multioutput(X_test, return_var, return_cov)
        if return_cov:
            raise ConfigError("return_cov is not available for RKGP; use return_var=True")
        if self.solver_ == "krylov":
            return scalable.predict_rkgp(self, X_test, return_var)
        X_test = _as_X(X_test, "X_test")
        if X_test.shape[1] != self.X_train_.shape[1]:
            raise ConfigError(f"X_test has {X_test.shape[1]} features, the training inputs {self.X_train_.shape[1]}")
        if getattr(self, "_device", None) is not None and getattr(self, "correction_", None) is None:
            return self._device_predict(X_test, return_var)
        if self.kind_ != "nested" and self._pred_basis is None:
            return self._deferred_predict(X_test, return_var)
        T = self.temperature
        if self.kind_ == "nested":
            blocks = self._nested_kernels(self.qbar_, self.X_train_, X_test)[-1]
            if self._pred_basis is None:
                self._pred_basis = spectral.eigenbasis(blocks.train)
            kt, kd, s = blocks.test_train, blocks.test_diag, 1.0
        else:
            # test blocks only: the train kernel is never rebuilt
            kt, kd = kernels.nngp_cross(self.network, self.X_train_, X_test, train_diags=self._train_diags)
            s = self._pred_scale
            if getattr(self, "correction_", None) is not None:
                basis = self._pred_basis
                kt_t = kt @ basis.vectors
                kt_t[:, ~(basis.values > 0)] = 0.0
                return self.correction_.predict(kt_t, kd, return_var)
        basis = self._pred_basis
        k = basis.values
        pos = k > 0
        y_t = basis.project(self.y_train_)
        kt_t = (kt @ basis.vectors) * s  # renormalised test×train in the eigenbasis
        kd = kd * s
        kt_t[:, ~pos] = 0.0  # consistent with the zeroed null modes (k ∈ range K for a PSD kernel)
        beta = T + s * k
        inv = np.zeros_like(k)
        inv[pos | (beta > 0)] = 1.0 / beta[pos | (beta > 0)]
        if self.kind_ == "nonodd":
            c = self._mean_coefficient()
            m = self._mean_vector(self._train_diags[0])
            mt = self._mean_vector(kernels.layer_diagonals(self.network, X_test)[0])
            m_t = basis.project(m)
            kt_t = kt_t - c * np.outer(mt, m_t)
            kd = kd - c * mt ** 2
            s_mm = float(np.sum(m_t ** 2 * inv))
            s_my = float(np.sum(m_t * y_t * inv))
            D = 1.0 - c * s_mm
            w = y_t * inv + c * (m_t * inv) * s_my / D
            mean = kt_t @ w
            if not return_var:
                return mean
            u = kt_t @ (m_t * inv)
            var = kd - (kt_t ** 2) @ inv - c * u ** 2 / D
        else:
            mean = kt_t @ (y_t * inv)
            if not return_var:
                return mean
            var = kd - (kt_t ** 2) @ inv
        return mean, np.maximum(var, 0.0)

    def _deferred_predict(self, X_test: np.ndarray, return_var: bool):
        """Predictions of the product-form and non-odd fits: the renormalised train kernel is rebuilt
        and factorised once, at the first call (Cholesky at T > 0), then kept."""
        from finwidth import kernels
        from finwidth.theory.gp import gp_fit, gp_predict

        s = self._pred_scale
        cache = self._pred_cache
        if "fit" not in cache:
            K = kernels.nngp(self.network, self.X_train_).train
            K *= s
            if self.kind_ == "nonodd":
                m = self._mean_vector(self._train_diags[0])
                c = self._mean_coefficient()
                tridiagonal.rank_one_update(K, m, -c)
            cache["fit"] = gp_fit(K, self.y_train_, self.temperature, rtol=spectral.NULL_RTOL, overwrite=True)
        kt, kd = kernels.nngp_cross(self.network, self.X_train_, X_test, train_diags=self._train_diags)
        kt *= s
        kd = kd * s
        if self.kind_ == "nonodd":
            c = self._mean_coefficient()
            m = self._mean_vector(self._train_diags[0])
            mt = self._mean_vector(kernels.layer_diagonals(self.network, X_test)[0])
            kt -= c * np.outer(mt, m)
            kd = kd - c * mt ** 2
        return gp_predict(cache["fit"], kt, kd, return_var=return_var)

    def _device_predict(self, X_test: np.ndarray, return_var: bool):
        """Predictions on the device: the renormalised train kernel is built (the nested form's on the CPU) and
        factorised there at the first call and its factor kept there; the test × train kernel and the solves
        run there too (:mod:`finwidth.theory.device_linalg`)."""
        from finwidth import kernels
        from finwidth.device import kernel_tile

        dev, T, cache = self._device, float(self.temperature), self._pred_cache
        if self.kind_ == "nested":
            blocks = self._nested_kernels(self.qbar_, self.X_train_, X_test)[-1]
            if "device_fit" not in cache:
                cache["device_fit"] = device_linalg.gp_fit(device_linalg.as_tensor(blocks.train, dev), self.y_train_,
                                                           T, rtol=spectral.NULL_RTOL)
            return device_linalg.gp_predict(cache["device_fit"], device_linalg.as_tensor(blocks.test_train, dev),
                                            blocks.test_diag, return_var=return_var)
        s = self._pred_scale
        nonodd = self.kind_ == "nonodd"
        if nonodd:
            c = self._mean_coefficient()
            m = device_linalg.as_tensor(self._mean_vector(self._train_diags[0]), dev)
        if "device_fit" not in cache:
            K = device_linalg.train_kernel(self.network, self.X_train_, self._train_diags, dev).mul_(s)
            if nonodd:
                K.addr_(m, m, alpha=-c)
            cache["device_fit"] = device_linalg.gp_fit(K, self.y_train_, T, rtol=spectral.NULL_RTOL)
            del K
        diags = kernels.layer_diagonals(self.network, X_test)
        kt = kernel_tile(self.network, X_test, self.X_train_, diags, self._train_diags, dev).mul_(s)
        kd = diags[-1] * s
        if nonodd:
            mt = self._mean_vector(diags[0])
            kt.addr_(device_linalg.as_tensor(mt, dev), m, alpha=-c)
            kd = kd - c * mt ** 2
        return device_linalg.gp_predict(cache["device_fit"], kt, kd, return_var=return_var)

    def _prediction_basis(self) -> spectral.Eigenbasis:
        """The eigenbasis of the output NNGP kernel (rebuilt on demand where the fit did not keep it)."""
        from finwidth import kernels

        if self._pred_basis is not None:
            return self._pred_basis
        cache = self._pred_cache
        if "basis" not in cache:
            cache["basis"] = spectral.eigenbasis(kernels.nngp(self.network, self.X_train_).train)
        return cache["basis"]

    def generalization_error(self, X_test, y_test):
        """ε_g = mean_test[(y − ⟨f⟩)²] + mean_test[Var f] (bias + variance; noise T not added).

        Returns
        -------
        finwidth.theory.gp.ErrorDecomposition
            ``total``, ``bias``, ``variance``; with D outputs these are sums over the outputs, with
            ``bias_per_output``, ``variance_per_output`` and the argmax ``accuracy``.
        """
        from finwidth.theory.gp import generalization_error

        self._check_fitted()
        if getattr(self, "n_outputs_", 1) > 1:
            return self._generalization_error_multioutput(X_test, y_test)
        X_test = _as_X(X_test, "X_test")
        y_test = validate_targets(y_test, X_test.shape[0], "y_test")
        mean, var = self.predict(X_test, return_var=True)
        return generalization_error(y_test, mean, var)


class NonOddSaddle:
    """O(P) action and gradient of the one-hidden-layer non-odd theory in the eigenbasis.

    K_R = b K − c m mᵀ with b = Q̄, c = Q̄ − 1/(1+Q); K = U diag(k) Uᵀ is the output NNGP kernel
    (1/λ_1 included) and m the mean vector divided by √λ_1. S(Q̄, Q) = N [−Q̄ Q + log(1+Q)] + Φ(b, c)
    with Φ = log det(T + K_R) + yᵀ(T + K_R)⁻¹y by Sherman–Morrison (Pacelli et al. §5).
    """

    def __init__(self, k, y_t, m_t, T, N):
        self.k, self.y_t, self.m_t, self.T, self.N = k, y_t, m_t, float(T), float(N)

    def _sums(self, b, c):
        beta = self.T + b * self.k
        with np.errstate(divide="ignore"):
            ib = np.where(beta > 0, 1.0 / beta, 0.0)
        m, y, k = self.m_t, self.y_t, self.k
        s = dict(
            s_mm=float(np.sum(m * m * ib)), s_my=float(np.sum(m * y * ib)), s_yy=float(np.sum(y * y * ib)),
            t_mm=float(np.sum(m * m * k * ib * ib)), t_my=float(np.sum(m * y * k * ib * ib)),
            t_yy=float(np.sum(y * y * k * ib * ib)), tr=float(np.sum(k * ib)),
        )
        s["D"] = 1.0 - c * s["s_mm"]
        with np.errstate(divide="ignore"):
            s["logdet"] = float(np.sum(np.log(beta)))
        return s

    def phi(self, b, c):
        s = self._sums(b, c)
        if s["D"] <= 0:
            return math.inf
        return s["logdet"] + math.log(s["D"]) + s["s_yy"] + c * s["s_my"] ** 2 / s["D"]

    def phi_grad(self, b, c):
        s = self._sums(b, c)
        D = s["D"]
        db = (s["tr"] + c * s["t_mm"] / D - s["t_yy"] - 2 * c * s["s_my"] * s["t_my"] / D
              - c * c * s["s_my"] ** 2 * s["t_mm"] / D ** 2)
        dc = (s["s_my"] ** 2 - s["s_mm"] * D) / D ** 2
        mag = s["tr"] + s["t_yy"] + abs(c) * (s["t_mm"] / abs(D) + 2 * abs(s["s_my"] * s["t_my"]) / abs(D)
                                              + abs(c) * s["s_my"] ** 2 * s["t_mm"] / D ** 2)
        magc = (s["s_my"] ** 2 + s["s_mm"] * abs(D)) / D ** 2
        return db, dc, mag, magc

    def action(self, qbar, q):
        u = 1.0 / (1.0 + q)
        # equals N (Q̄ − log Q̄ − 1) + Φ at Q = 1/Q̄ − 1: the same normalisation as the product form
        return self.N * (-qbar * q + math.log1p(q)) + self.phi(qbar, qbar - u)

    def gradient(self, qbar, q):
        u = 1.0 / (1.0 + q)
        db, dc, _, _ = self.phi_grad(qbar, qbar - u)
        return np.array([-self.N * q + db + dc, self.N * (u - qbar) + u * u * dc])

    def residual(self, qbar, q):
        u = 1.0 / (1.0 + q)
        db, dc, mag, magc = self.phi_grad(qbar, qbar - u)
        g = np.array([-self.N * q + db + dc, self.N * (u - qbar) + u * u * dc])
        scale = np.array([self.N * abs(q) + mag + magc + 1e-300, self.N * (u + qbar) + u * u * magc])
        return float(np.max(np.abs(g) / scale))

    def solve(self, qbar0, q0):
        """Root of ∇S in variables (log Q̄, log(1+Q)); verified (relative residual ≤ 1e-9)."""
        def F(x):
            x = np.clip(x, -40.0, 40.0)  # keep exp finite; the verified residual decides at the end
            qbar, q = math.exp(x[0]), math.expm1(x[1])
            if q <= -1.0 or self._sums(qbar, qbar - math.exp(-x[1]))["D"] <= 0:
                return np.array([1e10, 1e10])
            g = self.gradient(qbar, q)
            # scale each equation by the size of its terms so 'hybr' sees O(1) residuals
            return g / np.array([self.N * (abs(q) + 1.0), self.N * (qbar + 1.0)])

        x0 = np.array([math.log(qbar0), math.log1p(q0)])
        sol = optimize.root(F, x0, method="hybr", options={"xtol": 1e-14, "maxfev": 2000})
        if not np.all(np.abs(sol.x) < 700.0):  # includes NaN; exp would overflow
            raise ConvergenceError("non-odd solver left the representable range of (log Q̄, log(1 + Q))")
        qbar, q = math.exp(sol.x[0]), math.expm1(sol.x[1])
        if not (np.all(np.isfinite(sol.x)) and qbar > 0 and q > -1):
            raise ConvergenceError("non-odd solver left the domain Q̄ > 0, Q > −1")
        res = self.residual(qbar, q)
        if not res <= spectral.RESIDUAL_TOL:
            raise ConvergenceError("non-odd solver did not reach the saddle", residual=res)
        return (qbar, q)
