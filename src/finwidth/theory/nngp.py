"""The infinite-width network: GP regression with the NNGP kernel K_L and noise T.

Every order parameter equals 1 at infinite width (Q̄_l = 1), so the predictor is the GP posterior
with prior covariance K_L (``finwidth.kernels.nngp``, all 1/λ_l included) and noise variance T,
the temperature of the Gibbs posterior (docs/conventions.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from finwidth.errors import ConfigError
from finwidth.inputs import as_inputs
from finwidth.kernels import layer_diagonals, nngp, nngp_cross
from finwidth.theory.base import Estimator, with_std
from finwidth.theory.gp import (
    ErrorDecomposition,
    GPFit,
    generalization_error,
    gp_fit,
    gp_predict,
    validate_noise,
    validate_targets,
)

__all__ = ["NNGP"]


class NNGP(Estimator):
    """Infinite-width Bayesian network: NNGP regression at temperature T.

    Parameters
    ----------
    network : Network or ConvNetwork
        Depth, activation, priors λ_0..λ_L (precisions) and biases. Widths (channels) are ignored.
    temperature : float
        T ≥ 0, the noise variance of the Gibbs likelihood exp(−Σ(y − f)²/(2T)). T = 0 is
        noise-free interpolation; a singular kernel (e.g. a linear network with P > N_0,
        or duplicate inputs) then uses the pseudo-inverse, which is the exact T → 0⁺ limit of
        the posterior (see :mod:`finwidth.theory.gp`); ``rank_`` tells how many modes were kept.
    rtol : float, optional
        Relative eigenvalue cutoff for the T = 0 pseudo-inverse (default P·eps).
    block_size : int, optional
        Rows per block of the kernel recursion.
    device : None, str or torch.device
        ``None`` (default): numpy. ``"cuda"``, ``"cuda:1"``, ``"cpu"``, a ``torch.device``: the training and
        test kernels, the factorisation of K_L + T I (Cholesky; eigh at T = 0) and the solves run there in
        float64, with the numpy answers to rounding (docs/large-p.md, "On a GPU"; torch is imported only
        then). The factor stays on the device for the predictions; fitted attributes are numpy. A
        ``ConvNetwork`` is not supported (ConfigError).

    Attributes
    ----------
    kernel_ : numpy.ndarray, shape (P, P)
        K_L on the training inputs. At T > 0 the fit keeps K_L and the Cholesky factor of K_L + T I in
        one P×P array (``fit_.kernel``, :class:`finwidth.theory.gp.PackedKernel`); ``kernel_`` rebuilds the
        symmetric matrix from it as a new array at each access (with a ``device``: recomputes it there).
    alpha_ : numpy.ndarray, shape (P,) or (P, D)
        (K_L + T I)⁻¹ y; D columns for targets of shape (P, D), D ≥ 2 (independent outputs with the
        same kernel: the infinite-width limit of the multi-output theory, 𝒬 = 1).
    n_outputs_ : int
        D (1 for targets of shape (P,) or (P, 1)).
    log_evidence_ : float
        log N(y; 0, K_L + T I) (nats). At T = 0 with singular K_L: the degenerate-Gaussian log
        density on range(K_L) if y lies in it, else −inf.
    rank_ : int
        Number of eigenmodes used (P unless the T = 0 kernel is singular).
    X_train_, y_train_ : numpy.ndarray
        The training data (copies, float64).
    train_diags_ : numpy.ndarray, shape (L+1, P)
        Diagonals of K_0..K_L on the training inputs (for test kernels); None for a ConvNetwork.
    fit_ : GPFit
        Factorisation and solution (shared helper object).

    Parameters are validated by :meth:`fit`; ``get_params``/``set_params``, ``score`` (R²) and
    ``clone`` follow scikit-learn (:mod:`finwidth.theory.base`).

    Examples
    --------
    >>> import numpy as np
    >>> from finwidth import Network, NNGP
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((20, 5)), rng.standard_normal(20)
    >>> gp = NNGP(Network([100], "erf"), temperature=0.1).fit(X, y)
    >>> mean, var = gp.predict(X[:3], return_var=True)
    """

    def __init__(self, network: Any, temperature: float, *, rtol: float | None = None, block_size: int | None = None,
                 device: Any = None):
        self.network = network
        self.temperature = temperature
        self.rtol = rtol
        self.block_size = block_size
        self.device = device

    def _check_params(self) -> Any:
        """Validate the parameters (ConfigError); returns the torch device asked for, or None."""
        from finwidth.network import Network

        if not isinstance(self.network, Network) and type(self.network).__name__ != "ConvNetwork":
            raise ConfigError(f"NNGP needs a finwidth.Network or ConvNetwork, got {type(self.network).__name__}")
        validate_noise(self.temperature, "temperature")
        if self.device is None:
            return None
        from finwidth.device import resolve_device

        dev = resolve_device(self.device)
        if not isinstance(self.network, Network):
            raise ConfigError(f"device={self.device!r}: the ConvNetwork kernels run on the CPU only; use device=None")
        return dev

    # ------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> NNGP:
        """Build K_L on X, factorise K_L + T I once (Cholesky, or eigh at T = 0) and solve.

        At T > 0 the Cholesky factor is written into the kernel's own array (K_L kept in the other
        triangle): the fit holds one P×P matrix (docs/large-p.md).

        Returns
        -------
        self
        """
        dev = self._device = self._check_params()
        Xa = as_inputs(X, "X")
        yv = validate_targets(y, Xa.shape[0], multi_output=True)
        if dev is not None:
            return self._fit_device(Xa, yv)
        blocks = nngp(self.network, Xa, block_size=self.block_size)
        K = blocks.train  # type: ignore[union-attr]
        # the kernel is ours (built just now): the factor may share its array when LAPACK can work in it
        packed = isinstance(K, np.ndarray) and K.dtype == np.float64 and K.flags.c_contiguous and K.flags.writeable
        fit = gp_fit(K, yv, self.temperature, rtol=self.rtol, packed=packed)
        self.X_train_ = Xa
        self.y_train_ = yv
        self._kernel = None if fit.kernel is not None else K  # else K lives in fit.kernel
        # a ConvNetwork's test blocks need the patches, not layer diagonals
        self.train_diags_ = None if type(self.network).__name__ == "ConvNetwork" else layer_diagonals(self.network, Xa)
        self.fit_: GPFit = fit
        self.alpha_ = fit.alpha
        self.log_evidence_ = fit.log_evidence
        self.rank_ = fit.factor.rank
        self.n_outputs_ = 1 if yv.ndim == 1 else yv.shape[1]
        return self

    def _fit_device(self, Xa: np.ndarray, yv: np.ndarray) -> NNGP:
        from finwidth.theory import device_linalg

        self.train_diags_ = layer_diagonals(self.network, Xa)
        K = device_linalg.train_kernel(self.network, Xa, self.train_diags_, self._device)
        fit = device_linalg.gp_fit(K, yv, self.temperature, rtol=self.rtol)
        del K  # K + T I: only the factor stays on the device
        self.X_train_ = Xa
        self.y_train_ = yv
        self._kernel = None
        self.fit_ = fit
        self.alpha_ = fit.alpha
        self.log_evidence_ = fit.log_evidence
        self.rank_ = fit.factor.rank
        self.n_outputs_ = 1 if yv.ndim == 1 else yv.shape[1]
        return self

    @property
    def kernel_(self) -> np.ndarray:
        """K_L on the training inputs, shape (P, P) (rebuilt from the packed storage at T > 0: a new array)."""
        fit = self.__dict__.get("fit_")
        if fit is None:
            raise AttributeError("kernel_: this NNGP is not fitted yet")
        if getattr(self, "_device", None) is not None:
            from finwidth.device import as_numpy
            from finwidth.theory import device_linalg

            return as_numpy(device_linalg.train_kernel(self.network, self.X_train_, self.train_diags_, self._device))
        return fit.kernel.full() if fit.kernel is not None else self._kernel

    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_"):
            raise ConfigError("this NNGP is not fitted yet; call fit(X, y) first")

    def test_kernels(self, X_test: Any, *, full: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """K_L(X_test, X_train), K_L(x*, x*) and, if ``full``, the (P_t, P_t) test kernel."""
        self._check_fitted()
        Xt = as_inputs(X_test, "X_test")
        Ks, kd = nngp_cross(self.network, self.X_train_, Xt, train_diags=self.train_diags_, block_size=self.block_size)  # type: ignore[misc]
        Ktt = None
        if full:
            Ktt = nngp(self.network, Xt, block_size=self.block_size).train  # type: ignore[union-attr]
        return Ks, kd, Ktt

    def predict(self, X_test: Any, return_var: bool = False, return_cov: bool = False, return_std: bool = False) -> Any:
        """Posterior mean of f at X_test; optionally its variance, covariance and standard deviation.

        The variance/covariance are those of f (no observation noise T added). With D outputs the mean
        and variance are (P_t, D) and ``return_cov`` gives the D×D covariance of the outputs at each test
        point, (P_t, D, D) (diagonal at infinite width); with one output it is the (P_t, P_t) covariance
        between test points.

        Returns
        -------
        mean (P_t,), or a tuple: mean, then var, cov, std in this order, each if asked.
        """
        if return_std:
            return with_std(self.predict(X_test, return_var=True, return_cov=return_cov), return_var, return_cov)
        if getattr(self, "_device", None) is not None:
            return self._predict_device(X_test, return_var, return_cov)
        if getattr(self, "n_outputs_", 1) > 1:
            self._check_fitted()
            Ks, kd, _ = self.test_kernels(X_test)
            mean, var = gp_predict(self.fit_, Ks, kd, return_var=True)
            return self._outputs(mean, var, return_var, return_cov)
        Ks, kd, Ktt = self.test_kernels(X_test, full=return_cov)
        return gp_predict(self.fit_, Ks, kd, K_test=Ktt, return_var=return_var, return_cov=return_cov)

    def _outputs(self, mean: np.ndarray, var: np.ndarray, return_var: bool, return_cov: bool) -> Any:
        """D outputs with one kernel: the variance repeated per output, the output covariance diagonal."""
        D = self.n_outputs_
        out = [mean]
        if return_var:
            out.append(np.repeat(var[:, None], D, axis=1))
        if return_cov:
            out.append(var[:, None, None] * np.eye(D))
        return out[0] if len(out) == 1 else tuple(out)

    def _predict_device(self, X_test: Any, return_var: bool, return_cov: bool) -> Any:
        """predict with the test kernels and the solves on the device."""
        from finwidth.device import kernel_tile
        from finwidth.theory import device_linalg

        self._check_fitted()
        Xt = as_inputs(X_test, "X_test")
        if Xt.shape[1] != self.X_train_.shape[1]:
            raise ConfigError(f"X_test has {Xt.shape[1]} features, the training inputs {self.X_train_.shape[1]}")
        diags = layer_diagonals(self.network, Xt)
        Ks = kernel_tile(self.network, Xt, self.X_train_, diags, self.train_diags_, self._device)
        if self.n_outputs_ > 1:
            mean, var = device_linalg.gp_predict(self.fit_, Ks, diags[-1], return_var=True)
            return self._outputs(mean, var, return_var, return_cov)
        Ktt = kernel_tile(self.network, Xt, Xt, diags, diags, self._device) if return_cov else None
        return device_linalg.gp_predict(self.fit_, Ks, diags[-1], K_test=Ktt, return_var=return_var,
                                        return_cov=return_cov)

    def generalization_error(self, X_test: Any, y_test: Any) -> ErrorDecomposition:
        """ε_g = mean[(y − ⟨f⟩)²] + mean[Var f] over the test set (bias + variance, no noise); with D
        outputs summed over the outputs, with per-output values and the argmax accuracy."""
        self._check_fitted()
        Xt = as_inputs(X_test, "X_test")
        yt = validate_targets(y_test, Xt.shape[0], "y_test", multi_output=True)
        D = 1 if yt.ndim == 1 else yt.shape[1]
        if D != self.n_outputs_:
            raise ConfigError(f"y_test has {D} outputs but the model was fitted with {self.n_outputs_}")
        mean, var = self.predict(Xt, return_var=True)
        return generalization_error(yt, mean, var)
