"""Products with a lower-trapezoidal input matrix at half the cost of a dense product.

Under input reduction the training inputs are written in an orthonormal basis of their span in
which they are lower trapezoidal (``InputReduction``, LQ form): L is P × r with L[p, j] = 0 for
j > p. The first layer then needs, per step and for all replicas at once,

* forward   Hᵀ = W Lᵀ    (W: ``[R, N, r]`` → ``[R, N, P]``),
* backward  G  = D L     (D: ``[R, N, P]`` → ``[R, N, r]``),

and the triangular top block L[:r] costs half a dense product; the P − r rows below it (P > r when
there are more data points than input dimensions) are a dense block, one ordinary product. On CPU
this uses BLAS ``?trmm`` and ``?gemm``
from ``scipy.linalg.cython_blas`` (a documented C interface; called through ctypes, which releases
the GIL so replica groups run in parallel threads); ``?gemm`` reads and writes the dense block in
place through the leading dimension, so no part of a ``[R, N, P]`` tensor is copied (at P ≫ r the
copies cost as much as the block's product). Elsewhere (CUDA, other dtypes, inputs that
require autograd) the dense product is used: same numbers up to rounding, full cost.

BLAS layout: a row-major ``[R, N, P]`` tensor is, for Fortran, the column-major P × (R·N) matrix
with leading dimension P whose column (ρ, n) is the vector over data points; its first r rows are
the triangular block's rows.
"""

from __future__ import annotations

import ctypes
import threading

import torch

from finwidth.scipy_ctypes import cython_function

__all__ = ["LowerTrapezoid", "blas_trmm_available"]

_lock = threading.Lock()
_BLAS: dict[torch.dtype, object] = {}


def _load_trmm(dtype: torch.dtype):
    """ctypes handles ``(trmm, gemm, ctype)`` of BLAS s/d trmm and gemm from scipy's Cython BLAS
    table (None if unavailable)."""
    with _lock:
        if dtype in _BLAS:
            return _BLAS[dtype]
        fn = None
        try:
            prefix, ctype = {torch.float32: ("s", ctypes.c_float), torch.float64: ("d", ctypes.c_double)}[dtype]
            c, i, v, x = ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_void_p, ctypes.POINTER(ctype)
            # trmm(side, uplo, transa, diag, m, n, alpha, a, lda, b, ldb), all by reference (Fortran)
            trmm = cython_function("blas", prefix + "trmm", (c, c, c, c, i, i, x, v, i, v, i))
            # gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            gemm = cython_function("blas", prefix + "gemm", (c, c, i, i, i, x, v, i, v, i, x, v, i))
            fn = (trmm, gemm, ctype)
        except (ImportError, KeyError, AttributeError, ValueError, OSError):  # pragma: no cover - no scipy BLAS
            fn = None
        _BLAS[dtype] = fn
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
            # the r × r triangle by trmm, the (P − r) × r rows below it by a dense product
            self.fortran = L[: self.r].T.contiguous()  # row-major of L_topᵀ is column-major L_top
            self.bottom = L[self.r:].contiguous()  # [P − r, r]

    def _blas_ok(self, *tensors: torch.Tensor) -> bool:
        return self._fn is not None and all(
            t.device.type == "cpu" and t.dtype == self.L.dtype and not t.requires_grad for t in tensors)

    def _trmm(self, trans: bytes, buf: torch.Tensor) -> None:
        """In place on a contiguous ``[..., n]`` buffer (n = P or r): its first r entries along the
        last axis, as the column-major r × (numel/n) matrix B with leading dimension n, become
        op(L_top) B."""
        fn, _, ctype = self._fn
        ld = buf.shape[-1]
        m, n = ctypes.c_int(self.r), ctypes.c_int(buf.numel() // ld)
        lda, ldb = ctypes.c_int(self.r), ctypes.c_int(ld)
        one = ctype(1.0)
        fn(b"L", b"L", trans, b"N", ctypes.byref(m), ctypes.byref(n), ctypes.byref(one),
           self.fortran.data_ptr(), ctypes.byref(lda), buf.data_ptr(), ctypes.byref(ldb))

    def right_mul_t(self, W: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """W Lᵀ: ``[..., N, r]`` → a contiguous ``[..., N, P]``: new, or ``out`` (contiguous, that
        shape and dtype) when given."""
        if W.shape[-1] != self.r:
            raise ValueError(f"last axis of W must be r = {self.r}, got shape {tuple(W.shape)}")
        shape = (*W.shape[:-1], self.P)
        if out is not None and (tuple(out.shape) != shape or out.dtype != W.dtype or not out.is_contiguous()):
            raise ValueError(f"out must be a contiguous {shape} tensor of dtype {W.dtype}, got {tuple(out.shape)}")
        if not self._blas_ok(W) or W.numel() == 0:
            return torch.matmul(W, self.L.T) if out is None else torch.matmul(W, self.L.T, out=out)
        if out is None:
            out = torch.empty(shape, dtype=W.dtype)
        W = W.contiguous()
        if self.P > self.r:  # rows r.. of the column-major P × n output: L_bottom W_colmajor, in place
            self._gemm(b"T", self.P - self.r, W.numel() // self.r, self.r, self.bottom, self.r, W, 0,
                       self.r, out, self.r, self.P, beta=0.0)
        out[..., : self.r].copy_(W)
        self._trmm(b"N", out)
        return out

    def _gemm(self, transa: bytes, m: int, n: int, k: int, A: torch.Tensor, lda: int, B: torch.Tensor,
              b_offset: int, ldb: int, C: torch.Tensor, c_offset: int, ldc: int, *, beta: float) -> None:
        """C[c_offset:] = op(A) B[b_offset:] + beta C (column-major, leading dimensions given;
        offsets in elements)."""
        _, fn, ctype = self._fn
        size = C.element_size()
        i = ctypes.c_int
        fn(transa, b"N", ctypes.byref(i(m)), ctypes.byref(i(n)), ctypes.byref(i(k)), ctypes.byref(ctype(1.0)),
           A.data_ptr(), ctypes.byref(i(lda)), B.data_ptr() + size * b_offset, ctypes.byref(i(ldb)),
           ctypes.byref(ctype(beta)), C.data_ptr() + size * c_offset, ctypes.byref(i(ldc)))

    def right_mul(self, D: torch.Tensor, *, overwrite: bool = False) -> torch.Tensor:
        """D L: ``[..., N, P]`` → a new contiguous ``[..., N, r]``; D is left unchanged
        (``overwrite`` is accepted for callers that allow D to be destroyed)."""
        if D.shape[-1] != self.P:
            raise ValueError(f"last axis of D must be P = {self.P}, got shape {tuple(D.shape)}")
        if not self._blas_ok(D) or D.numel() == 0:
            return torch.matmul(D, self.L)
        D = D.contiguous()
        out = D[..., : self.r].clone(memory_format=torch.contiguous_format)  # the part the triangle needs
        self._trmm(b"T", out)
        if self.P > self.r:  # + L_bottomᵀ D[r:, :] read in place (column-major, leading dimension P)
            self._gemm(b"N", self.r, D.numel() // self.P, self.P - self.r, self.bottom, self.r, D, self.r,
                       self.P, out, 0, self.r, beta=1.0)
        return out
