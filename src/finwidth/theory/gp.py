"""GP-regression helpers shared by every theory estimator (NNGP, RKGP, adaptive kernels).

Model: y = f(X) + noise with f ~ GP(0, K) and iid noise of variance ``noise`` (= the temperature
T in finwidth's convention). With A = K + T·I on the training points,

    mean(x*) = K(x*, X) A⁻¹ y,      var(x*) = K(x*, x*) − K(x*, X) A⁻¹ K(X, x*),
    log p(y) = −½ yᵀ A⁻¹ y − ½ log det A − (P/2) log 2π.

The generalisation error on a test set is ε_g = mean[(y − mean)²] + mean[var] = bias + variance;
the observation noise is *not* added to the variance (docs/conventions.md).

Linear algebra: one Cholesky of A when T > 0 (never an explicit inverse). At T = 0, or if the
Cholesky fails because A is singular to working precision, one symmetric eigendecomposition;
eigenvalues below ``rtol · λ_max`` are treated as exact zeros and A⁻¹ becomes the pseudo-inverse.
``gp_fit(..., packed=True)`` keeps K and the Cholesky factor of A in one P×P array
(:class:`PackedKernel`): one matrix instead of two.
For a positive semi-definite joint kernel the test rows K(x*, X) lie in range(K), so the
pseudo-inverse predictor is exactly the T → 0⁺ limit of the noisy one (minimum-norm interpolation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import linalg
from scipy.linalg import blas, lapack

from finwidth.errors import ConfigError, ConvergenceError
from finwidth.inputs import validate_targets
from finwidth.inputs import validate_temperature as validate_noise

__all__ = [
    "ErrorDecomposition",
    "accuracy",
    "GPFactor",
    "GPFit",
    "PackedKernel",
    "clip_variance",
    "factorize",
    "fit_from_factor",
    "generalization_error",
    "gp_fit",
    "gp_posterior",
    "gp_predict",
    "validate_noise",
    "validate_targets",
]

# variance below −_NEG_VAR_TOL·prior variance is not round-off: the kernel is not PSD
_NEG_VAR_TOL = 1e-6
# relative backward error of a direct solve above which the answer is not trusted
_BACKWARD_TOL = 1e-8
# y counts as inside range(K) (rank-deficient T = 0 evidence) if ‖y − P y‖/‖y‖ is below this
_RANGE_TOL = 1e-6


@dataclass(frozen=True)
class ErrorDecomposition:
    """Test error ε_g = bias + variance (means over the test set).

    Attributes
    ----------
    total : float
        ε_g = bias + variance.
    bias : float
        mean over the test set of (y − ⟨f⟩)², the squared bias of the posterior mean.
    variance : float
        mean over the test set of Var f, the posterior variance of f (no observation noise).
    bias_per_point, variance_per_point : numpy.ndarray or None
        The per-point terms (P_t,), when available (summed over the outputs when there are several).
    bias_per_output, variance_per_output : numpy.ndarray or None
        With D outputs: the test means of each output's squared bias and variance, shape (D,); ``total``,
        ``bias`` and ``variance`` are their sums over the outputs. None for one output.
    accuracy : float or None
        With D outputs: the fraction of test points where the argmax of the posterior mean is the argmax of
        the target row (classification with one-hot or centred one-hot targets); None for one output.

    Unpacks as ``total, bias, variance = err``.
    """

    total: float
    bias: float
    variance: float
    bias_per_point: np.ndarray | None = field(default=None, repr=False, compare=False)
    variance_per_point: np.ndarray | None = field(default=None, repr=False, compare=False)
    bias_per_output: np.ndarray | None = field(default=None, repr=False, compare=False)
    variance_per_output: np.ndarray | None = field(default=None, repr=False, compare=False)
    accuracy: float | None = None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter((self.total, self.bias, self.variance))

    @property
    def total_per_output(self) -> np.ndarray | None:
        """bias_per_output + variance_per_output (None for one output)."""
        if self.bias_per_output is None or self.variance_per_output is None:
            return None
        return self.bias_per_output + self.variance_per_output

    def as_dict(self) -> dict:
        """{"total", "bias", "variance"} as floats (JSON-ready); with D outputs also "accuracy",
        "bias_per_output" and "variance_per_output" (lists)."""
        out: dict = {"total": float(self.total), "bias": float(self.bias), "variance": float(self.variance)}
        if self.bias_per_output is not None:
            out["bias_per_output"] = [float(v) for v in self.bias_per_output]
            out["variance_per_output"] = [float(v) for v in self.variance_per_output]  # type: ignore[union-attr]
        if self.accuracy is not None:
            out["accuracy"] = float(self.accuracy)
        return out


def _check_square(K: Any, what: str) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 1:
        raise ConfigError(f"{what} must be a square (P, P) matrix, got shape {K.shape}")
    if not np.isfinite(K.sum()):
        raise ConfigError(f"{what} contains NaN or inf")
    return K


class GPFactor:
    """A factorisation of A = K + noise·I that solves, gives log det A and whitens.

    Built by :func:`factorize`. ``method`` is ``"cholesky"`` (A = Uᵀ U, U upper triangular) or ``"eigh"``
    (A = U diag(w) Uᵀ with eigenvalues ≤ cutoff dropped: a pseudo-inverse of rank ``rank``).
    """

    def __init__(self, method: str, n: int, *, chol=None, evals=None, evecs=None, cutoff: float = 0.0):  # type: ignore[no-untyped-def]
        self.method = method
        self.n = n
        self._chol = chol
        self.evals = evals
        self.evecs = evecs
        self.cutoff = cutoff
        self.rank = n if method == "cholesky" else len(evals)  # type: ignore[arg-type]

    @property
    def full_rank(self) -> bool:
        """True if no eigenvalue was dropped."""
        return self.rank == self.n

    def solve(self, B: np.ndarray) -> np.ndarray:
        """A⁻¹ B (the pseudo-inverse A⁺ B if rank-deficient)."""
        if self.method == "cholesky":
            return linalg.cho_solve((self._chol, False), B, check_finite=False)
        U, w = self.evecs, self.evals
        coef = U.T @ B  # type: ignore[union-attr]
        coef = coef / (w if coef.ndim == 1 else w[:, None])  # type: ignore[index]
        return U @ coef  # type: ignore[operator]

    def whiten(self, B: np.ndarray) -> np.ndarray:
        """W B with Wᵀ W = A⁻¹ (A⁺): U⁻ᵀ B, or diag(w^-½) Uᵀ B (rank rows)."""
        if self.method == "cholesky":
            # A = Uᵀ U: W = U⁻ᵀ
            return linalg.solve_triangular(self._chol, B, trans="T", lower=False, check_finite=False)
        coef = self.evecs.T @ B  # type: ignore[union-attr]
        s = 1.0 / np.sqrt(self.evals)  # type: ignore[arg-type]
        return coef * (s if coef.ndim == 1 else s[:, None])

    @property
    def logdet(self) -> float:
        """log det A (the log pseudo-determinant if rank-deficient)."""
        if self.method == "cholesky":
            return float(2.0 * np.sum(np.log(np.diagonal(self._chol))))
        return float(np.sum(np.log(self.evals)))  # type: ignore[arg-type]

    def range_residual(self, y: np.ndarray) -> float:
        """‖y − P_range y‖/‖y‖: the part of y that A cannot represent (0 if full rank)."""
        if self.full_rank:
            return 0.0
        ny = float(np.linalg.norm(y))
        if ny == 0:
            return 0.0
        return float(np.linalg.norm(y - self._range_projection(y))) / ny

    def _range_projection(self, y: np.ndarray) -> np.ndarray:
        """U Uᵀ y over the kept eigenvectors (eigh factors)."""
        return self.evecs @ (self.evecs.T @ y)  # type: ignore[union-attr,operator]


def factorize(K: Any, noise: float, *, rtol: float | None = None, overwrite: bool = False) -> GPFactor:
    """Factorise A = K + noise·I.

    Parameters
    ----------
    K : array_like, shape (P, P)
        Symmetric positive semi-definite kernel (only its lower triangle is read by Cholesky).
    noise : float
        Noise variance T ≥ 0 added to the diagonal.
    rtol : float, optional
        Eigenvalues of A at or below ``rtol · λ_max`` count as zero (eigh path only).
        Default ``P · eps`` (numpy's matrix_rank rule).
    overwrite : bool
        Allow K's memory to be reused (saves one P×P copy; K is destroyed).

    Returns
    -------
    GPFactor
        Cholesky if noise > 0 and it succeeds; otherwise a (pseudo-)eigendecomposition.

    Raises
    ------
    ConfigError
        K is not square/finite, or has an eigenvalue below −(cutoff): not positive semi-definite.
    """
    noise = validate_noise(noise, "noise")
    K = _check_square(K, "the kernel")
    n = K.shape[0]
    A = K if overwrite else K.copy()
    if noise:
        A.flat[:: n + 1] += noise
    if noise > 0:
        try:
            # A = Uᵀ U, computed in A's own memory: a C-ordered symmetric matrix is its own transpose,
            # which LAPACK sees in Fortran order (no copy)
            chol = linalg.cholesky(_fortran_view(A), lower=False, overwrite_a=True, check_finite=False)
            return GPFactor("cholesky", n, chol=chol)
        except linalg.LinAlgError:
            # singular to working precision despite the noise (tiny T): fall through to eigh
            A = K.copy() if not overwrite else A
            if overwrite:
                raise ConvergenceError(
                    "Cholesky of K + T·I failed and K was overwritten",
                    suggestion="call factorize with overwrite=False, or raise the temperature",
                ) from None
            A.flat[:: n + 1] += noise
    w, U = linalg.eigh(_fortran_view(A), overwrite_a=True, check_finite=False)
    lam_max = float(max(abs(w[0]), abs(w[-1]))) if n else 0.0
    tol = (n * np.finfo(np.float64).eps) if rtol is None else float(rtol)
    if not math.isfinite(tol) or tol < 0:
        raise ConfigError(f"rtol must be finite and non-negative, got {rtol}")
    cutoff = tol * lam_max
    if w[0] < -max(cutoff, 1e-12 * lam_max):
        raise ConfigError(
            f"the kernel is not positive semi-definite: smallest eigenvalue {w[0]:.3g} "
            f"(largest {w[-1]:.3g}); a covariance must be PSD"
        )
    keep = w > cutoff
    if not np.any(keep):
        raise ConfigError("the kernel plus noise is zero to working precision; nothing can be learned")
    return GPFactor("eigh", n, evals=w[keep].copy(), evecs=np.ascontiguousarray(U[:, keep]), cutoff=cutoff)


def _norm1(K: np.ndarray) -> float:
    """‖K‖₁ (largest absolute column sum) in row blocks of ~2 MB: no P×P temporary."""
    rows = max(1, (1 << 18) // max(K.shape[1], 1))
    col = np.zeros(K.shape[1])
    for i0 in range(0, K.shape[0], rows):
        col += np.abs(K[i0:i0 + rows]).sum(axis=0)
    return float(col.max()) if col.size else 0.0


def _fortran_view(A: np.ndarray) -> np.ndarray:
    """The same symmetric matrix in Fortran order without a copy (its transpose, if C-ordered)."""
    return A.T if A.flags.c_contiguous and not A.flags.f_contiguous else A


class PackedKernel:
    """A symmetric kernel K that shares one P×P array with the Cholesky factor of K + T·I.

    The C-ordered ``array`` holds K in its strict upper triangle and the factor U (K + T·I = Uᵀ U, upper
    triangular in LAPACK's Fortran view of the array, i.e. the C-order lower triangle) in the rest;
    ``diagonal`` keeps K's diagonal. Built by :func:`gp_fit` with ``packed=True``; products and norms read
    only the kernel's triangle (BLAS ``dsymv``), :meth:`full` rebuilds K as a new array.
    """

    def __init__(self, array: np.ndarray, diagonal: np.ndarray):
        self.array = array
        self.diagonal = diagonal
        self.shape = array.shape

    def matmul(self, B: np.ndarray) -> np.ndarray:
        """K B for B of shape (P,) or (P, D), without a second P×P array."""
        A = _fortran_view(self.array)  # its lower triangle (C-order upper) is K off the diagonal
        fix = self.diagonal - np.diagonal(A)  # symv reads the factor's diagonal: replace it by K's
        cols = B.reshape(B.shape[0], -1)
        out = np.empty(cols.shape)
        for j in range(cols.shape[1]):
            b = np.ascontiguousarray(cols[:, j])
            out[:, j] = blas.dsymv(1.0, A, b, lower=1) + fix * b
        return out.reshape(B.shape)

    def norm1(self) -> float:
        """‖K‖₁ (largest absolute column sum), in row blocks of ~2 MB."""
        n = self.shape[0]
        rows = max(1, (1 << 18) // max(n, 1))
        col = np.abs(self.diagonal)
        for i0 in range(0, n, rows):
            blk = np.abs(self.array[i0:i0 + rows])
            blk[np.tril_indices(blk.shape[0], k=i0, m=n)] = 0.0  # keep the strict upper triangle (column j > row i)
            col += blk.sum(axis=0)  # K_ij, j > i, counted in column j ...
            col[i0:i0 + rows] += blk.sum(axis=1)  # ... and, by symmetry, in column i
        return float(col.max()) if col.size else 0.0

    def full(self) -> np.ndarray:
        """K as a new symmetric (P, P) array."""
        K = np.triu(self.array, 1)
        K += K.T
        K.flat[:: self.shape[0] + 1] = self.diagonal
        return K

    def restore(self) -> np.ndarray:
        """Rebuild K in ``array`` itself (mirroring the kept triangle over the factor) and return it."""
        K, n = self.array, self.shape[0]
        rows = max(1, (1 << 18) // max(n, 1))
        for i0 in range(0, n, rows):
            K[i0:i0 + rows, :i0] = K[:i0, i0:i0 + rows].T
            blk = K[i0:i0 + rows, i0:i0 + rows]
            blk[np.tril_indices(blk.shape[0], -1)] = blk.T[np.tril_indices(blk.shape[0], -1)]
        K.flat[:: n + 1] = self.diagonal
        return K


@dataclass
class GPFit:
    """The training-side solution of GP regression.

    Attributes
    ----------
    factor : GPFactor
        Factorisation of K + T·I.
    alpha : numpy.ndarray
        (K + T·I)⁻¹ y (pseudo-inverse if rank-deficient), shape (P,) or (P, D).
    log_evidence : float
        log N(y; 0, K + T·I). For a rank-deficient K at T = 0 it is the log density of the
        degenerate Gaussian on range(K) (pseudo-determinant) when y lies in that range
        (relative residual ≤ 1e-6), and −inf when it does not.
    noise : float
        T.
    kernel : PackedKernel or None
        K, when it shares its array with the factor (``gp_fit(..., packed=True)``); None otherwise.
    """

    factor: GPFactor
    alpha: np.ndarray
    log_evidence: float
    noise: float
    kernel: PackedKernel | None = None


def gp_fit(K: Any, y: Any, noise: float, *, rtol: float | None = None, overwrite: bool = False,
           packed: bool = False) -> GPFit:
    """Factorise K + T·I, solve for α and compute the log evidence; checks the solve.

    ``y`` of shape (P, D) holds D outputs with the same kernel (independent GPs): α is (P, D) and the log
    evidence the sum over the outputs.

    With ``packed=True`` and T > 0, K (a C-contiguous float64 array) is **overwritten**: the Cholesky
    factor goes into its lower triangle and K stays in the strict upper one (:class:`PackedKernel`, returned
    as ``GPFit.kernel``), so the fit holds one P×P matrix, not two; the factor, α, the evidence and every
    prediction are those of the unpacked fit (the same LAPACK call on the same numbers). If that Cholesky
    fails, K is restored in place and the eigendecomposition path runs as without ``packed``.

    Raises
    ------
    ConvergenceError
        The relative backward error of the solve exceeds 1e-8 (A too ill-conditioned).
    ConfigError
        Bad shapes or values.
    """
    K = _check_square(K, "the kernel")
    yv = validate_targets(y, K.shape[0], multi_output=True)  # (P, D): D independent outputs, one factorisation
    noise = validate_noise(noise, "noise")
    kernel = _packed_cholesky(K, noise) if packed and noise > 0 and not overwrite else None
    if kernel is not None:
        fac = GPFactor("cholesky", K.shape[0], chol=_fortran_view(kernel.array))
    else:
        # keep K for the residual check unless told we may destroy it
        fac = factorize(K, noise, rtol=rtol, overwrite=overwrite)
    if overwrite:
        matmul, norm1 = None, 0.0
    elif kernel is not None:
        matmul, norm1 = kernel.matmul, kernel.norm1()
    else:
        matmul, norm1 = K.__matmul__, _norm1(K)
    return fit_from_factor(fac, yv, noise, matmul=matmul, norm1=norm1, kernel=kernel)


def fit_from_factor(fac: Any, yv: np.ndarray, noise: float, *, matmul: Any = None, norm1: float = 0.0,
                    kernel: PackedKernel | None = None) -> GPFit:
    """α, the backward-error check and the log evidence from a factorisation of K + T·I (:func:`gp_fit`'s second
    half; ``fac`` a :class:`GPFactor` or a factor with its interface, e.g. on a torch device).

    ``matmul(B)`` is K B (the check is skipped without it or when the factor is rank-deficient), ``norm1`` = ‖K‖₁.
    """
    alpha = fac.solve(yv)
    if matmul is not None and fac.full_rank:
        r = matmul(alpha)
        r += noise * alpha - yv
        scale = norm1 * np.linalg.norm(alpha, 1) + noise * np.linalg.norm(alpha, 1) + np.linalg.norm(yv, 1)
        backward = float(np.linalg.norm(r, 1)) / scale if scale > 0 else 0.0
        if not backward <= _BACKWARD_TOL:
            raise ConvergenceError(
                f"GP solve not accurate: relative backward error {backward:.2e} > {_BACKWARD_TOL:g}",
                suggestion="raise the temperature or remove duplicate inputs",
            )
    P = yv.shape[0]
    D = 1 if yv.ndim == 1 else yv.shape[1]
    quad = float(np.sum(yv * alpha))
    if fac.full_rank:
        logev = -0.5 * quad - 0.5 * D * fac.logdet - 0.5 * P * D * math.log(2 * math.pi)
    elif max(fac.range_residual(c) for c in yv.reshape(P, D).T) > _RANGE_TOL:
        logev = -math.inf
    else:
        logev = -0.5 * quad - 0.5 * D * fac.logdet - 0.5 * fac.rank * D * math.log(2 * math.pi)
    return GPFit(factor=fac, alpha=alpha, log_evidence=logev, noise=noise, kernel=kernel)


def _packed_cholesky(K: np.ndarray, noise: float) -> PackedKernel | None:
    """Cholesky of K + noise·I in K's lower triangle, K kept in the upper one; None (K intact) if it fails."""
    if not (isinstance(K, np.ndarray) and K.flags.c_contiguous and K.flags.writeable and K.dtype == np.float64):
        raise ConfigError("gp_fit(packed=True) needs a writeable C-contiguous float64 kernel (it is overwritten)")
    n = K.shape[0]
    packed = PackedKernel(K, np.diagonal(K).copy())
    K.flat[:: n + 1] += noise
    # dpotrf on the Fortran view writes U (uplo='U') there, i.e. the C-order lower triangle; clean=0 keeps
    # the other triangle (K)
    c, info = lapack.dpotrf(_fortran_view(K), lower=0, clean=0, overwrite_a=1)
    if not np.shares_memory(c, K):  # pragma: no cover - LAPACK contract
        raise RuntimeError("dpotrf did not work in place")
    if info != 0:
        packed.restore()
        return None
    return packed


def gp_predict(
    fit: GPFit,
    K_test_train: Any,
    k_test_diag: Any = None,
    *,
    K_test: Any = None,
    return_var: bool = False,
    return_cov: bool = False,
    block_size: int = 2048,
) -> np.ndarray | tuple[np.ndarray, ...]:
    """Posterior mean (and variance / covariance) of f at test points.

    Parameters
    ----------
    fit : GPFit
        From :func:`gp_fit`.
    K_test_train : array_like, shape (P_t, P)
        K(x*, X).
    k_test_diag : array_like, shape (P_t,)
        K(x*, x*); needed for ``return_var``.
    K_test : array_like, shape (P_t, P_t)
        K(x*, x*'); needed for ``return_cov``.
    return_var, return_cov : bool
        Also return the posterior variance (P_t,) / covariance (P_t, P_t) of f (noise-free).
    block_size : int
        Test points per block for the variance (bounds a P × block temporary).

    Returns
    -------
    mean, or (mean, var), (mean, cov), (mean, var, cov) in that order.

    Raises
    ------
    ConvergenceError
        A posterior variance below −1e-6 × its prior value (kernel not PSD or too ill-conditioned).
    """
    Ks = np.asarray(K_test_train, dtype=np.float64)
    if Ks.ndim != 2 or Ks.shape[1] != fit.alpha.shape[0]:
        raise ConfigError(f"K_test_train must be (P_t, {fit.alpha.shape[0]}), got shape {Ks.shape}")
    mean = Ks @ fit.alpha
    out: list[np.ndarray] = [mean]
    if return_var:
        if k_test_diag is None:
            raise ConfigError("return_var=True needs k_test_diag, the prior variances at the test points")
        kd = np.asarray(k_test_diag, dtype=np.float64)
        if kd.shape != (Ks.shape[0],):
            raise ConfigError(f"k_test_diag must be ({Ks.shape[0]},), got {kd.shape}")
        var = np.empty_like(kd)
        for i0 in range(0, Ks.shape[0], block_size):
            sl = slice(i0, i0 + block_size)
            V = fit.factor.whiten(Ks[sl].T)
            var[sl] = kd[sl] - np.einsum("ij,ij->j", V, V)
        out.append(clip_variance(var, kd))
    if return_cov:
        if K_test is None:
            raise ConfigError("return_cov=True needs K_test, the prior covariance among the test points")
        Kt = np.asarray(K_test, dtype=np.float64)
        if Kt.shape != (Ks.shape[0], Ks.shape[0]):
            raise ConfigError(f"K_test must be ({Ks.shape[0]}, {Ks.shape[0]}), got {Kt.shape}")
        V = fit.factor.whiten(Ks.T)
        cov = Kt - V.T @ V
        cov = 0.5 * (cov + cov.T)
        d = clip_variance(np.diagonal(cov).copy(), np.diagonal(Kt))
        np.fill_diagonal(cov, d)
        out.append(cov)
    return out[0] if len(out) == 1 else tuple(out)


def clip_variance(var: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Posterior variances with round-off below zero set to 0; ConvergenceError below −1e-6 × the prior variance."""
    floor = -_NEG_VAR_TOL * np.maximum(np.abs(prior), np.finfo(np.float64).tiny)
    if np.any(var < floor):
        i = int(np.argmin(var - floor))
        raise ConvergenceError(
            f"negative posterior variance {var[i]:.3g} at test point {i} (prior variance {prior[i]:.3g}): "
            "the kernel is not positive semi-definite or too ill-conditioned",
            suggestion="raise the temperature, or check the kernel for duplicate inputs",
        )
    # round-off below zero: the exact value is ≥ 0
    return np.maximum(var, 0.0)


def gp_posterior(
    K_train: Any,
    K_test_train: Any,
    k_test_diag: Any,
    y: Any,
    noise: float,
    *,
    K_test: Any = None,
    return_cov: bool = False,
    rtol: float | None = None,
) -> tuple[np.ndarray, ...]:
    """One-shot GP posterior: (mean, var) or (mean, var, cov) at the test points."""
    fit = gp_fit(K_train, y, noise, rtol=rtol)
    return gp_predict(fit, K_test_train, k_test_diag, K_test=K_test, return_var=True, return_cov=return_cov)  # type: ignore[return-value]


def accuracy(y_test: Any, mean: Any) -> float:
    """Fraction of test points where argmax over outputs of the posterior mean equals that of the target.

    Parameters
    ----------
    y_test, mean : array_like, shape (P_t, D), D ≥ 2
        Targets (one-hot or centred one-hot: the argmax is the class either way) and posterior means.
    """
    yt, m = np.asarray(y_test, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    if yt.ndim != 2 or yt.shape[1] < 2 or m.shape != yt.shape:
        raise ConfigError(f"accuracy needs (P_t, D ≥ 2) targets and means of the same shape, got {yt.shape} and {m.shape}")
    return float(np.mean(np.argmax(m, axis=1) == np.argmax(yt, axis=1)))


def generalization_error(y_test: Any, mean: Any, var: Any) -> ErrorDecomposition:
    """ε_g = mean[(y − mean)²] + mean[var] from a predictive mean and noise-free variance.

    Parameters
    ----------
    y_test, mean, var : array_like, shape (P_t,) or (P_t, D)
        Test labels, posterior mean of f, posterior variance of f (≥ 0). With D outputs each output's
        bias and variance are averaged over the test set and summed over the outputs (docs/conventions.md),
        per-output values and the argmax accuracy are reported too.
    """
    if np.ndim(y_test) == 2 and np.shape(y_test)[1] >= 2:
        yt = np.asarray(y_test, dtype=np.float64)
        m, v = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
        if m.shape != yt.shape or v.shape != yt.shape:
            raise ConfigError(f"y_test, mean and var must have the same shape, got {yt.shape}, {m.shape}, {v.shape}")
        if not (np.isfinite(yt).all() and np.isfinite(m).all() and np.isfinite(v).all()):
            raise ConfigError("y_test, mean or var contains NaN or inf")
        if np.any(v < 0):
            raise ConfigError(f"var must be non-negative, min is {float(v.min()):.3g}")
        b = (yt - m) ** 2
        bias_out, var_out = b.mean(axis=0), v.mean(axis=0)
        bias, variance = float(bias_out.sum()), float(var_out.sum())
        return ErrorDecomposition(bias + variance, bias, variance, b.sum(axis=1), v.sum(axis=1),
                                  bias_out, var_out, accuracy(yt, m))
    yt = validate_targets(y_test, None, "y_test")
    m = validate_targets(mean, yt.size, "mean")
    v = validate_targets(var, yt.size, "var")
    if np.any(v < 0):
        raise ConfigError(f"var must be non-negative, min is {float(v.min()):.3g}")
    b = (yt - m) ** 2
    bias, variance = float(b.mean()), float(v.mean())
    return ErrorDecomposition(bias + variance, bias, variance, b, v)
