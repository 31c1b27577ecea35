"""The Ñ² patch–patch kernel blocks of a CNN on its training set, stored once, contracted fast.

The renormalised kernel of the local kernel renormalisation is linear in the order parameter,

    K_R(Q) = (1/(λ_1 Ñ)) Σ_ij Q_ij K_ij,        K_ji = K_ijᵀ  (P×P blocks, :mod:`finwidth.conv_kernels`),

and the data part of the action's gradient needs its adjoint, ⟨K_ij, B⟩ = Σ_μν K_ij[μ,ν] B[μ,ν] for
a symmetric P×P matrix B. For a symmetric Q both only see the symmetrised blocks

    E_ii = K_ii,    E_ij = K_ij + K_ijᵀ  (i < j),      Σ_ij Q_ij K_ij = Σ_{i≤j} Q_ij E_ij,

which are symmetric matrices: the store keeps the upper triangle (μ ≤ ν, row-major) of each of the
Ñ(Ñ+1)/2 of them, one row per patch pair, m = P(P+1)/2 numbers per row. That is four times less
than the Ñ² full blocks: Ñ(Ñ+1)/2 · P(P+1)/2 numbers, 4.9 GB in float64 (2.5 GB in float32) at
Ñ = 49, P = 1000. Both operations are then one pass over the store:

    contract:  vec(K_R) = cᵀ·store          (a GEMV, c_p = Q_p/(λ_1 Ñ)),
    adjoint:   ⟨E_p, B⟩ = store · w(B)      (a GEMV/GEMM, w = packed B with off-diagonals × 2),

O(Ñ² P²/4) memory traffic each. A float32 store (opt-in or automatic for large problems) is read in
tiles converted to float64, so every sum is accumulated in float64: the result is then the exact
action of the kernel rounded to float32 (relative 6e-8 per entry).
"""

from __future__ import annotations

import numpy as np

from finwidth.errors import ConfigError

__all__ = ["PatchPairStore", "store_bytes"]

# numbers per float32 → float64 tile (a few MiB of float64 at a time)
_TILE_ELEMENTS = 1 << 18


def store_bytes(n_patches: int, n_points: int, dtype: str) -> int:
    """Bytes of a :class:`PatchPairStore` for Ñ patches and P points."""
    itemsize = np.dtype(dtype).itemsize
    return n_patches * (n_patches + 1) // 2 * (n_points * (n_points + 1) // 2) * itemsize


class PatchPairStore:
    """Packed symmetrised patch-pair blocks E_p on the training set (module docstring).

    Parameters
    ----------
    patches : finwidth.conv_kernels.PatchInputs
        The training inputs cut into patches.
    dtype : {"float64", "float32"}
        Storage precision; every contraction accumulates in float64.

    Attributes
    ----------
    pairs : tuple of two int arrays
        (i, j) with i ≤ j for each stored row, in ``numpy.triu_indices(Ñ)`` order.
    data : ndarray, shape (Ñ(Ñ+1)/2, P(P+1)/2)
    """

    def __init__(self, patches, dtype: str = "float64"):
        if dtype not in ("float64", "float32"):
            raise ConfigError(f"the kernel store dtype must be 'float64' or 'float32', got {dtype!r}")
        n, P = patches.n_patches, patches.n_points
        self.n_patches, self.n_points = n, P
        self.pairs = np.triu_indices(n)
        self._iu = np.triu_indices(P)
        self._offdiag_weight = np.where(self._iu[0] == self._iu[1], 1.0, 2.0)
        self.data = np.empty((len(self.pairs[0]), len(self._iu[0])), dtype=dtype)
        r, c = self._iu
        for p, (i, j) in enumerate(zip(*self.pairs)):
            b = patches.block(patches, int(i), int(j))
            if i == j:
                self.data[p] = b[r, c]
            else:
                self.data[p] = b[r, c] + b[c, r]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @property
    def dtype(self) -> str:
        return str(self.data.dtype)

    def pack(self, B: np.ndarray) -> np.ndarray:
        """The weights w(B) of :meth:`adjoint` for a symmetric (P, P) matrix (upper triangle, off-diagonal × 2)."""
        return B[self._iu] * self._offdiag_weight

    def unpack(self, v: np.ndarray) -> np.ndarray:
        """The symmetric (P, P) matrix whose upper triangle is ``v``."""
        P = self.n_points
        K = np.empty((P, P))
        r, c = self._iu
        K[r, c] = v
        K[c, r] = v
        return K

    def _tiles(self):
        step = max(1, _TILE_ELEMENTS // self.data.shape[0])
        m = self.data.shape[1]
        for t0 in range(0, m, step):
            yield slice(t0, min(m, t0 + step))

    def contract(self, coeff: np.ndarray) -> np.ndarray:
        """Σ_p coeff_p E_p as a symmetric (P, P) float64 matrix."""
        coeff = np.asarray(coeff, dtype=np.float64)
        if self.data.dtype == np.float64:
            return self.unpack(coeff @ self.data)
        out = np.empty(self.data.shape[1])
        for sl in self._tiles():
            out[sl] = coeff @ self.data[:, sl].astype(np.float64)
        return self.unpack(out)

    def adjoint(self, weights: np.ndarray) -> np.ndarray:
        """store · weights: ⟨E_p, B_k⟩ for packed weights (m,) or (m, k) from :meth:`pack`."""
        weights = np.asarray(weights, dtype=np.float64)
        if self.data.dtype == np.float64:
            return self.data @ weights
        out = np.zeros((self.data.shape[0],) + weights.shape[1:])
        for sl in self._tiles():
            out += self.data[:, sl].astype(np.float64) @ weights[sl]
        return out

    def pair_matrix(self, values: np.ndarray) -> np.ndarray:
        """Put one number per stored pair into a symmetric (Ñ, Ñ) matrix."""
        M = np.empty((self.n_patches, self.n_patches))
        i, j = self.pairs
        M[i, j] = values
        M[j, i] = values
        return M
