"""The dense theory's linear algebra on a torch device (``RKGP(device=...)``, ``NNGP(device=...)``).

What runs on the device, in float64 (:mod:`finwidth.device` owns the device and the kernel tiles):

* the training kernel K_L (:func:`train_kernel`; the closed-form activations there, others on the CPU
  and copied, as :func:`finwidth.device.kernel_tile` documents);
* the spectral step of the eigenbasis solvers: one ``torch.linalg.eigh`` of K_L, the eigenvalues and the
  coordinates Uᵀv of the few vectors the saddle point needs (the labels; the mean vector of the non-odd
  theory), the eigenvectors dropped at once (:func:`eigh_coordinates`), or brought to the host where a
  fit keeps them (:func:`eigenbasis`: corrections, several outputs);
* the GP solve of the predictions: Cholesky of K + T·I (eigh with the pseudo-inverse at T = 0 or if the
  Cholesky fails), α, the log evidence, the backward-error check, the test × train kernel and the
  posterior variance (:func:`gp_fit`, :func:`gp_predict`), with the rules of :mod:`finwidth.theory.gp`;
* the nested form's Cholesky factorisation and inverse at every solver step (:func:`cholesky_parts`).

The scalar saddle-point equations (O(P) on the eigenvalues and label coordinates) stay in numpy; every
fitted attribute is numpy. Memory on the device, P×P float64 = 8P² bytes (20 GB at P = 5·10⁴): the
spectral step holds K, the eigenvectors and eigh's workspace (about 3 P×P at the peak); the prediction
solve holds K + T·I and its Cholesky factor while it checks the solve (2 P×P), then the factor alone.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from finwidth.device import as_numpy, kernel_tile, torch_module
from finwidth.errors import ConfigError
from finwidth.theory import gp, spectral

__all__ = ["DeviceFactor", "as_tensor", "cholesky_parts", "eigenbasis", "eigh_coordinates", "gp_fit", "gp_predict",
           "train_kernel"]


def train_kernel(network, X: np.ndarray, diags: np.ndarray, device):  # type: ignore[no-untyped-def]
    """K_L(X, X) (docs/conventions.md) as a float64 tensor on ``device``; ``diags`` from
    :func:`finwidth.kernels.layer_diagonals`."""
    return kernel_tile(network, X, X, diags, diags, device)


def _checked(K):  # type: ignore[no-untyped-def]
    if not math.isfinite(float(K.sum())):
        raise ConfigError("the kernel contains NaN or inf entries; check the inputs and priors")
    return K


def eigh_coordinates(K, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending eigenvalues of the symmetric tensor K (not null-zeroed) and Uᵀ V, both numpy.

    ``V`` is (P, c); the eigenvectors are dropped before returning (nothing P×P is kept).
    """
    torch = torch_module()
    w, U = torch.linalg.eigh(_checked(K))
    C = U.T @ torch.as_tensor(V, dtype=torch.float64, device=K.device)
    del U
    return as_numpy(w), as_numpy(C)


def eigenbasis(K, *, null_rtol: float = spectral.NULL_RTOL) -> spectral.Eigenbasis:
    """:func:`finwidth.theory.spectral.eigenbasis` of a tensor: eigh on the device, the eigenvectors on the host."""
    torch = torch_module()
    w, U = torch.linalg.eigh(_checked(K))
    values, n_null = spectral.checked_spectrum(as_numpy(w), null_rtol=null_rtol)
    return spectral.Eigenbasis(values=values, vectors=as_numpy(U), n_null=n_null)


class DeviceFactor(gp.GPFactor):
    """A factorisation of A = K + T·I held on a device: :class:`finwidth.theory.gp.GPFactor`'s interface (numpy in
    and out) on tensors, and :meth:`solve_tensor`/:meth:`whiten_tensor` for tensors.

    ``method`` is ``"cholesky"`` (A = L Lᵀ, L lower triangular) or ``"eigh"`` (A = U diag(w) Uᵀ, eigenvalues at or
    below the cutoff dropped: a pseudo-inverse of rank ``rank``).
    """

    @property
    def device(self):  # type: ignore[no-untyped-def]
        """The torch device the factor lives on."""
        return (self._chol if self._chol is not None else self.evecs).device

    def _t(self, B: np.ndarray):  # type: ignore[no-untyped-def]
        torch = torch_module()
        return torch.as_tensor(np.asarray(B, dtype=np.float64), device=self.device)

    def solve_tensor(self, B):  # type: ignore[no-untyped-def]
        """A⁻¹ B (A⁺ B if rank-deficient) for a tensor B of shape (P,) or (P, c)."""
        torch = torch_module()
        cols = B.reshape(B.shape[0], -1)
        if self.method == "cholesky":
            out = torch.cholesky_solve(cols, self._chol, upper=False)
        else:
            out = self.evecs @ ((self.evecs.T @ cols) / self.evals[:, None])
        return out.reshape(B.shape)

    def solve(self, B: np.ndarray) -> np.ndarray:
        """A⁻¹ B (the pseudo-inverse A⁺ B if rank-deficient), numpy."""
        return as_numpy(self.solve_tensor(self._t(B)))

    def whiten_tensor(self, B):  # type: ignore[no-untyped-def]
        """W B with Wᵀ W = A⁻¹ (A⁺): L⁻¹ B, or diag(w^-½) Uᵀ B (rank rows); B a (P, c) tensor."""
        torch = torch_module()
        if self.method == "cholesky":
            return torch.linalg.solve_triangular(self._chol, B, upper=False)
        return (self.evecs.T @ B) / torch.sqrt(self.evals)[:, None]

    def whiten(self, B: np.ndarray) -> np.ndarray:
        """W B as in :meth:`whiten_tensor`, numpy."""
        B = np.asarray(B, dtype=np.float64)
        out = self.whiten_tensor(self._t(B.reshape(B.shape[0], -1)))
        return as_numpy(out).reshape((-1,) + B.shape[1:])

    @property
    def logdet(self) -> float:
        """log det A (the log pseudo-determinant if rank-deficient)."""
        torch = torch_module()
        if self.method == "cholesky":
            return float(2.0 * torch.log(torch.diagonal(self._chol)).sum())
        return float(torch.log(self.evals).sum())

    def _range_projection(self, y: np.ndarray) -> np.ndarray:
        yt = self._t(y)
        return as_numpy(self.evecs @ (self.evecs.T @ yt))


def _norm1(A, rows: int = 1024) -> float:  # type: ignore[no-untyped-def]
    """‖A‖₁ in row blocks (no P×P temporary)."""
    col = None
    for i0 in range(0, A.shape[0], rows):
        s = A[i0:i0 + rows].abs().sum(dim=0)
        col = s if col is None else col + s
    return float(col.max()) if col is not None else 0.0


def factorize(A, noise: float, *, rtol: float | None = None) -> DeviceFactor:
    """Factorise A = K + noise·I, **the tensor A holding K on entry and A on return** (its diagonal is shifted).

    The rules of :func:`finwidth.theory.gp.factorize`: Cholesky if noise > 0 and it succeeds, otherwise eigh with
    the eigenvalues at or below ``rtol · λ_max`` (default P·eps) dropped; ConfigError if K is not PSD.
    """
    torch = torch_module()
    n = A.shape[0]
    if noise:
        A.diagonal().add_(noise)
    if noise > 0:
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            return DeviceFactor("cholesky", n, chol=L)
        del L
    w, U = torch.linalg.eigh(A)
    w_np = as_numpy(w)
    lam_max = float(max(abs(w_np[0]), abs(w_np[-1])))
    tol = (n * np.finfo(np.float64).eps) if rtol is None else float(rtol)
    if not math.isfinite(tol) or tol < 0:
        raise ConfigError(f"rtol must be finite and non-negative, got {rtol}")
    cutoff = tol * lam_max
    if w_np[0] < -max(cutoff, 1e-12 * lam_max):
        raise ConfigError(f"the kernel is not positive semi-definite: smallest eigenvalue {w_np[0]:.3g} "
                          f"(largest {w_np[-1]:.3g}); a covariance must be PSD")
    keep = torch.as_tensor(w_np > cutoff, device=A.device)
    if not bool(keep.any()):
        raise ConfigError("the kernel plus noise is zero to working precision; nothing can be learned")
    return DeviceFactor("eigh", n, evals=w[keep].clone(), evecs=U[:, keep].contiguous(), cutoff=cutoff)


def gp_fit(K, y: Any, noise: float, *, rtol: float | None = None) -> gp.GPFit:
    """:func:`finwidth.theory.gp.gp_fit` on a device: K a float64 tensor (**overwritten** by K + noise·I and
    released when the fit returns), y numpy; the returned fit's ``alpha`` is numpy, its ``factor`` a
    :class:`DeviceFactor` (the factor stays on the device for :func:`gp_predict`)."""
    torch = torch_module()
    noise = gp.validate_noise(noise, "noise")
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 1:
        raise ConfigError(f"the kernel must be a square (P, P) matrix, got shape {tuple(K.shape)}")
    _checked(K)
    yv = gp.validate_targets(y, K.shape[0], multi_output=True)
    norm1 = _norm1(K)
    fac = factorize(K, noise, rtol=rtol)

    def matmul(B: np.ndarray) -> np.ndarray:  # K B = A B − noise·B
        return as_numpy(K @ torch.as_tensor(B, dtype=torch.float64, device=K.device)) - noise * B

    return gp.fit_from_factor(fac, yv, noise, matmul=matmul, norm1=norm1)


def gp_predict(fit: gp.GPFit, K_test_train, k_test_diag: Any = None, *, K_test=None, return_var: bool = False,
               return_cov: bool = False, block_size: int = 2048):  # type: ignore[no-untyped-def]
    """:func:`finwidth.theory.gp.gp_predict` for a fit of :func:`gp_fit`: the test blocks are tensors on the
    device (``k_test_diag`` numpy), the results numpy."""
    torch = torch_module()
    Ks = K_test_train
    if Ks.ndim != 2 or Ks.shape[1] != fit.alpha.shape[0]:
        raise ConfigError(f"K_test_train must be (P_t, {fit.alpha.shape[0]}), got shape {tuple(Ks.shape)}")
    mean = as_numpy(Ks @ torch.as_tensor(fit.alpha, dtype=torch.float64, device=Ks.device))
    out: list[np.ndarray] = [mean]
    if return_var:
        kd = np.asarray(k_test_diag, dtype=np.float64)
        var = np.empty_like(kd)
        for i0 in range(0, Ks.shape[0], block_size):
            V = fit.factor.whiten_tensor(Ks[i0:i0 + block_size].T)
            var[i0:i0 + block_size] = kd[i0:i0 + block_size] - as_numpy((V * V).sum(dim=0))
        out.append(gp.clip_variance(var, kd))
    if return_cov:
        V = fit.factor.whiten_tensor(Ks.T)
        cov = as_numpy(K_test - V.T @ V)
        cov = 0.5 * (cov + cov.T)
        np.fill_diagonal(cov, gp.clip_variance(np.diagonal(cov).copy(), as_numpy(torch.diagonal(K_test))))
        out.append(cov)
    return out[0] if len(out) == 1 else tuple(out)


def cholesky_parts(G: np.ndarray, y: np.ndarray, device) -> tuple[float, np.ndarray, np.ndarray] | None:  # type: ignore[no-untyped-def]
    """(log det G, G⁻¹y, G⁻¹) for a symmetric positive definite G, factorised on ``device``; None if the
    Cholesky fails (G not positive definite)."""
    torch = torch_module()
    Gt = torch.as_tensor(G, dtype=torch.float64, device=device)
    L, info = torch.linalg.cholesky_ex(Gt)
    del Gt
    if int(info) != 0:
        return None
    a = torch.cholesky_solve(torch.as_tensor(y, dtype=torch.float64, device=device)[:, None], L)[:, 0]
    logdet = float(2.0 * torch.log(torch.diagonal(L)).sum())
    if not math.isfinite(logdet):
        return None
    Ginv = torch.cholesky_inverse(L)
    del L
    return logdet, as_numpy(a), as_numpy(Ginv)


def as_tensor(A: np.ndarray, device):  # type: ignore[no-untyped-def]
    """A numpy array as a float64 tensor on ``device``."""
    torch = torch_module()
    return torch.as_tensor(np.asarray(A, dtype=np.float64), device=device)
