"""Validity diagnostic of the saddle-point (renormalised-kernel) theory: the effective load.

The renormalised GP with kernel K_R and noise T uses df = Tr[K_R (K_R + T)⁻¹] = Σ_i κ_i/(κ_i + T)
effective degrees of freedom (κ_i the eigenvalues of K_R on the training set; df = rank K_R at
T = 0). A network with N_L units in its last hidden layer has a hidden-feature kernel of rank ≤ N_L
in every posterior sample, so its readout alone fits at most N_L directions; the *effective load*

    α_eff = df / N_L

says how many fitted directions each hidden unit must carry. Below ~1 the features can stay close to
their prior and the Gaussian equivalence behind the saddle point holds; above it the features must
adapt to the labels, which the Gaussian-equivalent theory cannot represent: whatever its order in
1/N, a theory in which the hidden features are Gaussian has the NNGP posterior mean at T → 0 (it is
a Gamma scale mixture of GPs with kernel ∝ K), while the sampled networks' mean moves.

:data:`THRESHOLD` was calibrated on the MNIST 0/1 map of sampled networks (docs/validity.md, where
the false-alarm and miss rates on held-out cases are stated): above it the sampled ε_g differed from
the theory by more than 10%.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from finwidth.errors import ValidityWarning

__all__ = ["THRESHOLD", "Validity", "effective_dof"]

THRESHOLD = 1.0


@dataclass(frozen=True)
class Validity:
    """The validity diagnostic of a fitted :class:`~finwidth.RKGP` (module docstring).

    Attributes
    ----------
    effective_load : float
        α_eff = df / N_L.
    degrees_of_freedom : float
        df = Tr[K_R (K_R + T)⁻¹] of the renormalised kernel on the training set.
    width : int
        N_L, the width of the last hidden layer.
    threshold : float
        :data:`THRESHOLD`.
    reliable : bool
        ``effective_load <= threshold``, or a linear network (Gaussian features: the saddle point is
        reliable at any load; its only error is the O(1/N) width of p(Q̄ | y), which
        ``correction="qbar_fluctuations"`` removes).
    """

    effective_load: float
    degrees_of_freedom: float
    width: int
    threshold: float
    reliable: bool


def effective_dof(k: np.ndarray, scale: float, temperature: float, *, m_t: np.ndarray | None = None,
                  c: float = 0.0) -> float:
    """df = Tr[K_R (K_R + T)⁻¹] for K_R = scale·U diag(k) Uᵀ − c m mᵀ (m_t = Uᵀm; c = 0: no rank-one term).

    O(P) in the eigenbasis (Sherman–Morrison for the rank-one term). At T = 0, the rank of K_R.
    """
    k = np.asarray(k, dtype=np.float64)
    kr = scale * k
    if temperature == 0:
        rank = int(np.sum(kr > 0))
        return float(rank)
    T = float(temperature)
    beta = T + kr
    tr_inv = float(np.sum(1.0 / beta))
    if m_t is not None and c != 0.0:
        s1 = float(np.sum(m_t ** 2 / beta))
        s2 = float(np.sum(m_t ** 2 / beta ** 2))
        tr_inv += c * s2 / (1.0 - c * s1)
    return float(k.size - T * tr_inv)


def assess(dof: float, width: int, *, gaussian_features: bool = False, stacklevel: int = 3) -> Validity:
    """Build the :class:`Validity` record and warn (:class:`~finwidth.ValidityWarning`) when unreliable.

    ``gaussian_features``: the hidden features are exactly Gaussian (linear activation), where the
    load does not matter.
    """
    load = dof / float(width)
    v = Validity(effective_load=load, degrees_of_freedom=dof, width=int(width), threshold=THRESHOLD,
                 reliable=bool(load <= THRESHOLD or gaussian_features))
    if not v.reliable and math.isfinite(load):
        warnings.warn(
            f"RKGP: effective load df/N_L = {dof:.3g}/{width} = {load:.3g} > {THRESHOLD:g}: the renormalised GP "
            "uses more effective degrees of freedom than the network has hidden units. There, sampled networks "
            "learn features the saddle-point theory cannot represent, and their test error differed from it by "
            "more than 10% (docs/validity.md). Widen the network, raise T, or check with "
            "finwidth.sample_posterior.",
            ValidityWarning, stacklevel=stacklevel,
        )
    return v
