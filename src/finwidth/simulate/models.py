"""The model interface of the sampling loop, and the model of each network spec.

A *model* is a potential U(θ) = ½ Σ_μ |y^μ − f(x^μ)|² + (T/2) Σ_i λ_i ‖θ_i‖² over R replicas (the
leading axis of every parameter tensor) with its gradient written by hand, plus what the recorder
needs to measure it. Every model of :mod:`finwidth.simulate` implements :class:`Model`; a new one
(a D-output readout, another architecture) plugs into the loop, the recorder and the estimates by
implementing it, and brings its own exact cost cuts:

* the Rao–Blackwellised readout needs ``readout_features`` (f and the M features Φ that the readout
  multiplies) and ``readout`` (the network spec's :class:`finwidth.network.Readout`): the loop then
  uses the exact Gaussian conditional of the readout given Φ (:mod:`finwidth.simulate.observables`);
* input reduction (``supports_input_reduction``) needs ``use_lower_inputs``, ``perp_preactivation``
  and ``perp_norm`` (:class:`finwidth.simulate.networks.BatchedMLP`).

Outputs are ``[R, n]`` for one output; a model with D outputs returns ``[R, n, D]`` and takes targets
``[P, D]`` (errors are summed over the output axis and averaged over points, as in the theory); its
``readout.outputs`` is D.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from finwidth.errors import ConfigError

__all__ = ["Model", "build_model", "network_from_dict", "network_kind"]


class Model(Protocol):
    """What the loop, the recorder and the samplers use of a model."""

    temperature: float
    precisions: list[float]       # prior precision of each parameter tensor (λ_l, 1/σ_b² for biases)
    n_layers: int                 # the first n_layers parameter tensors are the weights W^(0)..W^(L)
    readout: Any                  # finwidth.network.Readout of the network spec
    readout_bias_var: float       # σ_b² of the output bias (0: none)
    dtype: torch.dtype
    device: torch.device
    supports_input_reduction: bool

    def prepare_inputs(self, X) -> torch.Tensor: ...                     # numpy (n, N_0) -> model inputs
    def init_params(self, replicas: int, generator: torch.Generator, mode: str) -> list[torch.Tensor]: ...
    def forward(self, params, A, extra_h1=None, *, keep: bool = False): ...   # f [R, n] (or [R, n, D])
    def readout_features(self, params, A, extra_h1=None) -> tuple[torch.Tensor, torch.Tensor]: ...  # (f, Φ [R, n, M])
    def set_readout(self, params: list, a_std: torch.Tensor, b=None) -> None: ...  # standard-form readout in
    def potential_and_grad(self, params, A0, y, *, need_grad: bool = True, need_energy: bool = True): ...
    # -> (U [R] float64 or None, grads or None, loss [R] float64 or None)


def build_model(network, n_inputs: int, temperature: float, scaling: str = "standard", *,
                first_layer_inputs: int | None = None, n_outputs: int = 1, device="cpu", dtype=torch.float32):
    """The model of a network spec: :class:`~finwidth.simulate.networks.BatchedMLP` (standard
    scaling, any depth, ``n_outputs`` = D readout rows), :class:`~finwidth.simulate.two_layer.TwoLayerFCN`
    (``scaling="mean_field"``) or :class:`~finwidth.simulate.two_layer.TwoLayerCNN` (a ``ConvNetwork``,
    either scaling); the two-layer models have one output."""
    from finwidth.convnet import ConvNetwork

    if n_outputs != 1 and (isinstance(network, ConvNetwork) or scaling == "mean_field"):
        what = "the CNN" if isinstance(network, ConvNetwork) else "scaling='mean_field'"
        raise ConfigError(f"{what} has one output; the targets must be a vector (got {n_outputs} outputs)")
    if isinstance(network, ConvNetwork):
        from finwidth.simulate.two_layer import TwoLayerCNN

        return TwoLayerCNN(network, temperature, scaling=scaling, device=device, dtype=dtype)
    if scaling == "mean_field":
        from finwidth.simulate.two_layer import TwoLayerFCN

        if network.depth != 1 or network.bias is not None:
            raise ConfigError(f"scaling='mean_field' is implemented for one hidden layer without biases, got depth "
                              f"{network.depth}{' with biases' if network.bias is not None else ''}")
        return TwoLayerFCN(network, n_inputs, temperature, scaling="mean_field", device=device, dtype=dtype)
    from finwidth.simulate.networks import BatchedMLP

    return BatchedMLP(network, n_inputs, temperature, device=device, dtype=dtype, first_layer_inputs=first_layer_inputs,
                      n_outputs=n_outputs)


def network_kind(network) -> str:
    """``"conv"`` for a ConvNetwork, ``"fcn"`` for a Network (saved in checkpoints)."""
    from finwidth.convnet import ConvNetwork

    return "conv" if isinstance(network, ConvNetwork) else "fcn"


def network_from_dict(kind: str, d: dict):
    """Rebuild a network spec from :func:`network_kind` and its ``to_dict()``."""
    from finwidth.convnet import ConvNetwork
    from finwidth.network import Network

    if kind not in ("fcn", "conv"):
        raise ValueError(f"unknown network kind {kind!r}")
    return (ConvNetwork if kind == "conv" else Network)(**d)
