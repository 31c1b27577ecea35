"""The network specification that both the theories and the simulations read.

Convention (docs/conventions.md): standard scaling,

    h^(1) = W^(0) x / sqrt(N_0) [+ b^(0)],   h^(l+1) = W^(l) σ(h^(l)) / sqrt(N_l) [+ b^(l)],
    f(x) = W^(L) σ(h^(L)) / sqrt(N_L) [+ b^(L)],

with W^(l)_ij ~ N(0, 1/λ_l): λ_l is a prior *precision* that does not scale with temperature.
Biases are absent unless asked for; b^(l) ~ N(0, σ_b,l²) with the *variances* σ_b,l² given.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from finwidth.errors import ConfigError
from finwidth.inputs import as_list, float_sequence, positive_int

if TYPE_CHECKING:  # pragma: no cover
    from finwidth.activations import Activation

__all__ = ["SCALINGS", "Network", "Readout", "check_scaling"]

SCALINGS = ("standard", "mean_field")
_as_float_sequence = float_sequence  # the former private name (kept for code written against it)


def check_scaling(scaling: Any) -> str:
    """``"standard"`` or ``"mean_field"`` (the output scale of the readout), else ConfigError."""
    if scaling not in SCALINGS:
        raise ConfigError(f"scaling must be 'standard' or 'mean_field', got {scaling!r}")
    return scaling


@dataclass(frozen=True)
class Readout:
    """The readout convention of a network spec: the one place where theory and simulation read it.

    The output is f = ``scale`` · Σ_m a_m φ_m over the M = ``size`` last-layer features φ (per
    output; ``outputs`` = D), with every readout weight a_m ~ N(0, 1/``prior``) (docs/conventions.md).

    The *standard form* of the same function is f = Φ a'/sqrt(M) with a' = ``standard_factor`` · a
    ~ N(0, 1/λ'), λ' = ``standard_precision`` = prior/(M scale²): λ_L in standard scaling, λ_L N for
    the mean-field FCN, λ_L C for the mean-field CNN. The readout-norm estimate of Q̄ is
    prior · ⟨|a|²⟩ / M (1 in the prior and at infinite width; BPKR §A.9).
    """

    size: int
    prior: float
    scale: float
    outputs: int = 1

    @property
    def standard_factor(self) -> float:
        """a' = standard_factor · a (= scale · sqrt(M); 1 in standard scaling)."""
        return self.scale * math.sqrt(self.size)

    @property
    def standard_precision(self) -> float:
        """λ', the prior precision of the standard-form readout a'."""
        return self.prior / (self.size * self.scale ** 2)



@dataclass(frozen=True)
class Network:
    """A fully connected Bayesian network of depth L with one output.

    Parameters
    ----------
    widths : sequence of int
        Hidden widths N_1..N_L; the depth is ``L = len(widths)`` (at least 1). An int means L = 1.
    activation : str or Activation
        Name in the activation registry (``finwidth.activations.available()``) or an object.
    priors : float or sequence of float
        Prior precisions λ_0..λ_L (length L+1; λ_L is the readout). Weights W^(l) ~ N(0, 1/λ_l).
        A scalar means all layers equal. Default 1.
    bias : None, float or sequence of float
        Prior *variances* σ_b² of the biases of h^(1)..h^(L) and of the output (length L+1).
        ``None`` (default) means no biases, as in the papers. A scalar means all equal; a zero
        entry means that layer has no bias.

    Examples
    --------
    >>> net = Network([500], "erf", priors=1.0)
    >>> net.depth, net.priors
    (1, (1.0, 1.0))
    """

    widths: tuple[int, ...]
    activation: Activation
    priors: tuple[float, ...] = field(default=1.0)  # type: ignore[assignment]
    bias: tuple[float, ...] | None = None

    def __init__(
        self,
        widths: int | Sequence[int],
        activation: str | Activation = "erf",
        priors: float | Sequence[float] = 1.0,
        bias: float | Sequence[float] | None = None,
    ):
        from finwidth.activations import get_activation

        if isinstance(widths, numbers.Real) and not isinstance(widths, bool):
            widths = [widths]
        widths_list = as_list(widths, f"widths must be a positive integer or a list of them, got {widths!r}")
        if not widths_list:
            raise ConfigError("widths must contain at least one hidden layer (N_1..N_L), got an empty list")
        checked = [positive_int(n, f"widths[{i}] (N_{i + 1})") for i, n in enumerate(widths_list)]
        depth = len(checked)
        object.__setattr__(self, "widths", tuple(checked))
        object.__setattr__(self, "activation", get_activation(activation))
        object.__setattr__(self, "priors", float_sequence(priors, depth + 1, "priors", allow_zero=False))
        if bias is None:
            object.__setattr__(self, "bias", None)
        else:
            b = float_sequence(bias, depth + 1, "bias", allow_zero=True)
            object.__setattr__(self, "bias", b if any(v > 0 for v in b) else None)

    @property
    def depth(self) -> int:
        """Number of hidden layers L."""
        return len(self.widths)

    @property
    def readout_prior(self) -> float:
        """λ_L, the precision of the readout weights."""
        return self.priors[-1]

    @property
    def n_outputs(self) -> int:
        """D, the number of outputs (one readout row each)."""
        return 1

    def readout_spec(self, scaling: str = "standard") -> Readout:
        """The readout convention: M = N_L weights, s_out = 1/sqrt(N_L) (``"standard"``, the
        convention of docs/conventions.md) or 1/N_L (``"mean_field"``), prior λ_L."""
        n = self.widths[-1]
        scale = 1.0 / math.sqrt(n) if check_scaling(scaling) == "standard" else 1.0 / n
        return Readout(size=n, prior=self.priors[-1], scale=scale, outputs=self.n_outputs)

    def bias_variances(self) -> tuple[float, ...]:
        """Bias variances σ_b,l² for l = 0..L (zeros when the network has no biases)."""
        return self.bias if self.bias is not None else (0.0,) * (self.depth + 1)

    def loads(self, n_train: int) -> tuple[float, ...]:
        """Load ratios α_l = P / N_l for a training set of size P."""
        if n_train < 1:
            raise ConfigError(f"the number of training points must be positive, got {n_train}")
        return tuple(n_train / n for n in self.widths)

    def with_widths(self, widths: int | Sequence[int]) -> Network:
        """The same network with other hidden widths (same depth)."""
        depth = 1 if isinstance(widths, numbers.Integral) else len(list(widths))
        if depth != self.depth:
            raise ConfigError(f"with_widths keeps the depth {self.depth}; got {depth} widths")
        return Network(widths, self.activation, self.priors, self.bias)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (activation by name)."""
        return {
            "widths": list(self.widths),
            "activation": self.activation.name,
            "priors": list(self.priors),
            "bias": None if self.bias is None else list(self.bias),
        }

    def __repr__(self) -> str:
        bias = "" if self.bias is None else f", bias={list(self.bias)}"
        return f"Network(widths={list(self.widths)}, activation={self.activation.name!r}, priors={list(self.priors)}{bias})"
