"""finwidth: Bayesian deep networks beyond the infinite-width limit.

Theory (order parameters, renormalised-kernel predictors, errors, evidence) for finite-width
networks trained on a fixed data set, and posterior sampling of real finite-width networks to
check it. Conventions (priors as precisions, temperature, kernels) are in ``docs/conventions.md``.

Heavy modules (torch, scipy) are imported lazily: ``import finwidth`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "Network": "finwidth.network",
    "ConvNetwork": "finwidth.convnet",
    "Activation": "finwidth.activations",
    "NNGP": "finwidth.theory.nngp",
    "RKGP": "finwidth.theory.rkgp",
    "BPKR": "finwidth.theory.bpkr",
    "AdaptiveKernel": "finwidth.theory.adaptive",
    "sample_posterior": "finwidth.simulate",
    "PosteriorSamples": "finwidth.simulate",
    "FinwidthError": "finwidth.errors",
    "ConvergenceError": "finwidth.errors",
    "DataError": "finwidth.errors",
    "ConfigError": "finwidth.errors",
    "DivergenceError": "finwidth.errors",
    "NotConvergedWarning": "finwidth.errors",
    "ConditioningWarning": "finwidth.errors",
    "MissingDependencyError": "finwidth.errors",
    "ValidityWarning": "finwidth.errors",
    "threads": "finwidth.threads",
    "set_num_threads": "finwidth.threads",
}
_SUBMODULES = {"data", "activations", "kernels", "theory", "simulate", "experiments", "errors", "network", "convnet"}

__all__ = sorted(_LAZY) + sorted(_SUBMODULES)

if TYPE_CHECKING:  # pragma: no cover
    from finwidth.activations import Activation
    from finwidth.errors import (ConfigError, ConvergenceError, DataError, DivergenceError, FinwidthError,
                                 ValidityWarning)
    from finwidth.network import Network


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"finwidth.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'finwidth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
