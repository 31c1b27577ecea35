"""Issue 7, item 5: non-odd one-hidden-layer networks (relu). The mean-corrected renormalised-kernel
theory (two order parameters Q̄, Q; K_R = Q̄(K − M) + M/(1 + Q)) against the plain odd-form theory
(K_R = Q̄ K) and against the BAOAB simulations of nonodd_sim.toml (MNIST 0/1, P = 100, T = 1e-3).

It also measures how large the mean correction can get on the data at hand: the relative difference
of ε_g between the two theories over widths, temperatures, label codings and feature centring.

    OMP_NUM_THREADS=1 FINWIDTH_DATA=../shared/data python examples/reproductions/nonodd_analysis.py [--runs runs]
Writes docs/data/reproductions/nonodd_*.csv and docs/figures/reproductions/nonodd_*.png.
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

WIDTHS = [int(x) for x in np.unique(np.round(np.logspace(np.log10(10), np.log10(5000), 20)))] + [10**9]


def both(d, N, T):
    a = RKGP(Network([N], "relu"), temperature=T).fit(d.X_train, d.y_train)  # mean-corrected (default for relu, L = 1)
    b = RKGP(Network([N], "relu"), temperature=T, mean_correction=False).fit(d.X_train, d.y_train)
    return a, a.generalization_error(d.X_test, d.y_test), b, b.generalization_error(d.X_test, d.y_test)


def theory() -> list[dict]:
    variants = {
        "mnist paper": dict(name="mnist"),
        "mnist paper, labels ±1": dict(name="mnist", labels="pm1"),
        "mnist paper, centred features": dict(name="mnist", center_features=True),
        "cifar10 paper": dict(name="cifar10"),
    }
    rows = []
    for label, kw in variants.items():
        kw = dict(kw)
        d = load(kw.pop("name"), classes=(0, 1), n_train=100, n_test=1000, preset="paper", **kw)
        for T in (1e-3, 1e-1):
            for N in WIDTHS:
                a, ea, b, eb = both(d, N, T)
                rows.append(dict(variant=label, T=T, N=N, alpha=100 / N, Qbar_mc=float(a.qbar_[0]), Q_mc=float(a.q_[0]),
                                 total_mc=ea.total, bias_mc=ea.bias, variance_mc=ea.variance,
                                 Qbar_plain=float(b.qbar_[0]), total_plain=eb.total, bias_plain=eb.bias,
                                 variance_plain=eb.variance, rel_diff=(ea.total - eb.total) / eb.total))
    return rows


def plots(rows, sims) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    rr = [r for r in rows if r["variant"] == "mnist paper" and r["T"] == 1e-3 and r["N"] < 10**9]
    inf = [r for r in rows if r["variant"] == "mnist paper" and r["T"] == 1e-3 and r["N"] == 10**9][0]
    ax.plot([r["N"] for r in rr], [r["total_mc"] for r in rr], "C0-", label="mean-corrected theory")
    ax.plot([r["N"] for r in rr], [r["total_plain"] for r in rr], "C1--", label="plain theory")
    ax.axhline(inf["total_mc"], color="k", ls=":", lw=0.8, label="NNGP")
    ss = [s for s in sims if s["run"] == "nonodd_sim"]
    if ss:
        ax.errorbar([s["N"] for s in ss], [s["sim_total"] for s in ss], yerr=[s["sim_total_se"] for s in ss], fmt="o",
                    color="C3", capsize=2, ms=4, label="BAOAB")
    ck = [s for s in sims if s["run"] == "step check"]
    if ck:
        ax.errorbar([s["N"] * 1.06 for s in ck], [s["sim_total"] for s in ck], yerr=[s["sim_total_se"] for s in ck],
                    fmt="s", mfc="none", color="C3", capsize=2, ms=4, label="BAOAB, half step")
    lg = [s for s in sims if s["run"] == "long run (5x)"]
    if lg:
        ax.errorbar([s["N"] * 0.94 for s in lg], [s["sim_total"] for s in lg], yerr=[s["sim_total_se"] for s in lg],
                    fmt="^", mfc="none", color="C3", capsize=2, ms=4, label="BAOAB, 5x longer")
    ax.set_xscale("log")
    ax.set_xlabel("N_1")
    ax.set_ylabel("ε_g")
    ax.set_title("relu 1HL, MNIST 0/1, P=100, T=1e-3", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    for (label, T), c in zip([(v, T) for v in dict.fromkeys(r["variant"] for r in rows) for T in (1e-3, 1e-1)],
                             [f"C{i}" for i in range(8)]):
        rr = [r for r in rows if r["variant"] == label and r["T"] == T and r["N"] < 10**9]
        ax.plot([r["alpha"] for r in rr], [abs(r["rel_diff"]) + 1e-12 for r in rr], color=c, label=f"{label}, T={T:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-9, 1)
    ax.set_xlabel("α = P/N_1")
    ax.set_ylabel("|ε_g(mean-corrected) / ε_g(plain) − 1|")
    ax.set_title("size of the mean correction (P=100)", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(FIG / "nonodd_eps.png", dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    args = ap.parse_args()
    runs = Path(args.runs)
    FIG.mkdir(parents=True, exist_ok=True)
    rows = theory()
    write_csv(DATA / "nonodd_theory.csv", rows)
    for label in dict.fromkeys(r["variant"] for r in rows):
        for T in (1e-3, 1e-1):
            rr = [r for r in rows if r["variant"] == label and r["T"] == T]
            k = int(np.argmax([abs(r["rel_diff"]) for r in rr]))
            print(f"{label:32s} T={T:g}: max |rel diff| = {abs(rr[k]['rel_diff']):.2e} at N={rr[k]['N']}; "
                  f"at N>=50: {max(abs(r['rel_diff']) for r in rr if r['N'] >= 50):.2e}")
    sims = (sim_table(runs / "nonodd_sim", "nonodd_sim") + sim_table(runs / "nonodd_stepcheck", "step check")
            + [s for s in sim_table(runs / "depth_long", "long run (5x)") if s["L"] == 1])
    if sims:
        d = load("mnist", classes=(0, 1), n_train=100, n_test=1000, preset="paper")
        for s in sims:
            _, _, b, eb = both(d, int(s["N"]), 1e-3)
            s["plain_total"] = eb.total
            s["plain_Qbar"] = float(b.qbar_[0])
            s["z_plain"] = (s["sim_total"] - eb.total) / s["sim_total_se"]
        sims.sort(key=lambda r: (r["N"], r["run"]))
        write_csv(DATA / "nonodd_sim.csv", sims)
        print(markdown(sims, extra=("plain_total",)))
    plots(rows, sims)


if __name__ == "__main__":
    main()
