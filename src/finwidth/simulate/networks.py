"""Batched finite-width networks with hand-written gradients of the Langevin potential.

Convention (docs/conventions.md): h^(1) = W^(0) x / sqrt(N_0) [+ b^(0)], h^(l+1) = W^(l) σ(h^(l)) / sqrt(N_l)
[+ b^(l)], f = W^(L) σ(h^(L)) / sqrt(N_L) [+ b^(L)], and the potential at temperature T is

    U(θ) = ½ Σ_μ (y^μ − f(x^μ))² + (T/2) Σ_l λ_l ‖W^(l)‖² + (T/2) Σ_l ‖b^(l)‖² / σ_b,l²,

so that exp(−U/T) is the posterior. R independent replicas are the leading batch dimension of
every parameter tensor: weights are shaped ``[R, N_out, N_in]``, biases ``[R, N_out]``.

Input reduction (exact; :class:`finwidth.inputs.InputReduction`): the model then simulates
``W_span`` (shape ``[R, N_1, r]``) on the reduced inputs X B, keeping the 1/sqrt(N_0) scale, and
test points get W_perp x_perp / sqrt(N_0) drawn fresh (:meth:`BatchedMLP.perp_preactivation`).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Sequence

import numpy as np
import torch

from finwidth.errors import ConfigError

__all__ = ["BatchedMLP", "LinearRegressionTarget", "as_torch_dtype", "gibbs_energy"]


def as_torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map ``"float32"``/``"float64"`` (or a torch dtype) to a torch floating dtype."""
    table = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32,
             torch.float64: torch.float64}
    try:
        return table[dtype]
    except (KeyError, TypeError):
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None


def gibbs_energy(resid: torch.Tensor, params: Sequence[torch.Tensor], precisions: Sequence[float],
                 temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The Langevin potential U and the loss per replica, float64 (docs/conventions.md).

    Parameters
    ----------
    resid : torch.Tensor
        f − y on the training set, shape ``[R, P]`` or ``[R, P, D]`` (any float dtype).
    params : sequence of torch.Tensor
        Parameter tensors with the replica as leading dimension.
    precisions : sequence of float
        Prior precision of each parameter tensor (λ_l, or 1/σ_b² for a bias).
    temperature : float
        T (multiplies the prior term).

    Returns
    -------
    U, loss : torch.Tensor
        ``loss`` = ½ Σ_μ (y − f)², ``U`` = loss + (T/2) Σ_i λ_i ‖θ_i‖², both float64 ``[R]``.
    """
    loss = 0.5 * resid.double().pow(2).flatten(1).sum(-1)
    U = loss.clone()
    for p, lam in zip(params, precisions):
        U += (0.5 * temperature * lam) * p.double().pow(2).flatten(1).sum(-1)
    return U, loss


class BatchedMLP:
    """R replicas of a fully connected network, with the potential U and its gradient by hand.

    Parameters
    ----------
    network : finwidth.Network
        Depth L, widths, activation, priors λ_0..λ_L and optional bias variances.
    n_inputs : int
        N_0, the input dimension (sets the 1/sqrt(N_0) scale).
    temperature : float
        T > 0 (multiplies the prior term of U).
    first_layer_inputs : int, optional
        Columns of the first-layer weights actually simulated (r under input reduction; default
        N_0).
    n_outputs : int
        D, the number of outputs: the readout is ``[R, D, N_L]`` (D independent rows with the prior
        λ_L), outputs are ``[R, n]`` for D = 1 and ``[R, n, D]`` otherwise, targets ``[P]`` or ``[P, D]``.
    device, dtype : torch device and dtype of the parameters.

    Notes
    -----
    Parameters are a list of tensors: W^(0), …, W^(L) (shapes ``[R, N_{l+1}, N_l]``, the readout
    ``[R, D, N_L]``) followed by the biases that exist (``[R, N_{l+1}]``, the output bias ``[R, D]``). ``precisions[i]`` is the
    prior precision of ``params[i]`` (λ_l for weights, 1/σ_b² for biases).
    """

    supports_input_reduction = True

    def __init__(self, network, n_inputs: int, temperature: float, *, first_layer_inputs: int | None = None,
                 n_outputs: int = 1, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.network = network
        self.n_inputs = int(n_inputs)
        self.temperature = float(temperature)
        self.device = torch.device(device)
        self.dtype = dtype
        self.depth = network.depth
        self.n_layers = network.depth + 1
        self.act = network.activation.torch_pair
        self.act_into = network.activation.torch_pair_into
        self.linear = network.activation.identity
        fan_in = [self.n_inputs, *network.widths]
        self.scales = [1.0 / math.sqrt(n) for n in fan_in]
        cols = [int(first_layer_inputs or self.n_inputs), *network.widths]
        self.n_outputs = int(n_outputs)
        rows = [*network.widths, self.n_outputs]
        self.weight_shapes = [(rows[l], cols[l]) for l in range(self.depth + 1)]
        bias_var = network.bias_variances()
        self.bias_layers = [l for l in range(self.depth + 1) if bias_var[l] > 0]
        self.precisions = [float(p) for p in network.priors] + [1.0 / bias_var[l] for l in self.bias_layers]
        # already the standard form f = Φ a / sqrt(N_L); one row per output
        self.readout = dataclasses.replace(network.readout_spec("standard"), outputs=self.n_outputs)
        self.readout_bias_var = float(bias_var[self.depth])
        self._lower = None  # (declared training inputs, their LowerTrapezoid): see use_lower_inputs
        self._work: dict = {}  # per-thread scratch buffers of the gradient's forward pass (_scratch)

    # ---------------------------------------------------------------- parameters
    def n_params(self) -> list[int]:
        """Number of scalars per replica in each parameter tensor."""
        return [r * c for r, c in self.weight_shapes] + [self.weight_shapes[l][0] for l in self.bias_layers]

    def init_params(self, replicas: int, generator: torch.Generator, mode: str = "normal") -> list[torch.Tensor]:
        """Initial parameters: ``"normal"`` is N(0, 1) for every weight (the papers' code, biases
        from their prior); ``"prior"`` draws everything from the prior."""
        params = []
        for i, n in enumerate([*self.weight_shapes, *[(self.weight_shapes[l][0],) for l in self.bias_layers]]):
            t = torch.randn((replicas, *n), generator=generator, device=self.device, dtype=self.dtype)
            if mode == "prior" or i > self.depth:
                t.mul_(1.0 / math.sqrt(self.precisions[i]))
            elif mode != "normal":
                raise ConfigError(f"init must be 'normal', 'prior' or 'readout_conditional', got {mode!r}")
            params.append(t)
        return params

    def prepare_inputs(self, X) -> torch.Tensor:
        """Inputs (n, N_0), or reduced (n, r), as a tensor of the model's dtype and device."""
        return torch.as_tensor(np.asarray(X, dtype=np.float64), dtype=self.dtype, device=self.device)

    def perp_preactivation(self, F: torch.Tensor, generator: torch.Generator, replicas: int) -> torch.Tensor:
        """A fresh draw of W_perp x_perp / sqrt(N_0) at points whose orthogonal parts have the factor
        F (``[n, k]``, :meth:`finwidth.inputs.InputReduction.perp_factor`): ``[R, n, N_1]``."""
        G = torch.randn((replicas, self.network.widths[0], F.shape[1]), generator=generator, device=self.device,
                        dtype=self.dtype)
        G.mul_(1.0 / math.sqrt(self.network.priors[0] * self.n_inputs))
        return torch.matmul(F, G.transpose(-1, -2))

    def perp_norm(self, rank: int) -> float:
        """E‖W_perp‖² = N_1 (N_0 − r)/λ_0, the prior part of ‖W^(0)‖² under input reduction."""
        return self.network.widths[0] * (self.n_inputs - rank) / self.network.priors[0]

    def _bias(self, params, layer):
        if layer in self.bias_layers:
            return params[self.depth + 1 + self.bias_layers.index(layer)]
        return None

    # ---------------------------------------------------------------- forward / backward
    def use_lower_inputs(self, A0: torch.Tensor) -> None:
        """Declare ``A0`` (the reduced training inputs, lower trapezoidal) so that the first
        layer's products with exactly this tensor use :class:`LowerTrapezoid` (half the cost)."""
        from finwidth.simulate.trapezoid import LowerTrapezoid

        # the 1/sqrt(N_0) scale is folded into the matrix (saves a pass over h and over ∂U/∂W^(0))
        self._lower = (A0, LowerTrapezoid(A0 * self.scales[0]))

    def _lower_for(self, A0: torch.Tensor):
        return self._lower[1] if self._lower is not None and self._lower[0] is A0 else None

    def _scratch(self, name, shape) -> torch.Tensor:
        """A buffer of this thread (replica groups run on threads) kept between gradient calls: a
        fresh [R, N, P] tensor is page-faulted in on every step (large allocations are mapped anew),
        which at P = 4000 costs about as much as erf itself. Contents are garbage."""
        key = (threading.get_ident(), name)
        buf = self._work.get(key)
        if buf is None or buf.shape != shape:
            buf = self._work[key] = torch.empty(shape, dtype=self.dtype, device=self.device)
        return buf

    def forward(self, params: Sequence[torch.Tensor], A0: torch.Tensor, extra_h1: torch.Tensor | None = None,
                *, keep: bool = False, derivatives: bool = False, scratch: bool = False):
        """Outputs f, shape ``[R, n]`` (``[R, n, D]`` with D outputs), on inputs ``A0`` (``[n, N_0]`` or
        reduced ``[n, r]``).

        ``extra_h1`` (``[R, n, N_1]``) is added to the first pre-activation (the W_perp term).
        With ``keep=True`` also returns the cache: hidden activations (and, with
        ``derivatives=True``, σ' for the backward pass) stored feature-major, ``[R, N_l, n]`` (the
        layout in which every layer is one batched product); Φ = σ(h^(L)) is
        ``cache["acts"][-1].transpose(-1, -2)``. With ``scratch=True`` (the gradient's own pass on
        CPU) the first pre-activation and every σ' live in per-thread buffers reused by the next
        call: the cache is valid only until then.
        """
        scratch = scratch and derivatives and keep and not self.linear and self.device.type == "cpu"
        a = A0
        acts, dacts = [A0], []
        lower = self._lower_for(A0)
        for l in range(self.depth):
            W = params[l]
            if l > 0:
                h = torch.matmul(W, a)
            elif lower is not None:
                out = self._scratch("h0", (*W.shape[:-1], lower.P)) if scratch else None
                h = lower.right_mul_t(W, out=out)  # scale included
            else:
                h = torch.matmul(W, A0.transpose(-1, -2))
            if self.scales[l] != 1.0 and not (l == 0 and lower is not None):
                h = h.mul_(self.scales[l])
            if l == 0 and extra_h1 is not None:
                h = h + extra_h1.transpose(-1, -2)
            b = self._bias(params, l)
            if b is not None:
                h = h + b.unsqueeze(-1)
            if self.linear:
                a, d = h, None
            elif scratch:  # h is a temporary here: σ over it, σ' into a kept buffer
                a, d = self.act_into(h, self._scratch(f"d{l}", h.shape))
            else:
                a, d = self.act(h, derivatives)
            acts.append(a)
            dacts.append(d)
        W = params[self.depth]
        if self.depth == 0:
            a = A0.transpose(-1, -2)
        f = torch.matmul(W, a)  # [R, D, n]
        f = (f.squeeze(-2) if self.n_outputs == 1 else f.transpose(-1, -2)) * self.scales[self.depth]
        b = self._bias(params, self.depth)
        if b is not None:
            f = f + (b if self.n_outputs == 1 else b.unsqueeze(-2))
        if keep:
            return f, {"acts": acts, "dacts": dacts}
        return f

    def readout_features(self, params: Sequence[torch.Tensor], A0: torch.Tensor,
                         extra_h1: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, Φ)``: outputs ``[R, n]`` (or ``[R, n, D]``) and last hidden features Φ = σ(h^(L)) ``[R, n, N_L]``.

        The readout is already standard, f = Φ a / sqrt(N_L) [+ b] with a ~ N(0, 1/λ_L): the form that
        :class:`finwidth.simulate.observables.ReadoutConditional` takes (``readout.standard_precision``
        = λ_L, ``readout.size`` = N_L).
        """
        f, cache = self.forward(params, A0, extra_h1, keep=True)
        return f, cache["acts"][-1].transpose(-1, -2)

    def set_readout(self, params: list[torch.Tensor], a: torch.Tensor, b: torch.Tensor | None = None) -> None:
        """Put a standard-form readout ``[R, D, N_L]`` and output bias ``[R, D]`` (from the conditional
        sampler) into ``params``."""
        params[self.depth] = a.to(self.dtype)
        if b is not None:
            params[-1] = b.to(self.dtype)

    def potential_and_grad(self, params: Sequence[torch.Tensor], A0: torch.Tensor, y: torch.Tensor,
                           *, need_grad: bool = True, need_energy: bool = True):
        """U per replica (float64, shape ``[R]``) and ∂U/∂θ for each parameter tensor.

        Returns ``(U, grads, loss)`` with ``loss`` = ½ Σ_μ (y − f)² per replica (float64);
        ``U`` and ``loss`` are None with ``need_energy=False`` (the float64 sums over all weights
        are skipped on steps that do not need them). Backpropagation is written out with batched
        matmuls (no autograd graph), feature-major: δ^(l) is ``[R, N_l, n]``.
        """
        T = self.temperature
        if need_grad:
            f, cache = self.forward(params, A0, keep=True, derivatives=True, scratch=True)
        else:
            f = self.forward(params, A0)
        resid = f - y  # [R, P] or [R, P, D]
        U = loss = None
        if need_energy:
            U, loss = gibbs_energy(resid, params, self.precisions, T)
        if not need_grad:
            return U, None, loss
        L = self.depth
        acts, dacts = cache["acts"], cache["dacts"]
        grads: list[torch.Tensor | None] = [None] * len(params)
        # ∂U/∂(output pre-activation), [R, D, P]
        delta = resid.unsqueeze(-2) if self.n_outputs == 1 else resid.transpose(-1, -2)
        # one hidden layer, one output: δ^(0) = (s a) ⊗ resid ⊙ σ' factorises; the row factor s a_i is
        # applied to the first layer's gradients ([R, N, r], [R, N]) instead of to δ^(0) ([R, N, P]):
        # one pass fewer over the largest array
        rows = None
        for l in range(L, -1, -1):
            s = self.scales[l]
            b = self._bias(params, l)
            if b is not None:
                grads[L + 1 + self.bias_layers.index(l)] = delta.sum(-1) if rows is None else \
                    delta.sum(-1).mul_(rows.squeeze(-1))
            if l > 0:
                # ∂U/∂W^(l) = s δ aᵀ, then δ^(l) = s W^(l)ᵀ δ ⊙ σ'
                grads[l] = torch.matmul(delta, acts[l].transpose(-1, -2)).mul_(s)
                if l == L and self.n_outputs == 1 and not self.linear:  # one readout row: an outer product
                    if l == 1:
                        rows = params[l].transpose(-1, -2) * s  # [R, N_1, 1]
                        delta = dacts[0].mul_(delta)
                    else:
                        delta = dacts[l - 1].mul_(params[l].transpose(-1, -2) * s).mul_(delta)
                else:
                    delta = torch.matmul(params[l].transpose(-1, -2), delta).mul_(s)
                    if not self.linear:
                        delta.mul_(dacts[l - 1])
            else:  # the input is shared by all replicas; δ is not needed afterwards
                lower = self._lower_for(A0)
                if lower is not None:  # a new tensor: δ may be a scratch buffer, reused by the next call
                    grads[0] = lower.right_mul(delta)
                else:
                    grads[0] = torch.matmul(delta, A0).mul_(s)
                if rows is not None:
                    grads[0].mul_(rows)
        for g, p, lam in zip(grads, params, self.precisions):
            g.add_(p, alpha=T * lam)
        return U, grads, loss


class LinearRegressionTarget:
    """Bayesian linear regression f = Φ w / sqrt(N), w ~ N(0, 1/λ): an exact Gaussian posterior.

    Used to validate the samplers (its posterior mean and covariance are closed forms). Same
    interface as :class:`BatchedMLP` for the samplers: ``potential_and_grad(params, A0, y)``.
    """

    def __init__(self, features: torch.Tensor, precision: float, temperature: float):
        self.features = features
        self.n = features.shape[1]
        self.precisions = [float(precision)]
        self.temperature = float(temperature)

    def potential_and_grad(self, params, A0=None, y=None, *, need_grad=True):
        (w,) = params  # [R, N]
        s = 1.0 / math.sqrt(self.n)
        f = torch.matmul(w, self.features.T) * s
        resid = f - y
        U, loss = gibbs_energy(resid, params, self.precisions, self.temperature)
        if not need_grad:
            return U, None, loss
        g = torch.matmul(resid, self.features) * s + self.temperature * self.precisions[0] * w
        return U, [g], loss

    def exact_posterior(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and covariance of w (float64), from the normal equations."""
        Phi = self.features.double().cpu().numpy() / math.sqrt(self.n)
        T, lam = self.temperature, self.precisions[0]
        A = Phi.T @ Phi / T + lam * np.eye(self.n)
        cov = np.linalg.inv(A)
        mean = cov @ Phi.T @ np.asarray(y, dtype=np.float64) / T
        return mean, cov
