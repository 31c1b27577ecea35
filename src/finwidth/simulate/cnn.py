"""The two-layer CNN of :class:`finwidth.convnet.ConvNetwork` as a sampler model.

    h_{c,i}(x) = w_c · x_i / sqrt(S),   f(x) = s_out Σ_c Σ_i a_{c,i} σ(h_{c,i}(x)),
    s_out = 1/(C sqrt(Ñ)) (``scaling="mean_field"``) or 1/sqrt(C Ñ) (``"standard"``),
    U(θ) = ½ Σ_μ (y^μ − f(x^μ))² + (T/2) (λ_0 ‖W‖² + λ_1 ‖a‖²).

Same protocol as :class:`finwidth.simulate.meanfield.TwoLayerFCN` (samplers and
:func:`finwidth.simulate.meanfield.sample_weights`). Parameters: ``[W, a]`` with W shaped
``[R, C, S]`` (shared filters) and a ``[R, C, Ñ]`` (one readout weight per channel and patch).
Inputs are patches ``[n, Ñ, S]`` (``prepare_inputs`` cuts them).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from finwidth.errors import ConfigError
from finwidth.simulate.meanfield import TwoLayerModel, _check_scaling, _check_temperature, _init_weights
from finwidth.simulate.networks import activation_pair, as_torch_dtype

__all__ = ["TwoLayerCNN"]


class TwoLayerCNN(TwoLayerModel):
    """R replicas of the two-layer CNN with hand-written gradients of U.

    Parameters
    ----------
    network : finwidth.convnet.ConvNetwork
    temperature : float
        T > 0.
    scaling : {"mean_field", "standard"}
    device, dtype : torch device and dtype.
    """

    def __init__(self, network, temperature: float, *, scaling: str = "mean_field", device="cpu", dtype="float64"):
        from finwidth.convnet import ConvNetwork

        if not isinstance(network, ConvNetwork):
            raise ConfigError(f"TwoLayerCNN needs a finwidth.convnet.ConvNetwork, got {type(network).__name__}")
        self.network = network
        self.scaling = _check_scaling(scaling)
        self.temperature = _check_temperature(temperature)
        self.width = network.channels
        self.n_patches = network.n_patches
        self.patch_size = network.patch_size
        self.precisions = [float(p) for p in network.priors]
        self.device = torch.device(device)
        self.dtype = as_torch_dtype(dtype)
        self.act = activation_pair(network.activation)
        self.in_scale = 1.0 / math.sqrt(self.patch_size)
        C, Nt = self.width, self.n_patches
        self.out_scale = 1.0 / (C * math.sqrt(Nt)) if scaling == "mean_field" else 1.0 / math.sqrt(C * Nt)
        # standard form of the readout: f = Φ a' / sqrt(C Ñ) with Φ the C·Ñ features (channel-major),
        # a' = a sqrt(C Ñ) s_out ~ N(0, 1/λ'), λ' = λ_1/(C Ñ s_out²) (λ_1 C in mean field)
        self.readout_size = C * Nt
        self.readout_scale = self.out_scale * math.sqrt(C * Nt)
        self.readout_precision = self.precisions[1] / self.readout_scale ** 2
        self.readout_bias_var = 0.0

    def prepare_inputs(self, X) -> torch.Tensor:
        Z = self.network.patches(np.asarray(X, dtype=np.float64))
        return torch.as_tensor(Z, dtype=self.dtype, device=self.device)

    def init_params(self, replicas: int, generator: torch.Generator, mode: str = "prior") -> list[torch.Tensor]:
        """``[W, a]`` drawn from the prior (``mode="prior"``) or N(0, 1) (``"normal"``)."""
        return _init_weights([(self.width, self.patch_size), (self.width, self.n_patches)], self.precisions,
                             replicas, generator, mode, self.device, self.dtype)

    def preactivations(self, params, A0: torch.Tensor) -> torch.Tensor:
        """h_{c,i} = w_c·x_i/sqrt(S), shape ``[R, n, Ñ, C]``."""
        return torch.einsum("nis,rcs->rnic", A0, params[0]) * self.in_scale

    def forward(self, params, A0: torch.Tensor, *, keep: bool = False):
        h = self.preactivations(params, A0)
        s, d = self.act(h)
        f = torch.einsum("rnic,rci->rn", s, params[1]) * self.out_scale
        return (f, (s, d)) if keep else f

    def readout_features(self, params, A0: torch.Tensor, extra_h1=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, Φ)`` with Φ_{(c,i)} = σ(h_{c,i}) ``[R, n, C·Ñ]`` (channel-major, the order of ``a.flatten``):
        f = Φ a' / sqrt(C Ñ) in the standard readout form (``readout_precision`` λ')."""
        if extra_h1 is not None:
            raise ConfigError("TwoLayerCNN does not simulate a reduced first layer (input_reduction)")
        f, (s, _) = self.forward(params, A0, keep=True)
        return f, s.transpose(-1, -2).flatten(-2)

    def set_readout(self, params: list, a_std: torch.Tensor) -> None:
        """Put a standard-form readout a' ``[R, 1, C·Ñ]`` into ``params`` as a = a'/(s_out sqrt(C Ñ))."""
        a = a_std.reshape(a_std.shape[0], self.width, self.n_patches) / self.readout_scale
        params[1] = a.to(self.dtype)

    def _data_gradients(self, resid, s, d, a, A0):  # type: ignore[no-untyped-def]
        ga = torch.einsum("rn,rnic->rci", resid, s) * self.out_scale
        delta = resid[:, :, None, None] * d * (a.transpose(-1, -2).unsqueeze(1) * self.out_scale)  # [R, n, Ñ, C]
        gW = torch.einsum("rnic,nis->rcs", delta, A0) * self.in_scale
        return gW, ga

    def weight_covariance(self, params) -> torch.Tensor:
        """(1/C) Σ_c u_c u_cᵀ with u = w/sqrt(S), per replica (float64, ``[R, S, S]``)."""
        u = params[0].double() * self.in_scale
        return torch.matmul(u.transpose(-1, -2), u) / self.width
