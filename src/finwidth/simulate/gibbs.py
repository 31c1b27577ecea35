"""Exact block-Gibbs sampler of the posterior of deep *linear* networks (numpy, float64).

Network (docs/conventions.md, identity activation, no biases): f(x) = c W_L W_{L−1} ⋯ W_0 x with
c = 1/√(N_0 N_1 ⋯ N_L), W_l ~ N(0, 1/λ_l) entrywise, posterior
p(W | D) ∝ exp[−Σ_μ (y_μ − f(x_μ))²/(2T) − Σ_l λ_l ‖W_l‖²/2].

Given all other layers, f is linear in W_l: f = c vᵀ W_l Z with vᵀ = W_L ⋯ W_{l+1} and
Z = W_{l−1} ⋯ W_0 Xᵀ, so the conditional of W_l is Gaussian and is sampled exactly with Matheron's
rule (BPKR notes §A.13): draw W⁰ from the prior and ε ~ N(0, T I), then

    W_l = W⁰ + σ_l² c v (Z a)ᵀ,   a = (σ_l² c² |v|² ZᵀZ + T I)⁻¹ (y − c vᵀ W⁰ Z − ε),   σ_l² = 1/λ_l.

One sweep updates W_0, …, W_L in turn; there is no step size and no discretisation bias. Replicas
(independent chains) are a leading batch dimension.

With D outputs (targets Y of shape (P, D), readout W_L of shape D × N_L) the same holds with v the
D × d_out matrix W_L ⋯ W_{l+1} (the identity for l = L): the prior covariance of the outputs is
σ_l² c² (v vᵀ) ⊗ (ZᵀZ), diagonal in the product of the eigenbases of v vᵀ (D × D) and ZᵀZ (P × P), so

    W_l = W⁰ + σ_l² c vᵀ α Zᵀ,   α = E [ (Eᵀ R U) / (σ_l² c² e_a g_i + T) ] Uᵀ,   R = Yᵀ − c v W⁰ Z − εᵀ,

with v vᵀ = E diag(e) Eᵀ, ZᵀZ = U diag(g) Uᵀ: two symmetric eigendecompositions per layer instead of a
DP × DP solve. This is the library's gold standard for the
BPKR / renormalised-kernel theory of linear networks.

:class:`GibbsSampler` is the step (one sweep) with the samplers' interface, so that the sampling loop
and its recorder serve it like any other sampler (``sampler="gibbs"`` of :func:`finwidth.sample_posterior`);
under input reduction it samples W_span on the reduced inputs (the scale c keeps the true N_0).
:func:`gibbs_deep_linear` returns the raw samples (predictions, hidden kernels) of the same loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from finwidth.errors import ConfigError, DivergenceError
from finwidth.simulate.samplers import CachedEnergy

__all__ = ["GibbsSampler", "GibbsSamples", "gibbs_deep_linear"]


@dataclass
class GibbsSamples:
    """Recorded samples of :func:`gibbs_deep_linear`; the leading axes are (record, replica).

    Attributes
    ----------
    readout_norm : ndarray, shape (S, R)
        |W_L|² = |a|² (squared norm of the readout weights). ⟨|a|²⟩ λ_L / N_L estimates Q̄_L.
    layer_norms : ndarray, shape (S, R, L+1)
        ‖W_l‖_F² for l = 0..L (the last entry equals ``readout_norm``).
    train_pred : ndarray, shape (S, R, P) (or (S, R, P, D) with D outputs)
        f on the training inputs.
    test_pred : ndarray or None, shape (S, R, P_test) (or (S, R, P_test, D))
        f on ``X_test``.
    hidden_trace : ndarray, shape (S, R, L)
        Tr R_ℓ / P for ℓ = 1..L, with R_ℓ = h_ℓᵀ h_ℓ / N_ℓ on the training inputs (h_ℓ the
        pre-activations of layer ℓ in the network's scaling).
    hidden_alignment : ndarray, shape (S, R, L)
        yᵀ R_ℓ y / |y|² (with D outputs tr(Yᵀ R_ℓ Y) / ‖Y‖_F²).
    sweeps : ndarray, shape (S,)
        Sweep index of each record.
    readout_outer : ndarray or None, shape (S, R, D, D)
        W_L W_Lᵀ with D outputs (None for one): λ_L ⟨W_L W_Lᵀ⟩ / N_L estimates Q_L.
    """

    readout_norm: np.ndarray
    layer_norms: np.ndarray
    train_pred: np.ndarray
    test_pred: np.ndarray | None
    hidden_trace: np.ndarray
    hidden_alignment: np.ndarray
    sweeps: np.ndarray
    readout_outer: np.ndarray | None = None

    def replica_means(self, name: str) -> np.ndarray:
        """Time average of one recorded observable per replica (shape (R, …)): independent samples."""
        return np.mean(getattr(self, name), axis=0)

    def mean_and_stderr(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and its standard error from the spread of independent replica means."""
        rm = self.replica_means(name)
        R = rm.shape[0]
        if R < 2:
            raise ConfigError("a standard error needs at least 2 replicas")
        return rm.mean(axis=0), rm.std(axis=0, ddof=1) / math.sqrt(R)


class GibbsSampler(CachedEnergy):
    """Exact block-Gibbs sweeps of a deep linear :class:`~finwidth.simulate.networks.BatchedMLP`
    (float64, no biases), with the samplers' interface (``start``, ``advance``, ``params``,
    ``energy``, ``loss``, ``state``, ``load_state``, ``acceptance``); one step is one sweep.

    Parameters
    ----------
    model : BatchedMLP
        Identity activation, no biases, float64 on the CPU.
    A0 : torch.Tensor
        Training inputs (P, N_0), or reduced (P, r).
    y : torch.Tensor
        Targets (P,), or (P, D) for D outputs.
    seed : int or numpy.random.Generator
    """

    name = "gibbs"

    def __init__(self, model, A0: torch.Tensor, y: torch.Tensor, seed):
        if not model.linear or model.bias_layers:
            raise ConfigError("the Gibbs sampler is exact only for linear networks without biases")
        self.model = self.target = model
        self.A0, self.y = A0, y.double()
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.T = float(model.temperature)
        self.var = [1.0 / lam for lam in model.precisions]
        self.c = float(np.prod(model.scales))
        self.XT = A0.double().cpu().numpy().T
        self.yn = self.y.cpu().numpy()
        self.W: list[np.ndarray] = []
        self._energy = self._loss = None

    def start(self, params) -> None:
        self.W = [np.array(p.detach().double().cpu().numpy()) for p in params]
        self._energy = self._loss = None

    @property
    def params(self) -> list[torch.Tensor]:
        return [torch.from_numpy(w) for w in self.W]

    def acceptance(self):
        return None

    def state(self) -> dict:
        st = self.rng.bit_generator.state
        return {"params": self.params, "rng": {"kind": st["bit_generator"], "state": repr(st)}}

    def load_state(self, state: dict) -> None:
        import ast

        self.start(state["params"])
        self.rng.bit_generator.state = ast.literal_eval(state["rng"]["state"])

    def advance(self, n: int) -> None:
        """``n`` sweeps, each drawing W_0, …, W_L in turn from their exact conditionals."""
        if self.yn.ndim == 2:
            self._advance_outputs(n)
            return
        W, rng, T, c, var, y = self.W, self.rng, self.T, self.c, self.var, self.yn
        R, P = W[0].shape[0], self.XT.shape[1]
        L = len(W) - 1
        eye = np.eye(P)
        for _ in range(n):
            # v_l = (W_L ⋯ W_{l+1})ᵀ for every l, from the top with the current (old) upper layers
            vs: list[np.ndarray] = [None] * (L + 1)  # type: ignore[list-item]
            top = np.ones((R, 1, 1))
            for l in range(L, -1, -1):
                vs[l] = top[:, 0, :]  # (R, d_out)
                top = top @ W[l]
            Z = np.broadcast_to(self.XT, (R, *self.XT.shape))
            for l in range(L + 1):
                v = vs[l]
                W0 = rng.standard_normal(W[l].shape) * math.sqrt(var[l])
                eps = rng.standard_normal((R, P)) * math.sqrt(T)
                vW0Z = (v[:, None, :] @ W0 @ Z)[:, 0, :]  # matmul: a 3-operand einsum loops unoptimised (~250x slower)
                resid = y[None, :] - c * vW0Z - eps
                gram = Z.transpose(0, 2, 1) @ Z
                v2 = np.einsum("ro,ro->r", v, v)
                A = (var[l] * c * c * v2)[:, None, None] * gram + T * eye
                a = np.linalg.solve(A, resid[..., None])[..., 0]  # (R, P)
                Za = (Z @ a[..., None])[..., 0]
                W[l] = W0 + var[l] * c * np.einsum("ro,ri->roi", v, Za)
                Z = W[l] @ Z
            if not np.all(np.isfinite(Z)):
                raise DivergenceError("non-finite weights in a Gibbs sweep; check X, y and the priors")
        self._energy = self._loss = None

    def _advance_outputs(self, n: int) -> None:
        """The sweeps with D outputs (module docstring: two eigendecompositions per layer)."""
        W, rng, T, c, var = self.W, self.rng, self.T, self.c, self.var
        Yt = self.yn.T  # (D, P)
        R, P = W[0].shape[0], self.XT.shape[1]
        L, D = len(W) - 1, Yt.shape[0]
        g0, U0 = np.linalg.eigh(self.XT.T @ self.XT)  # the input Gram, the same for every replica
        for _ in range(n):
            vs: list[np.ndarray] = [None] * (L + 1)  # type: ignore[list-item]
            top = np.broadcast_to(np.eye(D), (R, D, D))
            for l in range(L, -1, -1):
                vs[l] = top  # (R, D, d_out)
                top = top @ W[l]
            Z = np.broadcast_to(self.XT, (R, *self.XT.shape))
            for l in range(L + 1):
                v = vs[l]
                W0 = rng.standard_normal(W[l].shape) * math.sqrt(var[l])
                eps = rng.standard_normal((R, D, P)) * math.sqrt(T)
                resid = Yt[None] - c * (v @ W0 @ Z) - eps  # (R, D, P)
                if l == 0:
                    g, U = np.broadcast_to(g0, (R, P)), np.broadcast_to(U0, (R, P, P))
                else:
                    g, U = np.linalg.eigh(Z.transpose(0, 2, 1) @ Z)
                e, E = np.linalg.eigh(v @ v.transpose(0, 2, 1))
                g, e = np.maximum(g, 0.0), np.maximum(e, 0.0)  # Gram matrices: round-off below zero only
                rot = E.transpose(0, 2, 1) @ resid @ U
                rot /= var[l] * c * c * e[:, :, None] * g[:, None, :] + T
                alpha = E @ rot @ U.transpose(0, 2, 1)  # (R, D, P)
                W[l] = W0 + var[l] * c * (v.transpose(0, 2, 1) @ (alpha @ Z.transpose(0, 2, 1)))
                Z = W[l] @ Z
            if not np.all(np.isfinite(Z)):
                raise DivergenceError("non-finite weights in a Gibbs sweep; check X, y and the priors")
        self._energy = self._loss = None


def gibbs_deep_linear(
    network,
    X,
    y,
    *,
    temperature: float,
    n_sweeps: int,
    burn_in: int = 0,
    replicas: int = 8,
    seed: int | np.random.Generator | None = 0,
    X_test=None,
    record_every: int = 1,
) -> GibbsSamples:
    """Sample the exact posterior of a deep linear network by block Gibbs sampling.

    Parameters
    ----------
    network : finwidth.Network
        Activation must be ``"linear"`` and the network must have no biases. Widths N_1..N_L and
        prior precisions λ_0..λ_L are read from it.
    X : array, shape (P, N_0)
        Training inputs.
    y : array, shape (P,) or (P, D)
        Training labels (D outputs: a D × N_L readout).
    temperature : float
        T > 0 (the likelihood variance; T = 0 has a degenerate posterior).
    n_sweeps : int
        Number of sweeps after burn-in (one sweep = one exact draw of every layer).
    burn_in : int
        Sweeps discarded first (chains start from the prior).
    replicas : int
        Independent chains, run as a batch.
    seed : int, Generator or None
        Seed of the random generators.
    X_test : array, shape (P_test, N_0), optional
        Test inputs at which f is recorded.
    record_every : int
        Record one sample every this many sweeps (the first right after the burn-in).

    Returns
    -------
    GibbsSamples
    """
    from finwidth.inputs import as_inputs, positive_int, validate_targets, validate_temperature
    from finwidth.network import Network
    from finwidth.simulate.config import RunConfig
    from finwidth.simulate.loop import build_run
    from finwidth.simulate.recorder import Observable

    if not isinstance(network, Network):
        raise ConfigError(f"network must be a finwidth.Network, got {type(network).__name__}")
    if not network.activation.identity:
        raise ConfigError(f"the Gibbs sampler is exact only for linear networks, got activation {network.activation.name!r}")
    if network.bias is not None:
        raise ConfigError("the Gibbs sampler does not support biases (use a network with bias=None)")
    X = as_inputs(X, "X")
    y = validate_targets(y, X.shape[0], "y", multi_output=True)
    Xt = None if X_test is None else as_inputs(X_test, "X_test")
    if Xt is not None and Xt.shape[1] != X.shape[1]:
        raise ConfigError(f"X_test has {Xt.shape[1]} features, X has {X.shape[1]}")
    T = validate_temperature(temperature, allow_zero=False)
    n_sweeps, replicas = positive_int(n_sweeps, "n_sweeps"), positive_int(replicas, "replicas")
    burn_in = positive_int(burn_in, "burn_in", allow_zero=True)
    record_every = positive_int(record_every, "record_every")
    if isinstance(seed, np.random.Generator) or seed is None:
        seed = int((seed if seed is not None else np.random.default_rng()).integers(2 ** 62))
    cfg = RunConfig(temperature=T, n_steps=burn_in + n_sweeps, record_every=record_every, record_start=burn_in + 1,
                    sampler="gibbs", burn_in=0, replicas=replicas, seed=positive_int(seed, "seed", allow_zero=True),
                    dtype="float64", init="prior", rao_blackwell=False, noise_streams="single")
    run = build_run(network, {"X": X, "y": y, "X_test": Xt, "y_test": None}, cfg)
    model, A0, A0t, y64 = run.model, run.A0, run.recorder.A0t, run.y64
    y_norm2 = float(np.sum(y * y))

    def hidden(params):  # Tr R_ℓ / P and yᵀ R_ℓ y/|y|², R_ℓ = h_ℓᵀ h_ℓ / N_ℓ (h_ℓ in the network's scaling)
        _, cache = model.forward(params, A0, keep=True)
        out = []
        for h in cache["acts"][1:]:  # [R, N_ℓ, P]
            n = h.shape[1]
            hy = h @ y64  # [R, N_ℓ] or [R, N_ℓ, D]
            align = (hy * hy).flatten(1).sum(-1) / (n * y_norm2) if y_norm2 > 0 else torch.zeros(h.shape[0], dtype=h.dtype)
            out.append(torch.stack([(h * h).sum((-1, -2)) / (n * h.shape[-1]), align], -1))
        return torch.stack(out, 1)  # [R, L, 2]

    obs = [Observable("train_pred", source="f_train"), Observable("hidden", hidden)]
    if A0t is not None:
        obs.append(Observable("test_pred", source="f_test"))
    run.recorder.observables.extend(obs)
    try:
        run.initialize()
        run.run()
    finally:
        run.close()
    tr = run.recorder.traces
    return GibbsSamples(
        readout_norm=tr["readout_norm_raw"], layer_norms=tr["layer_norms"], train_pred=tr["train_pred"],
        test_pred=tr.get("test_pred"), hidden_trace=tr["hidden"][..., 0], hidden_alignment=tr["hidden"][..., 1],
        sweeps=cfg.record_steps() - 1, readout_outer=tr.get("readout_outer_raw"),
    )
