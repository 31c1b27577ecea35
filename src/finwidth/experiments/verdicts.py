"""When may a simulated number be compared with the theory? Convergence thresholds for verdicts.

A comparison "theory holds / fails" is only stated from chains whose test-error trace has mixed
across replicas and holds enough independent samples:

* split-R̂ of the test-error trace ≤ :data:`RHAT_MAX` (1.05: the upper end of the usual 1.01–1.05
  range, BDA3 §11.4; above it the replicas still disagree about the mean), and
* effective sample size of that trace, over all replicas, ≥ :data:`ESS_MIN` (100: the standard
  error is then itself known to about ±7%, 1/√(2·ESS)).

Otherwise the verdict is "not converged", with the R̂ and ESS, and the advice to run longer.
The demo (:mod:`finwidth.experiments.demo`) and the reproduction reports in
``examples/reproductions`` use these rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["ESS_MIN", "RHAT_MAX", "chain_quality", "converged"]

RHAT_MAX = 1.05
ESS_MIN = 100.0

# the ε_g trace: Rao–Blackwellised when the run had it, else the raw one
_TEST_TRACES = ("test_mse_rb", "test_mse_raw")


def _number(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def chain_quality(row: Mapping[str, Any], prefix: str = "sim.") -> tuple[float | None, float | None]:
    """(R̂, ESS) of the test-error trace in a row of a collected sweep table (None when absent)."""
    for trace in _TEST_TRACES:
        rhat = _number(row.get(f"{prefix}rhat_{trace}"))
        if rhat is not None:
            return rhat, _number(row.get(f"{prefix}ess_{trace}"))
    return None, None


def converged(rhat: float | None, ess: float | None) -> bool:
    """Whether a simulated ε_g may enter a verdict: R̂ ≤ RHAT_MAX and ESS ≥ ESS_MIN (both known)."""
    return rhat is not None and ess is not None and rhat <= RHAT_MAX and ess >= ESS_MIN
