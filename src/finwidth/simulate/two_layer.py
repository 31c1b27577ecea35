"""Two-layer models for the adaptive-kernel checks: the fully connected network in mean-field (or
standard) scaling and the CNN of :class:`finwidth.convnet.ConvNetwork`, as sampler potentials.

    FCN: h_c(x) = w_c · x / sqrt(N_0),           f(x) = s_out Σ_c a_c σ(h_c(x)),
    CNN: h_{c,i}(x) = w_c · x_i / sqrt(S),       f(x) = s_out Σ_c Σ_i a_{c,i} σ(h_{c,i}(x)),
    U(θ) = ½ Σ_μ (y^μ − f(x^μ))² + (T/2) (λ_0 ‖W‖² + λ_1 ‖a‖²),   target exp(−U/T),

with s_out read from the network spec (:meth:`finwidth.Network.readout_spec`,
:meth:`finwidth.convnet.ConvNetwork.readout_spec`): 1/N or 1/sqrt(N) for the FCN, 1/(C sqrt(Ñ)) or
1/sqrt(C Ñ) for the CNN (``scaling="mean_field"`` or ``"standard"``). Map to the adaptive-kernel (AK)
notes: σ_w²/d = 1/(λ_0 N_0), readout variance v_a = s_out²/λ_1, noise σ² = T. A mean-field network is
the standard one with readout precision λ_1 N (λ_1 C for the CNN) in function space; its Langevin
dynamics differ (the readout moves on an O(1) scale), which is why these are separate models.

Both follow the model protocol of :mod:`finwidth.simulate.models`, plus ``weight_covariance`` and
``preactivations`` (the observables of :func:`finwidth.simulate.weights.sample_weights`).
Parameters are ``[W, a]``: FCN W ``[R, N, N_0]``, a ``[R, 1, N]``; CNN W ``[R, C, S]`` (shared
filters), a ``[R, C, Ñ]`` (local readout: one weight per
channel and patch) or ``[R, C, 1]`` (pooled readout), inputs cut into patches ``[n, Ñ, S]`` by
``prepare_inputs`` (1-D blocks or 2-D windows, overlapping or not:
:meth:`finwidth.convnet.ConvNetwork.patches`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from finwidth.errors import ConfigError
from finwidth.inputs import positive_int, validate_temperature
from finwidth.network import check_scaling
from finwidth.simulate.networks import as_torch_dtype, gibbs_energy

__all__ = ["TwoLayerCNN", "TwoLayerFCN", "TwoLayerModel"]


class TwoLayerModel:
    """What the two-layer models share: the potential and its gradient, initialisation and the
    standard form of the readout. Subclasses set ``network``, ``width`` (N or C), ``in_scale`` and
    the parameter ``shapes`` and implement ``preactivations``, ``_output``, ``_features`` and
    ``_data_gradients``."""

    n_layers = 2
    readout_bias_var = 0.0
    supports_input_reduction = False

    def _setup(self, network, temperature, scaling, device, dtype) -> None:
        self.network = network
        self.scaling = check_scaling(scaling)
        self.temperature = validate_temperature(temperature, allow_zero=False)
        self.precisions = [float(p) for p in network.priors]
        self.device = torch.device(device)
        self.dtype = as_torch_dtype(dtype)
        self.act = network.activation.torch_pair
        self.readout = network.readout_spec(scaling)
        self.out_scale = self.readout.scale

    def init_params(self, replicas: int, generator: torch.Generator, mode: str = "prior") -> list[torch.Tensor]:
        """``[W, a]`` drawn from the prior (``mode="prior"``) or N(0, 1) (``"normal"``, the papers' code)."""
        if mode not in ("prior", "normal"):
            raise ConfigError(f"init mode must be 'prior' or 'normal', got {mode!r}")
        out = []
        for shape, lam in zip(self.shapes, self.precisions):
            t = torch.randn((replicas, *shape), generator=generator, device=self.device, dtype=self.dtype)
            out.append(t.mul_(1.0 / math.sqrt(lam)) if mode == "prior" else t)
        return out

    def forward(self, params, A0: torch.Tensor, extra_h1=None, *, keep: bool = False, derivatives: bool = True):
        """Outputs f ``[R, n]``; with ``keep=True`` also (σ(h), σ'(h)) for the backward pass."""
        if extra_h1 is not None:
            raise ConfigError(f"{type(self).__name__} does not simulate a reduced first layer (input_reduction)")
        s, d = self.act(self.preactivations(params, A0), derivatives)
        f = self._output(s, params[1]) * self.out_scale
        return (f, (s, d)) if keep else f

    def readout_features(self, params, A0: torch.Tensor, extra_h1=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, Φ)`` with Φ ``[R, n, M]`` the M readout features: f = Φ a'/sqrt(M) in the standard
        form of the readout (a' = ``readout.standard_factor`` · a ~ N(0, 1/``readout.standard_precision``))."""
        f, (s, _) = self.forward(params, A0, extra_h1, keep=True, derivatives=False)
        return f, self._features(s)

    def set_readout(self, params: list, a_std: torch.Tensor, b=None) -> None:
        """Put a standard-form readout a' ``[R, 1, M]`` into ``params`` as a = a'/standard_factor."""
        params[1] = (a_std.reshape(a_std.shape[0], *self.shapes[1]) / self.readout.standard_factor).to(self.dtype)

    def potential_and_grad(self, params, A0: torch.Tensor, y: torch.Tensor, *, need_grad: bool = True,
                           need_energy: bool = True):
        """U (float64, ``[R]``), [∂U/∂W, ∂U/∂a] and the loss ½Σ(y − f)² (float64); U and loss are
        None with ``need_energy=False`` (gradient-only Langevin steps)."""
        T = self.temperature
        W, a = params
        f, (s, d) = self.forward(params, A0, keep=True, derivatives=need_grad)
        resid = f - y
        U = loss = None
        if need_energy or not need_grad:
            U, loss = gibbs_energy(resid, params, self.precisions, T)
        if not need_grad:
            return U, None, loss
        gW, ga = self._data_gradients(resid, s, d, a, A0)
        gW = gW + (T * self.precisions[0]) * W
        ga = ga + (T * self.precisions[1]) * a
        return U, [gW, ga], loss

    def weight_covariance(self, params) -> torch.Tensor:
        """(1/width) Σ_c u_c u_cᵀ with u = w·in_scale, per replica (float64, ``[R, m, m]``)."""
        u = params[0].double() * self.in_scale
        return torch.matmul(u.transpose(-1, -2), u) / self.width


class TwoLayerFCN(TwoLayerModel):
    """R replicas of f(x) = s_out Σ_c a_c σ(w_c·x/sqrt(N_0)), gradients by hand.

    Parameters
    ----------
    network : finwidth.Network
        One hidden layer of width N, activation, priors (λ_0, λ_1); no biases.
    n_inputs : int
        N_0.
    temperature : float
        T > 0.
    scaling : {"mean_field", "standard"}
        s_out = 1/N or 1/sqrt(N).
    device, dtype : torch device and dtype ("float32"/"float64" or torch dtypes).
    """

    def __init__(self, network, n_inputs: int, temperature: float, *, scaling: str = "mean_field",
                 device="cpu", dtype="float64"):
        from finwidth.network import Network

        if not isinstance(network, Network) or network.depth != 1 or network.bias is not None:
            raise ConfigError("TwoLayerFCN needs a finwidth.Network with one hidden layer and no biases")
        self.n_inputs = positive_int(n_inputs, "n_inputs")
        self._setup(network, temperature, scaling, device, dtype)
        self.width = network.widths[0]
        self.in_scale = 1.0 / math.sqrt(self.n_inputs)
        self.shapes = [(self.width, self.n_inputs), (1, self.width)]

    def prepare_inputs(self, X) -> torch.Tensor:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_inputs or not np.all(np.isfinite(X)):
            raise ConfigError(f"inputs must be a finite (n, {self.n_inputs}) array, got shape {X.shape}")
        return torch.as_tensor(X, dtype=self.dtype, device=self.device)

    def preactivations(self, params, A0: torch.Tensor) -> torch.Tensor:
        """h = x·w/sqrt(N_0), shape ``[R, n, N]``."""
        return torch.matmul(A0, params[0].transpose(-1, -2)) * self.in_scale

    def _output(self, s, a):
        return torch.matmul(s, a.transpose(-1, -2)).squeeze(-1)

    def _features(self, s):
        return s

    def _data_gradients(self, resid, s, d, a, A0):  # type: ignore[no-untyped-def]
        ga = torch.matmul(resid.unsqueeze(1), s) * self.out_scale                      # [R, 1, N]
        delta = resid.unsqueeze(-1) * d * (a * self.out_scale)                          # [R, n, N]
        gW = torch.matmul(delta.transpose(-1, -2), A0) * self.in_scale                  # [R, N, N_0]
        return gW, ga


class TwoLayerCNN(TwoLayerModel):
    """R replicas of the two-layer CNN with hand-written gradients of U.

    Local readout: f = s_out Σ_c Σ_i a_ci σ(h_ci), a ``[R, C, Ñ]``; pooled readout (standard scaling):
    f = s_out Σ_c a_c (1/Ñ) Σ_i σ(h_ci), a ``[R, C, 1]``; h_ci = w_c·x_i/sqrt(S), W ``[R, C, S]``
    (S = ``network.patch_features``, the fan-in of 1-D blocks or 2-D windows alike).

    No input reduction: the filters are shared by every patch, so the exact reduction would use the
    span of all P·Ñ training patches, which is all of R^S as soon as P·Ñ ≥ S (always in practice).

    Parameters
    ----------
    network : finwidth.convnet.ConvNetwork
    temperature : float
        T > 0.
    scaling : {"mean_field", "standard"}
        The pooled readout is defined in standard scaling only.
    device, dtype : torch device and dtype.
    """

    def __init__(self, network, temperature: float, *, scaling: str = "mean_field", device="cpu", dtype="float64"):
        from finwidth.convnet import ConvNetwork

        if not isinstance(network, ConvNetwork):
            raise ConfigError(f"TwoLayerCNN needs a finwidth.convnet.ConvNetwork, got {type(network).__name__}")
        self._setup(network, temperature, scaling, device, dtype)
        self.pooled = network.readout == "pooled"
        self.width = network.channels
        self.n_patches = network.n_patches
        self.patch_size = network.patch_features
        self.n_inputs = network.input_size
        self.in_scale = 1.0 / math.sqrt(self.patch_size)
        self.shapes = [(self.width, self.patch_size), (self.width, 1 if self.pooled else self.n_patches)]
        # local readout: its C × Ñ matrix gives the estimator of the patch-patch Q (readout_outer)
        self.readout_groups = None if self.pooled else self.width

    def prepare_inputs(self, X) -> torch.Tensor:
        Z = self.network.patches(np.asarray(X, dtype=np.float64))
        return torch.as_tensor(Z, dtype=self.dtype, device=self.device)

    def preactivations(self, params, A0: torch.Tensor) -> torch.Tensor:
        """h_{c,i} = w_c·x_i/sqrt(S), shape ``[R, n, Ñ, C]``."""
        return torch.einsum("nis,rcs->rnic", A0, params[0]) * self.in_scale

    def _output(self, s, a):
        if self.pooled:
            return torch.einsum("rnic,rc->rn", s, a[..., 0]) / self.n_patches
        return torch.einsum("rnic,rci->rn", s, a)

    def _features(self, s):
        if self.pooled:
            return s.mean(2)                    # [R, n, C]: the patch-averaged channels
        return s.transpose(-1, -2).flatten(-2)  # channel-major, the order of a.flatten

    def _data_gradients(self, resid, s, d, a, A0):  # type: ignore[no-untyped-def]
        if self.pooled:
            w = self.out_scale / self.n_patches
            ga = torch.einsum("rn,rnic->rc", resid, s).unsqueeze(-1) * w
            delta = resid[:, :, None, None] * d * (a[..., 0][:, None, None, :] * w)      # [R, n, Ñ, C]
        else:
            ga = torch.einsum("rn,rnic->rci", resid, s) * self.out_scale
            delta = resid[:, :, None, None] * d * (a.transpose(-1, -2).unsqueeze(1) * self.out_scale)
        gW = torch.einsum("rnic,nis->rcs", delta, A0) * self.in_scale
        return gW, ga

    def readout_outer(self, params) -> torch.Tensor:
        """Σ_c a_c a_cᵀ (float64, ``[R, Ñ, Ñ]``) of the local readout's rows a_c ∈ R^Ñ."""
        a = params[1].double()
        return torch.matmul(a.transpose(-1, -2), a)

    def readout_outer_conditional(self, rc) -> torch.Tensor:
        """E[Σ_c a_c a_cᵀ | filters] from the readout's exact conditional ``rc``
        (:class:`~finwidth.simulate.observables.ReadoutConditional`), ``[R, Ñ, Ñ]``."""
        return rc.grouped_second_moment(self.width) / self.readout.standard_factor ** 2
