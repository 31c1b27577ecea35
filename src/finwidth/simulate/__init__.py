"""Posterior sampling of finite-width Bayesian networks (faithful, fast, self-diagnosing).

Entry points: :func:`sample_posterior` (returns :class:`PosteriorSamples`), :func:`resume` (continue
a checkpointed run) and :func:`suggest_step_size`. Samplers: ``"euler"`` (the papers' protocol),
``"baoab"``, ``"mala"`` and ``"gibbs"`` (exact, linear networks). See docs/sampling.md.
"""

from finwidth._deps import require_torch

require_torch("posterior sampling (finwidth.simulate, finwidth.sample_posterior)")

from finwidth.simulate.api import (  # noqa: E402 - after the check that torch is there
    Diagnostics,
    ErrorEstimate,
    Estimate,
    PosteriorSamples,
    resume,
    sample_posterior,
    suggest_step_size,
)
from finwidth.simulate.networks import BatchedMLP  # noqa: E402, InputReduction, LinearRegressionTarget

__all__ = [
    "BatchedMLP",
    "Diagnostics",
    "ErrorEstimate",
    "Estimate",
    "InputReduction",
    "LinearRegressionTarget",
    "PosteriorSamples",
    "resume",
    "sample_posterior",
    "suggest_step_size",
]
