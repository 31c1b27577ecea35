"""Checks of two claims of docs/theories.md on second cases (the numbers quoted there).

Command (from the repository root; a few minutes on one CPU core):

    OMP_NUM_THREADS=1 .venv/bin/python examples/theories_claims.py [--parts gibbs teachers]

gibbs:    BPKR (= RKGP for linear networks, exact in the proportional limit) against the exact
          finite-N posterior of the same network, sampled by block Gibbs (no step size), on the
          linear problem of table 1 (P = 60, N_0 = 120, T = 0.1, priors (1, 0.2)) at N = 30 and 120.
teachers: the erf mean-field width sweep of table 3 (P = 20, N_0 = 5, priors (1, 0.1), T = 0.5/N,
          BAOAB h = 0.25, 20 000 steps, 4 000 burn-in, 8 replicas) for teachers drawn with other seeds:
          AK's ε_g against the sampled one.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from finwidth import RKGP, Network
from finwidth.simulate.diagnostics import split_rhat
from finwidth.simulate.gibbs import gibbs_deep_linear
from finwidth.theory.adaptive import AdaptiveKernel
from theories_comparison import erf_teacher, linear_teacher  # examples/ (the script's folder) is on sys.path


def gibbs_vs_bpkr(n_sweeps: int = 6000, replicas: int = 16) -> None:
    X, y, Xt, yt, _ = linear_teacher()
    print(f"BPKR vs exact Gibbs (linear, P = 60, N_0 = 120, T = 0.1, priors (1, 0.2)); {replicas} replicas x "
          f"{n_sweeps} sweeps after 1000 burn-in")
    print("   N   alpha  eps_BPKR  eps_Gibbs (se)        rel.dev   z     Rhat   Qbar_BPKR  Qbar_Gibbs (se)")
    for N in (30, 120):
        net = Network([N], "linear", priors=(1.0, 0.2))
        theory = RKGP(net, 0.1).fit(X, y)
        eps_th = theory.generalization_error(Xt, yt).total
        t0 = time.time()
        s = gibbs_deep_linear(net, X, y, temperature=0.1, n_sweeps=n_sweeps, burn_in=1000, replicas=replicas,
                              seed=1, X_test=Xt, record_every=5)
        mse = np.mean((s.test_pred - yt) ** 2, axis=2)  # (records, replicas): test MSE of each sampled network
        rm = mse.mean(axis=0)
        eps, se = float(rm.mean()), float(rm.std(ddof=1) / math.sqrt(replicas))
        rhat = split_rhat(mse.T)
        q = s.readout_norm * net.priors[1] / N  # ⟨|a|²⟩ λ_L / N_L estimates Q̄_L
        qm = q.mean(axis=0)
        print(f"  {N:3d}  {60 / N:4.1f}   {eps_th:.4f}    {eps:.4f} ({se:.4f})   {eps / eps_th - 1:+.2%}  "
              f"{(eps - eps_th) / se:+5.1f}  {rhat:.3f}  {theory.qbar_[0]:.4f}     {qm.mean():.4f} "
              f"({qm.std(ddof=1) / math.sqrt(replicas):.4f})   [{time.time() - t0:.0f}s]", flush=True)


def teacher_sweep(seeds=(1, 2), widths=(25, 100, 400)) -> None:
    from finwidth.simulate.two_layer import TwoLayerFCN
    from finwidth.simulate.weights import sample_weights

    print("erf, mean field, teacher tanh(2 w.x/sqrt(N0)) drawn with other seeds; P = 20, N0 = 5, priors (1, 0.1), "
          "T = 0.5/N")
    print("  seed    N   eps_AK   eps_MC (se)          AK/MC-1   R^(energy)")
    for seed in seeds:
        X, y, Xt, yt, _ = erf_teacher(seed)
        N0 = X.shape[1]
        for N in widths:
            T = 0.5 / N
            net = Network([N], "erf", priors=(1.0, 0.1))
            e_ak = AdaptiveKernel(net, T).fit(X, y).generalization_error(Xt, yt).total
            t0 = time.time()
            res = sample_weights(TwoLayerFCN(net, N0, T), X, y, sampler="baoab", step_size=0.25, n_steps=20000,
                                 burn_in=4000, record_every=10, replicas=8, X_test=Xt, y_test=yt, seed=0)
            print(f"  {seed:4d} {N:4d}  {e_ak:.5f}  {res.test_mse:.5f} ({res.test_mse_stderr:.5f})  "
                  f"{e_ak / res.test_mse - 1:+.1%}   {res.rhat['energy']:.3f}   [{time.time() - t0:.0f}s]", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["gibbs", "teachers"], choices=["gibbs", "teachers"])
    args = ap.parse_args()
    if "gibbs" in args.parts:
        gibbs_vs_bpkr()
    if "teachers" in args.parts:
        teacher_sweep()


if __name__ == "__main__":
    main()
