"""Posterior sampling of finite-width Bayesian networks (faithful, fast, self-diagnosing).

Entry points: :func:`sample_posterior` (returns :class:`PosteriorSamples`), :func:`resume` (continue
a checkpointed run) and :func:`suggest_step_size`. Samplers: ``"euler"`` (the papers' protocol),
``"baoab"``, ``"mala"`` and ``"gibbs"`` (exact, linear networks). See docs/sampling.md; the modules
and how they fit together are in docs/architecture.md.

torch is imported on first use of a name that needs it (a :class:`~finwidth.errors.MissingDependencyError`
says how to install it when it is missing), so that ``finwidth.simulate.config`` (the validation of
run options, used by the sweep specs) works without it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BatchedMLP": "finwidth.simulate.networks",
    "Diagnostics": "finwidth.simulate.results",
    "ErrorEstimate": "finwidth.simulate.results",
    "Estimate": "finwidth.simulate.results",
    "InputReduction": "finwidth.inputs",
    "LinearRegressionTarget": "finwidth.simulate.networks",
    "PosteriorSamples": "finwidth.simulate.results",
    "ProgressInfo": "finwidth.simulate.loop",
    "RunConfig": "finwidth.simulate.config",
    "resume": "finwidth.simulate.api",
    "sample_posterior": "finwidth.simulate.api",
    "suggest_step_size": "finwidth.simulate.api",
}

__all__ = sorted(_LAZY)


_TORCH_FREE = {"InputReduction", "RunConfig", "config"}


def __getattr__(name: str) -> Any:
    if name not in _TORCH_FREE and not name.startswith("_"):
        from finwidth._deps import require_torch

        require_torch("posterior sampling (finwidth.simulate, finwidth.sample_posterior)")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):  # a submodule, e.g. finwidth.simulate.checkpoint
        try:
            return importlib.import_module(f"finwidth.simulate.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"finwidth.simulate.{name}":
                raise
    raise AttributeError(f"module 'finwidth.simulate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
