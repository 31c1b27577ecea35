"""The training kernel K_L as a symmetric linear operator, held in tiles or recomputed on the fly.

Matrix-free solvers (:mod:`finwidth.theory.krylov`) only need products K V with blocks of vectors. At
P = 60 000 one float64 copy of K_L is 28.8 GB, beyond a 24 GiB machine, so the operator keeps only
the tiles of the upper triangle (row block i, column block j ≥ i):

========================  ====================================  =====================================
``storage``               memory                                cost of one product K V (P × c)
========================  ====================================  =====================================
``"float64"``             4 P² bytes (half of one dense copy)    2 P² c flops, exact
``"float32"``             2 P² bytes                             the same in float32 (sgemm); entries
                                                                 rounded to float32 (relative 6e-8)
``"recompute"``           one tile                               one kernel construction per product
========================  ====================================  =====================================

Products with float64 (or recomputed) tiles are computed in float64. Float32 tiles multiply a float32
copy of V, and the tiles' products are summed in float64: half the memory traffic of float64 and no
conversion of the tiles at each pass. Each product is then that of a perturbed kernel, K V = (K + E) V
with |E_ij| ≤ η |K_ij|: η is the float32 rounding of the entries (6·10⁻⁸) plus that of V and of the
sums inside one tile (≲ tile·6·10⁻⁸ in the worst case, ~√tile·6·10⁻⁸ typically). The operator measures
η once on its first tile against the float64 product (``product_error``) so that solvers can report
its effect (:mod:`finwidth.theory.scalable`). The tiles are those of
:func:`finwidth.kernels.nngp_cross` (the same recursion as :func:`finwidth.kernels.nngp`, so entries
agree with the dense kernel to rounding), and the diagonal is exactly the layer recursion of the
diagonal (:func:`finwidth.kernels.layer_diagonals`). Convention: docs/conventions.md (K_L includes
every 1/λ_l and the bias variances).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from finwidth.errors import ConfigError
from finwidth.inputs import as_inputs

if TYPE_CHECKING:  # pragma: no cover
    from finwidth.network import Network

__all__ = ["KernelOperator", "STORAGES", "storage_bytes"]

STORAGES = ("float64", "float32", "recompute")
#: rows (and columns) per tile: 2048² doubles = 32 MiB, large enough for BLAS to run at its peak
DEFAULT_TILE = 2048
#: the largest tile storage that ``storage="auto"`` keeps (bytes); above it, float32, then recompute
AUTO_STORAGE_BYTES = 8 * 2**30


def storage_bytes(P: int, storage: str, tile: int = DEFAULT_TILE) -> int:
    """Bytes held by the tiles of a (P, P) kernel for one storage mode (upper triangle incl. diagonal tiles)."""
    if storage == "recompute":
        t = min(tile, P)
        return 8 * t * t
    itemsize = 8 if storage == "float64" else 4
    edges = _edges(P, tile)
    sizes = np.diff(edges)
    total = sum(int(sizes[i]) * int(edges[-1] - edges[i]) for i in range(sizes.size))
    return itemsize * total


def _edges(P: int, tile: int) -> np.ndarray:
    n = max(1, math.ceil(P / tile))
    return np.linspace(0, P, n + 1).round().astype(int)


class KernelOperator:
    """K_L(X, X) of ``network`` as a symmetric operator (products K V summed in float64).

    Parameters
    ----------
    network : finwidth.Network
        Depth, activation, priors λ_0..λ_L and bias variances (docs/conventions.md).
    X : array_like, shape (P, N_0)
        Training inputs.
    storage : {"auto", "float64", "float32", "recompute"}
        How the tiles are kept (module docstring). ``"auto"``: float64 if its tiles take at most
        ``max_bytes``, else float32 if they do, else recompute.
    tile : int
        Rows and columns per tile (default 2048).
    max_bytes : int
        Memory allowed for the tiles under ``storage="auto"`` (default 8 GiB).
    threads : int
        Tiles built and multiplied on this many threads (numpy and BLAS release the GIL). Each
        thread still uses the BLAS threads of the process: set ``OMP_NUM_THREADS=1`` with
        ``threads > 1`` to avoid oversubscription.
    device : None, str or torch.device
        Keep the tiles on this torch device and compute them and the products there
        (:mod:`finwidth.device`; torch is imported only then). Inputs and outputs stay numpy.

    Attributes
    ----------
    shape : (P, P)
    storage : str
        The storage mode in use.
    nbytes : int
        Bytes held by the tiles.
    n_products : int
        Number of products K V computed so far (one per call of :meth:`matmat`).
    product_error : float
        η, the measured entrywise relative backward error of a product (module docstring): the largest
        |(K V)_i − (K V)_i^exact| / (|K| |V|)_i over the first diagonal tile and 8 Rademacher vectors,
        against float64 products on the float64 tile; float64 storage: the unit round-off times √tile.
    """

    def __init__(
        self,
        network: Network,
        X: Any,
        *,
        storage: str = "auto",
        tile: int = DEFAULT_TILE,
        max_bytes: int = AUTO_STORAGE_BYTES,
        threads: int = 1,
        device: Any = None,
    ):
        from finwidth import kernels
        from finwidth.device import resolve_device

        kernels._check_network(network)
        self.network = network
        self.X = as_inputs(X, "X")
        P = self.X.shape[0]
        if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
            raise ConfigError(f"tile must be a positive integer (rows per tile), got {tile!r}")
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        if storage == "auto":
            if storage_bytes(P, "float64", tile) <= max_bytes:
                storage = "float64"
            elif storage_bytes(P, "float32", tile) <= max_bytes:
                storage = "float32"
            else:
                storage = "recompute"
        if storage not in STORAGES:
            raise ConfigError(f"storage must be 'auto' or one of {STORAGES}, got {storage!r}")
        self.storage = storage
        self.device = resolve_device(device)
        self.threads = int(threads) if self.device is None else 1
        self.shape = (P, P)
        self._edges = _edges(P, int(tile))
        self.diags = kernels.layer_diagonals(network, self.X)  # (L+1, P)
        self.n_products = 0
        self._tiles: dict[tuple[int, int], np.ndarray] = {}
        if storage != "recompute":
            pairs = [(i, j) for i in range(self.n_blocks) for j in range(i, self.n_blocks)]
            for (i, j), t in zip(pairs, self._map(lambda ij: self._stored(self._compute_tile(*ij)), pairs)):
                self._tiles[(i, j)] = t
        self.nbytes = storage_bytes(P, storage, int(tile))
        self.product_error = self._measure_product_error()

    def _measure_product_error(self) -> float:
        b = self._block(0)
        n = b.stop - b.start
        if self.storage != "float32":
            return float(np.finfo(np.float64).eps * math.sqrt(n))
        exact = self._compute_tile(0, 0)
        if self.device is not None:
            from finwidth.device import as_numpy

            exact = as_numpy(exact)
        V = np.random.default_rng(0).integers(0, 2, size=(n, 8)) * 2.0 - 1.0
        ref = exact @ V
        approx = self.tile_products(0, 0, V)
        scale = np.abs(exact) @ np.abs(V)
        return float(max(np.max(np.abs(approx - ref) / np.maximum(scale, 1e-300)), np.finfo(np.float32).eps / 2))

    def tile_products(self, i: int, j: int, V: np.ndarray) -> np.ndarray:
        """Stored tile (i, j) (i ≤ j) times V (its columns' rows), the way :meth:`matmat` computes it."""
        t = self._tiles[(i, j)] if self.storage != "recompute" else self._compute_tile(i, j)
        if self.device is not None:
            from finwidth.device import as_numpy, torch_module

            torch = torch_module()
            Vt = torch.as_tensor(V, dtype=t.dtype, device=self.device)
            return as_numpy((t @ Vt).double())
        return np.asarray(t @ (V.astype(np.float32) if t.dtype == np.float32 else V), dtype=np.float64)

    def _tile_chunks(self) -> list[list[tuple[int, int]]]:
        """The stored tiles split into ``threads`` lists of about equal area (cached)."""
        if getattr(self, "_chunks", None) is None:
            sizes = np.diff(self._edges)
            pairs = [(i, j) for i in range(self.n_blocks) for j in range(i, self.n_blocks)]
            pairs.sort(key=lambda ij: -int(sizes[ij[0]] * sizes[ij[1]] * (2 if ij[1] > ij[0] else 1)))
            chunks: list[list[tuple[int, int]]] = [[] for _ in range(min(self.threads, len(pairs)))]
            load = np.zeros(len(chunks))
            for i, j in pairs:  # largest first onto the least loaded thread
                k = int(np.argmin(load))
                chunks[k].append((i, j))
                load[k] += sizes[i] * sizes[j] * (2 if j > i else 1)
            self._chunks = [sorted(c) for c in chunks]
        return self._chunks

    # ------------------------------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return int(self._edges.size - 1)

    def _block(self, i: int) -> slice:
        return slice(int(self._edges[i]), int(self._edges[i + 1]))

    def _map(self, fn, items):  # type: ignore[no-untyped-def]
        if self.threads == 1 or len(items) < 2:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(fn, items))

    def _stored(self, t):  # type: ignore[no-untyped-def]
        if self.storage == "float32":
            return t.float() if self.device is not None else t.astype(np.float32)
        return t

    def _compute_tile(self, i: int, j: int):  # type: ignore[no-untyped-def]
        """K_L[rows of block i, columns of block j] in float64 (exact diagonal on diagonal tiles);
        a numpy array, or a tensor on the device."""
        from finwidth import kernels

        ri, rj = self._block(i), self._block(j)
        if self.device is not None:
            from finwidth.device import kernel_tile

            tile = kernel_tile(self.network, self.X[ri], self.X[rj], self.diags[:, ri], self.diags[:, rj], self.device)
            if i == j:
                tile = 0.5 * (tile + tile.T)
                tile.diagonal().copy_(tile.new_tensor(self.diags[-1, ri]))
            return tile
        tile, _ = kernels.nngp_cross(self.network, self.X[rj], self.X[ri], train_diags=self.diags[:, rj])
        if i == j:
            # the recursion of the diagonal, as in the dense kernel, and exact symmetry
            tile = 0.5 * (tile + tile.T)
            np.fill_diagonal(tile, self.diags[-1, ri])
        return tile

    def tile(self, i: int, j: int) -> np.ndarray:
        """Tile (i, j) of K_L as a float64 numpy array (i ≤ j: stored or recomputed; i > j: the transpose)."""
        if i > j:
            return self.tile(j, i).T
        t = self._compute_tile(i, j) if self.storage == "recompute" else self._tiles[(i, j)]
        if self.device is not None:
            from finwidth.device import as_numpy

            return as_numpy(t)
        return np.asarray(t, dtype=np.float64)

    def diagonal(self) -> np.ndarray:
        """diag K_L, shape (P,)."""
        return self.diags[-1].copy()

    def matmat(self, V: np.ndarray) -> np.ndarray:
        """K_L V for V of shape (P,) or (P, c), a float64 array (float32 tiles: float32 products of the
        tiles, summed in float64; module docstring)."""
        V = np.asarray(V, dtype=np.float64)
        one = V.ndim == 1
        Vm = V[:, None] if one else V
        if Vm.ndim != 2 or Vm.shape[0] != self.shape[0]:
            raise ConfigError(f"matmat needs an array of shape (P,) or (P, c) with P = {self.shape[0]}, got {V.shape}")
        self.n_products += 1
        if self.device is not None:
            out = self._matmat_device(Vm)
            return out[:, 0] if one else out
        out = np.zeros((self.shape[0], Vm.shape[1]))
        if self.storage == "recompute":
            # each tile is computed once per product and used for both of its blocks
            for i in range(self.n_blocks):
                for j in range(i, self.n_blocks):
                    t = self._compute_tile(i, j)
                    ri, rj = self._block(i), self._block(j)
                    out[ri] += t @ Vm[rj]
                    if j > i:
                        out[rj] += t.T @ Vm[ri]
        else:
            # float32 tiles multiply a float32 copy of V (BLAS sgemm: no per-pass conversion of the tiles).
            # Each stored tile is read once per product and serves both of its blocks (t V_j and tᵀ V_i,
            # the second while t is still in cache); each thread sums its tiles' products into its own
            # float64 buffer, and the buffers are added at the end.
            Vw = Vm.astype(np.float32) if self.storage == "float32" else Vm
            chunks = self._tile_chunks()

            def work(pairs: list[tuple[int, int]]) -> np.ndarray:
                acc = np.zeros((self.shape[0], Vm.shape[1]))
                for i, j in pairs:
                    t = self._tiles[(i, j)]
                    ri, rj = self._block(i), self._block(j)
                    acc[ri] += t @ Vw[rj]
                    if j > i:
                        acc[rj] += t.T @ Vw[ri]
                return acc

            parts = self._map(work, chunks)
            out = parts[0]
            for part in parts[1:]:
                out += part
        return out[:, 0] if one else out

    __matmul__ = matmat

    def _matmat_device(self, Vm: np.ndarray) -> np.ndarray:
        from finwidth.device import as_numpy, torch_module

        torch = torch_module()
        V = torch.as_tensor(Vm, dtype=torch.float64, device=self.device)
        out = torch.zeros_like(V)
        Vw = V.float() if self.storage == "float32" else V  # float32 tiles: float32 products, float64 sums
        for i in range(self.n_blocks):
            for j in range(i, self.n_blocks):
                t = self._compute_tile(i, j) if self.storage == "recompute" else self._tiles[(i, j)]
                ri, rj = self._block(i), self._block(j)
                out[ri] += (t @ Vw[rj]).double()
                if j > i:
                    out[rj] += (t.T @ Vw[ri]).double()
        return as_numpy(out)

    def cross(self, X_test: Any, *, block_rows: int = 1024):
        """Yield (rows, K_L(X_test[rows], X)) in row blocks; never holds more than one block.

        Returns a generator of (slice, (n_rows, P) array) pairs and, at the end, nothing else; the test
        diagonal comes from :meth:`test_diagonal`.
        """
        from finwidth import kernels

        Xt = as_inputs(X_test, "X_test")
        if Xt.shape[1] != self.X.shape[1]:
            raise ConfigError(f"X_test has {Xt.shape[1]} features but X has {self.X.shape[1]}")
        for i0 in range(0, Xt.shape[0], block_rows):
            sl = slice(i0, min(i0 + block_rows, Xt.shape[0]))
            kt, _ = kernels.nngp_cross(self.network, self.X, Xt[sl], train_diags=self.diags)
            yield sl, kt

    def test_diagonal(self, X_test: Any) -> np.ndarray:
        """K_L(x*, x*) for each test input, shape (P_t,)."""
        from finwidth import kernels

        return kernels.layer_diagonals(self.network, X_test)[-1]

    def dense(self) -> np.ndarray:
        """The full (P, P) float64 matrix (for tests and small P only)."""
        P = self.shape[0]
        out = np.empty((P, P))
        for i in range(self.n_blocks):
            for j in range(i, self.n_blocks):
                t = self.tile(i, j)
                out[self._block(i), self._block(j)] = t
                out[self._block(j), self._block(i)] = t.T
        return out

    def __repr__(self) -> str:
        return (f"KernelOperator(P={self.shape[0]}, storage={self.storage!r}, tiles={self.n_blocks}×{self.n_blocks}, "
                f"{self.nbytes / 2**20:.0f} MiB)")
