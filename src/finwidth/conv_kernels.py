"""Patch kernels of the two-layer CNN (:class:`finwidth.convnet.ConvNetwork`), float64.

For inputs cut into patches x_i ∈ R^S (i = 1..Ñ), the first-layer pre-activations of one channel,
h_i(x) = w·x_i/sqrt(S) with w ~ N(0, I/λ_0), are jointly Gaussian with covariance

    c_ij(x, x') = x_i · x'_j / (λ_0 S),

and the patch–patch kernel blocks are K_ij(x, x') = E σ(h_i(x)) σ(h_j(x')) =
κ(c_ii(x, x), c_ij(x, x'), c_jj(x', x')) (κ of the activation, no 1/λ_1 inside). They obey
K_ji(x', x) = K_ij(x, x'): on one set of points K_ji = K_ijᵀ. The NNGP kernel of the network is

    local readout:  K = (1/(λ_1 Ñ)) Σ_i K_ii,        pooled readout: K = (1/(λ_1 Ñ²)) Σ_ij K_ij.

:class:`PatchInputs` keeps the scaled patches and the per-patch factors of κ so that any block
costs one (n × S)·(S × m) product plus one pass of κ; :func:`conv_nngp` builds the NNGP blocks
(train, test×train, test diagonal) as :class:`finwidth.kernels.KernelBlocks`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from finwidth.errors import ConfigError
from finwidth.kernels import KernelBlocks

if TYPE_CHECKING:  # pragma: no cover
    from finwidth.activations import VarianceFactors

# numbers per row chunk of the stacked test×train products (a few tens of MiB of float64)
_ROW_ELEMENTS = 1 << 22


__all__ = ["PatchInputs", "conv_nngp", "conv_nngp_cross", "nngp_weights", "weighted_diagonal", "weighted_kernel"]


def _check(network: Any) -> None:
    from finwidth.convnet import ConvNetwork

    if not isinstance(network, ConvNetwork):
        raise ConfigError(f"expected a finwidth.ConvNetwork, got {type(network).__name__}")


class PatchInputs:
    """Patches of a set of inputs, scaled so that c_ij = z_i·z'_j, with κ's per-patch factors.

    Parameters
    ----------
    network : ConvNetwork
    X : array_like, shape (n, N_0)
    what : str
        Name used in error messages.

    Attributes
    ----------
    Z : ndarray, shape (n, Ñ, S)
        Patches divided by sqrt(λ_0 S).
    norms : ndarray, shape (n, Ñ)
        c_ii(x, x) = |x_i|²/(λ_0 S), the pre-activation variances.
    """

    def __init__(self, network: Any, X: Any, what: str = "X"):
        _check(network)
        self.activation = network.activation
        Z = network.patches(X, what) * (1.0 / math.sqrt(network.priors[0] * network.patch_features))
        self.Z = np.ascontiguousarray(Z)
        self.norms = np.einsum("nis,nis->ni", self.Z, self.Z)
        # per-patch operands of the blocks: contiguous (n, S) matrices and κ factors of their variances
        self._rows = [np.ascontiguousarray(self.Z[:, i, :]) for i in range(self.Z.shape[1])]
        self._factors = [self.activation.variance_factors(np.ascontiguousarray(self.norms[:, i]))
                         for i in range(self.Z.shape[1])]

    @property
    def n_points(self) -> int:
        return int(self.Z.shape[0])

    @property
    def n_patches(self) -> int:
        return int(self.Z.shape[1])

    def block(self, other: PatchInputs, i: int, j: int) -> np.ndarray:
        """K_ij(X_self, X_other), shape (n_self, n_other): patch i of these points, patch j of ``other``."""
        c = self._rows[i] @ other._rows[j].T
        return self.activation.kappa_block(c, self._factors[i], other._factors[j])

    def stacked(self, patches: np.ndarray) -> tuple[np.ndarray, VarianceFactors]:
        """Patches ``patches`` of every point side by side, patch-major: (len·n, S), and their
        variances with κ's factors."""
        idx = np.asarray(patches)
        Z = self.Z[:, idx, :].transpose(1, 0, 2).reshape(-1, self.Z.shape[2])
        d = self.norms[:, idx].T.ravel()
        return np.ascontiguousarray(Z), self.activation.variance_factors(d)

    def pair_diagonals(self) -> np.ndarray:
        """K_ij(x, x) for every point and patch pair, shape (n, Ñ, Ñ) (symmetric in i, j)."""
        gram = np.einsum("nis,njs->nij", self.Z, self.Z)
        d = self.norms
        return self.activation.kappa(d[:, :, None], gram, d[:, None, :])

    def patch_diagonals(self) -> np.ndarray:
        """K_ii(x, x) = κ(c_ii, c_ii, c_ii), shape (n, Ñ)."""
        return self.activation.kappa_diag(self.norms)


def weighted_kernel(rows: PatchInputs, cols: PatchInputs | None, W: np.ndarray) -> np.ndarray:
    """Σ_ij W_ij K_ij(rows, cols) for an (Ñ, Ñ) weight matrix W (zero weights skipped).

    ``cols=None`` means ``rows`` with themselves: W must then be symmetric, only i ≤ j is computed
    (K_ji = K_ijᵀ) and the result is exactly symmetric.
    """
    W = np.asarray(W, dtype=np.float64)
    n = rows.n_patches
    if W.shape != (n, n):
        raise ConfigError(f"the patch weight matrix must be ({n}, {n}), got {W.shape}")
    if cols is None:
        out = np.zeros((rows.n_points, rows.n_points))
        for i in range(n):
            for j in range(i, n):
                if W[i, j] == 0.0:
                    continue
                b = rows.block(rows, i, j)
                if i == j:
                    out += W[i, i] * b
                else:
                    b *= W[i, j]
                    out += b
                    out += b.T
        return 0.5 * (out + out.T)
    out = np.zeros((rows.n_points, cols.n_points))
    for i in range(n):
        js = np.flatnonzero(W[i])
        if js.size == 0:
            continue
        if js.size <= 2:  # a few blocks: one product each
            for j in js:
                out += W[i, j] * rows.block(cols, i, int(j))
            continue
        # many blocks: one product and one pass of κ against the columns' patches js side by side
        Zc, fc = cols.stacked(js)
        step = max(1, _ROW_ELEMENTS // Zc.shape[0])
        for r0 in range(0, rows.n_points, step):
            r = slice(r0, min(r0 + step, rows.n_points))
            c = rows._rows[i][r] @ Zc.T
            kb = rows.activation.kappa_block(c, rows._factors[i][r], fc)
            out[r] += np.einsum("rjp,j->rp", kb.reshape(kb.shape[0], js.size, cols.n_points), W[i, js])
    return out


def weighted_diagonal(points: PatchInputs, W: np.ndarray) -> np.ndarray:
    """Σ_ij W_ij K_ij(x, x) at every point, shape (n,)."""
    W = np.asarray(W, dtype=np.float64)
    if np.count_nonzero(W - np.diag(np.diag(W))) == 0:
        return points.patch_diagonals() @ np.diag(W)
    return np.einsum("nij,ij->n", points.pair_diagonals(), W)


def nngp_weights(network: Any) -> np.ndarray:
    """The W of the NNGP kernel K = Σ_ij W_ij K_ij/(λ_1 Ñ): the identity (local) or 11ᵀ/Ñ (pooled)."""
    n = network.n_patches
    return np.full((n, n), 1.0 / n) if network.readout == "pooled" else np.eye(n)


def conv_nngp(network: Any, X: Any, X_test: Any = None) -> KernelBlocks:
    """The infinite-channel (NNGP) kernel of a :class:`~finwidth.convnet.ConvNetwork`.

    local readout: K = (1/(λ_1 Ñ)) Σ_i K_ii; pooled readout: K = (1/(λ_1 Ñ²)) Σ_ij K_ij (module
    docstring; docs/conventions.md for λ). K includes 1/λ_1: it is the prior covariance of f.

    Parameters
    ----------
    network : ConvNetwork
    X : array_like, shape (P, N_0)
        Training inputs.
    X_test : array_like, shape (P_t, N_0), optional

    Returns
    -------
    KernelBlocks
        ``train`` (P, P), exactly symmetric; ``test_train`` (P_t, P) and ``test_diag`` (P_t,)
        if ``X_test`` is given.

    Cost: local O(Ñ P² S) plus Ñ P² evaluations of κ; pooled about Ñ/2 times more (the symmetric
    half of the Ñ² blocks).
    """
    _check(network)
    tr = PatchInputs(network, X, "X")
    W = nngp_weights(network) / (network.priors[1] * network.n_patches)
    blocks = KernelBlocks(weighted_kernel(tr, None, W))
    if X_test is not None:
        blocks.test_train, blocks.test_diag = _test_blocks(network, tr, X_test, W)
    return blocks


def _test_blocks(network: Any, train: PatchInputs, X_test: Any, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    te = PatchInputs(network, X_test, "X_test")
    return weighted_kernel(te, train, W), weighted_diagonal(te, W)


def conv_nngp_cross(network: Any, X: Any, X_test: Any) -> tuple[np.ndarray, np.ndarray]:
    """Only the test blocks of :func:`conv_nngp`: (K(X_test, X) (P_t, P), K(x*, x*) (P_t,))."""
    _check(network)
    return _test_blocks(network, PatchInputs(network, X, "X"), X_test,
                        nngp_weights(network) / (network.priors[1] * network.n_patches))
