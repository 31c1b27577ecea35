"""Issue 7, item 3: readout prior. ε_g against λ_1 (the readout prior precision) at several widths,
one-hidden-layer erf network, MNIST 0/1 (paper preset), P = 100, λ_0 = 1, at T = 1e-3 and T = 0, and
the simulations of readout_prior_sim.toml and readout_prior_sim2.toml (N_1 = 200) against the theory.

Claims tested: (a) a larger readout prior improves generalisation at any width; (b) the width
dependence vanishes at large λ_1.

    OMP_NUM_THREADS=1 FINWIDTH_DATA=../shared/data python examples/reproductions/readout_prior_analysis.py [--runs runs]
Writes docs/data/reproductions/readout_prior_*.csv and docs/figures/reproductions/readout_prior_*.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from finwidth import Network, RKGP
from finwidth.data import load

sys.path.insert(0, str(Path(__file__).resolve().parent))
from depth_analysis import DATA, FIG, ROOT, markdown, sim_table, write_csv  # noqa: E402

WIDTHS = (50, 100, 200, 1000, 10**9)
LAMBDAS = np.logspace(-2, 4, 25)


def theory() -> list[dict]:
    d = load("mnist", classes=(0, 1), n_train=100, n_test=1000, preset="paper")
    rows = []
    for T in (1e-3, 0.0):
        for N in WIDTHS:
            for lam in LAMBDAS:
                m = RKGP(Network([N], "erf", priors=[1.0, float(lam)]), temperature=T).fit(d.X_train, d.y_train)
                e = m.generalization_error(d.X_test, d.y_test)
                rows.append(dict(T=T, N=N, lambda_1=float(lam), r=m.width_criterion_.r, Qbar=float(m.qbar_[0]),
                                 total=e.total, bias=e.bias, variance=e.variance))
    return rows


def claims(rows) -> list[dict]:
    out = []
    for T in (1e-3, 0.0):
        for N in WIDTHS:
            rr = [r for r in rows if r["T"] == T and r["N"] == N]
            tot = np.array([r["total"] for r in rr])
            k = int(np.argmin(tot))
            out.append(dict(T=T, N=N, monotone_decreasing=bool(np.all(np.diff(tot) < 0)),
                            lambda_1_at_min=rr[k]["lambda_1"], eps_min=tot[k], eps_at_max_lambda=tot[-1]))
        for lam in LAMBDAS:
            vals = [r["total"] for r in rows if r["T"] == T and r["lambda_1"] == float(lam)]
            inf = [r["total"] for r in rows if r["T"] == T and r["lambda_1"] == float(lam) and r["N"] == 10**9][0]
            out.append(dict(T=T, N="spread", lambda_1=float(lam),
                            width_spread_rel=(max(vals) - min(vals)) / inf))
    return out


def plots(rows, sims) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, T in zip(axes[:2], (1e-3, 0.0)):
        for N, c in zip(WIDTHS, ("C0", "C1", "C2", "C3", "k")):
            rr = [r for r in rows if r["T"] == T and r["N"] == N]
            ax.plot([r["lambda_1"] for r in rr], [r["total"] for r in rr], color=c,
                    ls=":" if N == 10**9 else "-", label="N=∞ (NNGP)" if N == 10**9 else f"N={N}")
        if T > 0 and sims:
            ss = [s for s in sims if s["run"] != "step check"]
            ax.errorbar([s["lambda_L"] for s in ss], [s["sim_total"] for s in ss], yerr=[s["sim_total_se"] for s in ss],
                        fmt="o", color="C2", ms=5, capsize=2, label="BAOAB, N=200")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("readout prior precision λ_1")
        ax.set_ylabel("ε_g")
        ax.set_title(f"erf 1HL, MNIST 0/1, P=100, T={T:g}", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[2]
    for T, ls in ((1e-3, "-"), (0.0, "--")):
        inf = {r["lambda_1"]: r["total"] for r in rows if r["T"] == T and r["N"] == 10**9}
        for N, c in zip(WIDTHS[:-1], ("C0", "C1", "C2", "C3")):
            rr = [r for r in rows if r["T"] == T and r["N"] == N]
            ax.plot([r["lambda_1"] for r in rr], [r["total"] / inf[r["lambda_1"]] for r in rr], color=c, ls=ls,
                    label=f"N={N}, T={T:g}")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("λ_1")
    ax.set_ylabel("ε_g(N) / ε_g(∞)")
    ax.set_title("width dependence", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(FIG / "readout_prior_eps.png", dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    args = ap.parse_args()
    runs = Path(args.runs)
    FIG.mkdir(parents=True, exist_ok=True)
    rows = theory()
    write_csv(DATA / "readout_prior_theory.csv", rows)
    cl = claims(rows)
    write_csv(DATA / "readout_prior_claims.csv", cl)
    for c in cl:
        if c["N"] != "spread":
            print(c)
    for c in cl:
        if c["N"] == "spread" and c["lambda_1"] in (float(LAMBDAS[0]), 1.0, float(LAMBDAS[12]), float(LAMBDAS[16]),
                                                     float(LAMBDAS[20]), float(LAMBDAS[-1])):
            print(c)
    sims = (sim_table(runs / "readout_prior_sim", "readout_prior_sim") + sim_table(runs / "readout_prior_sim2", "readout_prior_sim2")
            + sim_table(runs / "readout_prior_stepcheck", "step check"))
    if sims:
        sims.sort(key=lambda r: (r["lambda_L"], r["run"]))
        write_csv(DATA / "readout_prior_sim.csv", sims)
        print(markdown(sims, extra=("lambda_L",)))
    plots(rows, sims)


if __name__ == "__main__":
    main()
