"""MCMC diagnostics over independent replicas: split-R̂, effective sample size, batch-means
standard errors, block jackknife and the burn-in rule.

All functions take traces shaped ``[R, n]`` (replica, record) as numpy arrays.

References
----------
Gelman et al., *Bayesian Data Analysis* (3rd ed.), §11.4 (split-R̂, multi-chain ESS);
Geyer (1992), initial monotone sequence estimator of the autocorrelation time;
White (1997), MSER truncation rule for the initial transient.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "autocorrelation",
    "batch_means_stderr",
    "effective_sample_size",
    "integrated_time",
    "jackknife",
    "mser_truncation",
    "split_rhat",
]


def _as_chains(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"traces must be shaped [replicas, records], got {x.shape}")
    return x


def split_rhat(x) -> float:
    """Split-R̂ (BDA3 §11.4): each chain is cut in two halves and the between/within variance
    ratio of the 2R half-chains is formed. Values above ~1.01–1.05 mean the replicas have not
    mixed (run longer, or increase the burn-in). Returns NaN for fewer than 4 records."""
    x = _as_chains(x)
    n = x.shape[1] // 2
    if n < 2:
        return float("nan")
    halves = np.concatenate([x[:, :n], x[:, -n:]], axis=0)
    means = halves.mean(axis=1)
    W = halves.var(axis=1, ddof=1).mean()
    B = n * means.var(ddof=1)
    if W <= 0:
        return float("nan") if B <= 0 else float("inf")
    var_plus = (n - 1) / n * W + B / n
    return float(math.sqrt(var_plus / W))


def autocorrelation(x) -> np.ndarray:
    """Multi-chain autocorrelation ρ_t (BDA3 eq. 11.7), using FFT autocovariances per chain."""
    x = _as_chains(x)
    m, n = x.shape
    xc = x - x.mean(axis=1, keepdims=True)
    nfft = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(xc, nfft, axis=1)
    acov = np.fft.irfft(f * np.conj(f), nfft, axis=1)[:, :n] / n
    W = (acov[:, 0] * n / max(n - 1, 1)).mean()
    B_over_n = x.mean(axis=1).var(ddof=1) if m > 1 else 0.0
    var_plus = (n - 1) / n * W + B_over_n
    if var_plus <= 0:
        return np.ones(n)
    return 1.0 - (W - acov.mean(axis=0)) / var_plus


def integrated_time(x) -> float:
    """Integrated autocorrelation time τ (in records) with Geyer's initial monotone sequence."""
    rho = autocorrelation(x)
    n = rho.size
    tau = -1.0
    prev = math.inf
    for t in range(0, n - 1, 2):
        pair = rho[t] + rho[t + 1]
        if pair <= 0:
            break
        pair = min(pair, prev)  # monotone
        prev = pair
        tau += 2.0 * pair
    return max(tau, 1.0 / math.log10(max(n, 10)))


def effective_sample_size(x) -> float:
    """ESS = (R n) / τ over all replicas (BDA3 §11.5 with Geyer's truncation)."""
    x = _as_chains(x)
    if x.shape[1] < 4 or not np.all(np.isfinite(x)):
        return float("nan")
    if np.ptp(x) == 0:
        return float(x.size)
    return float(x.size / integrated_time(x))


def batch_means_stderr(x, n_batches: int | None = None) -> float:
    """Standard error of the overall mean of ``x`` (``[R, n]``) by non-overlapping batch means.

    Each chain is cut into ``n_batches`` batches (default ⌊√n⌋); the variance of the batch means
    over all chains, divided by the number of batches, estimates the variance of the mean. Valid
    when batches are longer than the autocorrelation time.
    """
    x = _as_chains(x)
    R, n = x.shape
    b = n_batches or max(1, int(math.isqrt(n)))
    b = min(b, n)
    m = n // b
    if R * b < 2:
        return float("nan")
    means = x[:, : b * m].reshape(R, b, m).mean(axis=2).ravel()
    return float(means.std(ddof=1) / math.sqrt(means.size))


def jackknife(stat, sums, counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Delete-one-block jackknife of a statistic of block sums.

    Parameters
    ----------
    stat : callable
        ``stat(S, n)`` with S the summed block totals (array) and n the total count; returns an
        array (or float).
    sums : np.ndarray
        Per-block sums, shape ``[J, ...]`` (blocks: replica × time batch, nearly independent).
    counts : np.ndarray
        Records per block, shape ``[J]``.

    Returns
    -------
    estimate, stderr, bias_corrected
        ``stat`` on all blocks, the jackknife standard error and the jackknife bias-corrected
        estimate J θ̂ − (J − 1) mean_j θ̂_(−j) (NaNs for J < 2).
    """
    S = sums.sum(axis=0)
    n = counts.sum()
    full = np.asarray(stat(S, n), dtype=np.float64)
    J = sums.shape[0]
    if J < 2:
        nan = np.full_like(full, np.nan)
        return full, nan, nan
    loo = np.stack([np.asarray(stat(S - sums[j], n - counts[j]), dtype=np.float64) for j in range(J)])
    mean_loo = loo.mean(axis=0)
    se = np.sqrt((J - 1) / J * ((loo - mean_loo) ** 2).sum(axis=0))
    return full, se, J * full - (J - 1) * mean_loo


def mser_truncation(batch_means, max_fraction: float = 0.5) -> int:
    """MSER burn-in rule (White 1997) on a sequence of batch means.

    Returns the number d of leading batches to discard that minimises the marginal standard error
    Var(x[d:]) / (n − d)², searched over d ≤ ``max_fraction`` · n. Applied by
    :func:`finwidth.sample_posterior` to the replica-averaged chunk means of the potential, the
    train error and the test error (the largest d wins).
    """
    x = np.asarray(batch_means, dtype=np.float64)
    n = x.size
    if n < 4:
        return 0
    best, best_d = math.inf, 0
    for d in range(int(max_fraction * n) + 1):
        tail = x[d:]
        k = tail.size
        if k < 2:
            break
        val = tail.var() / k  # Σ(x − x̄)²/(n − d)²
        if val < best:
            best, best_d = val, d
    return best_d
