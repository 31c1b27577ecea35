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
  follows from the stored reflectors and Zᵀ(Qᵀv) from the eigenvectors Z of T (MRRR, O(P²) time;
  memory: a second P×P matrix while they exist).

Convention: K is symmetric positive semi-definite, float64, C-contiguous (finwidth's kernels are),
and it is destroyed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import linalg
from scipy.linalg import lapack

from finwidth.errors import ConfigError

__all__ = ["HouseholderSpectrum", "TridiagonalMeasure", "householder_spectrum", "rank_one_update"]


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

    def coordinates(self, V: np.ndarray) -> np.ndarray:
        """Uᵀ V, the coordinates of V in K's eigenbasis (rows in the order of ``values``), shape (P, c).

        Needs the eigenvectors Z of T (MRRR, O(P²) time; one more P×P matrix while they exist). Signs
        of eigenvectors are arbitrary, as with ``eigh``.
        """
        W = self.rotate(V)
        if self.size == 1:
            return W
        try:
            _, Z = linalg.eigh_tridiagonal(self.diagonal, self.offdiagonal, lapack_driver="stemr")
        except linalg.LinAlgError:  # MRRR can fail on tight clusters; implicit QL does not
            _, Z = linalg.eigh_tridiagonal(self.diagonal, self.offdiagonal, lapack_driver="stev")
        return Z.T @ W


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
