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
    # with D outputs the readout's D × D second moment (its worst entry) too: Q_L is a result
    outer = ("readout_outer_rb" if rb else "readout_outer_raw") if getattr(rec, "n_outputs", 1) > 1 else None
    return [k for k in ("energy", "train_mse_rb" if rb else "train_mse_raw", test,
                        "readout_norm_rb" if rb else "readout_norm_raw", outer) if k]


def burn_in(rec, cfg) -> tuple[int, int, str]:
    """(chunks discarded after the user's burn-in, burn-in in steps, the rule's description)."""
    key_obs = [k for k in _key_observables(rec) if rec.traces[k].ndim == 2]
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

    ``qbar_factor`` = λ_L / M (the readout prior over the number of readout weights per output) turns
    ⟨a aᵀ⟩ into the readout estimate of Q_L; with D outputs ``qbar_readout`` is tr(Q_L)/D.
    """
    tr, R = rec.traces, cfg.replicas
    if rec.n_chunks == 0:
        raise ConfigError(f"no records after burn-in: n_steps={cfg.n_steps}, record_every={cfg.record_every}, "
                          f"burn_in={cfg.burn_in}; record more often or run longer")
    key_obs = _key_observables(rec)
    d, burn_steps, rule = burn_in(rec, cfg)
    post = slice(rec.rec0 + d * rec.chunk_len, rec.n_rec)
    scalars = [k for k, v in tr.items() if v.ndim == 2]
    D = getattr(rec, "n_outputs", 1)
    matrices = [k for k in ("readout_outer_raw", "readout_outer_rb", "test_outer_raw", "test_outer_rb") if k in tr]

    def chains(k):
        return tr[k][post].T  # [R, n]

    rhat = {k: diag.split_rhat(chains(k)) for k in scalars}
    ess = {k: diag.effective_sample_size(chains(k)) for k in scalars}
    patch_keys = [k for k in ("patch_outer_rb", "patch_outer_raw") if k in tr]
    for k in matrices + patch_keys:  # the worst entry (a ≤ b) of a D × D or (CNN) Ñ × Ñ trace
        entries = [tr[k][post][:, :, a, b].T for a, b in zip(*np.triu_indices(tr[k].shape[-1]))]
        rhat[k] = max(diag.split_rhat(c) for c in entries)
        ess[k] = min(diag.effective_sample_size(c) for c in entries)
    taus = [diag.integrated_time(chains(k)) for k in key_obs if k in scalars and chains(k).shape[1] >= 4]
    tau = max(taus) if taus else 1.0
    groups = _block_layout(rec, d, tau)
    n_blocks = R * len(groups)
    if n_blocks < 2:
        warnings.warn("only one error-bar block (one replica, short run): standard errors are NaN; "
                      "use replicas >= 2", RuntimeWarning, stacklevel=3)
    records = [np.concatenate([rec.chunk_records(c) for c in grp]) for grp in groups]

    def block_scalar(x):  # x: [n_rec, R, ...] -> sums [J, ...], counts [J]
        sums = [x[idx, r].sum(axis=0) for r in range(R) for idx in records]
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
    qbar = scalar_estimate(tr["readout_norm_rb" if rb else "readout_norm_raw"], qbar_factor / D)
    qbar_raw = scalar_estimate(tr["readout_norm_raw"], qbar_factor / D)
    # D outputs: Q̂ = λ_L⟨V Vᵀ⟩/N_L, D × D (derivation in docs/multioutput.md)
    multi = _matrix_estimate(tr, block_scalar, qbar_factor, "qbar_matrix",
                             "readout_outer_rb" if rb else "readout_outer_raw", "readout_outer_raw") if D > 1 else {}
    layer_norms = [scalar_estimate(tr["layer_norms"][:, :, l]) for l in range(tr["layer_norms"].shape[-1])]
    # CNN, local readout: Q̂ = λ_1⟨Σ_c a_c a_cᵀ⟩/C over patch pairs (λ_1/C = qbar_factor · Ñ, so tr Q̂/Ñ is
    # qbar_readout; derivation in docs/sampling.md, "CNNs")
    patch_q = _matrix_estimate(tr, block_scalar, qbar_factor * tr[patch_keys[0]].shape[-1], "qbar_patches",
                               "patch_outer_rb" if rb else "patch_outer_raw", "patch_outer_raw") if patch_keys else {}

    def error_estimate(mse_key, mean_name):
        s_tot, n = block_scalar(tr[mse_key])
        s_mu = block_vec(mean_name)
        shape = s_mu.shape[1:]
        ytest = rec.yt64.cpu().numpy()

        def stat(S, m):
            tot = S[0] / m
            bias = np.mean((ytest - S[1:].reshape(shape) / m) ** 2) * D  # summed over the outputs
            return np.array([tot, bias, tot - bias])

        S = np.concatenate([s_tot[:, None], s_mu.reshape(len(s_mu), -1)], axis=1)
        est, se, corr = diag.jackknife(stat, S, n)
        bias = corr[1] if np.isfinite(corr[1]) else est[1]
        total = ErrorEstimate(Estimate(est[0], se[0]), Estimate(bias, se[1]), Estimate(est[0] - bias, se[2]))
        if D == 1:
            return total
        return per_output(total, mean_name)

    def per_output(total, mean_name):
        """Each output's ε_g, bias and variance, and the argmax accuracy of the posterior mean (D outputs)."""
        ytest = rec.yt64.cpu().numpy()
        Pt = ytest.shape[0]
        names = [mean_name, mean_name.replace("_sum", "_sq")] + (["v_sum"] if mean_name == "mu_sum" else [])
        parts = [block_vec(nm).reshape(n_blocks, -1) for nm in names]
        S = np.concatenate(parts, axis=1)
        counts = np.array([sum(rec.chunk_count[grp]) for _ in range(R) for grp in groups])
        label = np.argmax(ytest, axis=1)

        def stat(S, m):
            mu, sq = S[:Pt * D].reshape(Pt, D) / m, S[Pt * D:2 * Pt * D].reshape(Pt, D) / m
            v = S[2 * Pt * D:] / m if S.size > 2 * Pt * D else 0.0
            tot = np.mean(sq - 2 * ytest * mu + ytest ** 2, axis=0) + np.mean(v)
            bias = np.mean((ytest - mu) ** 2, axis=0)
            acc = np.mean(np.argmax(mu, axis=1) == label)
            return np.concatenate([tot, bias, [acc]])

        est, se, corr = diag.jackknife(stat, S, counts)
        bias = np.where(np.isfinite(corr[D:2 * D]), corr[D:2 * D], est[D:2 * D])
        return ErrorEstimate(total.total, total.bias, total.variance,
                             total_per_output=[Estimate(v, e) for v, e in zip(est[:D], se[:D])],
                             bias_per_output=[Estimate(v, e) for v, e in zip(bias, se[D:2 * D])],
                             variance_per_output=[Estimate(t - b, e) for t, b, e in zip(est[:D], bias, se[:D])],
                             accuracy=Estimate(est[-1], se[-1]))

    def output_covariance(outer_key, mean_name):
        """The test-averaged D × D posterior covariance of f and its correlation matrix, with jackknife
        standard errors (bias-corrected, as the squared bias)."""
        s_o, _ = block_scalar(tr[outer_key])
        s_m = block_vec(mean_name)
        counts = np.array([sum(rec.chunk_count[grp]) for _ in range(R) for grp in groups])
        Pt = s_m.shape[1]

        def stat(S, m):
            mu = S[D * D:].reshape(Pt, D) / m
            cov = S[:D * D].reshape(D, D) / m - mu.T @ mu / Pt
            d = np.sqrt(np.maximum(np.diag(cov), 1e-300))
            return np.concatenate([cov.ravel(), (cov / np.outer(d, d)).ravel()])

        S = np.concatenate([s_o.reshape(n_blocks, -1), s_m.reshape(n_blocks, -1)], axis=1)
        est, se, corr = diag.jackknife(stat, S, counts)
        val = np.where(np.isfinite(corr), corr, est)
        return {"output_covariance": val[:D * D].reshape(D, D), "output_covariance_stderr": se[:D * D].reshape(D, D),
                "output_correlation": val[D * D:].reshape(D, D), "output_correlation_stderr": se[D * D:].reshape(D, D)}

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
        if D > 1:
            multi.update(output_covariance("test_outer_rb" if rb else "test_outer_raw", mname))

    problems = convergence_problems(rhat, key_obs + patch_keys[:1], acceptance, cfg)
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
        **multi,
        **patch_q,
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


def _matrix_estimate(tr, block_scalar, factor: float, name: str, key: str, raw_key: str) -> dict[str, np.ndarray]:
    """A matrix order parameter ``factor`` · ⟨M⟩ from the recorded matrix trace ``key`` (Rao–Blackwellised
    or raw) and ``raw_key``, with jackknife standard errors over the blocks: ``name``, ``name_stderr``,
    ``name_raw``, ``name_raw_stderr``."""
    out = {}
    for label, k in ((name, key), (name + "_raw", raw_key)):
        shape = tr[k].shape[-2:]
        s, n = block_scalar(tr[k])
        est, se, _ = diag.jackknife(lambda S, m: S / m, s.reshape(len(s), -1), n)
        out[label], out[label + "_stderr"] = factor * est.reshape(shape), factor * se.reshape(shape)
    return out
