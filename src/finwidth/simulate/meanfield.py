"""Two-layer fully connected networks in mean-field (or standard) scaling as sampler models, and a
small driver that samples any such model and measures what the adaptive-kernel theory predicts.

Model (finwidth's prior/temperature convention, DESIGN.md §2, with the readout scale made explicit):

    h_c(x) = w_c · x / sqrt(N_0),    f(x) = s_out Σ_{c=1}^{N} a_c σ(h_c(x)),
    s_out = 1/N (``scaling="mean_field"``)  or  1/sqrt(N) (``"standard"``, = ``BatchedMLP``),
    U(θ) = ½ Σ_μ (y^μ − f(x^μ))² + (T/2) (λ_0 ‖W‖² + λ_1 ‖a‖²),   target exp(−U/T).

Map to the adaptive-kernel (AK) notes: σ_w²/d = 1/(λ_0 N_0) (covariance of u = w/sqrt(N_0)),
readout variance v_a = s_out²/λ_1 (σ_a²/N² in mean field), noise σ² = T. The AK code's loss
Σ(f − y)² (no ½) at temperature 2σ² is the same Gibbs measure. A mean-field network is the
standard one with readout precision λ_1 N in function space; its Langevin dynamics differ (the
readout moves on an O(1) scale), which is why it is a separate model.

Every model here follows the sampler protocol of :mod:`finwidth.simulate.samplers`:
``temperature``, ``precisions``, ``dtype``, ``forward(params, A0)`` and
``potential_and_grad(params, A0, y, need_grad=True) -> (U, grads, loss)``; plus
``prepare_inputs(X)``, ``init_params``, ``weight_covariance`` and ``preactivations`` used by
:func:`sample_weights`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from finwidth.errors import ConfigError, DivergenceError
from finwidth.simulate import diagnostics as diag
from finwidth.simulate.networks import activation_pair, as_torch_dtype, gibbs_energy

__all__ = ["TwoLayerFCN", "WeightPosterior", "sample_weights"]

_SCALINGS = ("mean_field", "standard")


def _check_scaling(scaling: str) -> str:
    if scaling not in _SCALINGS:
        raise ConfigError(f"scaling must be 'mean_field' or 'standard', got {scaling!r}")
    return scaling


def _init_weights(shapes, precisions, replicas, generator, mode, device, dtype) -> list[torch.Tensor]:
    """Weights N(0, 1/λ) (``mode="prior"``) or N(0, 1) (``"normal"``, the papers' initialisation)."""
    if mode not in ("prior", "normal"):
        raise ConfigError(f"init mode must be 'prior' or 'normal', got {mode!r}")
    out = []
    for shape, lam in zip(shapes, precisions):
        t = torch.randn((replicas, *shape), generator=generator, device=device, dtype=dtype)
        out.append(t.mul_(1.0 / math.sqrt(lam)) if mode == "prior" else t)
    return out


def _check_temperature(temperature) -> float:
    T = float(temperature)
    if not math.isfinite(T) or T <= 0:
        raise ConfigError(f"temperature must be positive and finite for sampling, got {temperature!r}")
    return T


class TwoLayerModel:
    """The potential shared by the two-layer sampler models (weights W, readout a).

    U = ½Σ_μ(y^μ − f^μ)² + (T/2)(λ_0‖W‖² + λ_1‖a‖²), with the gradient written by hand: each model
    supplies ``forward(params, A0, keep=True) -> (f, (σ(h), σ'(h)))`` and ``_data_gradients`` (the
    gradient of the loss term).
    """

    def potential_and_grad(self, params, A0: torch.Tensor, y: torch.Tensor, *, need_grad: bool = True,
                           need_energy: bool = True):
        """U (float64, ``[R]``), [∂U/∂W, ∂U/∂a] and the loss ½Σ(y − f)² (float64); U and loss are
        None with ``need_energy=False`` (gradient-only Langevin steps)."""
        T = self.temperature
        W, a = params
        f, (s, d) = self.forward(params, A0, keep=True)
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

    Notes
    -----
    Parameters: ``[W, a]`` with W shaped ``[R, N, N_0]`` and a ``[R, 1, N]``.
    """

    def __init__(self, network, n_inputs: int, temperature: float, *, scaling: str = "mean_field",
                 device="cpu", dtype="float64"):
        from finwidth.network import Network

        if not isinstance(network, Network) or network.depth != 1 or network.bias is not None:
            raise ConfigError("TwoLayerFCN needs a finwidth.Network with one hidden layer and no biases")
        if isinstance(n_inputs, bool) or int(n_inputs) != n_inputs or n_inputs < 1:
            raise ConfigError(f"n_inputs must be a positive integer, got {n_inputs!r}")
        self.network = network
        self.scaling = _check_scaling(scaling)
        self.temperature = _check_temperature(temperature)
        self.n_inputs = int(n_inputs)
        self.width = network.widths[0]
        self.precisions = [float(p) for p in network.priors]
        self.device = torch.device(device)
        self.dtype = as_torch_dtype(dtype)
        self.act = activation_pair(network.activation)
        self.in_scale = 1.0 / math.sqrt(self.n_inputs)
        self.out_scale = 1.0 / self.width if scaling == "mean_field" else 1.0 / math.sqrt(self.width)
        # standard form of the readout: f = Φ a' / sqrt(N), a' = a sqrt(N) s_out ~ N(0, 1/λ'), λ' = λ_1/(N s_out²)
        # (λ_1 N in mean field: the function-space map to a standard network)
        self.readout_size = self.width
        self.readout_scale = self.out_scale * math.sqrt(self.width)
        self.readout_precision = self.precisions[1] / self.readout_scale ** 2
        self.readout_bias_var = 0.0

    def prepare_inputs(self, X) -> torch.Tensor:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_inputs or not np.all(np.isfinite(X)):
            raise ConfigError(f"inputs must be a finite (n, {self.n_inputs}) array, got shape {X.shape}")
        return torch.as_tensor(X, dtype=self.dtype, device=self.device)

    def init_params(self, replicas: int, generator: torch.Generator, mode: str = "prior") -> list[torch.Tensor]:
        """``[W, a]`` drawn from the prior (``mode="prior"``) or N(0, 1) (``"normal"``)."""
        return _init_weights([(self.width, self.n_inputs), (1, self.width)], self.precisions, replicas, generator,
                             mode, self.device, self.dtype)

    def preactivations(self, params, A0: torch.Tensor) -> torch.Tensor:
        """h = x·w/sqrt(N_0), shape ``[R, n, N]``."""
        return torch.matmul(A0, params[0].transpose(-1, -2)) * self.in_scale

    def forward(self, params, A0: torch.Tensor, *, keep: bool = False):
        h = self.preactivations(params, A0)
        s, d = self.act(h)
        f = torch.matmul(s, params[1].transpose(-1, -2)).squeeze(-1) * self.out_scale
        return (f, (s, d)) if keep else f

    def readout_features(self, params, A0: torch.Tensor, extra_h1=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, Φ)`` with Φ = σ(h) ``[R, n, N]``: f = Φ a' / sqrt(N) in the standard readout form
        (``readout_precision`` λ', see ``__init__``)."""
        if extra_h1 is not None:
            raise ConfigError("TwoLayerFCN does not simulate a reduced first layer (input_reduction)")
        f, (s, _) = self.forward(params, A0, keep=True)
        return f, s

    def set_readout(self, params: list, a_std: torch.Tensor) -> None:
        """Put a standard-form readout a' ``[R, 1, N]`` into ``params`` as a = a'/(s_out sqrt(N))."""
        params[1] = (a_std / self.readout_scale).to(self.dtype)

    def _data_gradients(self, resid, s, d, a, A0):  # type: ignore[no-untyped-def]
        ga = torch.matmul(resid.unsqueeze(1), s) * self.out_scale                      # [R, 1, N]
        delta = resid.unsqueeze(-1) * d * (a * self.out_scale)                          # [R, n, N]
        gW = torch.matmul(delta.transpose(-1, -2), A0) * self.in_scale                  # [R, N, N_0]
        return gW, ga

    def weight_covariance(self, params) -> torch.Tensor:
        """(1/N) Σ_c u_c u_cᵀ with u = w/sqrt(N_0), per replica (float64, ``[R, N_0, N_0]``)."""
        u = params[0].double() * self.in_scale
        return torch.matmul(u.transpose(-1, -2), u) / self.width


@dataclass
class WeightPosterior:
    """What :func:`sample_weights` measured (post burn-in, all replicas).

    Attributes
    ----------
    sigma : ndarray (m, m)
        Σ̂ = (1/N) Σ_c ⟨u_c u_cᵀ⟩, the per-neuron (per-channel) covariance of the pre-activation
        weights u (compare with ``AdaptiveKernel.sigma_``).
    sigma_stderr : ndarray (m, m)
        Standard error of each entry of Σ̂ over replicas.
    sigma_replicas : ndarray (R, m, m)
        Σ̂ of each replica (independent chains): the standard error of any function of Σ̂.
    test_mean, test_var : ndarray (P_t,) or None
        Posterior mean and variance of f at the test points.
    test_mean_replicas : ndarray (R, P_t) or None
        The posterior mean of f per replica.
    test_mse : float or None
        Posterior average of the test MSE (= ε_g, bias + variance); ``test_mse_stderr`` by batch means.
    train_discrepancy : ndarray (P,)
        y − ⟨f⟩ on the training set (compare with ``AdaptiveKernel.discrepancy_``).
    preact_var, preact_excess_kurtosis : ndarray (n_probe, Ñ)
        Variance and excess kurtosis of the pre-activations at the probe inputs over neurons,
        replicas and records: 0 for the Gaussian law the AK theory assumes.
    rhat, ess : dict
        Split-R̂ and effective sample size of the energy and test-MSE traces.
    """

    sigma: np.ndarray
    sigma_stderr: np.ndarray
    sigma_replicas: np.ndarray
    test_mean_replicas: np.ndarray | None
    test_mean: np.ndarray | None
    test_var: np.ndarray | None
    test_mse: float | None
    test_mse_stderr: float | None
    train_discrepancy: np.ndarray
    preact_var: np.ndarray
    preact_excess_kurtosis: np.ndarray
    rhat: dict
    ess: dict
    n_records: int


def sample_weights(model, X, y, *, sampler: str = "baoab", step_size: float, n_steps: int, burn_in: int,
                   record_every: int = 10, replicas: int = 4, X_test=None, y_test=None, probe=None,
                   friction: float | None = None, seed: int = 0) -> WeightPosterior:
    """Sample a two-layer model's posterior and measure the AK observables.

    Parameters
    ----------
    model : TwoLayerFCN or finwidth.simulate.cnn.TwoLayerCNN
    X, y : training data (P, N_0), (P,)
    sampler : {"baoab", "euler", "mala"}
        See :mod:`finwidth.simulate.samplers`; ``step_size`` is the time step on U.
    n_steps, burn_in, record_every : int
        Steps in total, discarded at the start, and between records.
    replicas : int
        Independent chains (≥ 2 for error bars), started from the prior.
    X_test, y_test : optional test set (predictions and the posterior-averaged test MSE).
    probe : array (n_probe, N_0), optional
        Inputs whose pre-activation distribution is recorded (default: the first 4 of X).
    friction : float, optional
        BAOAB friction (default 2 sqrt(T min λ), critical damping of prior-dominated directions).
    seed : int

    Returns
    -------
    WeightPosterior

    Raises
    ------
    DivergenceError
        Non-finite energy; reduce ``step_size``.
    """
    from finwidth.simulate.samplers import make_sampler

    for name, v in (("n_steps", n_steps), ("record_every", record_every), ("replicas", replicas)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(burn_in, bool) or int(burn_in) != burn_in or not 0 <= burn_in < n_steps - record_every + 1:
        raise ConfigError(f"burn_in must be an integer in [0, n_steps - record_every], got {burn_in!r}")
    A0 = model.prepare_inputs(X)
    yv = np.asarray(y, dtype=np.float64).ravel()
    if yv.shape != (A0.shape[0],) or not np.all(np.isfinite(yv)):
        raise ConfigError(f"y must be a finite vector of length {A0.shape[0]}")
    yt_ = torch.as_tensor(yv, dtype=model.dtype, device=model.device)
    At = model.prepare_inputs(X_test) if X_test is not None else None
    ytest = None
    if y_test is not None:
        if At is None:
            raise ConfigError("y_test was given without X_test")
        ytest = np.asarray(y_test, dtype=np.float64).ravel()
        if ytest.shape != (At.shape[0],) or not np.all(np.isfinite(ytest)):
            raise ConfigError(f"y_test must be a finite vector of length {At.shape[0]}")
    Ap = model.prepare_inputs(np.asarray(X)[:4] if probe is None else probe)
    gen = torch.Generator(device=model.device).manual_seed(int(seed))
    if sampler == "baoab" and friction is None:
        friction = 2.0 * math.sqrt(model.temperature * min(model.precisions))
    smp = make_sampler(sampler, model, A0, yt_, step_size, gen, friction=friction if sampler == "baoab" else None)
    smp.start(model.init_params(int(replicas), gen))

    R = int(replicas)
    sig_sum = 0.0
    sig_sq = 0.0
    f_tr = 0.0
    ft_sum = ft_sq = ft_sum_r = 0.0
    mom = [0.0] * 5  # Σ h^k, k = 0..4 (per probe input and patch)
    e_trace, mse_trace = [], []
    n_rec = 0
    with torch.no_grad():
        for step in range(1, int(n_steps) + 1):
            smp.step()
            if step % 50 == 0 or step % record_every == 0:
                if not bool(torch.isfinite(smp.energy).all()):
                    raise DivergenceError(
                        f"sampler {sampler!r} diverged at step {step} with step_size={step_size:.3g} "
                        f"(T={model.temperature:.3g}); try a step size 4x smaller")
            if step <= burn_in or step % record_every:
                continue
            p = smp.params
            n_rec += 1
            S = model.weight_covariance(p)                                 # [R, m, m]
            sig_sum = sig_sum + S
            sig_sq = sig_sq + S * S
            f_tr = f_tr + model.forward(p, A0).double().sum(0)
            h = model.preactivations(p, Ap).double()                       # [R, n_probe, (Ñ,) N]
            h = h.reshape(R, Ap.shape[0], -1, model.width)
            for k in range(5):
                mom[k] = mom[k] + (h ** k).sum((0, 3))
            e_trace.append(smp.energy.double().cpu().numpy())
            if At is not None:
                ft = model.forward(p, At).double()
                ft_sum = ft_sum + ft.sum(0)
                ft_sum_r = ft_sum_r + ft
                ft_sq = ft_sq + (ft * ft).sum(0)
                if ytest is not None:
                    mse_trace.append(((ft.cpu().numpy() - ytest) ** 2).mean(-1))
    if n_rec == 0:
        raise ConfigError("nothing was recorded: lower burn_in or record_every")
    sig_rep = (sig_sum / n_rec).cpu().numpy()                              # per replica
    sigma = sig_rep.mean(0)
    se = sig_rep.std(0, ddof=1) / math.sqrt(R) if R > 1 else np.full_like(sigma, np.nan)
    n_tot = n_rec * R
    m = [(t / mom[0]).cpu().numpy() for t in mom]                         # raw moments E h^k
    mu = m[1]
    var = m[2] - mu ** 2
    c4 = m[4] - 4 * mu * m[3] + 6 * mu ** 2 * m[2] - 3 * mu ** 4
    kurt = c4 / var ** 2 - 3.0
    e = np.array(e_trace).T
    out = dict(rhat={"energy": diag.split_rhat(e)}, ess={"energy": diag.effective_sample_size(e)})
    tm = tv = mse = mse_se = tmr = None
    if At is not None:
        tmr = (ft_sum_r / n_rec).cpu().numpy()
        tm = (ft_sum / n_tot).cpu().numpy()
        tv = np.maximum((ft_sq / n_tot).cpu().numpy() - tm ** 2, 0.0)
        if ytest is not None:
            tr = np.array(mse_trace).T
            mse = float(tr.mean())
            mse_se = diag.batch_means_stderr(tr)
            out["rhat"]["test_mse"] = diag.split_rhat(tr)
            out["ess"]["test_mse"] = diag.effective_sample_size(tr)
    return WeightPosterior(sigma=sigma, sigma_stderr=se, sigma_replicas=sig_rep, test_mean_replicas=tmr, test_mean=tm, test_var=tv, test_mse=mse,
                           test_mse_stderr=mse_se, train_discrepancy=yv - (f_tr / n_tot).cpu().numpy(),
                           preact_var=var, preact_excess_kurtosis=kurt, n_records=n_rec, **out)
