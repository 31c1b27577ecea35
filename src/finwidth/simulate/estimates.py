"""From a recorder's records to estimates with error bars and convergence diagnostics.

* Burn-in: the user's ``burn_in``, or the MSER rule (White 1997) on the replica-averaged chunk means of
  the key observables (energy, train error, test error, readout norm), the largest truncation winning.
* Error bars: a delete-one-block jackknife over blocks = replicas × time batches, each batch at least
  ``BLOCK_TAU`` integrated autocorrelation times long (at most √n of them).
* Diagnostics: split-R̂ and ESS of every traced scalar (:mod:`finwidth.simulate.diagnostics`), and
  the problems that make the error bars untrustworthy (:func:`convergence_problems`), issued as a
  :class:`~finwidth.errors.NotConvergedWarning`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from finwidth.errors import ConfigError, NotConvergedWarning
from finwidth.simulate import diagnostics as diag
from finwidth.simulate.results import Diagnostics, ErrorEstimate, Estimate, Observed, PosteriorSamples

__all__ = ["ACCEPTANCE_MIN", "BLOCK_TAU", "RHAT_MAX", "convergence_problems", "estimate"]

BLOCK_TAU = 10.0  # error-bar blocks are at least this many autocorrelation times long
RHAT_MAX = 1.1  # split-R̂ of a key observable above this: not converged (aim at ≤ 1.01–1.05 for results)
ACCEPTANCE_MIN = 0.05  # mean MALA acceptance below this (or a replica below 1 %): the chains are stuck


def _key_observables(rec) -> list[str]:
    rb = rec.rb
    test = ("test_mse_rb" if rb else "test_mse_raw") if rec.has_ytest else None
    return [k for k in ("energy", "train_mse_rb" if rb else "train_mse_raw", test,
                        "readout_norm_rb" if rb else "readout_norm_raw") if k]


def burn_in(rec, cfg) -> tuple[int, int, str]:
    """(chunks discarded after the user's burn-in, burn-in in steps, the rule's description)."""
    key_obs = _key_observables(rec)
    if cfg.burn_in is not None:
        return 0, cfg.burn_in, "user"
    d = 0
    for k in key_obs:
        cm = [np.nanmean(rec.traces[k][rec.chunk_records(c)], axis=0).mean() for c in range(rec.n_chunks)]
        d = max(d, diag.mser_truncation(cm))
    first = rec.rec0 + d * rec.chunk_len
    steps = cfg.first_record + (first - 1) * cfg.record_every if first > 0 else 0
    return d, steps, "MSER on replica-averaged chunk means of " + ", ".join(key_obs)


def convergence_problems(rhat: dict[str, float], key_obs: list[str], acceptance, cfg) -> list[str]:
    """Why the chains are not to be trusted, each with what to change (empty when none)."""
    out = []
    if acceptance is not None:
        acc = np.asarray(acceptance, dtype=float)
        stuck = np.flatnonzero(acc < 0.01)
        if acc.mean() < ACCEPTANCE_MIN or stuck.size:
            out.append(f"MALA accepted {acc.mean():.1%} of its proposals (replicas {stuck.tolist()} below 1 %): "
                       f"those chains barely move and their error bars mean nothing; use a step_size about 4x "
                       f"smaller than {cfg.step_size:.3g}, or the 'mala' value of finwidth.simulate.suggest_step_size, "
                       f"and aim at an acceptance of 0.5-0.8")
    bad = {k: rhat[k] for k in key_obs if k in rhat and not np.isnan(rhat[k]) and rhat[k] > RHAT_MAX}
    if bad:
        advice = {"gibbs": "run more sweeps (n_steps)",
                  "mala": "run longer (n_steps) with a step_size that gives an acceptance of 0.5-0.8"}.get(
            cfg.sampler, "run longer (n_steps), or take a larger step_size within the stability limit of "
                         "finwidth.simulate.suggest_step_size")
        worst = ", ".join(f"{k} {v:.3g}" for k, v in bad.items())
        out.append(f"the chains have not converged: split-R̂ above {RHAT_MAX} ({worst}), so the replicas disagree "
                   f"and the error bars are too small; {advice}, or start near the fit with "
                   f"init='readout_conditional'")
    return out


def _block_layout(rec, first_chunk: int, tau: float) -> list[np.ndarray]:
    """Groups of chunks (time batches) used as jackknife blocks within each replica."""
    chunks = np.arange(first_chunk, rec.n_chunks)
    n_rec_post = sum(rec.chunk_records(c).size for c in chunks)
    g = int(n_rec_post // max(BLOCK_TAU * tau, 1.0))
    g = max(1, min(g, chunks.size, max(1, math.isqrt(max(n_rec_post, 1)))))
    return [grp for grp in np.array_split(chunks, g) if grp.size]


def estimate(rec, cfg, *, qbar_factor: float, acceptance=None, wall: float = 0.0) -> PosteriorSamples:
    """The :class:`PosteriorSamples` of a finished recorder.

    ``qbar_factor`` = λ_L / M (the readout prior over the number of readout weights) turns ⟨|a|²⟩ into
    the readout-norm estimate of Q̄_L.
    """
    tr, R = rec.traces, cfg.replicas
    if rec.n_chunks == 0:
        raise ConfigError(f"no records after burn-in: n_steps={cfg.n_steps}, record_every={cfg.record_every}, "
                          f"burn_in={cfg.burn_in}; record more often or run longer")
    key_obs = _key_observables(rec)
    d, burn_steps, rule = burn_in(rec, cfg)
    post = slice(rec.rec0 + d * rec.chunk_len, rec.n_rec)
    scalars = [k for k, v in tr.items() if v.ndim == 2]

    def chains(k):
        return tr[k][post].T  # [R, n]

    rhat = {k: diag.split_rhat(chains(k)) for k in scalars}
    ess = {k: diag.effective_sample_size(chains(k)) for k in scalars}
    taus = [diag.integrated_time(chains(k)) for k in key_obs if chains(k).shape[1] >= 4]
    tau = max(taus) if taus else 1.0
    groups = _block_layout(rec, d, tau)
    n_blocks = R * len(groups)
    if n_blocks < 2:
        warnings.warn("only one error-bar block (one replica, short run): standard errors are NaN; "
                      "use replicas >= 2", RuntimeWarning, stacklevel=3)
    records = [np.concatenate([rec.chunk_records(c) for c in grp]) for grp in groups]

    def block_scalar(x):  # x: [n_rec, R] -> sums [J], counts [J]
        sums = [x[idx, r].sum() for r in range(R) for idx in records]
        return np.array(sums), np.array([idx.size for _ in range(R) for idx in records], dtype=float)

    def block_vec(name):
        return np.array([rec.acc[name][grp, r].sum(axis=0) for r in range(R) for grp in groups])

    def scalar_estimate(x, scale=1.0):
        s, n = block_scalar(x)
        est, se, _ = diag.jackknife(lambda S, m: S / m, s, n)
        return Estimate(scale * float(est), scale * float(se))

    rb = rec.rb
    train = scalar_estimate(tr["train_mse_rb" if rb else "train_mse_raw"])
    train_raw = scalar_estimate(tr["train_mse_raw"])
    qbar = scalar_estimate(tr["readout_norm_rb" if rb else "readout_norm_raw"], qbar_factor)
    qbar_raw = scalar_estimate(tr["readout_norm_raw"], qbar_factor)
    layer_norms = [scalar_estimate(tr["layer_norms"][:, :, l]) for l in range(tr["layer_norms"].shape[-1])]

    def error_estimate(mse_key, mean_name):
        s_tot, n = block_scalar(tr[mse_key])
        s_mu = block_vec(mean_name)
        shape = s_mu.shape[1:]
        ytest = rec.yt64.cpu().numpy()

        def stat(S, m):
            tot = S[0] / m
            bias = np.mean((ytest - S[1:].reshape(shape) / m) ** 2)
            return np.array([tot, bias, tot - bias])

        S = np.concatenate([s_tot[:, None], s_mu.reshape(len(s_mu), -1)], axis=1)
        est, se, corr = diag.jackknife(stat, S, n)
        bias = corr[1] if np.isfinite(corr[1]) else est[1]
        return ErrorEstimate(Estimate(est[0], se[0]), Estimate(bias, se[1]), Estimate(est[0] - bias, se[2]))

    gen_err = gen_raw = vr = None
    pm = pv = pse = None
    if rec.has_test:
        counts = np.array([sum(rec.chunk_count[grp]) for _ in range(R) for grp in groups])
        mname, sqname = ("mu_sum", "mu_sq") if rb else ("f_sum", "f_sq")
        s_mu = block_vec(mname)
        pm, pse, _ = diag.jackknife(lambda S, m: S / m, s_mu, counts)
        n_tot = counts.sum()
        pv = block_vec(sqname).sum(0) / n_tot - pm ** 2
        if rb:
            v = block_vec("v_sum").sum(0) / n_tot
            pv = pv + (v[..., None] if pv.ndim > v.ndim else v)
        pv = np.maximum(pv, 0.0)
        if rec.has_ytest:
            gen_raw = error_estimate("test_mse_raw", "f_sum")
            gen_err = error_estimate("test_mse_rb", "mu_sum") if rb else gen_raw
            if rb and gen_err.total.stderr > 0:
                vr = float((gen_raw.total.stderr / gen_err.total.stderr) ** 2)

    problems = convergence_problems(rhat, key_obs, acceptance, cfg)
    if problems:
        warnings.warn("; ".join(problems), NotConvergedWarning, stacklevel=4)

    observed = {name: _observed(rec, name, d) for name in rec.obs_sums}

    diagnostics = Diagnostics(
        rhat=rhat, ess=ess,
        acceptance=None if acceptance is None else float(np.mean(acceptance)),
        acceptance_per_replica=acceptance, burn_in_steps=int(burn_steps), burn_in_rule=rule,
        tau_records=float(tau), n_blocks=n_blocks,
        steps_per_second=cfg.n_steps / wall if wall > 0 else float("nan"), wall_time=wall, problems=problems,
    )
    return PosteriorSamples(
        generalization_error=gen_err, generalization_error_raw=gen_raw, variance_reduction=vr,
        train_error=train, train_error_raw=train_raw, qbar_readout=qbar, qbar_readout_raw=qbar_raw,
        layer_norms=layer_norms, prediction_mean=pm, prediction_var=pv, prediction_mean_stderr=pse,
        diagnostics=diagnostics, traces=tr, record_steps=cfg.record_steps(), config=cfg, observed=observed,
    )


def _observed(rec, name: str, first_chunk: int) -> Observed:
    """An observer's posterior mean over the time groups that start at or after the burn-in chunk."""
    groups = [g for g in range(rec.n_groups) if min(rec.group_chunks(g)) >= first_chunk and rec.obs_count[g] > 0]
    sums = rec.obs_sums[name]
    R = sums.shape[1]
    if not groups:
        nan = np.full(sums.shape[2:], np.nan)
        return Observed(nan, nan, 0)
    S = np.array([sums[g, r] for r in range(R) for g in groups])
    n = np.array([rec.obs_count[g] for _ in range(R) for g in groups])
    est, se, _ = diag.jackknife(lambda T, m: T / m, S, n)
    return Observed(np.asarray(est), np.asarray(se), int(sum(rec.obs_count[g] for g in groups)))
