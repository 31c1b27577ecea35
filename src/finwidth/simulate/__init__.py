"""Posterior sampling of finite-width Bayesian networks (faithful, fast, self-diagnosing).

Entry points: :func:`sample_posterior` (returns :class:`PosteriorSamples`), :func:`resume` (continue
a checkpointed run) and :func:`suggest_step_size`. Samplers: ``"euler"`` (the papers' protocol),
``"baoab"``, ``"mala"`` and ``"gibbs"`` (exact, linear networks). See docs/sampling.md; the modules
and how they fit together are in docs/architecture.md.
"""

from finwidth._deps import require_torch

require_torch("posterior sampling (finwidth.simulate, finwidth.sample_posterior)")

# noqa: E402 below - imported after the check that torch is there
from finwidth.inputs import InputReduction  # noqa: E402
from finwidth.simulate.api import resume, sample_posterior, suggest_step_size  # noqa: E402
from finwidth.simulate.config import RunConfig  # noqa: E402
from finwidth.simulate.networks import BatchedMLP, LinearRegressionTarget  # noqa: E402
from finwidth.simulate.results import Diagnostics, ErrorEstimate, Estimate, PosteriorSamples  # noqa: E402

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
