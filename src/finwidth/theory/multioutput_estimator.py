"""The D-output side of the ``RKGP`` estimator (and of ``BPKR``, which inherits it), and its predictor.

``RKGP.fit(X, Y)`` with Y of shape (P, D), D ≥ 2, lands here; one output (shape (P,) or (P, 1)) keeps the
scalar code paths untouched. The theory and its solver are in :mod:`finwidth.theory.multioutput`.
"""

from __future__ import annotations

import math

import numpy as np

from finwidth.errors import ConfigError, ConvergenceError
from finwidth.theory import scalable, spectral
from finwidth.theory.gp import generalization_error, validate_noise, validate_targets
from finwidth.theory.multioutput import MultiOutputSaddle, solve_multioutput, width_criterion


class MultiOutputMixin:
    """Fitting, prediction and errors with D ≥ 2 outputs (methods of :class:`~finwidth.theory.rkgp.RKGP`).

    Fitted attributes with D outputs (L hidden layers)
    ---------------------------------------------------
    n_outputs_ : int
        D (1 for the scalar theory).
    qbar_ : ndarray, shape (L, D, D)
        The order parameters Q_l (identity at infinite width), all commuting.
    q_ : ndarray, shape (L, D, D)
        Q_l⁻¹ − 1, the conjugate matrices.
    renormalization_ : ndarray, shape (D, D)
        𝒬 = ∏_l Q_l: the predictor is the GP with prior covariance 𝒬 ⊗ K_L between outputs and points.
    action_, log_evidence_, residual_, roots_ (distinct 𝒬 found), width_criterion_
    (:class:`~finwidth.theory.multioutput.OutputWidthCriterion`; None on the matrix-free path),
    kind_ = ``"product"``.
    solver_ : str
        "dense" or "krylov", chosen as for one output (``solver``, ``solver_options``: docs/large-p.md).
    renormalization_stderr_, renormalization_quadrature_error_, renormalization_product_error_ : (D, D)
        Accuracy of each entry of 𝒬 on the matrix-free path (standard error from the probes, quadrature
        estimate, float32-product estimate; :mod:`finwidth.theory.multioutput_krylov`); zeros when dense.
    qbar_stderr_ : ndarray, shape (L, D, D)
        Standard error of each Q_l (zeros when dense).
    """

    # ------------------------------------------------------------------------------------------
    def _fit_multioutput(self, X: np.ndarray, Y: np.ndarray):
        from finwidth import kernels

        net = self.network
        if self.mean_correction_:  # resolved by RKGP._check_params (default: on for non-odd σ at L = 1)
            raise ConfigError(
                "the mean-corrected (non-odd) theory is implemented for one output; with several outputs pass "
                "mean_correction=False (the plain theory, as deepbays' FC_1HL_multiclass)"
            )
        if self.renormalization == "nested" and not (net.depth == 1 and net.bias is None):
            raise ConfigError(
                "with several outputs only the product form (the equivalent-Wishart ansatz) is derived; use "
                "renormalization='product' (it equals the nested form for relu and linear networks)"
            )
        T = validate_noise(self.temperature)
        widths = np.array(net.widths, dtype=float)
        self.solver_ = scalable.choose_solver(self.solver, X.shape[0], product_form=True, temperature=T)
        scalable.solver_options(self.solver_options)
        if self.solver_ == "krylov":
            return fit_multioutput_krylov(self, X, Y)
        D = Y.shape[1]
        self.renormalization_stderr_ = np.zeros((D, D))
        self.renormalization_quadrature_error_ = np.zeros((D, D))
        self.renormalization_product_error_ = np.zeros((D, D))
        self.qbar_stderr_ = np.zeros((net.depth, D, D))
        self.log_evidence_stderr_ = 0.0
        self._train_diags = kernels.layer_diagonals(net, X)
        dev = getattr(self, "_device", None)
        if dev is None:
            basis = spectral.eigenbasis(np.asarray(kernels.nngp(net, X).train, dtype=np.float64))
        else:  # the kernel and its eigh on the device; the eigenbasis is kept on the host for the predictions
            from finwidth.theory import device_linalg

            basis = device_linalg.eigenbasis(device_linalg.train_kernel(net, X, self._train_diags, dev))
        Y_t = basis.project(Y)
        self.X_train_ = X
        self.y_train_ = Y
        self.n_factorizations_ = 0
        self.width_criterion_ = width_criterion(basis, Y_t, widths)
        saddle = solve_multioutput(basis, Y_t, T, widths)
        self.kind_ = "product"
        self.n_outputs_ = Y.shape[1]
        self.qbar_ = saddle.qbar
        self.q_ = np.stack([np.linalg.inv(Ql) - np.eye(Y.shape[1]) for Ql in saddle.qbar])
        self.renormalization_ = saddle.renormalization
        self.residual_ = saddle.residual
        self.roots_ = saddle.roots
        action = saddle.action if math.isfinite(saddle.action) else math.nan
        self.action_ = action
        P, D = Y.shape
        self.log_evidence_ = None if not math.isfinite(action) else -0.5 * action - 0.5 * P * D * math.log(2 * math.pi)
        self._pred_basis = basis
        self._multi = saddle
        self._multi_Y_t = Y_t
        return self

    def _test_blocks(self, X_test):
        from finwidth import kernels
        from finwidth.kernels import as_inputs

        X_test = as_inputs(X_test, "X_test")
        if X_test.shape[1] != self.X_train_.shape[1]:
            raise ConfigError(f"X_test has {X_test.shape[1]} features, the training inputs {self.X_train_.shape[1]}")
        return kernels.nngp_cross(self.network, self.X_train_, X_test, train_diags=self._train_diags)

    def _predict_multioutput(self, X_test, return_var: bool, return_cov: bool):
        need = return_var or return_cov
        if self.solver_ == "krylov":
            mean, s = predict_multioutput_krylov(self, X_test, need)
        else:
            kt, kd = self._test_blocks(X_test)
            mean, s = predictive(self._multi, self._pred_basis, self._multi_Y_t, validate_noise(self.temperature), kt,
                                 kd if need else None)
        if not need:
            return mean
        V = self._multi.vectors
        out = [mean]
        if return_var:
            out.append(s @ (V ** 2).T)
        if return_cov:
            out.append(covariance_from_eigen(s, V))
        return tuple(out)

    # ------------------------------------------------------------------------------------------
    def output_covariance(self, X_test) -> np.ndarray:
        """Posterior covariance between the D outputs at each test point, shape (P_t, D, D).

        Noise T not added. At infinite width (𝒬 = 1) it is diagonal; at T = 0 it is 𝒬 V_NNGP(x).
        """
        self._check_fitted()
        if getattr(self, "n_outputs_", 1) == 1:
            _, var = self.predict(X_test, return_var=True)
            return var[:, None, None]
        return self._predict_multioutput(X_test, False, True)[1]

    def output_correlation(self, X_test, *, average: bool = False) -> np.ndarray:
        """Predicted output–output correlations at test points.

        Parameters
        ----------
        X_test : array, shape (P_t, N_0)
        average : bool
            False: the correlation matrix of the posterior of f(x) at each test point, shape (P_t, D, D).
            True: the correlation matrix of the covariance averaged over the test points, shape (D, D)
            (at T = 0 both equal the correlation matrix of 𝒬).

        Returns
        -------
        ndarray
            Entries in [−1, 1], ones on the diagonal (zero rows where a variance vanishes).
        """
        cov = self.output_covariance(X_test)
        return correlation(cov.mean(axis=0) if average else cov)

    def _generalization_error_multioutput(self, X_test, y_test):
        Y_test = validate_targets(y_test, None, "y_test", multi_output=True)
        if Y_test.ndim != 2 or Y_test.shape[1] != self.n_outputs_:
            raise ConfigError(f"y_test must have shape (P_test, {self.n_outputs_}), got {np.shape(y_test)}")
        mean, var = self._predict_multioutput(X_test, True, False)
        if Y_test.shape[0] != mean.shape[0]:
            raise ConfigError(f"y_test has {Y_test.shape[0]} rows but X_test has {mean.shape[0]}")
        return generalization_error(Y_test, mean, var)


# ----------------------------------------------------------------------------------------------
# predictor (formulas in finwidth.theory.multioutput's docstring)
# ----------------------------------------------------------------------------------------------
def predictive(saddle: MultiOutputSaddle, basis: spectral.Eigenbasis, Y_t: np.ndarray, temperature: float,
               kt: np.ndarray, kd: np.ndarray | None):
    """Posterior mean (P_t, D) and, if ``kd`` is given, the eigen-variances s (P_t, D) such that the D×D
    covariance at test point p is V diag(s[p]) Vᵀ (V = ``saddle.vectors``).

    ``kt`` (P_t, P) and ``kd`` (P_t,) are the NNGP test×train kernel and test diagonal (scale 1).
    """
    k = basis.values
    pos = k > 0
    pi, V = saddle.pi, saddle.vectors
    kt_t = kt @ basis.vectors
    kt_t[:, ~pos] = 0.0  # k_* lies in range(K_L) for a PSD joint kernel (as in the scalar predictor)
    beta = temperature + k[:, None] * pi[None, :]
    inv = np.zeros_like(beta)
    ok = beta > 0
    inv[ok] = 1.0 / beta[ok]
    Z = Y_t @ V
    mean = (kt_t @ (Z * pi[None, :] * inv)) @ V.T
    if kd is None:
        return mean, None
    s = pi[None, :] * kd[:, None] - (pi ** 2)[None, :] * ((kt_t ** 2) @ inv)
    prior = pi[None, :] * kd[:, None]
    floor = -1e-6 * np.maximum(np.abs(prior), np.finfo(np.float64).tiny)
    if np.any(s < floor):
        i = np.unravel_index(int(np.argmin(s - floor)), s.shape)
        raise ConvergenceError(
            f"negative posterior variance {s[i]:.3g} at test point {i[0]} (direction {i[1]}): the kernel is not "
            "positive semi-definite or too ill-conditioned",
            suggestion="raise the temperature, or check the kernel for duplicate inputs",
        )
    return mean, np.maximum(s, 0.0)


def covariance_from_eigen(s: np.ndarray, V: np.ndarray) -> np.ndarray:
    """(P_t, D, D) covariances V diag(s[p]) Vᵀ."""
    return np.einsum("ac,pc,bc->pab", V, s, V)


def correlation(cov: np.ndarray) -> np.ndarray:
    """Correlation matrices of (…, D, D) covariances (0 where a variance is 0)."""
    d = np.sqrt(np.maximum(np.diagonal(cov, axis1=-2, axis2=-1), 0.0))
    denom = d[..., :, None] * d[..., None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), 0.0)
    idx = np.arange(cov.shape[-1])
    out[..., idx, idx] = np.where(d > 0, 1.0, 0.0)
    return out


# ----------------------------------------------------------------------------------------------
# the matrix-free path (solver="krylov", or "auto" above scalable.KRYLOV_ABOVE_P)
# ----------------------------------------------------------------------------------------------
def fit_multioutput_krylov(model, X: np.ndarray, Y: np.ndarray):
    """Fit D outputs from products K V (:func:`finwidth.theory.multioutput_krylov.solve_multioutput_krylov`)."""
    from finwidth.theory.multioutput_krylov import solve_multioutput_krylov

    opts = scalable.solver_options(model.solver_options)
    if opts["probes"] == "exact":
        raise ConfigError("probes='exact' is implemented for one output; with several outputs give a number of probes")
    if opts["deflate"] not in ("auto", 0):
        # the deflated estimator's control variate is fitted per function (krylov.Deflation.complete), and the
        # D-output action takes its trace part as one fixed measure: plain Hutchinson there
        raise ConfigError(f"deflate={opts['deflate']!r} is implemented for one output; with several outputs "
                          "leave it 'auto' (no deflation) or 0")
    net = model.network
    T = validate_noise(model.temperature)
    op = scalable.build_operator(model, X, opts)
    sol = solve_multioutput_krylov(
        op.matmat, Y, T, np.array(net.widths, dtype=float), rtol=opts["rtol"], probes=opts["probes"],
        max_probes=opts["max_probes"], max_steps=opts["max_steps"], seed=opts["seed"], progress=opts["progress"],
        product_error=op.product_error,
    )
    P, D = Y.shape
    model.X_train_ = X
    model.y_train_ = Y
    model._train_diags = op.diags
    model.n_factorizations_ = 0
    model.width_criterion_ = None  # a T = 0 quantity (needs Yᵀ K⁺ Y)
    model.kind_ = "product"
    model.n_outputs_ = D
    model.qbar_ = sol.qbar
    model.q_ = np.stack([np.linalg.inv(Ql) - np.eye(D) for Ql in sol.qbar])
    model.renormalization_ = sol.renormalization
    model.renormalization_stderr_ = sol.renormalization_stderr
    model.renormalization_quadrature_error_ = sol.renormalization_quadrature_error
    model.renormalization_product_error_ = sol.renormalization_product_error
    model.qbar_stderr_ = sol.qbar_stderr
    model.residual_ = sol.residual
    model.roots_ = sol.roots
    model.action_ = sol.action
    model.log_evidence_ = -0.5 * sol.action - 0.5 * P * D * math.log(2 * math.pi)
    model.log_evidence_stderr_ = 0.5 * sol.action_stderr
    model.krylov_ = sol
    model._operator = op
    model._multi = sol
    model._pred_basis = None
    model._pred_cache = {}
    return model


def predict_multioutput_krylov(model, X_test, need_var: bool):
    """Mean (P_t, D) and eigen-variances s (P_t, D) on the matrix-free path: in the eigenbasis V of 𝒬 the
    D outputs decouple into scalar GPs with kernels π_a K (module docstring of multioutput), each solved by
    preconditioned CG (:class:`~finwidth.theory.scalable.KrylovPredictor`, one shared preconditioner)."""
    from finwidth.inputs import as_inputs

    X_test = as_inputs(X_test, "X_test")
    if X_test.shape[1] != model.X_train_.shape[1]:
        raise ConfigError(f"X_test has {X_test.shape[1]} features, the training inputs {model.X_train_.shape[1]}")
    opts = scalable.solver_options(model.solver_options)
    sol = model._multi
    cache = model._pred_cache
    if "krylov" not in cache:
        Z = model.y_train_ @ sol.vectors
        first = scalable.KrylovPredictor(model._operator, Z[:, 0], float(model.temperature), float(sol.pi[0]),
                                         rtol=opts["cg_rtol"], rank=opts["preconditioner_rank"], seed=opts["seed"])
        cache["krylov"] = [first] + [
            scalable.KrylovPredictor(model._operator, Z[:, a], float(model.temperature), float(sol.pi[a]),
                                     rtol=opts["cg_rtol"], preconditioner=first.preconditioner)
            for a in range(1, Z.shape[1])
        ]
    outs = [p.predict(X_test, return_var=need_var) for p in cache["krylov"]]
    if need_var:
        mean_t = np.stack([o[0] for o in outs], axis=1)
        s = np.stack([o[1] for o in outs], axis=1)
    else:
        mean_t, s = np.stack(outs, axis=1), None
    return mean_t @ sol.vectors.T, s
