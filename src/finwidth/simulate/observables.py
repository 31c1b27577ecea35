"""Observables of sampled networks, including the Rao–Blackwellised readout.

Given the last hidden features Φ = σ(h^(L)) on the training set (shape ``[R, P, N_L]``), the readout
a (and the output bias, if any) has an exact Gaussian conditional posterior:

    f = Φ a / sqrt(N_L) [+ b],   a ~ N(0, 1/λ_L),   y | f ~ N(f, T)
    ⇒ precision A = ΦᵀΦ/(N_L T) + λ_L,   mean m = A⁻¹ Φᵀ y/(sqrt(N_L) T).

Predictions at any point with features φ then have conditional mean φ·m/sqrt(N_L) and variance
φᵀA⁻¹φ/N_L, and E[|a|² | Φ] = |m|² + Tr A⁻¹. Averaging these over the samples of the other layers
(instead of using the sampled readout) is Rao–Blackwellisation: same expectation, smaller variance.
An output bias b ~ N(0, σ_b²) is an extra feature column of constant value sqrt(N_L λ_L σ_b²).
The linear algebra runs in float64 in the smaller of the two spaces (P or N_L). With D outputs
(targets y of shape (P, D), a D × N_L readout with independent rows) the rows share the precision A
and the means stack along a trailing output axis.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ReadoutConditional", "readout_conditional", "sample_readout_conditional"]


class ReadoutConditional:
    """Conditional posterior of the readout given hidden features (see module docstring).

    Parameters
    ----------
    Phi : torch.Tensor
        Features ``[R, P, M]``.
    y : torch.Tensor
        Targets ``[P]`` or ``[P, D]``.
    precision, temperature, bias_var : float
        λ of the standard-form readout, T, and the output bias variance (0: no bias).

    Attributes
    ----------
    norm2 : torch.Tensor
        E[|a|² | Φ] per replica (float64, ``[R]``, summed over outputs), the output bias excluded.
    second_moment : torch.Tensor
        E[a aᵀ | Φ] per replica for the D × M readout a (float64, ``[R, D, D]``): m mᵀ + tr(A⁻¹) 1, its
        trace is ``norm2``. λ E[a aᵀ]/M is the readout estimate of the D × D order parameter Q_L
        (docs/multioutput.md, "Sampled networks").
    """

    def __init__(self, Phi: torch.Tensor, y: torch.Tensor, precision: float, temperature: float,
                 bias_var: float = 0.0):
        Phi = Phi.double()
        self.N = Phi.shape[-1]
        self.lam = float(precision)
        self.T = float(temperature)
        self.bias_col = math.sqrt(self.N * self.lam * bias_var) if bias_var > 0 else None
        Phi = self._augment(Phi)
        y = y.double()
        self.vector = y.dim() == 1
        Y = y.unsqueeze(-1) if self.vector else y                       # [P, D]
        D = Y.shape[-1]
        R, P, N1 = Phi.shape
        cl = self.N * self.T * self.lam  # c λ with c = N_L T
        eye = torch.eye(D, dtype=Phi.dtype, device=Phi.device)
        self.feature_space = N1 <= P
        if self.feature_space:
            s2, V = torch.linalg.eigh(Phi.transpose(-1, -2) @ Phi)
            s2 = s2.clamp_min(0.0)
            b = V.transpose(-1, -2) @ (Phi.transpose(-1, -2) @ Y)        # [R, N1, D]
            self.V = V
            self.inv_prec = 1.0 / (self.lam + s2 / (self.N * self.T))   # eigenvalues of A⁻¹
            self.m = math.sqrt(self.N) * (V @ (b / (cl + s2).unsqueeze(-1)))  # [R, N1, D]
            diag_inv = ((V * V) @ self.inv_prec.unsqueeze(-1)).squeeze(-1)
            self.norm2 = (self.m[:, : self.N] ** 2).sum((-1, -2)) + D * diag_inv[:, : self.N].sum(-1)
            mw = self.m[:, : self.N]
            self.second_moment = mw.transpose(-1, -2) @ mw + diag_inv[:, : self.N].sum(-1)[:, None, None] * eye
        else:
            s2, U = torch.linalg.eigh(Phi @ Phi.transpose(-1, -2))
            s2 = s2.clamp_min(0.0)
            self.U, self.s2, self.cl = U, s2, cl
            self.Phi = Phi
            self.w = (U.transpose(-1, -2) @ Y) / (cl + s2).unsqueeze(-1)   # M⁻¹ y in the eigenbasis, [R, P, D]
            mnorm = self.N * (s2.unsqueeze(-1) * self.w ** 2).sum((-1, -2))  # m = sqrt(N) Φᵀ M⁻¹ y
            mm = self.N * (s2.unsqueeze(-1) * self.w).transpose(-1, -2) @ self.w  # m_aᵀ m_b, [R, D, D]
            tr1 = (N1 - (s2 / (cl + s2)).sum(-1)) / self.lam                 # tr A⁻¹ (one output)
            tr = D * tr1
            if self.bias_col is not None:
                uc = (U.transpose(-1, -2) @ torch.full((R, P, 1), self.bias_col, dtype=Phi.dtype,
                                                       device=Phi.device)).squeeze(-1)
                m_last = (uc.unsqueeze(-1) * self.w).sum(-2)             # [R, D]
                inv_last = (1.0 - (uc ** 2 / (cl + s2)).sum(-1)) / self.lam
                mnorm = mnorm - self.N * (m_last ** 2).sum(-1)
                tr = tr - D * inv_last
                mm = mm - self.N * m_last.unsqueeze(-1) * m_last.unsqueeze(-2)
                tr1 = tr1 - inv_last
            self.norm2 = mnorm + tr
            self.second_moment = mm + tr1[:, None, None] * eye

    def grouped_second_moment(self, groups: int) -> torch.Tensor:
        """E[Σ_g a'_g a'_gᵀ | Φ] for one output without output bias, the M = G·m readout weights of
        the standard form cut into G consecutive groups a'_g ∈ R^m (channel-major for the CNN: G = C
        channels, m = Ñ patches). Float64 ``[R, m, m]``.

        The conditional is N(m, A⁻¹), so the sum is Σ_g (m_g m_gᵀ + (A⁻¹)_gg) with (A⁻¹)_gg the G
        diagonal m × m blocks of A⁻¹; in data space A⁻¹ = (1/λ)[1 − Φᵀ(M T λ + ΦΦᵀ)⁻¹Φ] (Woodbury)."""
        if not self.vector or self.bias_col is not None:
            raise ValueError("grouped_second_moment is defined for one output without output bias")
        M = self.N
        if M % groups:
            raise ValueError(f"{M} readout weights do not split into {groups} groups")
        m = M // groups
        if self.feature_space:
            mean = self.m[:, :, 0]                                                        # [R, M]
            cov = (self.V * self.inv_prec.unsqueeze(1)) @ self.V.transpose(-1, -2)      # A⁻¹, [R, M, M]
            R = cov.shape[0]
            blocks = torch.diagonal(cov.reshape(R, groups, m, groups, m), dim1=1, dim2=3).sum(-1)
        else:
            Psi = (self.U.transpose(-1, -2) @ self.Phi) / torch.sqrt(self.cl + self.s2).unsqueeze(-1)  # [R, P, M]
            R, P = Psi.shape[:2]
            Pg = Psi.reshape(R, P, groups, m)
            eye = torch.eye(m, dtype=Psi.dtype, device=Psi.device)
            blocks = (groups * eye - torch.einsum("rpgi,rpgj->rij", Pg, Pg)) / self.lam
            mean = math.sqrt(self.N) * (self.Phi.transpose(-1, -2) @ (self.U @ self.w))[..., 0]  # [R, M]
        mg = mean.reshape(-1, groups, m)
        return mg.transpose(-1, -2) @ mg + blocks

    def _augment(self, Phi):
        if self.bias_col is None:
            return Phi
        col = torch.full(Phi.shape[:-1] + (1,), self.bias_col, dtype=Phi.dtype, device=Phi.device)
        return torch.cat([Phi, col], dim=-1)

    def predict(self, Phi_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditional mean (``[R, n]``, or ``[R, n, D]``) and variance (``[R, n]``, the same for
        every output) of f at points with features ``Phi_x`` (``[R, n, M]``)."""
        phi = self._augment(Phi_x.double())
        sN = math.sqrt(self.N)
        if self.feature_space:
            mean = (phi @ self.m) / sN
            z = phi @ self.V
            var = (z * z * self.inv_prec.unsqueeze(1)).sum(-1) / self.N
        else:
            k = (phi @ self.Phi.transpose(-1, -2)) @ self.U        # [R, n, P] in the eigenbasis
            mean = k @ self.w
            var = ((phi * phi).sum(-1) - (k * k / (self.cl + self.s2).unsqueeze(1)).sum(-1)) / (self.lam * self.N)
        return (mean.squeeze(-1) if self.vector else mean), var.clamp_min(0.0)


def readout_conditional(Phi, y, precision, temperature, bias_var=0.0) -> ReadoutConditional:
    """Shorthand for :class:`ReadoutConditional`."""
    return ReadoutConditional(Phi, y, precision, temperature, bias_var)


def sample_readout_conditional(Phi: torch.Tensor, y: torch.Tensor, precision: float, temperature: float,
                               generator: torch.Generator, bias_var: float = 0.0):
    """Exact draw of (readout, output bias) from their conditional posterior (Matheron's rule).

    Returns ``(a, b)`` with ``a`` shaped ``[R, D, N_L]`` and ``b`` shaped ``[R, D]`` (``None`` without
    output bias), both float64; D = 1 for targets ``[P]``. Used by ``init="readout_conditional"``.
    """
    Phi = Phi.double()
    R, P, N = Phi.shape
    Y = y.double().reshape(P, -1)                                        # [P, D]
    D = Y.shape[-1]
    T, lam = float(temperature), float(precision)
    dev = Phi.device
    Psi = Phi / math.sqrt(N)
    a0 = torch.randn((R, N, D), generator=generator, device=dev, dtype=torch.float64) / math.sqrt(lam)
    f0 = Psi @ a0
    K = Psi @ Psi.transpose(-1, -2) / lam
    b0 = None
    if bias_var > 0:
        b0 = torch.randn((R, 1, D), generator=generator, device=dev, dtype=torch.float64) * math.sqrt(bias_var)
        f0 = f0 + b0
        K = K + bias_var
    eps = torch.randn((R, P, D), generator=generator, device=dev, dtype=torch.float64) * math.sqrt(T)
    K = K + T * torch.eye(P, dtype=torch.float64, device=dev)
    alpha = torch.cholesky_solve(Y - f0 - eps, torch.linalg.cholesky(K))
    a = a0 + (Psi.transpose(-1, -2) @ alpha) / lam
    b = None if b0 is None else (b0 + bias_var * alpha.sum(1, keepdim=True))[:, 0, :]
    return a.transpose(-1, -2), b
