"""NNGP kernel recursion, blocked in memory, float64.

Convention (docs/conventions.md):

    C = K_0 = X Xᵀ/(λ_0 N_0) + σ_b0²,      K_l = κ(K_{l-1})/λ_l + σ_bl²,   l = 1..L,

where κ(K)(μ, ν) = κ(K(μ,μ), K(μ,ν), K(ν,ν)) is the activation's Gaussian map
(:mod:`finwidth.activations`). K_{l-1} is the prior covariance of the pre-activations h^(l) and
K_L, which includes every 1/λ_l, is the infinite-width prior covariance of the output f.

Each layer is computed on three blocks: train×train (P×P, symmetric), test×train (P_t×P) and
the test diagonal (P_t). The recursion for an entry needs only that entry and the two diagonal
entries it pairs, so it runs row-block by row-block, on the upper triangle only (then mirrored),
and can overwrite its input: memory is one P×P float64 matrix (8 P² bytes; 0.8 GB at P = 10⁴)
plus a bounded temporary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from finwidth.activations import Activation, VarianceFactors, get_activation
from finwidth.errors import ConfigError
from finwidth.inputs import as_inputs

if TYPE_CHECKING:  # pragma: no cover
    from finwidth.network import Network

__all__ = ["KernelBlocks", "input_kernel", "layer_diagonals", "nngp", "nngp_cross", "propagate", "propagate_vjp"]

# doubles per row block for the closed forms: a few MiB keeps temporaries cache-friendly
_BLOCK_ELEMENTS = 1 << 18


@dataclass
class KernelBlocks:
    """One layer's covariance on the training and (optionally) test points.

    Attributes
    ----------
    train : numpy.ndarray
        (P, P) symmetric, float64: K(x^μ, x^ν) over training points.
    test_train : numpy.ndarray or None
        (P_t, P): K(x_test, x^ν).
    test_diag : numpy.ndarray or None
        (P_t,): K(x_test, x_test).
    """

    train: np.ndarray
    test_train: np.ndarray | None = None
    test_diag: np.ndarray | None = None

    @property
    def n_train(self) -> int:
        """P, the number of training points."""
        return int(self.train.shape[0])

    @property
    def n_test(self) -> int:
        """P_t, the number of test points (0 without test blocks)."""
        return 0 if self.test_diag is None else int(self.test_diag.shape[0])

    def copy(self) -> KernelBlocks:
        """A deep copy."""
        return KernelBlocks(
            self.train.copy(),
            None if self.test_train is None else self.test_train.copy(),
            None if self.test_diag is None else self.test_diag.copy(),
        )


def _row_block(n_rows: int, n_cols: int, block_size: int | None) -> int:
    if block_size is None:
        return max(1, min(n_rows, _BLOCK_ELEMENTS // max(n_cols, 1)))
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ConfigError(f"block_size (rows per block) must be a positive integer, got {block_size!r}")
    return int(block_size)


def _symmetrize_upper(K: np.ndarray, rows: int) -> None:
    """Copy the upper triangle of K onto its lower triangle, in place, block by block."""
    P = K.shape[0]
    for i0 in range(0, P, rows):
        i1 = min(i0 + rows, P)
        K[i1:, i0:i1] = K[i0:i1, i1:].T
        d = K[i0:i1, i0:i1]
        low = np.tril_indices(i1 - i0, -1)
        d[low] = d.T[low]


def _input_blocks(network: Network, Xa: np.ndarray, Xt: np.ndarray | None, *, train: bool = True):
    """The one place where C = X Xᵀ/(λ_0 N_0) + σ_b0² is formed: (train (P, P) or None,
    test_train (P_t, P) or None, test_diag (P_t,) or None), from validated float64 inputs."""
    n0 = Xa.shape[1]
    if Xt is not None and Xt.shape[1] != n0:
        raise ConfigError(
            f"X_test has {Xt.shape[1]} features but X has {n0}; both must be (n_points, N_0) with the same N_0"
        )
    scale = 1.0 / (float(network.priors[0]) * n0)
    b0 = float(network.bias_variances()[0])
    C = Ct = dt = None
    if train:
        C = Xa @ Xa.T
        C *= scale
        _symmetrize_upper(C, _row_block(C.shape[0], C.shape[0], None))
        if b0:
            C += b0
    if Xt is not None:
        Ct = Xt @ Xa.T
        Ct *= scale
        dt = _input_diag(network, Xt)
        if b0:
            Ct += b0
    return C, Ct, dt


def _input_diag(network: Network, X: np.ndarray) -> np.ndarray:
    """diag C = |x|²/(λ_0 N_0) + σ_b0², without any P×P work."""
    return np.einsum("ij,ij->i", X, X) / (float(network.priors[0]) * X.shape[1]) + float(network.bias_variances()[0])


def input_kernel(network: Network, X: Any, X_test: Any = None) -> KernelBlocks:
    """The input covariance K_0 = C = X Xᵀ/(λ_0 N_0) + σ_b0².

    Parameters
    ----------
    network : Network
        Supplies λ_0 (``network.priors[0]``) and the first-layer bias variance σ_b0².
    X : array_like, shape (P, N_0)
        Training inputs (finite, real).
    X_test : array_like, shape (P_t, N_0), optional
        Test inputs with the same number of features.

    Returns
    -------
    KernelBlocks
        ``train`` (P, P) exactly symmetric; ``test_train`` (P_t, P) and ``test_diag`` (P_t,)
        if ``X_test`` is given.

    Raises
    ------
    ConfigError
        Wrong shapes, NaN/inf, non-numeric input, or a feature-count mismatch.
    """
    Xa = as_inputs(X, "X")
    Xt = None if X_test is None else as_inputs(X_test, "X_test")
    C, Ct, dt = _input_blocks(network, Xa, Xt)
    return KernelBlocks(C, Ct, dt)


def _check_blocks(blocks: KernelBlocks) -> None:
    if not isinstance(blocks, KernelBlocks):
        raise ConfigError(f"propagate needs KernelBlocks, got {type(blocks).__name__}")
    K = blocks.train
    if not isinstance(K, np.ndarray) or K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 1:
        raise ConfigError(f"KernelBlocks.train must be a square (P, P) array, got shape {getattr(K, 'shape', None)}")
    if (blocks.test_train is None) != (blocks.test_diag is None):
        raise ConfigError("KernelBlocks.test_train and test_diag must be both given or both None")
    if blocks.test_train is not None:
        tt, td = blocks.test_train, blocks.test_diag
        assert td is not None
        if tt.ndim != 2 or tt.shape[1] != K.shape[0] or td.shape != (tt.shape[0],):
            raise ConfigError(
                f"test blocks must be (P_t, P) and (P_t,) with P = {K.shape[0]}; got {tt.shape} and {td.shape}"
            )


def _finite_or_raise(arr: np.ndarray, what: str) -> None:
    # a sum is one cheap pass and is non-finite iff some entry is (or it overflows: also bad)
    if not np.isfinite(arr.sum()):
        raise ConfigError(f"{what} has NaN or inf entries; check the input kernel for NaN/inf or overflow")


def _propagate_test(
    Kt: np.ndarray,
    td: np.ndarray,
    f: VarianceFactors,
    act: Activation,
    scale: float,
    bias_var: float,
    block_size: int | None,
    inplace: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """One layer on the test blocks, given the train points' variance factors f."""
    td = np.asarray(td, dtype=np.float64)
    if not np.isfinite(td).all() or np.any(td < 0):
        raise ConfigError("test_diag must be finite and non-negative (variances)")
    ft = act.variance_factors(td)
    Pt, P = Kt.shape
    out_t = Kt if inplace else np.empty_like(Kt, dtype=np.float64)
    rows_t = _row_block(Pt, P, block_size)
    for i0 in range(0, Pt, rows_t):
        sl_r = slice(i0, min(i0 + rows_t, Pt))
        res = act.kappa_block(np.array(Kt[sl_r]), ft[sl_r], f)
        res *= scale
        if bias_var:
            res += bias_var
        _finite_or_raise(res, f"the test×train layer kernel ({act.name}) on rows {sl_r.start}:{sl_r.stop}")
        out_t[sl_r] = res
    return out_t, act.kappa_diag(td) * scale + bias_var


def propagate(
    blocks: KernelBlocks,
    activation: str | Activation,
    scale: float,
    bias_var: float = 0.0,
    *,
    block_size: int | None = None,
    inplace: bool = False,
) -> KernelBlocks:
    """One layer of the recursion: K_new = scale · κ(K) + bias_var on every block.

    Parameters
    ----------
    blocks : KernelBlocks
        The previous layer's covariance K_{l-1} (pre-activation covariance of layer l).
    activation : str or Activation
        σ of layer l.
    scale : float
        Positive factor; 1/λ_l for the NNGP (renormalised kernels use Q̄_l/λ_l).
    bias_var : float
        σ_bl² ≥ 0, added to every entry.
    block_size : int, optional
        Rows per block (default: about 2¹⁸ doubles per block).
    inplace : bool
        Overwrite ``blocks`` (memory: no second P×P matrix).

    Returns
    -------
    KernelBlocks
        The new layer (``blocks`` itself if ``inplace``). The train block is exactly symmetric
        and its diagonal is ``scale·kappa_diag + bias_var`` exactly.

    Raises
    ------
    ConfigError
        Bad shapes, a non-positive or non-finite scale, a negative bias variance, a negative
        diagonal, or NaN/inf in the blocks.
    """
    act = get_activation(activation)
    _check_blocks(blocks)
    scale = float(scale)
    bias_var = float(bias_var)
    if not np.isfinite(scale) or scale <= 0:
        raise ConfigError(f"scale must be positive and finite (1/λ_l), got {scale}")
    if not np.isfinite(bias_var) or bias_var < 0:
        raise ConfigError(f"bias_var is a variance and must be finite and non-negative, got {bias_var}")
    K = blocks.train
    P = K.shape[0]
    d = np.array(np.diagonal(K), dtype=np.float64)
    if not np.isfinite(d).all() or np.any(d < 0):
        raise ConfigError("the diagonal of the train kernel must be finite and non-negative (variances)")
    f = act.variance_factors(d)
    kd = act.kappa_diag(d) * scale + bias_var
    out = K if inplace else np.empty_like(K, dtype=np.float64)
    rows = _row_block(P, P, block_size)
    for i0 in range(0, P, rows):
        i1 = min(i0 + rows, P)
        sl_r, sl_c = slice(i0, i1), slice(i0, P)
        res = act.kappa_block(np.array(K[sl_r, sl_c]), f[sl_r], f[sl_c])
        res *= scale
        if bias_var:
            res += bias_var
        _finite_or_raise(res, f"the layer kernel ({act.name}) on rows {i0}:{i1}")
        nb = i1 - i0
        idx = np.arange(nb)
        res[idx, idx] = kd[sl_r]
        # upper part (including the diagonal block's upper triangle), then the mirror
        out[sl_r, i1:] = res[:, nb:]
        out[i1:, sl_r] = res[:, nb:].T
        db = np.triu(res[:, :nb])
        db += np.triu(db, 1).T
        out[sl_r, sl_r] = db
    new = blocks if inplace else KernelBlocks(out)
    if blocks.test_train is not None:
        assert blocks.test_diag is not None
        new.test_train, new.test_diag = _propagate_test(
            blocks.test_train, blocks.test_diag, f, act, scale, bias_var, block_size, inplace
        )
    return new


def propagate_vjp(
    K: np.ndarray,
    activation: str | Activation,
    cotangent: np.ndarray,
    scale: float = 1.0,
    *,
    block_size: int | None = None,
) -> np.ndarray:
    """Vector–Jacobian product of one layer of the recursion on a train block (the adjoint of
    :func:`propagate`).

    For a scalar f of K_new = scale · κ(K) + bias_var (train block, diagonal κ(K_μμ, K_μμ, K_μμ)),
    with Γ = ∂f/∂K_new, returns ∂f/∂K. Every entry of K is treated as an independent variable:
    an off-diagonal K_μν enters K_new,μν only (through ∂κ/∂c12); a diagonal K_μμ enters K_new,μμ
    (through dκ(c, c, c)/dc) and, as a variance, every K_new,μν and K_new,νμ of its row and
    column (through ∂κ/∂c11 and ∂κ/∂c22). A gradient with respect to parameters θ of K follows by
    contraction, Σ_μν (∂f/∂K)_μν ∂K_μν/∂θ; e.g. for K = Z Σ Zᵀ it is Zᵀ (∂f/∂K) Z. The bias
    variance does not enter.

    Only the activation's public derivatives (``kappa_grad``, ``kappa_diag_grad``) are used,
    on row blocks of the upper triangle (both K and Γ are symmetric), as in :func:`propagate`.

    Parameters
    ----------
    K : numpy.ndarray, shape (P, P)
        The layer's input covariance (symmetric, non-negative diagonal).
    activation : str or Activation
    cotangent : numpy.ndarray, shape (P, P)
        Γ = ∂f/∂K_new, symmetric.
    scale : float
        The layer's factor (1/λ_l for the NNGP, Q̄_l/λ_l for the nested renormalised kernel).
    block_size : int, optional
        Rows per block.

    Returns
    -------
    numpy.ndarray, shape (P, P)
        ∂f/∂K, symmetric.

    Raises
    ------
    ConfigError
        Shapes that differ or are not square, or a negative or non-finite diagonal of K.
    """
    act = get_activation(activation)
    K = np.asarray(K, dtype=np.float64)
    G = np.asarray(cotangent, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or G.shape != K.shape:
        raise ConfigError(f"K and the cotangent must be square arrays of one shape, got {K.shape} and {G.shape}")
    P = K.shape[0]
    d = np.array(np.diagonal(K))
    if not np.isfinite(d).all() or np.any(d < 0):
        raise ConfigError("the diagonal of K must be finite and non-negative (variances)")
    out = np.empty((P, P))
    # K_μμ as a variance of the pairs (μ, ν ≠ μ) of the upper triangle: ∂c11 where μ is the row,
    # ∂c22 where it is the column; each pair stands for K_new,μν and K_new,νμ (hence the 2 below)
    row11 = np.zeros(P)
    col22 = np.zeros(P)
    scale = float(scale)
    rows = _row_block(P, P, block_size)
    strict = np.triu(np.ones((rows, rows), dtype=bool), 1)  # strict upper triangle of a diagonal block
    for i0 in range(0, P, rows):
        i1 = min(i0 + rows, P)
        nb = i1 - i0
        g12, g11, g22 = act.kappa_grad(d[i0:i1, None], K[i0:i1, i0:], d[None, i0:])
        Gb = G[i0:i1, i0:]
        # right of the diagonal block every pair is off-diagonal; inside it, each pair counts once
        # (its strict upper triangle)
        row11[i0:i1] += np.einsum("ij,ij->i", g11[:, nb:], Gb[:, nb:])
        col22[i1:] += np.einsum("ij,ij->j", g22[:, nb:], Gb[:, nb:])
        up = np.where(strict[:nb, :nb], Gb[:, :nb], 0.0)
        row11[i0:i1] += np.einsum("ij,ij->i", g11[:, :nb], up)
        col22[i0:i1] += np.einsum("ij,ij->j", g22[:, :nb], up)
        g12 *= Gb
        g12 *= scale
        out[i0:i1, i1:] = g12[:, nb:]
        out[i1:, i0:i1] = g12[:, nb:].T
        db = np.where(strict[:nb, :nb], g12[:, :nb], 0.0)
        out[i0:i1, i0:i1] = db + db.T
    out[np.diag_indices(P)] = scale * (np.diagonal(G) * act.kappa_diag_grad(d) + 2.0 * (row11 + col22))
    return out


def nngp(
    network: Network,
    X: Any,
    X_test: Any = None,
    *,
    all_layers: bool = False,
    block_size: int | None = None,
) -> KernelBlocks | list[KernelBlocks]:
    """The infinite-width (NNGP) kernels of ``network`` on X (and X_test).

    K_0 = X Xᵀ/(λ_0 N_0) + σ_b0², K_l = κ(K_{l-1})/λ_l + σ_bl², for l = 1..L.

    Parameters
    ----------
    network : Network
        Depth L, activation, priors λ_0..λ_L (precisions) and bias variances.
    X : array_like, shape (P, N_0)
        Training inputs.
    X_test : array_like, shape (P_t, N_0), optional
        Test inputs.
    all_layers : bool
        Return [K_0, K_1, ..., K_L] (L+1 blocks: the pre-activation covariances of layers
        1..L and the output covariance) instead of only K_L. Memory: (L+1) P×P matrices.
    block_size : int, optional
        Rows per block.

    Returns
    -------
    KernelBlocks or list of KernelBlocks
        K_L (the output prior covariance, including every 1/λ_l), or all layers.

    A :class:`~finwidth.convnet.ConvNetwork` gets its NNGP kernel from
    :func:`finwidth.conv_kernels.conv_nngp` (``all_layers`` and ``block_size`` do not apply).
    """
    if type(network).__name__ == "ConvNetwork":
        from finwidth.conv_kernels import conv_nngp

        if all_layers:
            raise ConfigError("all_layers is not available for a ConvNetwork; use finwidth.conv_kernels.PatchInputs")
        return conv_nngp(network, X, X_test)
    _check_network(network)
    blocks = input_kernel(network, X, X_test)
    layers = [blocks.copy()] if all_layers else []
    bias = network.bias_variances()
    for layer in range(1, network.depth + 1):
        blocks = propagate(
            blocks,
            network.activation,
            1.0 / network.priors[layer],
            bias[layer],
            block_size=block_size,
            inplace=True,
        )
        if all_layers:
            layers.append(blocks.copy() if layer < network.depth else blocks)
    return layers if all_layers else blocks


def _check_network(network: Any) -> None:
    from finwidth.network import Network as _Network

    if not isinstance(network, _Network):
        raise ConfigError(f"expected a finwidth.Network, got {type(network).__name__}")


def layer_diagonals(network: Network, X: Any) -> np.ndarray:
    """The diagonals of K_0..K_L on X, shape (L+1, P), in O(L P N_0) without any P×P matrix.

    Row l is K_l(x^μ, x^μ); row 0 is |x^μ|²/(λ_0 N_0) + σ_b0².
    """
    _check_network(network)
    Xa = as_inputs(X, "X")
    bias = network.bias_variances()
    out = np.empty((network.depth + 1, Xa.shape[0]))
    out[0] = _input_diag(network, Xa)
    for layer in range(1, network.depth + 1):
        out[layer] = network.activation.kappa_diag(out[layer - 1]) / network.priors[layer] + bias[layer]
    return out


def nngp_cross(
    network: Network,
    X: Any,
    X_test: Any,
    *,
    train_diags: np.ndarray | None = None,
    all_layers: bool = False,
    block_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray] | list[tuple[np.ndarray, np.ndarray]]:
    """Only the test blocks of the NNGP recursion: (K_L(X_test, X), K_L(x*, x*)).

    Costs O(P_t P) memory and never forms the P×P train kernel (the recursion of a test×train
    entry only needs the train diagonals, see :func:`layer_diagonals`).

    Parameters
    ----------
    network : Network
    X : array_like, shape (P, N_0)
        Training inputs.
    X_test : array_like, shape (P_t, N_0)
        Test inputs.
    train_diags : numpy.ndarray, shape (L+1, P), optional
        Precomputed :func:`layer_diagonals` of X.
    all_layers : bool
        Return the pair for every layer 0..L.
    block_size : int, optional
        Rows per block.

    Returns
    -------
    (test_train (P_t, P), test_diag (P_t,)) for K_L, or a list of L+1 such pairs. A
    ``ConvNetwork`` is dispatched to :func:`finwidth.conv_kernels.conv_nngp_cross`.
    """
    if type(network).__name__ == "ConvNetwork":
        from finwidth.conv_kernels import conv_nngp_cross

        if all_layers:
            raise ConfigError("all_layers is not available for a ConvNetwork")
        return conv_nngp_cross(network, X, X_test)
    _check_network(network)
    Xa = as_inputs(X, "X")
    Xt = as_inputs(X_test, "X_test")
    _, Kt, td = _input_blocks(network, Xa, Xt, train=False)
    if train_diags is None:
        train_diags = layer_diagonals(network, Xa)
    train_diags = np.asarray(train_diags, dtype=np.float64)
    if train_diags.shape != (network.depth + 1, Xa.shape[0]):
        raise ConfigError(f"train_diags must be (L+1, P) = {(network.depth + 1, Xa.shape[0])}, got {train_diags.shape}")
    bias = network.bias_variances()
    act = network.activation
    layers = [(Kt.copy(), td.copy())] if all_layers else []
    for layer in range(1, network.depth + 1):
        d = train_diags[layer - 1]
        Kt, td = _propagate_test(Kt, td, act.variance_factors(d), act, 1.0 / network.priors[layer], bias[layer],
                                 block_size, True)
        if all_layers:
            layers.append((Kt.copy(), td.copy()) if layer < network.depth else (Kt, td))
    return layers if all_layers else (Kt, td)
