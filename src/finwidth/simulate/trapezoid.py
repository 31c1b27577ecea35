"""Products with a lower-trapezoidal input matrix at half the cost of a dense product.

Under input reduction the training inputs are written in an orthonormal basis of their span in
which they are lower trapezoidal (``InputReduction``, LQ form): L is P × r with L[p, j] = 0 for
j > p. The first layer then needs, per step and for all replicas at once,

* forward   Hᵀ = W Lᵀ    (W: ``[R, N, r]`` → ``[R, N, P]``),
* backward  G  = D L     (D: ``[R, N, P]`` → ``[R, N, r]``),

and the triangular top block L[:r] costs half a dense product. On CPU this uses BLAS ``?trmm``
from ``scipy.linalg.cython_blas`` (a documented C interface; called through ctypes, which releases
the GIL so replica groups run in parallel threads). Elsewhere (CUDA, other dtypes, inputs that
require autograd) the dense product is used: same numbers up to rounding, full cost.

BLAS layout: a row-major ``[R, N, P]`` tensor is, for Fortran, the column-major P × (R·N) matrix
with leading dimension P whose column (ρ, n) is the vector over data points; its first r rows are
the triangular block's rows.
"""

from __future__ import annotations

import ctypes
import threading

import torch

__all__ = ["LowerTrapezoid", "blas_trmm_available"]

_lock = threading.Lock()
_TRMM: dict[torch.dtype, object] = {}


def _load_trmm(dtype: torch.dtype):
    """ctypes handle of BLAS s/dtrmm from scipy's Cython BLAS table (None if unavailable)."""
    with _lock:
        if dtype in _TRMM:
            return _TRMM[dtype]
        fn = None
        try:
            import scipy.linalg.cython_blas as cb

            name, ctype = {torch.float32: ("strmm", ctypes.c_float), torch.float64: ("dtrmm", ctypes.c_double)}[dtype]
            cap = cb.__pyx_capi__[name]
            api = ctypes.pythonapi
            api.PyCapsule_GetName.restype = ctypes.c_char_p
            api.PyCapsule_GetName.argtypes = [ctypes.py_object]
            api.PyCapsule_GetPointer.restype = ctypes.c_void_p
            api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
            ptr = api.PyCapsule_GetPointer(cap, api.PyCapsule_GetName(cap))
            c, i, v = ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_void_p
            # trmm(side, uplo, transa, diag, m, n, alpha, a, lda, b, ldb), all by reference (Fortran)
            proto = ctypes.CFUNCTYPE(None, c, c, c, c, i, i, ctypes.POINTER(ctype), v, i, v, i)
            fn = (proto(ptr), ctype)
        except (ImportError, KeyError, AttributeError, ValueError, OSError):  # pragma: no cover - no scipy BLAS
            fn = None
        _TRMM[dtype] = fn
        return fn


def blas_trmm_available(dtype: torch.dtype) -> bool:
    """True when the BLAS triangular product is available for ``dtype`` on CPU."""
    return _load_trmm(dtype) is not None


class LowerTrapezoid:
    """A lower-trapezoidal matrix L (P × r, P ≥ r, L[p, j] = 0 for j > p) and its products.

    Parameters
    ----------
    L : torch.Tensor
        ``[P, r]`` with P ≥ r; entries above the diagonal must be zero (checked).
    """

    def __init__(self, L: torch.Tensor):
        if L.dim() != 2 or L.shape[0] < L.shape[1]:
            raise ValueError(f"a lower trapezoid is P x r with P >= r, got shape {tuple(L.shape)}")
        if bool(torch.triu(L, diagonal=1).ne(0).any()):
            raise ValueError("matrix has nonzero entries above the diagonal: not lower trapezoidal")
        self.L = L
        self.P, self.r = L.shape
        self._fn = _load_trmm(L.dtype) if L.device.type == "cpu" else None
        if self._fn is not None:
            # [L | 0] is P × P lower triangular: one trmm covers the P − r dependent rows too, at
            # (P − r)²/2 wasted products instead of a skinny dense product
            pad = torch.zeros((self.P, self.P), dtype=L.dtype)
            pad[:, : self.r] = L
            self.fortran = pad.T.contiguous()  # row-major of [L | 0]ᵀ is column-major [L | 0]

    def _blas_ok(self, *tensors: torch.Tensor) -> bool:
        return self._fn is not None and all(
            t.device.type == "cpu" and t.dtype == self.L.dtype and not t.requires_grad for t in tensors)

    def _trmm(self, trans: bytes, buf: torch.Tensor) -> None:
        """In place on a contiguous ``[..., P]`` buffer: column-major B ← op([L | 0]) B, B the
        P × (numel/P) matrix of ``buf``."""
        fn, ctype = self._fn
        m, n = ctypes.c_int(self.P), ctypes.c_int(buf.numel() // self.P)
        ld = ctypes.c_int(self.P)
        one = ctype(1.0)
        fn(b"L", b"L", trans, b"N", ctypes.byref(m), ctypes.byref(n), ctypes.byref(one),
           self.fortran.data_ptr(), ctypes.byref(ld), buf.data_ptr(), ctypes.byref(ld))

    def right_mul_t(self, W: torch.Tensor) -> torch.Tensor:
        """W Lᵀ: ``[..., N, r]`` → a new contiguous ``[..., N, P]``."""
        if W.shape[-1] != self.r:
            raise ValueError(f"last axis of W must be r = {self.r}, got shape {tuple(W.shape)}")
        if not self._blas_ok(W) or W.numel() == 0:
            return torch.matmul(W, self.L.T)
        out = torch.empty((*W.shape[:-1], self.P), dtype=W.dtype)
        out[..., : self.r].copy_(W)
        out[..., self.r:].zero_()
        self._trmm(b"N", out)
        return out

    def right_mul(self, D: torch.Tensor, *, overwrite: bool = False) -> torch.Tensor:
        """D L: ``[..., N, P]`` → ``[..., N, r]`` (a view into a new or, with ``overwrite=True``,
        into D's own buffer, whose contents are then destroyed)."""
        if D.shape[-1] != self.P:
            raise ValueError(f"last axis of D must be P = {self.P}, got shape {tuple(D.shape)}")
        if not self._blas_ok(D) or D.numel() == 0:
            return torch.matmul(D, self.L)
        if not D.is_contiguous():
            buf = D.contiguous()
        else:
            buf = D if overwrite else D.clone()
        self._trmm(b"T", buf)
        return buf[..., : self.r]
