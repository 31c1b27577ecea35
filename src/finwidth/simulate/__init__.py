"""Posterior sampling of finite-width Bayesian networks (faithful, fast, self-diagnosing).

Entry points: :func:`sample_posterior` (returns :class:`PosteriorSamples`), :func:`resume` (continue
a checkpointed run) and :func:`suggest_step_size`. Samplers: ``"euler"`` (the papers' protocol),
``"baoab"``, ``"mala"`` and ``"gibbs"`` (exact, linear networks). See docs/sampling.md; the modules
and how they fit together are in docs/architecture.md.
"""

from finwidth.inputs import InputReduction
from finwidth.simulate.api import resume, sample_posterior, suggest_step_size
from finwidth.simulate.config import RunConfig
from finwidth.simulate.networks import BatchedMLP, LinearRegressionTarget
from finwidth.simulate.results import Diagnostics, ErrorEstimate, Estimate, PosteriorSamples

__all__ = [
    "BatchedMLP",
    "Diagnostics",
    "ErrorEstimate",
    "Estimate",
    "InputReduction",
    "LinearRegressionTarget",
    "PosteriorSamples",
    "RunConfig",
    "resume",
    "sample_posterior",
    "suggest_step_size",
]
