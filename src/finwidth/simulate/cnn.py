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
from finwidth.simulate.meanfield import _check_scaling, _check_temperature
from finwidth.simulate.networks import activation_pair, as_torch_dtype

__all__ = ["TwoLayerCNN"]


class TwoLayerCNN:
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

    def prepare_inputs(self, X) -> torch.Tensor:
        Z = self.network.patches(np.asarray(X, dtype=np.float64))
        return torch.as_tensor(Z, dtype=self.dtype, device=self.device)

    def init_params(self, replicas: int, generator: torch.Generator) -> list[torch.Tensor]:
        """A draw from the prior."""
        kw = dict(generator=generator, device=self.device, dtype=self.dtype)
        W = torch.randn((replicas, self.width, self.patch_size), **kw) / math.sqrt(self.precisions[0])
        a = torch.randn((replicas, self.width, self.n_patches), **kw) / math.sqrt(self.precisions[1])
        return [W, a]

    def preactivations(self, params, A0: torch.Tensor) -> torch.Tensor:
        """h_{c,i} = w_c·x_i/sqrt(S), shape ``[R, n, Ñ, C]``."""
        return torch.einsum("nis,rcs->rnic", A0, params[0]) * self.in_scale

    def forward(self, params, A0: torch.Tensor, *, keep: bool = False):
        h = self.preactivations(params, A0)
        s, d = self.act(h)
        f = torch.einsum("rnic,rci->rn", s, params[1]) * self.out_scale
        return (f, (s, d)) if keep else f

    def potential_and_grad(self, params, A0: torch.Tensor, y: torch.Tensor, *, need_grad: bool = True):
        """U (float64, ``[R]``), [∂U/∂W, ∂U/∂a] and the loss ½Σ(y − f)² (float64)."""
        T = self.temperature
        W, a = params
        f, (s, d) = self.forward(params, A0, keep=True)
        resid = f - y
        loss = 0.5 * resid.double().pow(2).sum(-1)
        prior = 0.5 * T * (self.precisions[0] * W.double().pow(2).sum((-1, -2))
                           + self.precisions[1] * a.double().pow(2).sum((-1, -2)))
        U = loss + prior
        if not need_grad:
            return U, None, loss
        ga = torch.einsum("rn,rnic->rci", resid, s) * self.out_scale
        delta = resid[:, :, None, None] * d * (a.transpose(-1, -2).unsqueeze(1) * self.out_scale)  # [R, n, Ñ, C]
        gW = torch.einsum("rnic,nis->rcs", delta, A0) * self.in_scale
        gW = gW + (T * self.precisions[0]) * W
        ga = ga + (T * self.precisions[1]) * a
        return U, [gW, ga], loss

    def weight_covariance(self, params) -> torch.Tensor:
        """(1/C) Σ_c u_c u_cᵀ with u = w/sqrt(S), per replica (float64, ``[R, S, S]``)."""
        u = params[0].double() * self.in_scale
        return torch.matmul(u.transpose(-1, -2), u) / self.width
