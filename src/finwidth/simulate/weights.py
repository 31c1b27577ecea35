"""Weight sampling of the two-layer models for the adaptive-kernel checks: the sampling loop with
the weight observables that only the AK comparison needs (the per-neuron weight covariance Σ̂ and
the pre-activation moments at probe inputs) added to the one recorder."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from finwidth.errors import ConfigError
from finwidth.simulate.results import PosteriorSamples

__all__ = ["WeightPosterior", "sample_weights"]


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
        Posterior average of the test MSE (= ε_g, bias + variance); ``test_mse_stderr`` its standard
        error (block jackknife, as every error bar of :func:`finwidth.sample_posterior`).
    train_discrepancy : ndarray (P,)
        y − ⟨f⟩ on the training set (compare with ``AdaptiveKernel.discrepancy_``).
    preact_var, preact_excess_kurtosis : ndarray (n_probe, Ñ)
        Variance and excess kurtosis of the pre-activations at the probe inputs over neurons,
        replicas and records: 0 for the Gaussian law the AK theory assumes.
    rhat, ess : dict
        Split-R̂ and effective sample size of the energy and test-MSE traces.
    n_records : int
        Records after the burn-in (per replica).
    samples : PosteriorSamples
        Everything :func:`finwidth.sample_posterior` reports for the same records (raw estimates).
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
    samples: PosteriorSamples | None = None


def sample_weights(model, X, y, *, sampler: str = "baoab", step_size: float, n_steps: int, burn_in: int,
                   record_every: int = 10, replicas: int = 4, X_test=None, y_test=None, probe=None,
                   friction: float | None = None, seed: int = 0) -> WeightPosterior:
    """Sample a two-layer model's posterior and measure the AK observables.

    Parameters
    ----------
    model : finwidth.simulate.two_layer.TwoLayerFCN or TwoLayerCNN
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
        BAOAB friction (default :func:`finwidth.simulate.guidance.default_friction`).
    seed : int

    Returns
    -------
    WeightPosterior

    Raises
    ------
    DivergenceError
        Non-finite energy; reduce ``step_size``.
    """
    from finwidth.inputs import positive_float, positive_int
    from finwidth.simulate.config import RunConfig
    from finwidth.simulate.guidance import default_friction
    from finwidth.simulate.loop import Run
    from finwidth.simulate.recorder import Observable

    n_steps, record_every = positive_int(n_steps, "n_steps"), positive_int(record_every, "record_every")
    R = positive_int(replicas, "replicas")
    if isinstance(burn_in, bool) or int(burn_in) != burn_in or not 0 <= burn_in < n_steps - record_every + 1:
        raise ConfigError(f"burn_in must be an integer in [0, n_steps - record_every], got {burn_in!r}")
    if sampler not in ("baoab", "euler", "mala"):
        raise ConfigError(f"sampler must be 'baoab', 'euler' or 'mala', got {sampler!r}")
    X = np.asarray(X, dtype=np.float64)
    A0 = model.prepare_inputs(X)
    yv = np.asarray(y, dtype=np.float64).ravel()
    if yv.shape != (A0.shape[0],) or not np.all(np.isfinite(yv)):
        raise ConfigError(f"y must be a finite vector of length {A0.shape[0]}")
    Xt = None if X_test is None else np.asarray(X_test, dtype=np.float64)
    if Xt is not None:
        model.prepare_inputs(Xt)
    ytest = None
    if y_test is not None:
        if Xt is None:
            raise ConfigError("y_test was given without X_test")
        ytest = np.asarray(y_test, dtype=np.float64).ravel()
        if ytest.shape != (Xt.shape[0],) or not np.all(np.isfinite(ytest)):
            raise ConfigError(f"y_test must be a finite vector of length {Xt.shape[0]}")
    step_size = positive_float(step_size, "step_size")
    if friction is None and sampler == "baoab":
        friction = default_friction(model.network, model.temperature)
    cfg = RunConfig(temperature=model.temperature, n_steps=n_steps, record_every=record_every, sampler=sampler,
                    step_size=step_size, burn_in=int(burn_in), replicas=R, seed=int(seed), device=str(model.device),
                    dtype=str(model.dtype).replace("torch.", ""), friction=friction, init="prior",
                    rao_blackwell=False, scaling=model.scaling,
                    noise_streams="replica" if model.device.type == "cpu" else "single")
    Ap = model.prepare_inputs(X[:4] if probe is None else probe)

    def moments(p):  # Σ over neurons of h^k, k = 0..4, per replica, probe input and patch
        h = model.preactivations(p, Ap).double()
        h = h.reshape(h.shape[0], Ap.shape[0], -1, model.width)
        return torch.stack([(h ** k).sum(-1) for k in range(5)], 1)

    obs = [Observable("sigma", model.weight_covariance, "mean"), Observable("train_f", kind="mean", source="f_train"),
           Observable("moments", moments, "mean")]
    run = Run(model, {"X": X, "y": yv, "X_test": Xt, "y_test": ytest}, cfg, observables=obs)
    try:
        run.initialize()
        run.run()
        res = run.result()
    finally:
        run.close()
    rec = run.recorder
    sig_rep = rec.mean("sigma")
    sigma = sig_rep.mean(0)
    se = sig_rep.std(0, ddof=1) / math.sqrt(R) if R > 1 else np.full_like(sigma, np.nan)
    m = rec.sums["moments"].sum(0)                                       # [5, n_probe, Ñ]
    m = m / m[0]                                                          # raw moments E h^k
    mu = m[1]
    var = m[2] - mu ** 2
    c4 = m[4] - 4 * mu * m[3] + 6 * mu ** 2 * m[2] - 3 * mu ** 4
    d = res.diagnostics
    rhat, ess = {"energy": d.rhat["energy"]}, {"energy": d.ess["energy"]}
    tm = tv = mse = mse_se = tmr = None
    if Xt is not None:
        n_post = rec.chunk_count.sum()
        tmr = rec.acc["f_sum"].sum(0) / n_post
        tm = tmr.mean(0)
        tv = np.maximum(rec.acc["f_sq"].sum((0, 1)) / (n_post * R) - tm ** 2, 0.0)
        if ytest is not None:
            mse, mse_se = float(res.generalization_error.total), res.generalization_error.total.stderr
            rhat["test_mse"], ess["test_mse"] = d.rhat["test_mse_raw"], d.ess["test_mse_raw"]
    return WeightPosterior(sigma=sigma, sigma_stderr=se, sigma_replicas=sig_rep, test_mean_replicas=tmr, test_mean=tm,
                           test_var=tv, test_mse=mse, test_mse_stderr=mse_se,
                           train_discrepancy=yv - rec.mean("train_f").mean(0), preact_var=var,
                           preact_excess_kurtosis=c4 / var ** 2 - 3.0, rhat=rhat, ess=ess, n_records=rec.n_summed,
                           samples=res)
