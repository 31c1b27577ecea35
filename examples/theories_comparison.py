"""Validation runs of the three theories (NNGP, RKGP/BPKR, AdaptiveKernel) and the figure of
docs/theories.md (saved as docs/figures/theories.png).

Command (from the repository root; ~2.5 minutes on one CPU core):

    OMP_NUM_THREADS=1 .venv/bin/python examples/theories_comparison.py

Prints the numbers quoted in docs/theories.md:
  1. linear networks, standard scaling (α = 0.5, 2): AK vs exact BPKR vs GP;
  2. linear networks, mean-field scaling: RMS(AK mean − BPKR mean) and the variance ratio vs N;
  3. erf, mean-field scaling, width sweep: AK vs BAOAB sampling (top eigenvalue and teacher
     alignment of Σ̂, test MSE, pre-activation kurtosis) with the RKGP prediction on the same data.
"""

from __future__ import annotations

import math
import time

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from finwidth import NNGP, RKGP, Network  # noqa: E402
from finwidth.simulate.two_layer import TwoLayerFCN  # noqa: E402
from finwidth.simulate.weights import sample_weights  # noqa: E402
from finwidth.theory.adaptive import AdaptiveKernel, covariance_summary  # noqa: E402

torch.set_num_threads(1)


def linear_teacher():
    """The linear-network problem of parts 1 and 2: P = 60, N0 = 120, label noise 0.5, 200 test points."""
    rng = np.random.default_rng(0)
    N0, P = 120, 60
    w = rng.standard_normal(N0)
    X = rng.standard_normal((P, N0))
    y = X @ w / math.sqrt(N0) + 0.5 * rng.standard_normal(P)
    Xt = rng.standard_normal((200, N0))
    return X, y, Xt, Xt @ w / math.sqrt(N0), P


def linear_standard():
    X, y, Xt, yt, P = linear_teacher()
    print("1. linear, standard scaling: P=60, N0=120, T=0.1, priors (1, 0.2), label noise 0.5")
    print("   alpha  N    eps_AK (bias)      eps_BPKR (bias)    eps_GP (bias)")
    for alpha in (0.5, 2.0):
        net = Network([int(P / alpha)], "linear", priors=(1.0, 0.2))
        e = [m(net, 0.1, **kw).fit(X, y).generalization_error(Xt, yt)
             for m, kw in ((AdaptiveKernel, {"scaling": "standard"}), (RKGP, {}), (NNGP, {}))]
        print(f"   {alpha:4.1f} {net.widths[0]:4d}  " + "  ".join(f"{x.total:.4f} ({x.bias:.4f})" for x in e))


def linear_mean_field():
    X, y, Xt, _, _ = linear_teacher()
    print("2. linear, mean-field scaling: readout precision 0.01 (variance 100/N^2 per 1/N-scaled weight), T=5/N")
    print("   N      RMS(mean_AK - mean_BPKR)   <var_AK>/<var_BPKR>")
    Ns, rms = [], []
    for N in (50, 200, 800, 3200, 12800):
        T = 5.0 / N
        ak = AdaptiveKernel(Network([N], "linear", priors=(1.0, 0.01)), T).fit(X, y)
        bp = RKGP(Network([N], "linear", priors=(1.0, 0.01 * N)), T).fit(X, y)
        (ma, va), (mb, vb) = ak.predict(Xt, return_var=True), bp.predict(Xt, return_var=True)
        r = float(np.sqrt(np.mean((ma - mb) ** 2)))
        Ns.append(N)
        rms.append(r)
        print(f"   {N:6d} {r:.3e}                   {va.mean() / vb.mean():.3f}")
    return Ns, rms


def erf_teacher(seed=0):
    """The erf problem of part 3: P = 20, N0 = 5, teacher tanh(2 w.x/sqrt(N0)), 200 test points."""
    rng = np.random.default_rng(seed)
    P, N0 = 20, 5
    w = rng.standard_normal(N0)
    X = rng.standard_normal((P, N0))
    Xt = rng.standard_normal((200, N0))
    return X, np.tanh(2 * X @ w / math.sqrt(N0)), Xt, np.tanh(2 * Xt @ w / math.sqrt(N0)), w


def erf_mean_field_sweep():
    X, y, Xt, yt, w = erf_teacher(0)
    P, N0 = X.shape
    print("3. erf, mean-field scaling, teacher tanh(2 w.x/sqrt(N0)): P=20, N0=5, priors (1, 0.1), T=0.5/N;")
    print("   BAOAB h=0.25, 20000 steps (4000 burn-in), 8 replicas. Prior top eigenvalue 1/N0 = 0.2")
    print("   N    top_AK top_MC(se)        align_AK align_MC   eps_AK  eps_MC(se)          eps_RKGP eps_NNGP kurt_max  R^")
    rows = []
    for N in (25, 50, 100, 200, 400):
        T = 0.5 / N
        net = Network([N], "erf", priors=(1.0, 0.1))
        ak = AdaptiveKernel(net, T).fit(X, y)
        t0 = time.time()
        res = sample_weights(TwoLayerFCN(net, N0, T), X, y, sampler="baoab", step_size=0.25, n_steps=20000,
                             burn_in=4000, record_every=10, replicas=8, X_test=Xt, y_test=yt, seed=0)
        reps = [covariance_summary(s, w)["top_eigenvalue"] for s in res.sigma_replicas]
        se = np.std(reps, ddof=1) / math.sqrt(len(reps))
        sa, sm = ak.weight_summary(w), covariance_summary(res.sigma, w)
        std_net = Network([N], "erf", priors=(1.0, 0.1 * N))  # same function-space posterior
        e_rk = RKGP(std_net, T).fit(X, y).generalization_error(Xt, yt).total
        e_gp = NNGP(std_net, T).fit(X, y).generalization_error(Xt, yt).total
        e_ak = ak.generalization_error(Xt, yt).total
        print(f"   {N:4d} {sa['top_eigenvalue']:.4f} {sm['top_eigenvalue']:.4f}({se:.4f})   {sa['alignment']:.4f}   "
              f"{sm['alignment']:.4f}   {e_ak:.5f} {res.test_mse:.5f}({res.test_mse_stderr:.5f})  {e_rk:.5f}  "
              f"{e_gp:.5f}  {np.abs(res.preact_excess_kurtosis).max():.3f}   {res.rhat['energy']:.3f}"
              f"   [{time.time() - t0:.0f}s]")
        rows.append((N, sa["top_eigenvalue"], sm["top_eigenvalue"], se, e_ak, res.test_mse, res.test_mse_stderr,
                     e_rk, e_gp))
    return np.array(rows)


def main():
    t0 = time.time()
    linear_standard()
    Ns, rms = linear_mean_field()
    rows = erf_mean_field_sweep()
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    ax[0].loglog(Ns, rms, "o-", label="AK vs exact (BPKR)")
    ax[0].loglog(Ns, rms[0] * Ns[0] / np.array(Ns), "k--", label="∝ 1/N")
    ax[0].set(xlabel="width N", ylabel="RMS difference of mean predictors", title="linear, mean-field scaling")
    ax[0].legend()
    N = rows[:, 0]
    ax[1].errorbar(N, rows[:, 2], yerr=rows[:, 3], fmt="o", label="Langevin (BAOAB)")
    ax[1].plot(N, rows[:, 1], "s-", label="adaptive kernel")
    ax[1].axhline(0.2, color="k", ls=":", label="prior / GP")
    ax[1].set(xscale="log", xlabel="width N", ylabel="top eigenvalue of Σ", title="erf, mean-field: weight covariance")
    ax[1].legend()
    ax[2].errorbar(N, rows[:, 5], yerr=rows[:, 6], fmt="o", label="Langevin (BAOAB)")
    ax[2].plot(N, rows[:, 4], "s-", label="adaptive kernel")
    ax[2].plot(N, rows[:, 7], "^--", label="RKGP (product)")
    ax[2].plot(N, rows[:, 8], "k:", label="NNGP")
    ax[2].set(xscale="log", yscale="log", xlabel="width N", ylabel="test error ε_g", title="erf, mean-field: test error")
    ax[2].legend()
    for a in ax[1:]:
        a.set_xticks(N)
        a.set_xticklabels([str(int(n)) for n in N])
        a.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    fig.tight_layout()
    fig.savefig("docs/figures/theories.png", dpi=120)
    print(f"wrote docs/figures/theories.png; total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
