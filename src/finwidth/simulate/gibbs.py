"""Exact block-Gibbs sampler of the posterior of deep *linear* networks (numpy, float64).

Network (DESIGN.md §2, identity activation, no biases): f(x) = c W_L W_{L−1} ⋯ W_0 x with
c = 1/√(N_0 N_1 ⋯ N_L), W_l ~ N(0, 1/λ_l) entrywise, posterior
p(W | D) ∝ exp[−Σ_μ (y_μ − f(x_μ))²/(2T) − Σ_l λ_l ‖W_l‖²/2].

Given all other layers, f is linear in W_l: f = c vᵀ W_l Z with vᵀ = W_L ⋯ W_{l+1} and
Z = W_{l−1} ⋯ W_0 Xᵀ, so the conditional of W_l is Gaussian and is sampled exactly with Matheron's
rule (BPKR notes §A.13): draw W⁰ from the prior and ε ~ N(0, T I), then

    W_l = W⁰ + σ_l² c v (Z a)ᵀ,   a = (σ_l² c² |v|² ZᵀZ + T I)⁻¹ (y − c vᵀ W⁰ Z − ε),   σ_l² = 1/λ_l.

One sweep updates W_0, …, W_L in turn; there is no step size and no discretisation bias. Replicas
(independent chains) are a leading batch dimension. This is the library's gold standard for the
BPKR / renormalised-kernel theory of linear networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from finwidth.errors import ConfigError, DivergenceError

__all__ = ["GibbsSamples", "gibbs_deep_linear"]


@dataclass
class GibbsSamples:
    """Recorded samples of :func:`gibbs_deep_linear`; the leading axes are (record, replica).

    Attributes
    ----------
    readout_norm : ndarray, shape (S, R)
        |W_L|² = |a|² (squared norm of the readout weights). ⟨|a|²⟩ λ_L / N_L estimates Q̄_L.
    layer_norms : ndarray, shape (S, R, L+1)
        ‖W_l‖_F² for l = 0..L (the last entry equals ``readout_norm``).
    train_pred : ndarray, shape (S, R, P)
        f on the training inputs.
    test_pred : ndarray or None, shape (S, R, P_test)
        f on ``X_test``.
    hidden_trace : ndarray, shape (S, R, L)
        Tr R_ℓ / P for ℓ = 1..L, with R_ℓ = h_ℓᵀ h_ℓ / N_ℓ on the training inputs (h_ℓ the
        pre-activations of layer ℓ in the network's scaling).
    hidden_alignment : ndarray, shape (S, R, L)
        yᵀ R_ℓ y / |y|².
    sweeps : ndarray, shape (S,)
        Sweep index of each record.
    """

    readout_norm: np.ndarray
    layer_norms: np.ndarray
    train_pred: np.ndarray
    test_pred: np.ndarray | None
    hidden_trace: np.ndarray
    hidden_alignment: np.ndarray
    sweeps: np.ndarray

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
    y : array, shape (P,)
        Training labels.
    temperature : float
        T > 0 (the likelihood variance; T = 0 has a degenerate posterior).
    n_sweeps : int
        Number of sweeps after burn-in (one sweep = one exact draw of every layer).
    burn_in : int
        Sweeps discarded first (chains start from the prior).
    replicas : int
        Independent chains, run as a batch.
    seed : int, Generator or None
        Seed of the random generator (``numpy.random.default_rng``).
    X_test : array, shape (P_test, N_0), optional
        Test inputs at which f is recorded.
    record_every : int
        Record one sample every this many sweeps.

    Returns
    -------
    GibbsSamples
    """
    from finwidth.network import Network

    if not isinstance(network, Network):
        raise ConfigError(f"network must be a finwidth.Network, got {type(network).__name__}")
    if network.activation.name not in ("linear", "id", "identity"):
        raise ConfigError(f"the Gibbs sampler is exact only for linear networks, got activation {network.activation.name!r}")
    if network.bias is not None:
        raise ConfigError("the Gibbs sampler does not support biases (use a network with bias=None)")
    from finwidth.kernels import as_inputs
    from finwidth.theory.gp import validate_targets

    X = as_inputs(X, "X")
    y = validate_targets(y, X.shape[0], "y")
    Xt = None if X_test is None else as_inputs(X_test, "X_test")
    if Xt is not None and Xt.shape[1] != X.shape[1]:
        raise ConfigError(f"X_test has {Xt.shape[1]} features, X has {X.shape[1]}")
    T = float(temperature)
    if not (math.isfinite(T) and T > 0):
        raise ConfigError(f"temperature must be positive and finite for Gibbs sampling, got {temperature}")
    for name, v, minimum in (("n_sweeps", n_sweeps, 1), ("burn_in", burn_in, 0), ("replicas", replicas, 1),
                             ("record_every", record_every, 1)):
        if int(v) != v or v < minimum:
            raise ConfigError(f"{name} must be an integer ≥ {minimum}, got {v!r}")

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    P, N0 = X.shape
    L = network.depth
    R = int(replicas)
    dims = [N0, *network.widths, 1]  # W_l maps dims[l] -> dims[l+1]
    var = [1.0 / lam for lam in network.priors]
    c = 1.0 / math.sqrt(float(np.prod(np.array(dims[:-1], dtype=float))))
    W = [rng.standard_normal((R, dims[l + 1], dims[l])) * math.sqrt(var[l]) for l in range(L + 1)]
    XT = X.T
    y_norm2 = float(y @ y)
    eye = np.eye(P)

    n_rec = int(n_sweeps) // int(record_every)
    rec_readout = np.empty((n_rec, R))
    rec_norms = np.empty((n_rec, R, L + 1))
    rec_train = np.empty((n_rec, R, P))
    rec_test = None if Xt is None else np.empty((n_rec, R, Xt.shape[0]))
    rec_trace = np.empty((n_rec, R, L))
    rec_align = np.empty((n_rec, R, L))
    rec_sweeps = np.empty(n_rec, dtype=np.int64)

    total = int(burn_in) + int(n_sweeps)
    i_rec = 0
    for sweep in range(total):
        # v_l = (W_L ⋯ W_{l+1})ᵀ for every l, from the top with the current (old) upper layers
        vs: list[np.ndarray] = [None] * (L + 1)  # type: ignore[list-item]
        top = np.ones((R, 1, 1))
        for l in range(L, -1, -1):
            vs[l] = top[:, 0, :]  # (R, dims[l+1])
            top = top @ W[l]
        Z = np.broadcast_to(XT, (R, N0, P))
        for l in range(L + 1):
            v = vs[l]  # (R, d_out)
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
            raise DivergenceError(f"non-finite weights at Gibbs sweep {sweep}; check X, y and the priors")
        if sweep >= burn_in and (sweep - burn_in) % record_every == 0 and i_rec < n_rec:
            norms = np.stack([np.einsum("roi,roi->r", w, w) for w in W], axis=-1)
            rec_norms[i_rec] = norms
            rec_readout[i_rec] = norms[:, -1]
            rec_train[i_rec] = c * Z[:, 0, :]
            # hidden pre-activations h_ℓ = W_{ℓ−1} ⋯ W_0 x / √(N_0 ⋯ N_{ℓ−1})
            h = np.broadcast_to(XT, (R, N0, P))
            scale = 1.0
            for ell in range(1, L + 1):
                h = W[ell - 1] @ h
                scale /= math.sqrt(dims[ell - 1])
                Rl = (h.transpose(0, 2, 1) @ h) * (scale * scale / dims[ell])
                rec_trace[i_rec, :, ell - 1] = np.trace(Rl, axis1=1, axis2=2) / P
                rec_align[i_rec, :, ell - 1] = np.einsum("p,rpq,q->r", y, Rl, y) / y_norm2 if y_norm2 > 0 else 0.0
            if Xt is not None:
                ft = np.broadcast_to(Xt.T, (R, N0, Xt.shape[0]))
                for l in range(L + 1):
                    ft = W[l] @ ft
                rec_test[i_rec] = c * ft[:, 0, :]
            rec_sweeps[i_rec] = sweep
            i_rec += 1
    return GibbsSamples(
        readout_norm=rec_readout, layer_norms=rec_norms, train_pred=rec_train, test_pred=rec_test,
        hidden_trace=rec_trace, hidden_alignment=rec_align, sweeps=rec_sweeps,
    )
