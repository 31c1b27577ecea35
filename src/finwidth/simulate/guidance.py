"""Step-size guidance from the stiffness of the potential.

The largest curvature of U is estimated by power iteration on the Gauss–Newton matrix JᵀJ (J the
Jacobian of the training outputs with respect to all parameters; the prior adds T λ_max):

    κ_max ≈ λ_max(J Jᵀ) + T max_l λ_l      (units of U per parameter², i.e. 1/time² for BAOAB)

Rules (documented in docs/sampling.md):

* ``euler``: stable for η < 2/κ_max; a Gaussian mode of curvature κ has its variance inflated by
  1/(1 − ηκ/2), so η = 0.1/κ_max keeps the stiffest mode within ~5%.
* ``mala``: exact at any η; start at η = 0.5/κ_max and aim for acceptance 0.5–0.8.
* ``baoab``: stable for h < 2/sqrt(κ_max) (unit mass); exact for Gaussian configurational
  marginals, O(h²) otherwise; h = 0.5/sqrt(κ_max) as a default guess.
* friction (BAOAB): the slowest modes of a wide network are prior-dominated with curvature
  T λ_l, so critical damping of those, γ = 2 sqrt(T min λ_l), is the default.
"""

from __future__ import annotations

import math

import torch

__all__ = ["default_friction", "divergence_hint", "step_size_guidance", "stiffness"]


def default_friction(network_or_precisions, temperature: float) -> float:
    """γ = 2 sqrt(T min_l λ_l): critical damping of the prior-dominated (slowest) directions.

    The one definition of the BAOAB default. ``network_or_precisions`` is a network spec (its priors
    λ_0..λ_L) or a sequence of prior precisions."""
    priors = getattr(network_or_precisions, "priors", network_or_precisions)
    return 2.0 * math.sqrt(float(temperature) * min(priors))


def stiffness(model, params, A0: torch.Tensor, n_iter: int = 30, generator: torch.Generator | None = None) -> float:
    """Largest eigenvalue of J Jᵀ + T max λ over replicas, by power iteration (float64)."""
    params64 = [p.detach().double() for p in params]
    A = A0.double()
    R, P = params64[0].shape[0], A.shape[0]
    D = getattr(model, "n_outputs", 1)
    shape = (R, P) if D == 1 else (R, P, D)  # the shape of the outputs f
    u = torch.randn(shape, generator=generator, device=A.device, dtype=torch.float64)

    def unit(v):
        return v / v.flatten(1).norm(dim=-1).clamp_min(1e-300).reshape((R,) + (1,) * (v.dim() - 1))

    u = unit(u)
    lam = torch.zeros(R, dtype=torch.float64)
    T = model.temperature
    ps = [p.clone().requires_grad_(True) for p in params64]
    for _ in range(n_iter):
        # J Jᵀ u by two reverse passes (Jᵀu, then the gradient of (Jᵀu)·v in u), no forward mode
        uu = u.clone().requires_grad_(True)
        with torch.enable_grad():
            f = model.forward(ps, A)
            g = torch.autograd.grad(f, ps, grad_outputs=uu, create_graph=True)
            Jv = torch.autograd.grad(g, uu, grad_outputs=[gi.detach() for gi in g])[0]
        lam = (Jv * u).flatten(1).sum(-1)
        u = unit(Jv)
    return float(lam.max()) + T * max(model.precisions)


def step_size_guidance(kappa_max: float) -> dict[str, float]:
    """Suggested step sizes for each sampler given the stiffness κ_max (see module docstring)."""
    return {
        "euler": 0.1 / kappa_max,
        "euler_stability_limit": 2.0 / kappa_max,
        "mala": 0.5 / kappa_max,
        "baoab": 0.5 / math.sqrt(kappa_max),
        "baoab_stability_limit": 2.0 / math.sqrt(kappa_max),
    }


def divergence_hint(model, A0: torch.Tensor, cfg) -> str:
    """What to try after a divergence: a step size from the stiffness at a prior draw."""
    if cfg.sampler == "gibbs":
        return "exact Gibbs sweeps have no step size: check X, y and the priors for extreme values"
    try:
        gen = torch.Generator(device=A0.device).manual_seed(0)
        prm = model.init_params(min(cfg.replicas, 4), gen, "prior")
        kappa = stiffness(model, prm, A0, n_iter=20, generator=gen)
        g = step_size_guidance(kappa)
        limit = g["baoab_stability_limit" if cfg.sampler == "baoab" else "euler_stability_limit"]
        return (f"the potential's stiffness at a prior draw is about {kappa:.3g} (Gauss–Newton), so try "
                f"step_size <= {g[cfg.sampler]:.3g} for {cfg.sampler!r} (stability limit ~{limit:.3g})")
    except Exception as exc:  # the hint must not hide the divergence itself
        return f"try a step_size at least 4x smaller than {cfg.step_size:.3g} (stiffness estimate failed: {exc})"
