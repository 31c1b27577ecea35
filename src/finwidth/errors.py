"""Exceptions raised by finwidth. Every error says what failed and what to try."""

from __future__ import annotations


class FinwidthError(Exception):
    """Base class of every finwidth error."""


class ConfigError(FinwidthError, ValueError):
    """Invalid user input: a shape, a value, a configuration key."""


class DataError(FinwidthError, OSError):
    """A data set is missing, truncated or corrupt."""


class ConvergenceError(FinwidthError, RuntimeError):
    """A solver could not return a verified answer.

    Attributes
    ----------
    residual : float or None
        Largest absolute stationarity residual at the best point found.
    suggestion : str
        What to try.
    """

    def __init__(self, message: str, *, residual: float | None = None, suggestion: str = ""):
        self.residual = residual
        self.suggestion = suggestion
        text = message
        if residual is not None:
            text += f" (residual {residual:.3g})"
        if suggestion:
            text += f". Try: {suggestion}"
        super().__init__(text)


class DivergenceError(FinwidthError, RuntimeError):
    """A simulation diverged (NaN/inf or energy blow-up)."""


class MissingDependencyError(FinwidthError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class ValidityWarning(UserWarning):
    """A theory's prediction is outside the region where it was checked against sampled networks.

    Raised (as a warning) by :meth:`finwidth.RKGP.fit` when its validity diagnostic (``validity_``)
    exceeds the calibrated threshold; the prediction is still returned. See docs/validity.md, "When
    to trust the theory".
    """


class NotConvergedWarning(UserWarning):
    """Sampled chains that have not converged (R̂ too large) or do not move (MALA acceptance near
    zero): their error bars are not to be trusted. ``warnings.simplefilter("error",
    NotConvergedWarning)`` turns it into an error."""


class ConditioningWarning(UserWarning):
    """An answer is sensitive to round-off: the problem is near-singular in float64.

    Raised (as a warning) when the relative error that round-off in the kernel's eigenvalues can
    put on the solution exceeds a threshold, e.g. a nearly rank-deficient kernel (few input
    dimensions, duplicated inputs) at a tiny temperature. The message gives the estimate and what
    to try.
    """
