"""Specification of the two-layer convolutional network of the adaptive-kernel theory.

Architecture (Seroussi, Naveh & Ringel 2023; Naveh & Ringel 2021): the input x ∈ R^{N_0} is cut
into Ñ = N_0 / S non-overlapping patches x_i ∈ R^S (stride = patch size S, contiguous blocks of
the flattened input), C filters w_c ∈ R^S are shared by all patches, and a linear readout
a_{c,i} (one weight per channel *and* patch, no pooling) gives

    standard scaling:  f(x) = 1/sqrt(C Ñ) · Σ_c Σ_i a_{c,i} σ(w_c · x_i / sqrt(S)),
    mean-field scaling: f(x) = 1/(C sqrt(Ñ)) · Σ_c Σ_i a_{c,i} σ(w_c · x_i / sqrt(S)),

with w_c ~ N(0, I/λ_0) and a_{c,i} ~ N(0, 1/λ_1): finwidth's convention (precisions that do not
scale with temperature, DESIGN.md §2) with the channel count C in the role of the width. The
Gibbs posterior is exp[−Σ_μ (y^μ − f(x^μ))²/(2T)] × prior, as for :class:`finwidth.Network`.
The infinite-channel (NNGP) kernel is K(x, x') = (1/(λ_1 Ñ)) Σ_i κ(x_i·x_i, x_i·x'_i, x'_i·x'_i)/(λ_0 S)
(κ of the activation, its arguments divided by λ_0 S).

Other patch layouts (2-D images, any fixed partition of the features into equal disjoint groups)
map onto this one by permuting the input columns so that each patch is a contiguous block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from finwidth.errors import ConfigError
from finwidth.inputs import float_sequence as _as_float_sequence
from finwidth.inputs import positive_int
from finwidth.network import Readout, check_scaling

if TYPE_CHECKING:  # pragma: no cover
    from finwidth.activations import Activation

__all__ = ["ConvNetwork"]


def _positive_int(value: Any, what: str) -> int:
    return positive_int(value, what)


@dataclass(frozen=True)
class ConvNetwork:
    """A two-layer CNN with non-overlapping patches, shared filters and a linear readout.

    Parameters
    ----------
    input_size : int
        N_0, the number of input features; must be a multiple of ``patch_size``.
    patch_size : int
        S, the filter size, equal to the stride (non-overlapping patches).
    channels : int
        C, the number of filters (the "width" of the network).
    activation : str or Activation
        Name in the activation registry or an object.
    priors : float or sequence of 2 floats
        Prior precisions (λ_0, λ_1) of the filters and of the readout: w ~ N(0, I/λ_0),
        a ~ N(0, 1/λ_1). A scalar means both equal. Default 1.

    Examples
    --------
    >>> net = ConvNetwork(input_size=12, patch_size=4, channels=64, activation="erf")
    >>> net.n_patches, net.width
    (3, 64)
    """

    input_size: int
    patch_size: int
    channels: int
    activation: Activation
    priors: tuple[float, float]

    def __init__(self, input_size: int, patch_size: int, channels: int, activation: str | Activation = "erf",
                 priors: float | tuple[float, float] = 1.0):
        from finwidth.activations import get_activation

        n0 = _positive_int(input_size, "input_size (N_0)")
        s = _positive_int(patch_size, "patch_size (S)")
        c = _positive_int(channels, "channels (C)")
        if n0 % s:
            raise ConfigError(f"input_size {n0} is not a multiple of patch_size {s}: the non-overlapping patches "
                              f"(stride = patch size) must tile the input exactly")
        object.__setattr__(self, "input_size", n0)
        object.__setattr__(self, "patch_size", s)
        object.__setattr__(self, "channels", c)
        object.__setattr__(self, "activation", get_activation(activation))
        object.__setattr__(self, "priors", _as_float_sequence(priors, 2, "priors", allow_zero=False))

    @property
    def n_patches(self) -> int:
        """Ñ = N_0 / S."""
        return self.input_size // self.patch_size

    @property
    def width(self) -> int:
        """C, the number of channels (the width that the finite-width theories see)."""
        return self.channels

    @property
    def readout_prior(self) -> float:
        """λ_1, the precision of the readout weights."""
        return self.priors[1]

    @property
    def n_outputs(self) -> int:
        """D, the number of outputs."""
        return 1

    def readout(self, scaling: str = "standard") -> Readout:
        """The readout convention: M = C·Ñ weights (one per channel and patch), s_out = 1/sqrt(C Ñ)
        (``"standard"``) or 1/(C sqrt(Ñ)) (``"mean_field"``), prior λ_1."""
        C, Nt = self.channels, self.n_patches
        scale = 1.0 / math.sqrt(C * Nt) if check_scaling(scaling) == "standard" else 1.0 / (C * math.sqrt(Nt))
        return Readout(size=C * Nt, prior=self.priors[1], scale=scale, outputs=self.n_outputs)

    def patches(self, X: Any, what: str = "X") -> np.ndarray:
        """Cut inputs into patches: (n, N_0) -> (n, Ñ, S), float64, validated."""
        from finwidth.inputs import as_inputs

        Xa = as_inputs(X, what)
        if Xa.shape[1] != self.input_size:
            raise ConfigError(f"{what} has {Xa.shape[1]} features but the network's input_size is {self.input_size}")
        return Xa.reshape(Xa.shape[0], self.n_patches, self.patch_size)

    def with_channels(self, channels: int) -> ConvNetwork:
        """The same network with another number of channels."""
        return ConvNetwork(self.input_size, self.patch_size, channels, self.activation, self.priors)

    def loads(self, n_train: int) -> tuple[float]:
        """Load ratio α = P / C."""
        if n_train < 1:
            raise ConfigError(f"the number of training points must be positive, got {n_train}")
        return (n_train / self.channels,)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (activation by name)."""
        return {"input_size": self.input_size, "patch_size": self.patch_size, "channels": self.channels,
                "activation": self.activation.name, "priors": list(self.priors)}

    def __repr__(self) -> str:
        return (f"ConvNetwork(input_size={self.input_size}, patch_size={self.patch_size}, channels={self.channels}, "
                f"activation={self.activation.name!r}, priors={list(self.priors)})")
