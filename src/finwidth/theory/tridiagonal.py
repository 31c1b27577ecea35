"""The spectrum of a dense kernel without its eigenvectors: one in-place Householder tridiagonalisation.

The eigenbasis solvers need the eigenvalues k of the output kernel K and the labels' coordinates
ỹ = Uᵀy, never U itself. LAPACK's ``dsytrd`` reduces K = Q T Qᵀ to a tridiagonal T in place, at about
half the cost of ``eigh`` with vectors and in the memory of K itself; then

* the eigenvalues of K are those of T (``dsterf``, O(P²));
* if K is first rotated by the reflector H₀ with H₀ y = ‖y‖ e₁ (an O(P²) rank-two update), the
  lower-triangular reduction keeps e₁ fixed, so T is the Jacobi matrix of y's spectral measure:
  yᵀ f(K) y = ‖y‖² e₁ᵀ f(T) e₁ for every f. The label terms of the equations are then continued
  fractions of T (O(P) per evaluation, :class:`finwidth.theory.krylov.JacobiSet`), with no
  eigenvectors at all;
* where the coordinates of other vectors are needed (the mean vector of the non-odd theory), Qᵀv
  follows from the stored reflectors and Zᵀ(Qᵀv) from the eigenvectors Z of T, computed a block of
  eigenvalues at a time (MRRR, LAPACK ``dstemr`` with an index range), each block applied and dropped:
  O(P²) time and a block of ~P/8 eigenvectors in memory, never all of Z (:meth:`HouseholderSpectrum.coordinates`).

Convention: K is symmetric positive semi-definite, float64, C-contiguous (finwidth's kernels are),
and it is destroyed.
"""

from __future__ import annotations

import ctypes
import math
import threading

import numpy as np
from scipy import linalg
from scipy.linalg import lapack

from finwidth.errors import ConfigError

#: fewest eigenvectors of T per block in :meth:`HouseholderSpectrum.coordinates` (the default block is
#: max(BLOCK_MIN, ⌈P/8⌉))
BLOCK_MIN = 256

__all__ = ["BLOCK_MIN", "HouseholderSpectrum", "TridiagonalMeasure", "eigen_blocks", "householder_spectrum", "rank_one_update"]


class HouseholderSpectrum:
    """Result of :func:`householder_spectrum`.

    Attributes
    ----------
    values : ndarray, shape (P,)
        Eigenvalues of K, ascending (not null-zeroed).
    diagonal, offdiagonal : ndarray
        T = tridiag(offdiagonal, diagonal, offdiagonal), with T's first basis vector y/‖y‖.
    label_mass : float
        ‖y‖².
    """

    def __init__(self, d: np.ndarray, e: np.ndarray, reflectors: np.ndarray, tau: np.ndarray, label_mass: float,
                 h0: tuple[np.ndarray, float] | None):
        self.diagonal = d
        self.offdiagonal = e
        self._reflectors = reflectors  # K's memory: the Householder vectors below the subdiagonal
        self._tau = tau
        self._h0 = h0
        self.label_mass = label_mass
        self.values = linalg.eigvalsh_tridiagonal(d, e, lapack_driver="sterf") if d.size > 1 else d.copy()
        self.size = int(d.size)

    def rotate(self, V: np.ndarray) -> np.ndarray:
        """Qᵀ H₀ V: the coordinates of V in the basis of T, shape (P, c) (O(P² c))."""
        V = np.array(V, dtype=np.float64, ndmin=2, copy=True)
        if V.shape[0] != self.size:
            V = V.T
        if self._h0 is not None:
            v, tau = self._h0
            V -= tau * np.outer(v, v @ V)
        R = self._reflectors
        n = self.size
        for i in range(n - 1):
            # H(i) = I − τ_i w wᵀ with w = (0,…,0, 1, R[i, i+2:]) starting at i+1 (R is Kᵀ in LAPACK's view)
            t = self._tau[i]
            if t == 0.0:
                continue
            rows = V[i + 1:]
            c = rows[0] + R[i, i + 2:] @ rows[1:]
            c *= t
            rows[0] -= c
            rows[1:] -= np.outer(R[i, i + 2:], c)
        return V

    def coordinates(self, V: np.ndarray, *, block: int | None = None) -> np.ndarray:
        """Uᵀ V, the coordinates of V in K's eigenbasis (rows in the order of ``values``), shape (P, c).

        The eigenvectors Z of T are computed ``block`` at a time (default ⌈P/8⌉, at least ``BLOCK_MIN``) by MRRR
        on an index range, each block applied to the rotated V and dropped: memory ~block·P doubles, not
        P². Blocks end at the largest gap between consecutive eigenvalues near their nominal end, and
        never inside a cluster (gap below 1e-8 of the largest eigenvalue; the block grows instead), so
        that vectors of different blocks, computed from different MRRR representations, are orthogonal
        to rounding (their angle errors scale like ε‖T‖/gap). Parseval's identity is checked on the
        result (‖(UᵀV)ᵀ(UᵀV) − VᵀV‖ ≤ 1e-10 ‖V‖²); if it fails, or a block fails, all of Z is computed
        at once (one more P×P matrix while it exists). Signs of eigenvectors are arbitrary, as with ``eigh``.
        """
        W = self.rotate(V)
        if self.size == 1:
            return W
        P = self.size
        block = max(BLOCK_MIN, -(-P // 8)) if block is None else int(block)
        if block < 1:
            raise ConfigError(f"block must be a positive number of eigenvectors, got {block}")
        out = np.empty_like(W)
        if block < P and _stemr() is not None:
            try:
                for a, b in eigen_blocks(self.values, block):
                    out[a:b] = _eigenvector_rows(self.diagonal, self.offdiagonal, a, b) @ W
                gram, ref = out.T @ out, W.T @ W
                if np.max(np.abs(gram - ref)) <= 1e-10 * max(float(np.max(np.diag(ref))), np.finfo(float).tiny):
                    return out
            except linalg.LinAlgError:
                pass
        # one run over all eigenvectors (the previous path; also the fallback)
        try:
            _, Z = linalg.eigh_tridiagonal(self.diagonal, self.offdiagonal, lapack_driver="stemr")
        except linalg.LinAlgError:  # MRRR can fail on tight clusters; implicit QL does not
            _, Z = linalg.eigh_tridiagonal(self.diagonal, self.offdiagonal, lapack_driver="stev")
        return Z.T @ W


def eigen_blocks(values: np.ndarray, block: int, *, min_gap: float = 1e-8) -> list[tuple[int, int]]:
    """Consecutive index ranges [a, b) of ascending ``values``, about ``block`` long, for blockwise eigenvectors.

    Each range ends at the largest gap values[b] − values[b−1] among b in [a + ¾block, a + 1¼block]; a gap
    below ``min_gap``·max|values| never ends a range (the window is extended until one is larger, or to
    the end): a cluster of close eigenvalues stays in one range.
    """
    P = int(values.size)
    if P == 0:
        return []
    gap = np.diff(values)
    floor = min_gap * float(np.max(np.abs(values)))
    bounds = [0]
    while P - bounds[-1] > block + block // 4:
        lo = bounds[-1] + max(1, block - block // 4)
        hi = min(bounds[-1] + block + block // 4, P - 1)
        while True:
            j = lo + int(np.argmax(gap[lo - 1:hi]))  # a range may end before index j: the gap values[j] − values[j−1]
            if gap[j - 1] > floor or hi >= P - 1:
                break
            lo, hi = hi + 1, min(hi + block, P - 1)
        if gap[j - 1] <= floor:
            break
        bounds.append(j)
    bounds.append(P)
    return list(zip(bounds[:-1], bounds[1:]))


_STEMR: list = []
_STEMR_LOCK = threading.Lock()


def _stemr():
    """LAPACK dstemr through scipy's Cython LAPACK table (scipy's own wrapper always allocates an n×n Z)."""
    with _STEMR_LOCK:
        if not _STEMR:
            fn = None
            try:
                import scipy.linalg.cython_lapack as cl

                cap = cl.__pyx_capi__["dstemr"]
                api = ctypes.pythonapi
                api.PyCapsule_GetName.restype = ctypes.c_char_p
                api.PyCapsule_GetName.argtypes = [ctypes.py_object]
                api.PyCapsule_GetPointer.restype = ctypes.c_void_p
                api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
                ptr = api.PyCapsule_GetPointer(cap, api.PyCapsule_GetName(cap))
                c, i, p = ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_void_p
                # dstemr(jobz, range, n, d, e, vl, vu, il, iu, m, w, z, ldz, nzc, isuppz, tryrac, work, lwork,
                #        iwork, liwork, info): every argument by reference (Fortran)
                fn = ctypes.CFUNCTYPE(None, c, c, i, p, p, p, p, i, i, i, p, p, i, i, p, i, p, i, p, i, i)(ptr)
            except (ImportError, KeyError, AttributeError, ValueError, OSError):  # pragma: no cover - no Cython LAPACK
                fn = None
            _STEMR.append(fn)
        return _STEMR[0]


def _eigenvector_rows(d: np.ndarray, e: np.ndarray, a: int, b: int) -> np.ndarray:
    """Eigenvectors a..b−1 (ascending order, 0-based) of tridiag(e, d, e) as the rows of a (b − a, P) array."""
    n, k = int(d.size), b - a
    dd = np.array(d, dtype=np.float64)  # dstemr overwrites d and e
    ee = np.zeros(n)
    ee[:n - 1] = e
    Zt = np.empty((k, n))  # Fortran (n, k) with ldz = n: the rows are the eigenvectors
    w = np.empty(n)
    isuppz = np.empty(2 * k, dtype=np.int32)
    lwork, liwork = 18 * n, 10 * n
    work, iwork = np.empty(lwork), np.empty(liwork, dtype=np.int32)
    m, info, tryrac = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(1)
    vl, vu = ctypes.c_double(0.0), ctypes.c_double(0.0)

    def ref(x: int):
        return ctypes.byref(ctypes.c_int(x))

    _stemr()(b"V", b"I", ref(n), dd.ctypes.data, ee.ctypes.data, ctypes.byref(vl), ctypes.byref(vu), ref(a + 1),
             ref(b), ctypes.byref(m), w.ctypes.data, Zt.ctypes.data, ref(n), ref(k), isuppz.ctypes.data,
             ctypes.byref(tryrac), work.ctypes.data, ref(lwork), iwork.ctypes.data, ref(liwork), ctypes.byref(info))
    if info.value != 0 or m.value != k:
        raise linalg.LinAlgError(f"dstemr failed (info {info.value}, {m.value} of {k} eigenvectors)")
    return Zt


def householder_spectrum(K: np.ndarray, y: np.ndarray | None = None) -> HouseholderSpectrum:
    """Tridiagonalise K in place, first aligning y with the first basis vector (module docstring).

    Parameters
    ----------
    K : ndarray, shape (P, P)
        Symmetric, float64, C- or F-contiguous. **Overwritten** (it holds the reflectors afterwards).
    y : ndarray, shape (P,), optional
        The vector whose spectral measure T should carry (the labels). Without it, T's first basis
        vector is e₁ and ``label_mass`` is 1.

    Returns
    -------
    HouseholderSpectrum
    """
    if not isinstance(K, np.ndarray) or K.dtype != np.float64 or K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ConfigError("householder_spectrum needs a square float64 array (it works in place)")
    if not (K.flags.c_contiguous or K.flags.f_contiguous):
        raise ConfigError("householder_spectrum needs a contiguous array (it works in place)")
    P = K.shape[0]
    h0 = None
    mass = 1.0
    if y is not None:
        y = np.asarray(y, dtype=np.float64)
        norm = float(np.linalg.norm(y))
        if norm == 0:
            raise ConfigError("the labels are all zero")
        mass = norm * norm
        # H₀ = I − τ v vᵀ maps y to −sign(y₀)‖y‖ e₁ (the sign that avoids cancellation)
        v = y.copy()
        alpha = -math.copysign(norm, y[0]) if y[0] != 0 else -norm
        v[0] -= alpha
        vv = float(v @ v)
        if vv > 0:
            tau = 2.0 / vv
            # K ← H₀ K H₀ = K − v wᵀ − w vᵀ with w = τ K v − (τ² vᵀKv/2) v (symmetric rank-two update)
            Kv = K @ v
            w = tau * Kv - 0.5 * tau * tau * float(v @ Kv) * v
            _rank2_update(K, v, w)
            h0 = (v, tau)
    A = K.T if K.flags.c_contiguous else K  # the same symmetric matrix, Fortran-ordered: LAPACK works in place
    if P == 1:
        return HouseholderSpectrum(np.array([A[0, 0]]), np.zeros(0), K, np.zeros(0), mass, h0)
    lwork = int(lapack.dsytrd_lwork(P, lower=1)[0])
    c, d, e, tau, info = lapack.dsytrd(A, lower=1, lwork=lwork, overwrite_a=1)
    if info != 0 or not np.shares_memory(c, K):  # pragma: no cover - LAPACK contract
        raise RuntimeError(f"dsytrd failed (info {info}) or did not work in place")
    # lower storage of the Fortran-ordered A is the upper triangle of K seen in C order: row i of K
    # holds the reflector of column i; rotate() reads it that way
    return HouseholderSpectrum(d, e, K if K.flags.c_contiguous else K.T, tau, mass, h0)


def _block_rows(K: np.ndarray) -> int:
    """Rows per block for ~2 MB temporaries (the kernels' block size)."""
    return max(1, (1 << 18) // max(K.shape[1], 1))


def rank_one_update(K: np.ndarray, v: np.ndarray, c: float) -> None:
    """K += c v vᵀ in place, in row blocks (no P×P temporary)."""
    rows = _block_rows(K)
    for i0 in range(0, K.shape[0], rows):
        sl = slice(i0, i0 + rows)
        K[sl] += np.outer(c * v[sl], v)


def _rank2_update(K: np.ndarray, v: np.ndarray, w: np.ndarray) -> None:
    """K −= v wᵀ + w vᵀ in place, in row blocks (no P×P temporary)."""
    rows = _block_rows(K)
    for i0 in range(0, K.shape[0], rows):
        sl = slice(i0, i0 + rows)
        K[sl] -= np.outer(v[sl], w)
        K[sl] -= np.outer(w[sl], v)


class TridiagonalMeasure:
    """The product-form spectral measure from a :class:`HouseholderSpectrum` aligned with y.

    Trace part: the eigenvalues (exact). Label part: e₁ᵀ f(T) e₁ ‖y‖² by continued fractions. Duck-types
    :class:`~finwidth.theory.spectral.SpectralMeasure` for :func:`spectral.solve_product_measure`. Valid
    when K has no numerically-null eigenvalue (the eigenbasis path zeroes those; here none exist).
    """

    def __init__(self, spectrum: HouseholderSpectrum):
        from finwidth.theory.krylov import JacobiSet

        self.values = spectrum.values
        self.size = spectrum.size
        self.rank = float(self.size)  # no null eigenvalue (the caller's condition)
        self._label_mass = float(spectrum.label_mass)
        e = np.append(spectrum.offdiagonal, 0.0)
        self.label = JacobiSet(spectrum.diagonal[:, None], e[:, None], np.array([self.size]),
                               np.array([spectrum.label_mass]))

    def label_mass_in_range(self) -> tuple[float, float]:
        """(‖y‖², ‖y‖²): K has no null space here."""
        return self._label_mass, self._label_mass

    def roundoff_sensitivity(self, pi: float, temperature: float) -> float:
        """:func:`finwidth.theory.spectral.roundoff_sensitivity` from the continued fractions: δ r₂/r₁ with
        r_j = yᵀ(T/Π + K)⁻ʲy and δ = ε √P k_max."""
        r1, r2 = self.label_resolvent(temperature / pi)
        if r1 == 0.0:
            return 0.0
        delta = np.finfo(float).eps * math.sqrt(self.size) * float(self.values[-1])
        return delta * r2 / r1

    def label_resolvent(self, s: float) -> tuple[float, float]:
        """(yᵀ(s + K)⁻¹y, yᵀ(s + K)⁻²y)."""
        r1, r2 = self.label.resolvent(s)
        return float(r1[0]), float(r2[0])

    def g(self, pi: float, temperature: float) -> tuple[float, float, float]:
        """g(Π) = Π D'(Π)/P and its two parts (T = 0: the limit, K non-singular)."""
        P = self.size
        s = temperature / pi
        if temperature > 0:
            x = pi * self.values
            tr = float(np.sum(x / (temperature + x)))
            r1, r2 = self.label_resolvent(s)
            lab = (r1 - s * r2) / pi
        else:
            tr = float(P)
            lab = self.label_resolvent(0.0)[0] / pi
        return (tr - lab) / P, tr / P, lab / P

    def data_term(self, pi: float, temperature: float) -> float:
        """D(Π) = log det(T + Π K) + yᵀ(T + Π K)⁻¹ y."""
        logdet = float(np.sum(np.log(temperature + pi * self.values)))
        return logdet + self.label_resolvent(temperature / pi)[0] / pi
