"""Theories of what a Bayesian network learns: estimators in the scikit-learn style.

``NNGP`` (infinite width, :mod:`finwidth.theory.nngp`), ``RKGP`` (renormalised kernels,
:mod:`finwidth.theory.rkgp`), ``BPKR`` (deep linear networks, :mod:`finwidth.theory.bpkr`),
``AdaptiveKernel`` (:mod:`finwidth.theory.adaptive`), all built on the GP-regression helpers of
:mod:`finwidth.theory.gp` and the scikit-learn contract of :mod:`finwidth.theory.base`. Imports are lazy.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "NNGP": "finwidth.theory.nngp",
    "RKGP": "finwidth.theory.rkgp",
    "BPKR": "finwidth.theory.bpkr",
    "AdaptiveKernel": "finwidth.theory.adaptive",
    "ErrorDecomposition": "finwidth.theory.gp",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'finwidth.theory' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
