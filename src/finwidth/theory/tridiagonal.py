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
  follows from the stored reflectors and Zᵀ(Qᵀv) from the eigenvectors Z of T, computed by one MRRR
  run a range of ~P/4 vectors at a time, each range applied and dropped: O(P²) time, never all of Z in
  memory (:meth:`HouseholderSpectrum.coordinates`).

Convention: K is symmetric positive semi-definite, float64, C-contiguous (finwidth's kernels are),
and it is destroyed.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
from scipy import linalg
from scipy.linalg import lapack

from finwidth.errors import ConfigError
from finwidth.scipy_ctypes import cython_function

#: fewest eigenvectors of T per block in :meth:`HouseholderSpectrum.coordinates` (the default block is
#: max(BLOCK_MIN, ⌈P/4⌉))
BLOCK_MIN = 256

__all__ = ["BLOCK_MIN", "HouseholderSpectrum", "TridiagonalMeasure", "householder_spectrum", "rank_one_update"]


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

        The eigenvectors Z of T come from one MRRR run (LAPACK's ``dstemr`` split into its two stages:
        ``dlarre`` once for all eigenvalues and root representations, then ``dlarrv`` on index ranges of
        ``block`` vectors, default max(``BLOCK_MIN``, ⌈P/4⌉)); each block is applied to the rotated V and
        dropped, so memory is ~block·P doubles, not P². All blocks share the representation tree, so they
        are the vectors of a single ``dstemr`` call (orthogonal across blocks, clusters included: the
        range interface is the one ScaLAPACK's parallel MRRR uses). Parseval's identity is checked on the
        result (‖(UᵀV)ᵀ(UᵀV) − VᵀV‖ ≤ 1e-10 ‖V‖²); if it fails, or LAPACK reports a failure, all of Z is
        computed at once (one more P×P matrix while it exists). Signs of eigenvectors are arbitrary, as
        with ``eigh``.
        """
        W = self.rotate(V)
        if self.size == 1:
            return W
        P = self.size
        block = max(BLOCK_MIN, -(-P // 4)) if block is None else int(block)
        if block < 1:
            raise ConfigError(f"block must be a positive number of eigenvectors, got {block}")
        if block < P and P > 2:
            try:
                mrrr = _MRRR(self.diagonal, self.offdiagonal)
                out = np.empty_like(W)
                for a in range(0, P, block):
                    b = min(a + block, P)
                    out[a:b] = mrrr.vector_rows(a, b) @ W
                out = out[mrrr.order]  # LAPACK's order (by split block) → ascending, the order of ``values``
                gram, ref = out.T @ out, W.T @ W
                if np.max(np.abs(gram - ref)) <= 1e-10 * max(float(np.max(np.diag(ref))), np.finfo(float).tiny):
                    return out
            except (linalg.LinAlgError, ImportError, KeyError, AttributeError):
                pass  # LAPACK's failure, or a scipy that does not export the MRRR stages: the full run below
        # one run over all eigenvectors (the previous path; also the fallback)
        try:
            _, Z = linalg.eigh_tridiagonal(self.diagonal, self.offdiagonal, lapack_driver="stemr")
        except linalg.LinAlgError:  # MRRR can fail on tight clusters; implicit QL does not
            _, Z = linalg.eigh_tridiagonal(self.diagonal, self.offdiagonal, lapack_driver="stev")
        return Z.T @ W


_c, _i, _p = ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_void_p
# Fortran prototypes (every argument by reference)
_PROTOTYPES = {
    "dlarrr": (_i, _p, _p, _i),  # n, d, e, info
    # range, n, vl, vu, il, iu, d, e, e2, rtol1, rtol2, spltol, nsplit, isplit, m, w, werr, wgap, iblock,
    # indexw, gers, pivmin, work, iwork, info
    "dlarre": (_c, _i, _p, _p, _i, _i, _p, _p, _p, _p, _p, _p, _i, _p, _i, _p, _p, _p, _p, _p, _p, _p, _p, _p, _i),
    # n, vl, vu, d, l, pivmin, isplit, m, dol, dou, minrgp, rtol1, rtol2, w, werr, wgap, iblock, indexw, gers,
    # z, ldz, isuppz, work, iwork, info
    "dlarrv": (_i, _p, _p, _p, _p, _p, _p, _i, _i, _i, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _i, _p, _p, _p, _i),
}


def _lapack(name: str):
    """A LAPACK routine scipy does not wrap (``dlarrr``, ``dlarre``, ``dlarrv``), from its Cython table."""
    try:
        return cython_function("lapack", name, _PROTOTYPES[name])
    except (ImportError, KeyError, AttributeError) as err:  # pragma: no cover - scipy without Cython LAPACK
        raise linalg.LinAlgError(f"LAPACK {name} is not available from scipy: {err}") from None


def _int(x: int):
    return ctypes.byref(ctypes.c_int(x))


def _dbl(x: float):
    return ctypes.byref(ctypes.c_double(x))


class _MRRR:
    """LAPACK ``dstemr`` (JOBZ='V', RANGE='A') in its two stages, so that its eigenvectors can be taken a range
    at a time: ``dlarre`` (eigenvalues by dqds, root representations) once, then ``dlarrv`` with DOL:DOU on
    fresh copies of its inputs for each range. The driver's steps are those of ``dstemr``: scaling into the
    safe range, the relative-accuracy test (``dlarrr``), the bisection tolerances and MINRGP = 1e-3."""

    def __init__(self, d: np.ndarray, e: np.ndarray):
        n = int(d.size)
        eps = np.finfo(np.float64).eps  # LAPACK's dlamch('Precision')
        tiny = np.finfo(np.float64).tiny
        rmin = math.sqrt(tiny / eps)
        rmax = min(math.sqrt(eps / tiny), 1.0 / math.sqrt(math.sqrt(tiny)))
        dd = np.array(d, dtype=np.float64)
        ee = np.zeros(n)
        ee[:n - 1] = e
        tnrm = float(max(np.max(np.abs(dd)), np.max(np.abs(ee))))
        scale = rmin / tnrm if 0 < tnrm < rmin else rmax / tnrm if tnrm > rmax else 1.0
        if scale != 1.0:
            dd *= scale
            ee *= scale
        info = ctypes.c_int(0)
        _lapack("dlarrr")(_int(n), dd.ctypes.data, ee.ctypes.data, ctypes.byref(info))
        spltol = eps if info.value == 0 else -eps  # relative splitting only where T allows relative accuracy
        self.rtol1, self.rtol2 = math.sqrt(eps), max(math.sqrt(eps) * 5e-3, 4 * eps)
        e2 = ee * ee
        nsplit, m, pivmin = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_double(0.0)
        vl, vu = ctypes.c_double(0.0), ctypes.c_double(0.0)
        self.isplit, self.iblock, self.indexw = (np.zeros(n, np.int32) for _ in range(3))
        self.w, self.werr, self.wgap = np.zeros(n), np.zeros(n), np.zeros(n)
        self.gers = np.zeros(2 * n)
        work, iwork = np.zeros(6 * n), np.zeros(5 * n, np.int32)
        _lapack("dlarre")(b"A", _int(n), ctypes.byref(vl), ctypes.byref(vu), _int(0), _int(0), dd.ctypes.data,
                          ee.ctypes.data, e2.ctypes.data, _dbl(self.rtol1), _dbl(self.rtol2), _dbl(spltol),
                          ctypes.byref(nsplit), self.isplit.ctypes.data, ctypes.byref(m), self.w.ctypes.data,
                          self.werr.ctypes.data, self.wgap.ctypes.data, self.iblock.ctypes.data,
                          self.indexw.ctypes.data, self.gers.ctypes.data, ctypes.byref(pivmin), work.ctypes.data,
                          iwork.ctypes.data, ctypes.byref(info))
        if info.value != 0 or m.value != n:
            raise linalg.LinAlgError(f"dlarre failed (info {info.value}, {m.value} of {n} eigenvalues)")
        self.n, self.vl, self.vu, self.pivmin = n, vl.value, vu.value, pivmin.value
        self.d, self.l = dd, ee  # the root representations L D Lᵀ of the split blocks; ee[isplit−1]: their shifts
        # eigenvalues in LAPACK's order (split block by split block): root value + the block's shift
        values = self.w + ee[self.isplit[self.iblock - 1] - 1]
        self.order = np.argsort(values, kind="stable")

    def vector_rows(self, a: int, b: int) -> np.ndarray:
        """Eigenvectors a..b−1 (0-based, LAPACK's order) as the rows of a (b − a, n) array."""
        n = self.n
        # dlarrv writes Z's columns DOL−1..DOU+1 only (the outer two keep child representations): a buffer for
        # those columns, passed as the address of column 1 (Fortran reads and writes nothing else)
        lo, hi = max(a, 1), min(b + 1, n)  # 1-based columns DOL−1 and DOU+1, with DOL = a + 1, DOU = b
        buf = np.zeros((hi - lo + 1, n))  # C order: row j is Fortran column lo + j
        z = ctypes.c_void_p(buf.ctypes.data - (lo - 1) * n * buf.itemsize)
        d, l, w, werr, wgap = (x.copy() for x in (self.d, self.l, self.w, self.werr, self.wgap))  # dlarrv overwrites
        isuppz, work, iwork = np.zeros(2 * n, np.int32), np.zeros(12 * n), np.zeros(7 * n, np.int32)
        info = ctypes.c_int(0)
        _lapack("dlarrv")(_int(n), _dbl(self.vl), _dbl(self.vu), d.ctypes.data, l.ctypes.data, _dbl(self.pivmin),
                          self.isplit.ctypes.data, _int(n), _int(a + 1), _int(b), _dbl(1e-3), _dbl(self.rtol1),
                          _dbl(self.rtol2), w.ctypes.data, werr.ctypes.data, wgap.ctypes.data,
                          self.iblock.ctypes.data, self.indexw.ctypes.data, self.gers.ctypes.data, z, _int(n),
                          isuppz.ctypes.data, work.ctypes.data, iwork.ctypes.data, ctypes.byref(info))
        if info.value != 0:
            raise linalg.LinAlgError(f"dlarrv failed (info {info.value})")
        return buf[a + 1 - lo:b + 1 - lo]


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
