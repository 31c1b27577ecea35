"""NMI 2023 fig. 1a, theory only: infinite-width levels and finite-width curves.

Writes
- docs/data/reproductions/fig1a_levels.csv: the published infinite-width levels against the NNGP in
  three settings (T = 1e-3 with 1000 test images, the issue's setting; T = 0 with 1000; T = 0 with
  the first 500 test images, which reproduces the published numbers);
- docs/data/reproductions/fig1a_theory.csv: RKGP ε_g (total, bias, variance), Q̄ and r on a grid of
  N_1 for MNIST 0/1 and CIFAR-10 airplane/automobile, P ∈ {100, 300, 1000}, at T = 1e-3 with
  P_test = 1000 (what the simulations measure) and at T = 0 with P_test = 500 (the settings that
  reproduce the published levels; most likely those of the published theory lines);
- docs/figures/reproductions/fig1a_theory.png.

Run: OMP_NUM_THREADS=1 python examples/reproductions/fig1a_theory.py   (about a minute)
Data: $FINWIDTH_DATA or ../shared/data beside the checkout.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

from finwidth import NNGP, RKGP, Network
from finwidth.data import load

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("FINWIDTH_DATA", str(REPO.parent / "shared" / "data"))
DATA_OUT = REPO / "docs" / "data" / "reproductions"
FIG_OUT = REPO / "docs" / "figures" / "reproductions"

# demo/plot_fig1a.py of rpacelli/FC_deep_bayesian_networks (P = 100, 300, 1000)
PUBLISHED = {
    "mnist": (0.06967739373994239, 0.03788431974904857, 0.017212101617447764),
    "cifar10": (0.2582984345677857, 0.22344282674723207, 0.18900999481657496),
}
PS = (100, 300, 1000)
FIG_WIDTHS = (50, 100, 200, 350, 500, 1000, 2000)
GRID = sorted(set(np.unique(np.round(np.geomspace(20, 5000, 29)).astype(int)).tolist()) | set(FIG_WIDTHS))
SETTINGS = {"sim": (1e-3, 1000), "published": (0.0, 500)}  # (T, P_test)


def main() -> None:
    t0 = time.perf_counter()
    DATA_OUT.mkdir(parents=True, exist_ok=True)
    FIG_OUT.mkdir(parents=True, exist_ok=True)
    levels, curves = [], []
    for name in PUBLISHED:
        d = load(name, classes=(0, 1), n_train=max(PS), n_test=1000, preset="paper")
        for P, pub in zip(PS, PUBLISHED[name]):
            X, y = d.X_train[:P], d.y_train[:P]  # "paper" takes the first P in file order
            row = {"dataset": name, "P": P, "published": pub}
            for label, T, n_test in (("T1e-3_test1000", 1e-3, 1000), ("T0_test1000", 0.0, 1000),
                                     ("T0_test500", 0.0, 500)):
                e = NNGP(Network([1], "erf"), temperature=T).fit(X, y).generalization_error(d.X_test[:n_test],
                                                                                       d.y_test[:n_test])
                row[f"nngp_{label}"] = e.total
                row[f"rel_dev_{label}"] = e.total / pub - 1
            levels.append(row)
            for setting, (T, n_test) in SETTINGS.items():
                Xt, yt = d.X_test[:n_test], d.y_test[:n_test]
                inf = NNGP(Network([1], "erf"), temperature=T).fit(X, y).generalization_error(Xt, yt)
                for N1 in GRID:
                    m = RKGP(Network([N1], "erf"), temperature=T).fit(X, y)
                    e = m.generalization_error(Xt, yt)
                    curves.append({"dataset": name, "setting": setting, "T": T, "P_test": n_test, "P": P,
                                   "N1": N1, "alpha": P / N1, "rkgp_total": e.total, "rkgp_bias": e.bias,
                                   "rkgp_variance": e.variance, "qbar": float(np.ravel(m.qbar_)[0]),
                                   "r": m.width_criterion_.r, "nngp_total": inf.total})
    _write(DATA_OUT / "fig1a_levels.csv", levels)
    _write(DATA_OUT / "fig1a_theory.csv", curves)
    _plot(curves)
    print(f"fig1a theory: {len(curves)} points in {time.perf_counter() - t0:.1f} s")
    for r in levels:
        print(f"{r['dataset']:8s} P={r['P']:5d} published {r['published']:.5f}  "
              + "  ".join(f"{k[8:]} {100 * r[k]:+.2f}%" for k in r if k.startswith("rel_dev")))


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in r.items()})


def _plot(curves: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=False)
    colors = {100: "C0", 300: "C1", 1000: "C2"}
    for ax, name in zip(axes, PUBLISHED):
        for P in PS:
            for setting, ls in (("sim", "-"), ("published", "--")):
                rows = [r for r in curves if r["dataset"] == name and r["P"] == P and r["setting"] == setting]
                ax.plot([r["N1"] for r in rows], [r["rkgp_total"] for r in rows], ls, color=colors[P],
                        label=f"P = {P}" if setting == "sim" else None)
                ax.axhline(rows[0]["nngp_total"], color=colors[P], ls=":" if setting == "sim" else "-.", lw=0.8)
            ax.plot([5000], [PUBLISHED[name][PS.index(P)]], "<", color=colors[P], ms=7)
        ax.set_xscale("log")
        ax.set_xlabel("$N_1$")
        ax.set_ylabel(r"$\epsilon_g$")
        ax.set_title(f"{'MNIST 0/1' if name == 'mnist' else 'CIFAR-10 plane/car'}, 1HL erf, λ = 1")
        ax.legend(fontsize=8)
    fig.text(0.01, 0.01, "solid: RKGP at T = 1e-3, 1000 test images (dotted: its NNGP level);  dashed: RKGP at "
             "T = 0, first 500 test images (dash-dot: NNGP);  ◀: published infinite-width levels",
             fontsize=7.5)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(FIG_OUT / "fig1a_theory.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
