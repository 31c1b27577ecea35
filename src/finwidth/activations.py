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
``step`` (Heaviside). ``tanh`` and ``gelu`` use the Gauss–Hermite quadrature path, which is also
available for any elementwise callable through :meth:`Activation.from_callable`.

All kernel arithmetic is float64 and broadcasts like numpy ufuncs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import special

from finwidth.errors import ConfigError

__all__ = [
    "Activation",
    "QuadratureActivation",
    "available",
    "get_activation",
    "register_activation",
]

_TWO_OVER_PI = 2.0 / math.pi
_INV_2PI = 1.0 / (2.0 * math.pi)
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
    return np.clip(u, -1.0, 1.0)


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
    """

    name: str = ""
    odd: bool = False
    homogeneous_degree: int | None = None

    # --- the function itself -------------------------------------------------------------
    def numpy(self, x: np.ndarray) -> np.ndarray:
        """σ(x) elementwise on a numpy array (float64 out for float input)."""
        raise NotImplementedError

    def torch(self, x: Any) -> Any:
        """σ(x) elementwise on a torch tensor; differentiable where σ is."""
        raise NotImplementedError

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
        return (np.broadcast_to(g12, shape).copy(), np.broadcast_to(g11, shape).copy(), np.broadcast_to(g22, shape).copy())

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

    # --- fast path for the blocked kernel recursion (finwidth.kernels) ---------------------
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
    ) -> QuadratureActivation:
        """An activation whose κ is computed by Gauss–Hermite quadrature.

        Parameters
        ----------
        name : str
            Registry key (the activation is not registered; call :func:`register_activation`).
        numpy_fn, torch_fn : callable
            σ, elementwise, on numpy arrays and on torch tensors. ``torch_fn`` may be None if
            ``derivatives`` is given (then ``torch()`` raises).
        odd : bool
            Whether σ is odd (then ``mean`` is exactly zero).
        order : int
            Gauss–Hermite nodes per dimension n; κ uses n² nodes per entry. The rule is exact
            for polynomials and converges fast when σ(sqrt(c) x) is smooth on the node spacing
            (node spacing ≈ 3 sqrt(c/n) in z): the error of E[σ(z)²] for tanh is 4e-7, 3e-4, 1e-2
            at c = 1, 3, 10 with n = 40 and 3e-9, 2e-5, 3e-3 with n = 64; for gelu 1e-13, 1e-6,
            3e-3 (n = 40) and <1e-16, 1e-9, 2e-4 (n = 64). σ with a kink (relu, step) converge
            only algebraically: use the closed forms. Table in docs/kernels.md.
        derivatives : (callable, callable), optional
            σ' and σ'' on numpy arrays. If omitted, they come from torch autograd of
            ``torch_fn``. They give the derivatives by Price's theorem:
            ∂κ/∂c12 = E[σ'(z1) σ'(z2)], ∂κ/∂c11 = ½ E[σ''(z1) σ(z2)], dm/dc = ½ E[σ''(z)].
        homogeneous_degree : int, optional
            Declare it if κ is homogeneous (only a label; not checked).
        """
        return QuadratureActivation(
            name, numpy_fn, torch_fn, odd=odd, order=order, derivatives=derivatives, homogeneous_degree=homogeneous_degree
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

    def numpy(self, x):  # type: ignore[no-untyped-def]
        return np.asarray(x, dtype=np.result_type(x, np.float64))

    def torch(self, x):  # type: ignore[no-untyped-def]
        return x

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

    def _kappa(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        z = 2.0 * c12 / np.sqrt((1.0 + 2.0 * c11) * (1.0 + 2.0 * c22))
        return _TWO_OVER_PI * np.arcsin(np.clip(z, -1.0, 1.0))

    def _kappa_diag(self, c):  # type: ignore[no-untyped-def]
        return _TWO_OVER_PI * np.arcsin(2.0 * c / (1.0 + 2.0 * c))

    def _kappa_grad(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        A = 1.0 + 2.0 * c11
        B = 1.0 + 2.0 * c22
        sab = np.sqrt(A * B)
        # 1 - z² = (A B - 4 c12²)/(A B) ≥ (1 + 2(c11 + c22))/(A B) > 0: never singular
        root = np.sqrt((A * B - 4.0 * c12 * c12) / (A * B))
        root = np.maximum(root, np.sqrt(1.0 + 2.0 * (c11 + c22)) / sab)
        g12 = (4.0 / math.pi) / (sab * root)
        g11 = -(4.0 / math.pi) * c12 / (A * sab * root)
        g22 = -(4.0 / math.pi) * c12 / (B * sab * root)
        return g12, g11, g22

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
        u = _correlation(c11, c12, c22)
        with np.errstate(divide="ignore", invalid="ignore"):
            root = np.sqrt(np.maximum(1.0 - u * u, 0.0))
            dk_du = _TWO_OVER_PI / root
            g12 = dk_du / np.sqrt(c11 * c22)
            g11 = -dk_du * u / (2.0 * c11)
            g22 = -dk_du * u / (2.0 * c22)
        return g12, g11, g22

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
        u = _correlation(c11, c12, c22)
        with np.errstate(divide="ignore", invalid="ignore"):
            root = np.sqrt(np.maximum(1.0 - u * u, 0.0))
            dk_du = _INV_2PI / root
            g12 = dk_du / np.sqrt(c11 * c22)
            g11 = -dk_du * u / (2.0 * c11)
            g22 = -dk_du * u / (2.0 * c22)
        return g12, g11, g22

    def _kappa_diag_grad(self, c):  # type: ignore[no-untyped-def]
        return np.zeros_like(c)

    def _mean(self, c):  # type: ignore[no-untyped-def]
        return np.where(c > 0, 0.5, 0.0)

    def _mean_grad(self, c):  # type: ignore[no-untyped-def]
        return np.zeros_like(c)


# =========================================================================================
# Gauss–Hermite quadrature path
# =========================================================================================


def _hermite_rule(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E[g(x)], x ~ N(0, 1) (probabilists' Hermite, weights sum to 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(order)
    return x, w / w.sum()


class QuadratureActivation(Activation):
    """An activation whose Gaussian expectations use an n×n Gauss–Hermite product rule.

    With x1, x2 iid N(0, 1), the Cholesky change of variables

        z1 = sqrt(c11) x1,   z2 = (c12/sqrt(c11)) x1 + sqrt(c22 − c12²/c11) x2

    turns κ into a product-rule sum of n² terms. Derivatives follow from Price's theorem,
    ∂κ/∂c12 = E[σ'(z1) σ'(z2)], ∂κ/∂c11 = ½ E[σ''(z1) σ(z2)], ∂κ/∂c22 = ½ E[σ(z1) σ''(z2)],
    so they are finite at c12² = c11 c22. Work is blocked so temporaries stay near
    ``_CHUNK`` doubles; cost is O(n²) σ evaluations per entry. Construct with
    :meth:`Activation.from_callable`.
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
        self.name = name
        self.odd = bool(odd)
        self.homogeneous_degree = homogeneous_degree
        self.order = order
        self._np = numpy_fn
        self._th = torch_fn
        self._derivs = derivatives
        self._x, self._w = _hermite_rule(order)

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
        import torch

        t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64).requires_grad_(True)
        y = self._th(t)  # type: ignore[misc]
        (g,) = torch.autograd.grad(y.sum(), t, create_graph=True)
        if g.requires_grad:
            (h,) = torch.autograd.grad(g.sum(), t, allow_unused=True)
            h = torch.zeros_like(t) if h is None else h
        else:
            h = torch.zeros_like(t)
        return g.detach().numpy(), h.detach().numpy()

    # quadrature ---------------------------------------------------------------------------
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
        c = np.asarray(c)
        return (f(np.sqrt(c)[..., None] * self._x) @ self._w).reshape(c.shape)

    def _kappa(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        return self._expect2(self.numpy, self.numpy, c11, c12, c22)

    def _kappa_diag(self, c):  # type: ignore[no-untyped-def]
        f = self.numpy
        return self._expect1(lambda z: f(z) ** 2, c)

    def _kappa_grad(self, c11, c12, c22):  # type: ignore[no-untyped-def]
        g12 = self._expect2(self._d1, self._d1, c11, c12, c22)
        g11 = 0.5 * self._expect2(self._d2, self.numpy, c11, c12, c22)
        # swap the roles so σ'' sits on the outer variable again
        g22 = 0.5 * self._expect2(self._d2, self.numpy, c22, c12, c11)
        return g12, g11, g22

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
register_activation(
    QuadratureActivation("tanh", np.tanh, _torch_tanh, odd=True, order=64, derivatives=(_tanh_d1, _tanh_d2))
)
class _GELU(QuadratureActivation):
    """σ = x Φ(x): κ by quadrature; the mean has the closed form E[zΦ(z)] = c/sqrt(2π(1 + c))."""

    def _mean(self, c):  # type: ignore[no-untyped-def]
        return c * _INV_SQRT_2PI / np.sqrt(1.0 + c)

    def _mean_grad(self, c):  # type: ignore[no-untyped-def]
        return _INV_SQRT_2PI * (2.0 + c) / (2.0 * (1.0 + c) ** 1.5)


register_activation(_GELU("gelu", _gelu, _torch_gelu, odd=False, order=64, derivatives=(_gelu_d1, _gelu_d2)))
del _act
