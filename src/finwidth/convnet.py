"""Specification of the two-layer convolutional network (one convolutional hidden layer).

Architecture (standard scaling, finwidth's convention, docs/conventions.md): the input x ∈ R^{N_0}
is cut into Ñ patches x_i ∈ R^S, C filters w_c ∈ R^S are shared by all patches, and a linear
readout gives

    local readout  (one weight per channel *and* patch):
        f(x) = 1/sqrt(C Ñ) · Σ_c Σ_i a_{c,i} σ(w_c · x_i / sqrt(S)),
    pooled readout (global average pooling, one weight per channel):
        f(x) = 1/sqrt(C) · Σ_c a_c · (1/Ñ) Σ_i σ(w_c · x_i / sqrt(S)),

with w_c ~ N(0, I/λ_0) and a ~ N(0, 1/λ_1): precisions that do not scale with temperature, the
channel count C in the role of the width. The Gibbs posterior is exp[−Σ_μ (y^μ − f(x^μ))²/(2T)]
× prior, as for :class:`finwidth.Network`. (The adaptive-kernel theory and its sampler also use a
mean-field readout 1/(C sqrt(Ñ)); they take that scaling as their own option.)

Patches:

* 1-D (``image_shape=None``, the default): contiguous blocks of the flattened input,
  x_i = x[i·stride : i·stride + S], Ñ = (N_0 − S)/stride + 1; ``stride`` defaults to S (disjoint
  blocks, Ñ = N_0/S).
* 2-D (``image_shape=(H, W)``): x is an H×W image flattened row by row (x[r·W + c]); patches are
  p_h×p_w windows at strides (s_h, s_w), ordered row by row over their positions, each flattened
  row by row (S = p_h p_w). Overlapping windows (stride < patch) are allowed. Disjoint 2-D windows
  are a column permutation of contiguous blocks (:attr:`ConvNetwork.patch_index`); this is also
  the order of deepbays' ``divide2dImage``.

NNGP kernel (infinite C), with c_ij(x, x') = x_i·x'_j/(λ_0 S) and K_ij(x, x') =
κ(c_ii(x, x), c_ij(x, x'), c_jj(x', x')) (κ of the activation, no 1/λ inside):

    local:  K(x, x') = (1/(λ_1 Ñ)) Σ_i K_ii(x, x'),      pooled: K(x, x') = (1/(λ_1 Ñ²)) Σ_ij K_ij(x, x').

:func:`finwidth.conv_kernels.conv_nngp` computes it (also through :func:`finwidth.kernels.nngp`).
"""

from __future__ import annotations

import math
import numbers
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

_READOUTS = ("local", "pooled")


def _pair(value: Any, what: str) -> tuple[int, int]:
    """An int (square) or a pair of positive ints."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = positive_int(value, what)
        return (v, v)
    try:
        items = list(value)
    except TypeError as exc:
        raise ConfigError(f"{what} must be a positive integer or a pair of them, got {value!r}") from exc
    if len(items) != 2:
        raise ConfigError(f"{what} must be a positive integer or a pair (rows, columns), got {value!r}")
    return (positive_int(items[0], f"{what}[0]"), positive_int(items[1], f"{what}[1]"))


def _positions(length: int, patch: int, stride: int, what: str) -> int:
    """Number of windows of size ``patch`` at ``stride`` that tile ``length`` exactly."""
    if patch > length:
        raise ConfigError(f"the patch ({patch}) is larger than the {what} ({length})")
    if (length - patch) % stride:
        raise ConfigError(
            f"patches of size {patch} at stride {stride} do not tile the {what} of {length}: "
            f"({length} − {patch}) is not a multiple of {stride}; the last window would stick out or leave "
            "features unused (pad or crop the input, or change the stride)"
        )
    return (length - patch) // stride + 1


@dataclass(frozen=True)
class ConvNetwork:
    """A two-layer CNN: shared filters over patches, a local or pooled linear readout.

    Parameters
    ----------
    input_size : int
        N_0, the number of input features (H·W for images).
    patch_size : int or (int, int)
        1-D inputs: S, the number of contiguous features per patch. Images: the window p_h×p_w
        (an int means square), S = p_h p_w.
    channels : int
        C, the number of filters (the width of the network; C ≥ 1).
    activation : str or Activation
        Name in the activation registry or an object.
    priors : float or sequence of 2 floats
        Prior precisions (λ_0, λ_1) of the filters and of the readout: w ~ N(0, I/λ_0),
        a ~ N(0, 1/λ_1). A scalar means both equal. Default 1.
    image_shape : (int, int), optional
        (H, W) with H·W = N_0: cut 2-D windows of the row-major image. Default: 1-D blocks.
    stride : int or (int, int), optional
        Step between windows (images: per axis). Default: the patch size (disjoint patches).
        The windows must tile the input exactly: (N_0 − S) (images: H − p_h and W − p_w) must be
        a multiple of the stride.
    readout : {"local", "pooled"}
        ``"local"``: one readout weight per channel and patch, f = Σ_{c,i} a_{c,i} σ(·)/sqrt(C Ñ)
        (the network of the local kernel renormalisation). ``"pooled"``: global average pooling,
        f = Σ_c a_c (1/Ñ) Σ_i σ(·)/sqrt(C).

    Examples
    --------
    >>> net = ConvNetwork(input_size=12, patch_size=4, channels=64, activation="erf")
    >>> net.n_patches, net.width
    (3, 64)
    >>> img = ConvNetwork(784, 4, 100, "erf", image_shape=(28, 28))     # 4×4 windows, stride 4
    >>> img.n_patches, img.patch_features
    (49, 16)
    >>> ConvNetwork(36, 3, 8, image_shape=(6, 6), stride=1).n_patches   # overlapping 3×3 windows
    16
    """

    input_size: int
    patch_size: int | tuple[int, int]
    channels: int
    activation: Activation
    priors: tuple[float, float]
    image_shape: tuple[int, int] | None
    stride: int | tuple[int, int]
    readout: str

    def __init__(self, input_size: int, patch_size: int | tuple[int, int], channels: int,
                 activation: str | Activation = "erf", priors: float | tuple[float, float] = 1.0, *,
                 image_shape: tuple[int, int] | None = None, stride: int | tuple[int, int] | None = None,
                 readout: str = "local"):
        from finwidth.activations import get_activation

        n0 = positive_int(input_size, "input_size (N_0)")
        c = positive_int(channels, "channels (C)")
        if readout not in _READOUTS:
            raise ConfigError(f"readout must be 'local' (one weight per channel and patch) or 'pooled' "
                              f"(global average pooling), got {readout!r}")
        if image_shape is None:
            s = positive_int(patch_size, "patch_size (S)")
            st = s if stride is None else positive_int(stride, "stride")
            if stride is None and n0 % s:
                raise ConfigError(f"input_size {n0} is not a multiple of patch_size {s}: the non-overlapping patches "
                                  f"(stride = patch size) must tile the input exactly")
            _positions(n0, s, st, "input")
            patch: int | tuple[int, int] = s
            step: int | tuple[int, int] = st
            shape = None
        else:
            shape = _pair(image_shape, "image_shape")
            if shape[0] * shape[1] != n0:
                raise ConfigError(f"image_shape {shape} has {shape[0] * shape[1]} pixels but input_size (N_0) is {n0}; "
                                  "images are flattened row by row, so H·W must equal N_0")
            patch = _pair(patch_size, "patch_size")
            step = patch if stride is None else _pair(stride, "stride")
            _positions(shape[0], patch[0], step[0], "image height")
            _positions(shape[1], patch[1], step[1], "image width")
        object.__setattr__(self, "input_size", n0)
        object.__setattr__(self, "patch_size", patch)
        object.__setattr__(self, "channels", c)
        object.__setattr__(self, "activation", get_activation(activation))
        object.__setattr__(self, "priors", _as_float_sequence(priors, 2, "priors", allow_zero=False))
        object.__setattr__(self, "image_shape", shape)
        object.__setattr__(self, "stride", step)
        object.__setattr__(self, "readout", readout)

    # ------------------------------------------------------------------------------ geometry
    @property
    def patch_features(self) -> int:
        """S, the number of input features per patch (the filter's fan-in)."""
        p = self.patch_size
        return p[0] * p[1] if isinstance(p, tuple) else p

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Number of window positions per axis (1-D inputs: (1, Ñ))."""
        if self.image_shape is None:
            s, st = self.patch_features, self.stride
            return (1, (self.input_size - s) // st + 1)  # type: ignore[operator]
        (h, w), (ph, pw), (sh, sw) = self.image_shape, self.patch_size, self.stride  # type: ignore[misc]
        return ((h - ph) // sh + 1, (w - pw) // sw + 1)

    @property
    def n_patches(self) -> int:
        """Ñ, the number of patches."""
        rows, cols = self.patch_grid
        return rows * cols

    @property
    def patch_index(self) -> np.ndarray:
        """(Ñ, S) integer array: patch i is ``x[patch_index[i]]`` (feature indices of the flat input)."""
        if self.image_shape is None:
            starts = np.arange(self.n_patches) * self.stride
            return starts[:, None] + np.arange(self.patch_features)[None, :]
        (_, w), (ph, pw), (sh, sw) = self.image_shape, self.patch_size, self.stride  # type: ignore[misc]
        rows, cols = self.patch_grid
        window = (np.arange(ph)[:, None] * w + np.arange(pw)[None, :]).ravel()
        corners = (np.arange(rows)[:, None] * sh * w + np.arange(cols)[None, :] * sw).ravel()
        return corners[:, None] + window[None, :]

    @property
    def contiguous(self) -> bool:
        """True if the patches are disjoint contiguous blocks covering the input (a reshape cuts them)."""
        idx = self.patch_index
        return bool(idx.size == self.input_size and np.array_equal(idx.ravel(), np.arange(self.input_size)))

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

    def readout_spec(self, scaling: str = "standard") -> Readout:
        """The readout convention (:class:`finwidth.network.Readout`). Local readout: M = C·Ñ weights
        (one per channel and patch), s_out = 1/sqrt(C Ñ) (``"standard"``) or 1/(C sqrt(Ñ))
        (``"mean_field"``); pooled readout: M = C weights on the patch-averaged features, s_out =
        1/sqrt(C) (standard scaling only). Prior λ_1."""
        C, Nt = self.channels, self.n_patches
        standard = check_scaling(scaling) == "standard"
        if self.readout == "pooled":
            if not standard:
                raise ConfigError("the pooled readout is defined in standard scaling only (scaling='standard')")
            return Readout(size=C, prior=self.priors[1], scale=1.0 / math.sqrt(C), outputs=self.n_outputs)
        scale = 1.0 / math.sqrt(C * Nt) if standard else 1.0 / (C * math.sqrt(Nt))
        return Readout(size=C * Nt, prior=self.priors[1], scale=scale, outputs=self.n_outputs)

    def patches(self, X: Any, what: str = "X") -> np.ndarray:
        """Cut inputs into patches: (n, N_0) -> (n, Ñ, S), float64, validated."""
        from finwidth.inputs import as_inputs

        Xa = as_inputs(X, what)
        if Xa.shape[1] != self.input_size:
            raise ConfigError(f"{what} has {Xa.shape[1]} features but the network's input_size is {self.input_size}")
        if self.contiguous:
            return Xa.reshape(Xa.shape[0], self.n_patches, self.patch_features)
        return Xa[:, self.patch_index]

    # ------------------------------------------------------------------------------ variants
    def with_channels(self, channels: int) -> ConvNetwork:
        """The same network with another number of channels."""
        return ConvNetwork(self.input_size, self.patch_size, channels, self.activation, self.priors,
                           image_shape=self.image_shape, stride=self.stride, readout=self.readout)

    def loads(self, n_train: int) -> tuple[float]:
        """Load ratio α = P / C."""
        if n_train < 1:
            raise ConfigError(f"the number of training points must be positive, got {n_train}")
        return (n_train / self.channels,)

    def _extras(self) -> dict[str, Any]:
        """Settings that differ from the 1-D disjoint local default (so old descriptions stay valid)."""
        out: dict[str, Any] = {}
        if self.image_shape is not None:
            out["image_shape"] = list(self.image_shape)
        if self.stride != self.patch_size:
            out["stride"] = list(self.stride) if isinstance(self.stride, tuple) else self.stride
        if self.readout != "local":
            out["readout"] = self.readout
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (activation by name); ``ConvNetwork(**d)`` rebuilds it."""
        patch = list(self.patch_size) if isinstance(self.patch_size, tuple) else self.patch_size
        return {"input_size": self.input_size, "patch_size": patch, "channels": self.channels,
                "activation": self.activation.name, "priors": list(self.priors), **self._extras()}

    def __repr__(self) -> str:
        extras = "".join(f", {k}={tuple(v) if isinstance(v, list) else v!r}" for k, v in self._extras().items())
        patch = self.patch_size
        return (f"ConvNetwork(input_size={self.input_size}, patch_size={patch}, channels={self.channels}, "
                f"activation={self.activation.name!r}, priors={list(self.priors)}{extras})")
