"""Activation functions and their Gaussian kernel maps.

For an activation σ and a centred Gaussian pair (z1, z2) ~ N(0, [[c11, c12], [c12, c22]]) every
:class:`Activation` provides

* ``numpy(x)`` and ``torch(x)``: σ itself (the torch version is differentiable);
* ``kappa(c11, c12, c22)`` = E[σ(z1) σ(z2)], the NNGP map (no 1/λ inside: callers divide);
* ``kappa_grad(c11, c12, c22)`` = (∂κ/∂c12, ∂κ/∂c11, ∂κ/∂c22), analytic, finite at c12² = c11 c22
  wherever the true derivative is finite (ReLU included);
* ``kappa_diag(c)`` = κ(c, c, c) and ``kappa_diag_grad(c)`` = dκ(c, c, c)/dc;
* ``mean(c)`` = E[σ(z)], z ~ N(0, c) (zero for odd σ) and ``mean_grad(c)`` = dm/dc.

Closed forms (see docs/kernels.md and theory/renormalized-kernels.md §7): ``linear``, ``erf`` (plain
erf, not erf(√π x/2)), ``relu`` (arc-cosine kernel of order 1), ``quadratic`` (x²), ``sign``,
``step`` (Heaviside). ``tanh`` and ``gelu`` use the Hermite (Mehler) series path with verified
accuracy (:class:`QuadratureActivation`), which is also available for any smooth elementwise
callable through :meth:`Activation.from_callable`.

All kernel arithmetic is float64 and broadcasts like numpy ufuncs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import special

from finwidth.errors import ConfigError, ConvergenceError

__all__ = [
    "Activation",
    "QuadratureActivation",
    "VarianceFactors",
    "available",
    "get_activation",
    "register_activation",
]

_TWO_OVER_PI = 2.0 / math.pi
_LOG_TWO_OVER_SQRT_PI = math.log(2.0 / math.sqrt(math.pi))  # log of erf'(0)
_INV_2PI = 1.0 / (2.0 * math.pi)
_SNAP_ULPS = 8  # correlations this close to ±1 are ±1 (see _correlation)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _as_cov(value: Any, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{what} must be finite; got NaN or inf")
    return arr


def _check_variance(c: np.ndarray, what: str) -> None:
    if np.any(c < 0):
        raise ConfigError(f"{what} is a variance and must be non-negative; min is {float(np.min(c)):.3g}")


def _triple(c11: Any, c12: Any, c22: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = _as_cov(c11, "c11")
    b = _as_cov(c12, "c12")
    d = _as_cov(c22, "c22")
    _check_variance(a, "c11")
    _check_variance(d, "c22")
    return a, b, d


def _inv_sqrt_or_zero(c: np.ndarray) -> np.ndarray:
    """1/sqrt(c) where c > 0, else 0 (a zero-variance input carries no correlation)."""
    out = np.zeros_like(c, dtype=np.float64)
    pos = c > 0
    out[pos] = 1.0 / np.sqrt(c[pos])
    return out


def _correlation(c11: np.ndarray, c12: np.ndarray, c22: np.ndarray) -> np.ndarray:
    """u = c12 / sqrt(c11 c22), clipped to [-1, 1]; 0 where a variance vanishes."""
    # sqrt of the product (not a product of square roots): u = 1 exactly when c11 = c12 = c22
    u = c12 * _inv_sqrt_or_zero(np.asarray(c11 * c22))
    # |u| within a few ulps of 1 is 1 up to the rounding of c12 and of the product: the kernels of
    # sign, step and relu are not Lipschitz there (κ moves by sqrt(δu)), so 1e-16 of rounding in u
    # would move κ by 1e-8; duplicate inputs (c12² = c11 c22) get the exact κ
    u = np.where(np.abs(u) > 1.0 - _SNAP_ULPS * np.finfo(np.float64).eps, np.sign(u), u)
    return np.clip(u, -1.0, 1.0)


class VarianceFactors:
    """Variances c_μ of a set of points and an activation's per-point quantities derived from them
    (made by :meth:`Activation.variance_factors`; slicing selects points)."""

    __slots__ = ("diag", "raw")

    def __init__(self, diag: np.ndarray, raw: Any):
        self.diag = diag
        self.raw = raw

    def __len__(self) -> int:
        return int(self.diag.shape[0])

    def __getitem__(self, sl: slice) -> VarianceFactors:
        raw = self.raw
        if isinstance(raw, tuple):
            raw = tuple(a[sl] for a in raw)
        elif raw is not None:
            raw = raw[sl]
        return VarianceFactors(self.diag[sl], raw)


class Activation:
    """An activation σ with its Gaussian kernel map κ and derivatives.

    Subclasses implement the closed forms; :class:`QuadratureActivation` (made by
    :meth:`from_callable`) handles any elementwise callable by Gauss–Hermite quadrature.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"erf"``.
    odd : bool
        σ(-x) = -σ(x). Non-odd activations have a non-zero mean ``m(c)`` (the mean term of the
        non-odd renormalised-kernel theory).
    homogeneous_degree : int or None
        d such that κ(a c11, a c12, a c22) = a^d κ(c11, c12, c22) for all a > 0 (relu, linear: 1;
        quadratic: 2; sign, step: 0); None if κ is not homogeneous.
    identity : bool
        σ(x) = x (``"linear"``): deep linear networks.
    """

    name: str = ""
    odd: bool = False
    homogeneous_degree: int | None = None
    identity: bool = False  # σ(x) = x: the deep linear networks (exact Gibbs sampling, no σ' pass)

    # --- the function itself -------------------------------------------------------------
    def numpy(self, x: np.ndarray) -> np.ndarray:
        """σ(x) elementwise on a numpy array (float64 out for float input)."""
        raise NotImplementedError

    def torch(self, x: Any) -> Any:
        """σ(x) elementwise on a torch tensor; differentiable where σ is."""
        raise NotImplementedError

    def torch_pair(self, h: Any, derivative: bool = True) -> tuple[Any, Any]:
        """(σ(h), σ'(h)) on a torch tensor, σ' None with ``derivative=False``: what the samplers'
        hand-written gradients need. Closed forms for the standard activations; any other gets σ'
        from torch autograd of :meth:`torch`."""
        import torch

        if not derivative:
            return self.torch(h), None
        with torch.enable_grad():
            hh = h.detach().requires_grad_(True)
            s = self.torch(hh)
            (d,) = torch.autograd.grad(s.sum(), hh)
        return s.detach(), d

    def torch_pair_into(self, h: Any, out: Any) -> tuple[Any, Any]:
        """(σ(h), σ'(h)) like :meth:`torch_pair`, reusing memory where the activation can: σ over h's
        own buffer (h is destroyed) and σ' into ``out`` (a tensor of h's shape). The default
        returns new tensors; erf implements it (three passes, no allocation: fresh large buffers
        cost page faults comparable to the arithmetic)."""
        return self.torch_pair(h, True)

    def __call__(self, x: Any) -> Any:
        if type(x).__module__.startswith("torch"):
            return self.torch(x)
        return self.numpy(np.asarray(x))

    # --- kernel map ------------------------------------------------------------------------
    def kappa(self, c11: Any, c12: Any, c22: Any) -> np.ndarray:
        """κ = E[σ(z1) σ(z2)] for (z1, z2) ~ N(0, [[c11, c12], [c12, c22]]).

        Parameters
        ----------
        c11, c12, c22 : array_like
            Variances (≥ 0) and covariance of the pre-activations; broadcast together.
            A correlation c12/sqrt(c11 c22) outside [-1, 1] by round-off is clipped.

        Returns
        -------
        numpy.ndarray
            float64, the broadcast shape.
        """
        a, b, d = _triple(c11, c12, c22)
        return self._kappa(a, b, d)

    def kappa_diag(self, c: Any) -> np.ndarray:
        """κ(c, c, c) = E[σ(z)²], z ~ N(0, c)."""
        c = _as_cov(c, "c")
        _check_variance(c, "c")
        return self._kappa_diag(c)

    def kappa_grad(self, c11: Any, c12: Any, c22: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Partial derivatives (∂κ/∂c12, ∂κ/∂c11, ∂κ/∂c22), analytic.

        Finite at c12² = c11 c22 (duplicate inputs) whenever the exact derivative is (erf,
        relu, linear, quadratic and smooth callables); ``sign`` and ``step`` have a genuinely
        infinite ∂κ/∂c12 there and return ``inf``.
        """
        a, b, d = _triple(c11, c12, c22)
        g12, g11, g22 = self._kappa_grad(a, b, d)
        shape = np.broadcast_shapes(a.shape, b.shape, d.shape)

        def own(g: Any, others: tuple) -> np.ndarray:
            # a fresh full-shape result is returned as is (these run on P×P blocks); anything else is copied
            if isinstance(g, np.ndarray) and g.shape == shape and g.flags.owndata and not any(g is o for o in others):
                return g
            return np.broadcast_to(g, shape).copy()

        g12 = own(g12, (a, b, d))
        g11 = own(g11, (a, b, d, g12))
        return g12, g11, own(g22, (a, b, d, g12, g11))

    def kappa_diag_grad(self, c: Any) -> np.ndarray:
        """d κ(c, c, c)/dc (= ∂12 + ∂11 + ∂22 on the diagonal)."""
        c = _as_cov(c, "c")
        _check_variance(c, "c")
        return self._kappa_diag_grad(c)

    def mean(self, c: Any) -> np.ndarray:
        """m(c) = E[σ(z)], z ~ N(0, c); zero for odd σ."""
        c = _as_cov(c, "c")
        _check_variance(c, "c")
        return self._mean(c)

    def mean_grad(self, c: Any) -> np.ndarray:
        """dm/dc = ½ E[σ''(z)] (heat equation), z ~ N(0, c)."""
        c = _as_cov(c, "c")
        _check_variance(c, "c")
        return self._mean_grad(c)

    # --- implementation hooks (inputs already validated float64) ---------------------------
    def _kappa(self, c11: np.ndarray, c12: np.ndarray, c22: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _kappa_diag(self, c: np.ndarray) -> np.ndarray:
        return self._kappa(c, c, c)

    def _kappa_grad(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def _kappa_diag_grad(self, c: np.ndarray) -> np.ndarray:
        g12, g11, g22 = self._kappa_grad(c, c, c)
        return g12 + g11 + g22

    def _mean(self, c: np.ndarray) -> np.ndarray:
        if self.odd:
            return np.zeros_like(c)
        raise NotImplementedError

    def _mean_grad(self, c: np.ndarray) -> np.ndarray:
        if self.odd:
            return np.zeros_like(c)
        raise NotImplementedError

    # --- the blocked kernel recursion (finwidth.kernels) ------------------------------------
    def variance_factors(self, diag: Any) -> VarianceFactors:
        """The variances c_μ = K(x_μ, x_μ) of a set of points, with the per-point quantities that
        :meth:`kappa_block` reuses across a whole kernel matrix (computed once per layer).
        Slice the result (``factors[i0:i1]``) to get those of a block of points."""
        c = _as_cov(diag, "diag")
        _check_variance(c, "diag")
        if c.ndim != 1:
            raise ConfigError(f"diag must be 1-D (one variance per point), got shape {c.shape}")
        return VarianceFactors(c, self._factors(c))

    def kappa_block(self, block: np.ndarray, rows: VarianceFactors, cols: VarianceFactors) -> np.ndarray:
        """κ(c_row, block, c_col) on a block (n_rows, n_cols) of covariances c12 between the points
        of ``rows`` and ``cols`` (their :meth:`variance_factors`), float64. Overwrites ``block``
        (a float64 array) and returns it or a new array."""
        return self._kappa_block(block, rows.diag, cols.diag, rows.raw, cols.raw)

    # --- fast-path hooks of the blocked recursion (inputs validated) -------------------------
    def _factors(self, diag: np.ndarray) -> Any:
        """Per-point quantities reused across a whole kernel matrix (computed once per layer)."""
        return None

    def _kappa_block(self, block: np.ndarray, d_row: np.ndarray, d_col: np.ndarray, f_row: Any, f_col: Any) -> np.ndarray:
        """κ(d_row[:, None], block, d_col[None, :]); may overwrite and return ``block``."""
        return self._kappa(d_row[:, None], block, d_col[None, :])

    # --- construction ----------------------------------------------------------------------
    @staticmethod
    def from_callable(
        name: str,
        numpy_fn: Callable[[np.ndarray], np.ndarray],
        torch_fn: Callable[[Any], Any] | None,
        *,
        odd: bool,
        order: int = 40,
        derivatives: tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]] | None = None,
        homogeneous_degree: int | None = None,
        method: str = "series",
        tol: float = 1e-10,
        max_terms: int = 4096,
    ) -> QuadratureActivation:
        """An activation whose κ is computed numerically from σ (see :class:`QuadratureActivation`).

        Parameters
        ----------
        name : str
            Registry key (the activation is not registered; call :func:`register_activation`).
        numpy_fn, torch_fn : callable
            σ, elementwise, on numpy arrays and on torch tensors. ``torch_fn`` may be None if
            ``derivatives`` is given (then ``torch()`` raises). σ must be smooth for the default
            method (tanh, gelu, softplus, swish, erf, polynomials …).
        odd : bool
            Whether σ is odd (then ``mean`` is exactly zero and only odd Hermite degrees enter).
        order : int
            Gauss–Hermite nodes per dimension for ``method="product"`` (unused by the series).
        derivatives : (callable, callable), optional
            σ' and σ'' on numpy arrays; if omitted, torch autograd of ``torch_fn``. The
            derivatives of κ come from them by Price's theorem: ∂κ/∂c12 = E[σ'(z1) σ'(z2)],
            ∂κ/∂c11 = ½ E[σ''(z1) σ(z2)], dm/dc = ½ E[σ''(z)].
        homogeneous_degree : int, optional
            Declare it if κ is homogeneous (only a label; not checked).
        method : {"series", "product"}
            ``"series"`` (default): Mehler/Hermite series with per-point coefficients, O(K) per
            entry, every entry within ``tol``·sqrt(κ(c11,c11,c11) κ(c22,c22,c22)) (derivatives
            alike with σ', σ''), else :class:`~finwidth.errors.ConvergenceError`. ``"product"``:
            the n×n Gauss–Hermite product rule, O(n²) per entry, no error control (use it only
            for a σ with a kink that has no closed form; relu at n = 64: error ≈ 1e-3).
        tol : float
            Relative accuracy of the series, in [1e-13, 1e-2].
        max_terms : int
            Largest Hermite degree K the series may use (tanh needs K ≈ 65, 173, 523, 1003 for
            κ at variances 1, 3, 10, 20 and tol = 1e-10; its derivatives about twice as many).
        """
        return QuadratureActivation(
            name, numpy_fn, torch_fn, odd=odd, order=order, derivatives=derivatives,
            homogeneous_degree=homogeneous_degree, method=method, tol=tol, max_terms=max_terms,
        )

    def __repr__(self) -> str:
        return f"<Activation {self.name!r} odd={self.odd} homogeneous_degree={self.homogeneous_degree}>"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # registered activations pickle by name (needed for process pools)
        if _REGISTRY.get(self.name) is self:
            return (get_activation, (self.name,))
        return object.__reduce__(self)


# =========================================================================================
# closed forms
# =========================================================================================


class _Linear(Activation):
    name = "linear"
    odd = True
    homogeneous_degree = 1
    identity = True

    def numpy(self, x):  # type: ignore[no-untyped-def]
        return np.asarray(x, dtype=np.result_type(x, np.float64))

    def torch(self, x):  # type: ignore[no-untyped-def]
        return x

    def torch_pair(self, h, derivative=True):  # type: ignore[no-untyped-def]
        import torch

        return h, (torch.ones_like(h) if derivative else None)

    def _kappa(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        return np.broadcast_to(c12, np.broadcast_shapes(c11.shape, c12.shape, c22.shape)).astype(np.float64, copy=True)

    def _kappa_diag(self, c):  # type: ignore[no-untyped-def]
        return c.copy()

    def _kappa_grad(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        return np.ones_like(c12), np.zeros_like(c11), np.zeros_like(c22)

    def _kappa_diag_grad(self, c):  # type: ignore[no-untyped-def]
        return np.ones_like(c)

    def _kappa_block(self, block, d_row, d_col, f_row, f_col):  # type: ignore[no-untyped-def]
        return block


class _Erf(Activation):
    """σ = erf(x): κ = (2/π) arcsin(2 c12 / sqrt((1 + 2 c11)(1 + 2 c22)))."""

    name = "erf"
    odd = True
    homogeneous_degree = None

    def numpy(self, x):  # type: ignore[no-untyped-def]
        return special.erf(x)

    def torch(self, x):  # type: ignore[no-untyped-def]
        import torch

        return torch.erf(x)

    def torch_pair(self, h, derivative=True):  # type: ignore[no-untyped-def]
        import torch

        if not derivative:
            return torch.erf(h), None
        # σ' = exp(ln(2/√π) − h²): two passes
        d = torch.addcmul(torch.tensor(_LOG_TWO_OVER_SQRT_PI, dtype=h.dtype, device=h.device), h, h, value=-1.0)
        return torch.erf(h), d.exp_()

    def torch_pair_into(self, h, out):  # type: ignore[no-untyped-def]
        import torch

        torch.addcmul(torch.tensor(_LOG_TWO_OVER_SQRT_PI, dtype=h.dtype, device=h.device), h, h, value=-1.0,
                      out=out).exp_()
        return h.erf_(), out

    def _kappa(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        z = 2.0 * c12 / np.sqrt((1.0 + 2.0 * c11) * (1.0 + 2.0 * c22))
        return _TWO_OVER_PI * np.arcsin(np.clip(z, -1.0, 1.0))

    def _kappa_diag(self, c):  # type: ignore[no-untyped-def]
        return _TWO_OVER_PI * np.arcsin(2.0 * c / (1.0 + 2.0 * c))

    def _kappa_grad(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        A = 1.0 + 2.0 * c11
        B = 1.0 + 2.0 * c22
        # sqrt(A B) sqrt(1 − z²) = sqrt(A B − 4 c12²) ≥ sqrt(1 + 2(c11 + c22)) > 0 (Cauchy–Schwarz):
        # never singular; the bound is imposed on round-off. In place: this runs on P×P blocks.
        den = np.empty(np.broadcast_shapes(np.shape(c11), np.shape(c12), np.shape(c22)))
        np.multiply(c12, c12, out=den)
        den *= -4.0
        den += A * B
        np.maximum(den, A + B - 1.0, out=den)
        np.sqrt(den, out=den)
        g12 = np.divide(4.0 / math.pi, den, out=den)
        t = g12 * c12
        return g12, t * (-1.0 / A), t * (-1.0 / B)

    def _kappa_diag_grad(self, c):  # type: ignore[no-untyped-def]
        # d/dc (2/π) arcsin(2c/(1+2c)) = (2/π) · 2 / ((1+2c) sqrt(1+4c))
        return (4.0 / math.pi) / ((1.0 + 2.0 * c) * np.sqrt(1.0 + 4.0 * c))

    def _factors(self, diag):  # type: ignore[no-untyped-def]
        return 1.0 / np.sqrt(1.0 + 2.0 * diag)

    def _kappa_block(self, block, d_row, d_col, f_row, f_col):  # type: ignore[no-untyped-def]
        block *= (2.0 * f_row)[:, None]
        block *= f_col[None, :]
        np.clip(block, -1.0, 1.0, out=block)
        np.arcsin(block, out=block)
        block *= _TWO_OVER_PI
        return block


class _ReLU(Activation):
    """σ = max(x, 0): the arc-cosine kernel of order 1 (Cho & Saul 2009).

    κ = sqrt(c11 c22)/(2π) [u (π − arccos u) + sqrt(1 − u²)],  u = c12/sqrt(c11 c22).
    """

    name = "relu"
    odd = False
    homogeneous_degree = 1

    def numpy(self, x):  # type: ignore[no-untyped-def]
        return np.maximum(x, 0.0)

    def torch(self, x):  # type: ignore[no-untyped-def]
        import torch

        return torch.relu(x)

    def torch_pair(self, h, derivative=True):  # type: ignore[no-untyped-def]
        import torch

        return torch.relu(h), ((h > 0).to(h.dtype) if derivative else None)

    def _kappa(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        u = _correlation(c11, c12, c22)
        return np.sqrt(c11 * c22) * _INV_2PI * (u * (math.pi - np.arccos(u)) + np.sqrt(1.0 - u * u))

    def _kappa_diag(self, c):  # type: ignore[no-untyped-def]
        return 0.5 * c

    def _kappa_grad(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        u = _correlation(c11, c12, c22)
        g12 = (math.pi - np.arccos(u)) * _INV_2PI
        s = np.sqrt(np.maximum(1.0 - u * u, 0.0))
        # sqrt(c22/c11) sqrt(1-u²)/(4π), written without dividing by a zero variance
        with np.errstate(divide="ignore", invalid="ignore"):
            g11 = np.where(c11 > 0, np.sqrt(c22 / np.where(c11 > 0, c11, 1.0)) * s / (4.0 * math.pi), np.inf)
            g22 = np.where(c22 > 0, np.sqrt(c11 / np.where(c22 > 0, c22, 1.0)) * s / (4.0 * math.pi), np.inf)
        # a zero variance paired with a zero variance: κ ≡ 0 along that face
        both0 = (c11 == 0) & (c22 == 0)
        g11 = np.where(both0, 0.0, g11)
        g22 = np.where(both0, 0.0, g22)
        return g12, g11, g22

    def _kappa_diag_grad(self, c):  # type: ignore[no-untyped-def]
        return np.full_like(c, 0.5)

    def _mean(self, c):  # type: ignore[no-untyped-def]
        return np.sqrt(c) * _INV_SQRT_2PI

    def _mean_grad(self, c):  # type: ignore[no-untyped-def]
        with np.errstate(divide="ignore"):
            return 0.5 * _INV_SQRT_2PI / np.sqrt(c)

    def _factors(self, diag):  # type: ignore[no-untyped-def]
        return np.sqrt(diag), _inv_sqrt_or_zero(diag)

    def _kappa_block(self, block, d_row, d_col, f_row, f_col):  # type: ignore[no-untyped-def]
        sq_r, inv_r = f_row
        sq_c, inv_c = f_col
        u = block
        u *= inv_r[:, None]
        u *= inv_c[None, :]
        np.clip(u, -1.0, 1.0, out=u)
        t = np.arccos(u)
        np.subtract(math.pi, t, out=t)
        t *= u
        np.multiply(u, u, out=u)
        np.subtract(1.0, u, out=u)
        np.sqrt(u, out=u)
        u += t
        u *= (_INV_2PI * sq_r)[:, None]
        u *= sq_c[None, :]
        return u


class _Quadratic(Activation):
    """σ = x²: κ = c11 c22 + 2 c12² (Isserlis)."""

    name = "quadratic"
    odd = False
    homogeneous_degree = 2

    def numpy(self, x):  # type: ignore[no-untyped-def]
        x = np.asarray(x, dtype=np.result_type(x, np.float64))
        return x * x

    def torch(self, x):  # type: ignore[no-untyped-def]
        return x * x

    def _kappa(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        return c11 * c22 + 2.0 * c12 * c12

    def _kappa_diag(self, c):  # type: ignore[no-untyped-def]
        return 3.0 * c * c

    def _kappa_grad(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        return 4.0 * c12, c22 * np.ones_like(c11), c11 * np.ones_like(c22)

    def _kappa_diag_grad(self, c):  # type: ignore[no-untyped-def]
        return 6.0 * c

    def _mean(self, c):  # type: ignore[no-untyped-def]
        return c.copy()

    def _mean_grad(self, c):  # type: ignore[no-untyped-def]
        return np.ones_like(c)



def _arcsin_kernel_grad(c11, c12, c22, amplitude):  # type: ignore[no-untyped-def]
    """(∂κ/∂c12, ∂κ/∂c11, ∂κ/∂c22) of κ = amplitude·arcsin(u) + const, u = c12/√(c11 c22).

    The kernels of the sign and step functions; ∂κ/∂u diverges at u = ±1 and is returned as inf.
    """
    u = _correlation(c11, c12, c22)
    with np.errstate(divide="ignore", invalid="ignore"):
        dk_du = amplitude / np.sqrt(np.maximum(1.0 - u * u, 0.0))
        g12 = dk_du / np.sqrt(c11 * c22)
        g11 = -dk_du * u / (2.0 * c11)
        g22 = -dk_du * u / (2.0 * c22)
    return g12, g11, g22


class _Sign(Activation):
    """σ = sign(x): κ = (2/π) arcsin(u). ∂κ/∂c12 diverges at u = ±1 (returned as inf)."""

    name = "sign"
    odd = True
    homogeneous_degree = 0

    def numpy(self, x):  # type: ignore[no-untyped-def]
        return np.sign(np.asarray(x, dtype=np.result_type(x, np.float64)))

    def torch(self, x):  # type: ignore[no-untyped-def]
        import torch

        return torch.sign(x)

    def _kappa(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        u = _correlation(c11, c12, c22)
        both = (c11 > 0) & (c22 > 0)
        return np.where(both, _TWO_OVER_PI * np.arcsin(u), 0.0)

    def _kappa_diag(self, c):  # type: ignore[no-untyped-def]
        return np.where(c > 0, 1.0, 0.0)

    def _kappa_grad(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        return _arcsin_kernel_grad(c11, c12, c22, _TWO_OVER_PI)

    def _kappa_diag_grad(self, c):  # type: ignore[no-untyped-def]
        return np.zeros_like(c)


class _Step(Activation):
    """σ = Heaviside step 1[x > 0]: κ = (π − arccos u)/(2π); m = ½."""

    name = "step"
    odd = False
    homogeneous_degree = 0

    def numpy(self, x):  # type: ignore[no-untyped-def]
        return (np.asarray(x) > 0).astype(np.float64)

    def torch(self, x):  # type: ignore[no-untyped-def]
        return (x > 0).to(x.dtype)

    def _kappa(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        u = _correlation(c11, c12, c22)
        both = (c11 > 0) & (c22 > 0)
        # a zero-variance input is 0, never > 0
        return np.where(both, (math.pi - np.arccos(u)) * _INV_2PI, 0.0)

    def _kappa_diag(self, c):  # type: ignore[no-untyped-def]
        return np.where(c > 0, 0.5, 0.0)

    def _kappa_grad(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        return _arcsin_kernel_grad(c11, c12, c22, _INV_2PI)

    def _kappa_diag_grad(self, c):  # type: ignore[no-untyped-def]
        return np.zeros_like(c)

    def _mean(self, c):  # type: ignore[no-untyped-def]
        return np.where(c > 0, 0.5, 0.0)

    def _mean_grad(self, c):  # type: ignore[no-untyped-def]
        return np.zeros_like(c)


# =========================================================================================
# generic path: Hermite (Mehler) series with per-point coefficients, or a 2-D product rule
# =========================================================================================

# |z| cut of the 1-D rules: every integrand is σ(√c z) h_k(z) φ(z) with |h_k(z)| √φ(z) ≲ 1
# (Cramér's inequality), so what is left beyond it is below e^{-Z²/4} ≈ 2e-20 times |σ|
_Z_MAX = 13.5
_MAX_NODES = 1 << 16
_N_CHECK = 16  # variances on which the 1-D step is verified by halving it


def _hermite_rule(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E[g(x)], x ~ N(0, 1) (probabilists' Hermite, weights sum to 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(order)
    return x, w / w.sum()


def _trapezoid_rule(h: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes j·h, |j h| ≤ Z, and weights h φ(z) for E[g(z)], z ~ N(0, 1).

    The trapezoidal rule on the whole line converges geometrically, as exp(−2π d/h), for
    integrands analytic in the strip |Im z| < d (tanh(√c z): d = π/(2√c)).
    """
    J = int(math.ceil(_Z_MAX / h))
    z = np.arange(-J, J + 1, dtype=np.float64) * h
    return z, h * _INV_SQRT_2PI * np.exp(-0.5 * z * z)


def _hermite_table(z: np.ndarray, K: int, ks: np.ndarray) -> np.ndarray:
    """Rows h_k(z) = He_k(z)/sqrt(k!) for k in ``ks`` (≤ K), by the stable three-term recurrence."""
    out = np.empty((ks.size, z.size))
    row = {int(k): i for i, k in enumerate(ks)}
    prev, cur = np.zeros_like(z), np.ones_like(z)
    for k in range(K + 1):
        if k in row:
            out[row[k]] = cur
        prev, cur = cur, (z * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)
    return out


def _horner_flat(rho: np.ndarray, t1: np.ndarray, t2: np.ndarray, parity: int | None) -> np.ndarray:
    """Σ_k t1[k] t2[k] ρ^k over the degrees k of one parity (x = ρ², times ρ if odd) or all (x = ρ)."""
    odd = parity == 1
    x = rho if parity is None else rho * rho
    s = t1[-1] * t2[-1]
    for j in range(t1.shape[0] - 2, -1, -1):
        s *= x
        s += t1[j] * t2[j]
    if odd:
        s *= rho
    return s


def _horner_block(rho: np.ndarray, a_row: np.ndarray, a_col: np.ndarray, parity: int | None) -> np.ndarray:
    """As :func:`_horner_flat` for a_row[k, :, None] a_col[k, None, :] on an (r, c) block.

    Per term: one in-place multiply and one rank-one BLAS update (``dger``, no temporary).
    """
    from scipy.linalg import blas

    odd = parity == 1
    x = rho if parity is None else rho * rho
    # a C-ordered (r, c) array is the Fortran-ordered (c, r) array ``dger`` updates in place
    st = np.multiply.outer(a_row[-1], a_col[-1]).T
    xt = x.T
    for j in range(a_row.shape[0] - 2, -1, -1):
        st *= xt
        st = blas.dger(1.0, a_col[j], a_row[j], a=st, overwrite_a=1)
    s = st.T
    if odd:
        s *= rho
    return s


class _SeriesTable:
    """Hermite coefficients α_k(c) = E[f(√c z) h_k(z)] of σ (and σ', σ'') at a set of variances.

    Attributes: ``c`` (m,), ``coef`` {name: (n_terms, m)} over the degrees ``ks[name]`` (only odd
    or even ones for a function of definite parity), ``second`` {name: E[f(√c z)²]}, ``cross``
    E[σ σ''] (with derivatives), ``degree`` the highest degree kept.
    """

    def __init__(self, c: np.ndarray, ks: dict, coef: dict, second: dict, cross: np.ndarray | None):
        self.c, self.ks, self.coef, self.second, self.cross = c, ks, coef, second, cross
        self.degree = max(int(k[-1]) for k in ks.values())


class _SeriesFactors:
    """Per-point coefficients for :func:`finwidth.kernels.propagate`, extended on demand.

    Row and column sets (test and train points) may need different truncations; a block uses
    the larger one, so the table of the other set is recomputed once with more terms.
    """

    def __init__(self, act: QuadratureActivation, c: np.ndarray):
        self.act = act
        self.c = c
        self.inv_sqrt = _inv_sqrt_or_zero(c)
        self.table = act._series_table(c, derivatives=False)

    def ensure(self, degree: int) -> None:
        if self.table.degree < degree:
            self.table = self.act._series_table(self.c, derivatives=False, min_terms=degree + 1)

    def __getitem__(self, sl: slice) -> tuple[_SeriesFactors, slice]:
        return (self, sl)


def _factor_view(f: Any) -> tuple[_SeriesFactors, slice]:
    return f if isinstance(f, tuple) else (f, slice(None))


class QuadratureActivation(Activation):
    """An activation without a closed-form kernel map, from any smooth elementwise callable.

    ``method="series"`` (default) uses Mehler's formula. With ρ = c12/sqrt(c11 c22) and the
    orthonormal Hermite polynomials h_k = He_k/sqrt(k!),

        κ(c11, c12, c22) = Σ_k α_k(c11) α_k(c22) ρ^k,   α_k(c) = E[σ(√c z) h_k(z)],  z ~ N(0, 1).

    The α_k of each distinct variance come from a 1-D trapezoidal rule (cost O(n K) per point,
    one matrix product); the pairwise part is a Horner polynomial in ρ (O(K) per entry; only the
    odd k for odd σ). Truncation is chosen per call from Parseval: with the tail
    T_K(c) = E[σ(√c z)²] − Σ_{k≤K} α_k(c)², Cauchy–Schwarz bounds the error of every entry,
    |ρ| ≤ 1, by sqrt(T_K(c11) T_K(c22)); K is the smallest with T_K ≤ ``tol``·E[σ²] at every
    variance, so |error| ≤ tol·sqrt(κ(c11,c11,c11) κ(c22,c22,c22)). Derivatives are series of the
    same kind by Price's theorem, ∂κ/∂c12 = Σ α'_k(c11) α'_k(c22) ρ^k with α'_k from σ', and
    ∂κ/∂c11 = ½ Σ α''_k(c11) α_k(c22) ρ^k with α''_k from σ'' (same error bound with σ', σ''),
    so g11(a, b, c) = g22(c, b, a) holds exactly. κ is one truncated series for all ρ (smooth, so
    finite differences work at any step); the 1-D expectations ``kappa_diag``, ``mean`` and their
    derivatives use the 1-D rule directly (``kappa(c, c, c)`` agrees with ``kappa_diag(c)`` to tol).

    The 1-D step h is verified by halving it on up to 16 variances (the largest ones and
    quantiles): the change must stay below tol/100 of the scale. σ that is not smooth (a kink
    or a jump) makes the series converge algebraically: ``ConvergenceError`` says so and points
    to the closed forms or ``method="product"``.

    ``method="product"`` is the n×n Gauss–Hermite product rule (``order`` = n) after the Cholesky
    change of variables z1 = sqrt(c11) x1, z2 = (c12/sqrt(c11)) x1 + sqrt(c22 − c12²/c11) x2: no
    error control, algebraic convergence for kinks (relu: ~1e-3 at n = 64), O(n²) per entry.

    Construct with :meth:`Activation.from_callable`.
    """

    _CHUNK = 1 << 21  # doubles in the largest temporary (16 MiB)

    def __init__(
        self,
        name: str,
        numpy_fn: Callable[[np.ndarray], np.ndarray],
        torch_fn: Callable[[Any], Any] | None,
        *,
        odd: bool,
        order: int = 40,
        derivatives: tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]] | None = None,
        homogeneous_degree: int | None = None,
        method: str = "series",
        tol: float = 1e-10,
        max_terms: int = 4096,
    ):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"an activation needs a non-empty name, got {name!r}")
        if not callable(numpy_fn):
            raise ConfigError(f"numpy_fn of activation {name!r} must be callable")
        if torch_fn is not None and not callable(torch_fn):
            raise ConfigError(f"torch_fn of activation {name!r} must be callable or None")
        if torch_fn is None and derivatives is None:
            raise ConfigError(
                f"activation {name!r}: give torch_fn (derivatives by autograd) or derivatives=(σ', σ'')"
            )
        if derivatives is not None and (len(derivatives) != 2 or not all(callable(f) for f in derivatives)):
            raise ConfigError(f"derivatives of activation {name!r} must be a pair of callables (σ', σ'')")
        if isinstance(order, bool) or not isinstance(order, int) or not 2 <= order <= 200:
            raise ConfigError(f"quadrature order must be an integer in [2, 200], got {order!r}")
        if method not in ("series", "product"):
            raise ConfigError(f"method must be 'series' (Hermite series) or 'product' (2-D rule), got {method!r}")
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 1e-13 <= tol <= 1e-2:
            raise ConfigError(f"tol (relative accuracy of the series) must be in [1e-13, 1e-2], got {tol!r}")
        if isinstance(max_terms, bool) or not isinstance(max_terms, int) or not 8 <= max_terms <= 16384:
            raise ConfigError(f"max_terms must be an integer in [8, 16384], got {max_terms!r}")
        self.name = name
        self.odd = bool(odd)
        self.homogeneous_degree = homogeneous_degree
        self.order = order
        self.method = method
        self.tol = float(tol)
        self.max_terms = max_terms
        self._np = numpy_fn
        self._th = torch_fn
        self._derivs = derivatives
        self._x, self._w = _hermite_rule(order)
        self._tables: dict = {}

    def __getstate__(self):  # type: ignore[no-untyped-def]
        state = self.__dict__.copy()
        state["_tables"] = {}  # a cache
        return state

    # σ and its derivatives ----------------------------------------------------------------
    def numpy(self, x):  # type: ignore[no-untyped-def]
        return np.asarray(self._np(np.asarray(x, dtype=np.float64)), dtype=np.float64)

    def torch(self, x):  # type: ignore[no-untyped-def]
        if self._th is None:
            raise ConfigError(f"activation {self.name!r} was built without a torch function")
        return self._th(x)

    def _d1(self, x: np.ndarray) -> np.ndarray:
        if self._derivs is not None:
            return np.asarray(self._derivs[0](x), dtype=np.float64)
        return self._autograd(x)[0]

    def _d2(self, x: np.ndarray) -> np.ndarray:
        if self._derivs is not None:
            return np.asarray(self._derivs[1](x), dtype=np.float64)
        return self._autograd(x)[1]

    def _autograd(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from finwidth._deps import require_torch

        torch = require_torch("σ' and σ'' of a custom activation by autograd (or pass derivatives=)")
        t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64).requires_grad_(True)
        y = self._th(t)  # type: ignore[misc]
        (g,) = torch.autograd.grad(y.sum(), t, create_graph=True)
        if g.requires_grad:
            (h,) = torch.autograd.grad(g.sum(), t, allow_unused=True)
            h = torch.zeros_like(t) if h is None else h
        else:
            h = torch.zeros_like(t)
        return g.detach().numpy(), h.detach().numpy()

    def _funcs(self, derivatives: bool, x: np.ndarray) -> dict:
        if not derivatives:
            return {"s": self.numpy(x)}
        if self._derivs is None:
            d1, d2 = self._autograd(x)
        else:
            d1, d2 = self._d1(x), self._d2(x)
        return {"s": self.numpy(x), "d1": d1, "d2": d2}

    # 1-D rules ----------------------------------------------------------------------------
    def _fail(self, what: str, suggestion: str) -> ConvergenceError:
        return ConvergenceError(f"activation {self.name!r}: {what}", suggestion=suggestion)

    def _parity(self, name: str) -> int | None:
        """Parity of the Hermite degrees of σ ("s"), σ' ("d1"), σ'' ("d2"): 1 odd, 0 even, None all."""
        if not self.odd:
            return None
        return 0 if name == "d1" else 1  # σ odd: σ' even, σ'' odd

    def _project(self, c: np.ndarray, h: float, K: int, derivatives: bool) -> _SeriesTable:
        """Coefficients and second moments at all variances c with the trapezoidal step h."""
        z, w = _trapezoid_rule(h)
        names = ("s", "d1", "d2") if derivatives else ("s",)
        ks, H = {}, {}
        for k in names:
            par = self._parity(k)
            ks[k] = np.arange(K + 1) if par is None else np.arange(par, K + 1, 2)
            key = (h, K, par)
            if key not in self._tables:
                if len(self._tables) > 8:
                    self._tables.clear()
                self._tables[key] = (_hermite_table(z, K, ks[k]) * w).T.copy()  # (n, n_terms)
            H[k] = self._tables[key]
        coef = {k: np.empty((ks[k].size, c.size)) for k in names}
        second = {k: np.empty(c.size) for k in names}
        cross = np.empty(c.size) if derivatives else None
        edge = math.exp(-0.25 * z[-1] ** 2)
        step = max(1, self._CHUNK // (4 * z.size))
        for s0 in range(0, c.size, step):
            e = slice(s0, s0 + step)
            F = self._funcs(derivatives, np.sqrt(c[e])[:, None] * z[None, :])
            for k in names:
                f = F[k]
                if not np.all(np.isfinite(f)):
                    raise self._fail(f"σ{'' if k == 's' else ' derivative'} is not finite at some node",
                                     "check the callable on large |x|; finwidth evaluates it up to 13.5·sqrt(c)")
                second[k][e] = (f * f) @ w
                coef[k][:, e] = (f @ H[k]).T
                # the cut at |z| = Z must leave nothing: |f(±√c Z)| e^{-Z²/4} ≪ tol·scale
                tip = np.maximum(np.abs(f[:, 0]), np.abs(f[:, -1])) * edge
                if np.any(tip > 1e-2 * self.tol * np.sqrt(second[k][e]) + 1e-300):
                    raise self._fail("σ grows too fast for the Gaussian cut at |z| = 13.5",
                                     "use pre-activation variances closer to 1")
            if derivatives:
                cross[e] = (F["s"] * F["d2"]) @ w  # type: ignore[index]
        return _SeriesTable(c, ks, coef, second, cross)

    def _verified_table(self, c: np.ndarray, K: int, derivatives: bool) -> _SeriesTable:
        """``_project`` with a step that halving it does not change beyond tol/100 (checked)."""
        cmax = float(c.max())
        h = min(0.35, 2.0 / math.sqrt(2 * K + 1), 0.18 / math.sqrt(max(cmax, 1e-300)))
        order = np.argsort(c)
        check = np.unique(np.concatenate([order[-_N_CHECK // 2 :], order[np.linspace(0, c.size - 1, _N_CHECK // 2).astype(int)]]))
        while True:
            table = self._project(c, h, K, derivatives)
            fine = self._project(c[check], h / 2, K, derivatives)
            worst = 0.0
            for k in table.coef:
                scale = np.sqrt(fine.second[k]) + 1e-300
                dc = np.max(np.abs(table.coef[k][:, check] - fine.coef[k]), axis=0)
                ds = np.abs(table.second[k][check] - fine.second[k]) / scale
                worst = max(worst, float(np.max(np.maximum(dc / scale, ds))))
            if worst <= 1e-2 * self.tol:
                return table
            h /= 2
            if 2 * _Z_MAX / h > _MAX_NODES:
                raise self._fail(
                    f"the 1-D rule does not converge (relative change {worst:.2g} at {int(2 * _Z_MAX / h)} nodes); "
                    "σ is not smooth (a kink or a jump?)",
                    "a closed form (relu, step, sign), or method='product' (2-D Gauss–Hermite, no error control)",
                )

    def _series_table(self, c: np.ndarray, *, derivatives: bool, min_terms: int = 0) -> _SeriesTable:
        """Coefficients at the variances c, truncated at the fewest degrees K meeting ``tol``.

        ``min_terms`` is a lower bound on K + 1.
        """
        c = np.asarray(c, dtype=np.float64).ravel()
        K = max(32, min_terms)
        while True:
            table = self._verified_table(c, K, derivatives)
            need = 0  # the degree K every series needs
            worst = 0.0
            for k, A in table.coef.items():
                e2 = table.second[k]
                tail = e2[None, :] - np.cumsum(A * A, axis=0)
                ok = tail <= self.tol * e2[None, :]
                met = ok.any(axis=0)
                if not met.all():
                    worst = max(worst, float(np.max(tail[-1][~met] / e2[~met])))
                    need = -1
                elif need >= 0:
                    need = max(need, int(table.ks[k][int(np.max(np.argmax(ok, axis=0)))]))
            if need >= 0:
                top = max(need, min_terms - 1, 0)
                for k in table.coef:
                    n = int(np.searchsorted(table.ks[k], top, side="right"))
                    table.ks[k] = table.ks[k][:n]
                    table.coef[k] = table.coef[k][:n]
                table.degree = top
                return table
            if K >= self.max_terms:
                raise self._fail(
                    f"the Hermite series needs more than max_terms = {self.max_terms} terms at variance "
                    f"{float(c.max()):.3g} (relative tail {worst:.2g} > tol = {self.tol:.2g})",
                    "smaller pre-activation variances (normalise the inputs or raise the priors λ), a larger "
                    "max_terms or tol in Activation.from_callable, a closed form if σ has a kink (relu, step), "
                    "or method='product'",
                )
            K = min(2 * K, self.max_terms)

    def _moment(self, c: np.ndarray, g: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """E[g(√c z)] by the trapezoidal rule, step halved until the change is below tol/100."""
        flat = np.asarray(c, dtype=np.float64).ravel()
        cmax = float(flat.max()) if flat.size else 0.0
        h = min(0.35, 0.18 / math.sqrt(max(cmax, 1e-300)))
        z, w = _trapezoid_rule(h)
        X = np.sqrt(flat)[:, None] * z[None, :]
        coarse = g(X) @ w
        while True:
            z2, w2 = _trapezoid_rule(h / 2)
            G = g(np.sqrt(flat)[:, None] * z2[None, :])
            fine, scale = G @ w2, np.abs(G) @ w2
            if not np.all(np.isfinite(fine)):
                raise self._fail("a Gaussian expectation of σ is not finite", "check the callable for NaN/inf")
            if np.all(np.abs(fine - coarse) <= 1e-2 * self.tol * scale + 1e-300):
                return fine.reshape(np.shape(c))
            h /= 2
            coarse = fine
            if 2 * _Z_MAX / h > _MAX_NODES:
                raise self._fail(
                    "the 1-D rule does not converge; σ is not smooth (a kink or a jump?)",
                    "a closed form (relu, step, sign), or method='product'",
                )

    # series evaluation ---------------------------------------------------------------------
    def _pairs(self, c11, c12, c22, derivatives: bool):  # type: ignore[no-untyped-def]
        """Broadcast shape, the coefficient table, each entry's two variance indices in it, and ρ."""
        shape = np.broadcast_shapes(c11.shape, c12.shape, c22.shape)
        # coefficients once per distinct variance (both roles share one table: exact symmetry)
        uniq, inv = np.unique(np.concatenate([c11.ravel(), c22.ravel()]), return_inverse=True)
        table = self._series_table(uniq, derivatives=derivatives)
        i1 = np.broadcast_to(inv[: c11.size].reshape(c11.shape), shape).ravel()
        i2 = np.broadcast_to(inv[c11.size :].reshape(c22.shape), shape).ravel()
        a11 = np.broadcast_to(c11, shape).ravel()
        a12 = np.broadcast_to(c12, shape).ravel()
        a22 = np.broadcast_to(c22, shape).ravel()
        return shape, table, i1, i2, _correlation(a11, a12, a22)

    def _series_sum(self, table, name1, name2, i1, i2, rho):  # type: ignore[no-untyped-def]
        A1, A2 = table.coef[name1], table.coef[name2]
        parity = self._parity(name1)
        out = np.empty(rho.size)
        step = max(1, self._CHUNK // (2 * A1.shape[0]))
        for s0 in range(0, rho.size, step):
            e = slice(s0, s0 + step)
            out[e] = _horner_flat(rho[e], A1[:, i1[e]], A2[:, i2[e]], parity)
        return out

    def _kappa(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        if self.method == "product":
            return self._expect2(self.numpy, self.numpy, c11, c12, c22)
        if np.broadcast(c11, c12, c22).size == 0:
            return np.zeros(np.broadcast_shapes(c11.shape, c12.shape, c22.shape))
        shape, table, i1, i2, rho = self._pairs(c11, c12, c22, False)
        return self._series_sum(table, "s", "s", i1, i2, rho).reshape(shape)

    def _kappa_grad(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        if self.method == "product":
            g12 = self._expect2(self._d1, self._d1, c11, c12, c22)
            g11 = 0.5 * self._expect2(self._d2, self.numpy, c11, c12, c22)
            # swap the roles so σ'' sits on the outer variable again
            g22 = 0.5 * self._expect2(self._d2, self.numpy, c22, c12, c11)
            return g12, g11, g22
        if np.broadcast(c11, c12, c22).size == 0:
            z = np.zeros(np.broadcast_shapes(c11.shape, c12.shape, c22.shape))
            return z, z.copy(), z.copy()
        shape, table, i1, i2, rho = self._pairs(c11, c12, c22, True)
        g12 = self._series_sum(table, "d1", "d1", i1, i2, rho)
        g11 = 0.5 * self._series_sum(table, "d2", "s", i1, i2, rho)
        g22 = 0.5 * self._series_sum(table, "s", "d2", i1, i2, rho)
        return g12.reshape(shape), g11.reshape(shape), g22.reshape(shape)

    def _factors(self, diag):  # type: ignore[no-untyped-def]
        if self.method == "product":
            return None
        return _SeriesFactors(self, np.asarray(diag, dtype=np.float64))

    def _kappa_block(self, block, d_row, d_col, f_row, f_col):  # type: ignore[no-untyped-def]
        if self.method == "product":
            return self._kappa(d_row[:, None], block, d_col[None, :])
        (fr, sr), (fc, sc) = _factor_view(f_row), _factor_view(f_col)
        deg = max(fr.table.degree, fc.table.degree)
        fr.ensure(deg)
        fc.ensure(deg)
        n = int(np.searchsorted(fr.table.ks["s"], deg, side="right"))
        rho = block
        rho *= fr.inv_sqrt[sr][:, None]
        rho *= fc.inv_sqrt[sc][None, :]
        np.clip(rho, -1.0, 1.0, out=rho)
        a_row = np.ascontiguousarray(fr.table.coef["s"][:n, sr])
        a_col = np.ascontiguousarray(fc.table.coef["s"][:n, sc])
        return _horner_block(rho, a_row, a_col, self._parity("s"))

    # 2-D product rule (method="product") -------------------------------------------------------
    def _expect2(self, f1, f2, c11, c12, c22):  # type: ignore[no-untyped-def]
        """E[f1(z1) f2(z2)] by the product rule, broadcasting (c11, c12, c22)."""
        shape = np.broadcast_shapes(c11.shape, c12.shape, c22.shape)
        a11 = np.broadcast_to(c11, shape).ravel()
        a12 = np.broadcast_to(c12, shape).ravel()
        a22 = np.broadcast_to(c22, shape).ravel()
        x, w = self._x, self._w
        n = x.size
        out = np.empty(a11.size)
        step = max(1, self._CHUNK // (n * n))
        for s in range(0, a11.size, step):
            e = slice(s, s + step)
            sq = np.sqrt(a11[e])
            pos = sq > 0
            r = np.where(pos, a12[e] / np.where(pos, sq, 1.0), 0.0)
            sd = np.sqrt(np.maximum(a22[e] - r * r, 0.0))
            v1 = f1(sq[:, None] * x[None, :])  # (m, n)
            z2 = r[:, None, None] * x[None, :, None] + sd[:, None, None] * x[None, None, :]
            inner = f2(z2) @ w  # (m, n): E over x2 given x1
            out[e] = (v1 * inner) @ w
        return out.reshape(shape)

    def _expect1(self, f, c):  # type: ignore[no-untyped-def]
        if self.method == "series":
            return self._moment(c, f)
        c = np.asarray(c)
        return (f(np.sqrt(c)[..., None] * self._x) @ self._w).reshape(c.shape)

    # 1-D expectations ----------------------------------------------------------------------------
    def _kappa_diag(self, c):  # type: ignore[no-untyped-def]
        f = self.numpy
        return self._expect1(lambda z: f(z) ** 2, c)

    def _kappa_diag_grad(self, c):  # type: ignore[no-untyped-def]
        f, d1, d2 = self.numpy, self._d1, self._d2
        return self._expect1(lambda z: d1(z) ** 2 + d2(z) * f(z), c)

    def _mean(self, c):  # type: ignore[no-untyped-def]
        if self.odd:
            return np.zeros_like(c)
        return self._expect1(self.numpy, c)

    def _mean_grad(self, c):  # type: ignore[no-untyped-def]
        if self.odd:
            return np.zeros_like(c)
        return 0.5 * self._expect1(self._d2, c)


def _tanh_d1(x: np.ndarray) -> np.ndarray:
    t = np.tanh(x)
    return 1.0 - t * t


def _tanh_d2(x: np.ndarray) -> np.ndarray:
    t = np.tanh(x)
    return -2.0 * t * (1.0 - t * t)


def _gelu(x: np.ndarray) -> np.ndarray:
    return x * special.ndtr(x)


def _gelu_d1(x: np.ndarray) -> np.ndarray:
    return special.ndtr(x) + x * np.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _gelu_d2(x: np.ndarray) -> np.ndarray:
    return (2.0 - x * x) * np.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _torch_tanh(x):  # type: ignore[no-untyped-def]
    import torch

    return torch.tanh(x)


def _torch_gelu(x):  # type: ignore[no-untyped-def]
    import torch

    return torch.nn.functional.gelu(x)  # exact (erf) GELU, x Φ(x)


# =========================================================================================
# registry
# =========================================================================================

_REGISTRY: dict[str, Activation] = {}


def register_activation(activation: Activation, *, overwrite: bool = False) -> Activation:
    """Add an activation to the registry under ``activation.name``.

    Raises
    ------
    ConfigError
        If it is not an :class:`Activation`, or the name is taken and ``overwrite`` is False.
    """
    if not isinstance(activation, Activation):
        raise ConfigError(f"register_activation needs an Activation, got {type(activation).__name__}")
    key = activation.name
    if not key:
        raise ConfigError("an activation needs a non-empty name to be registered")
    if key in _REGISTRY and not overwrite and _REGISTRY[key] is not activation:
        raise ConfigError(f"activation {key!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[key] = activation
    return activation


def get_activation(name_or_activation: str | Activation) -> Activation:
    """The activation with this name (case-insensitive), or the object itself.

    Raises
    ------
    ConfigError
        Naming the available activations, if the name is unknown.
    """
    if isinstance(name_or_activation, Activation):
        return name_or_activation
    if isinstance(name_or_activation, str):
        key = name_or_activation.strip().lower()
        key = _ALIASES.get(key, key)
        if key in _REGISTRY:
            return _REGISTRY[key]
        raise ConfigError(f"unknown activation {name_or_activation!r}; available: {', '.join(available())}")
    raise ConfigError(f"activation must be a name or an Activation, got {type(name_or_activation).__name__}")


def available() -> list[str]:
    """Names of the registered activations, sorted."""
    return sorted(_REGISTRY)


_ALIASES = {"id": "linear", "identity": "linear", "x2": "quadratic", "square": "quadratic", "heaviside": "step"}

for _act in (_Linear(), _Erf(), _ReLU(), _Quadratic(), _Sign(), _Step()):
    register_activation(_act)
class _Tanh(QuadratureActivation):
    """σ = tanh: κ by the Hermite series; σ' = 1 − tanh² in closed form for the samplers."""

    def torch_pair(self, h, derivative=True):  # type: ignore[no-untyped-def]
        import torch

        t = torch.tanh(h)
        return t, (1.0 - t * t if derivative else None)


register_activation(_Tanh("tanh", np.tanh, _torch_tanh, odd=True, order=64, derivatives=(_tanh_d1, _tanh_d2)))
class _GELU(QuadratureActivation):
    """σ = x Φ(x): κ by quadrature; the mean has the closed form E[zΦ(z)] = c/sqrt(2π(1 + c))."""

    def _mean(self, c):  # type: ignore[no-untyped-def]
        return c * _INV_SQRT_2PI / np.sqrt(1.0 + c)

    def _mean_grad(self, c):  # type: ignore[no-untyped-def]
        return _INV_SQRT_2PI * (2.0 + c) / (2.0 * (1.0 + c) ** 1.5)


register_activation(_GELU("gelu", _gelu, _torch_gelu, odd=False, order=64, derivatives=(_gelu_d1, _gelu_d2)))
del _act
