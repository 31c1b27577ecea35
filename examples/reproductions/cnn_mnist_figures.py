"""Issue 14.6: the figures of the CNN reproduction, from its stored results (no computation).

    python examples/reproductions/cnn_mnist_figures.py

reads docs/data/reproductions/cnn/mnist_C{8,16,32}.json (cnn_mnist.py) and fc_N{8,16,32}.json
(fc_mnist.py) and writes docs/figures/reproductions/cnn_mnist_q.png (the learned Ñ×Ñ Q − 1, theory
beside sampled, per C) and cnn_vs_fc.png (ε_g against C or N for the CNN and the fully connected net:
theory, converged sampled networks, infinite-width levels); cnn_vs_fc_cifar10.png the same for
CIFAR-10 airplane/automobile where its results (``--dataset cifar10``) are there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, NullLocator

from finwidth.experiments.plots import plot_patch_q, save_figure

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs" / "data" / "reproductions" / "cnn"
FIGS = ROOT / "docs" / "figures" / "reproductions"
WIDTHS = (8, 16, 32)


def main() -> None:
    cnn = [json.loads((DATA / f"mnist_C{c}.json").read_text()) for c in WIDTHS]
    fc = [json.loads((DATA / f"fc_N{n}.json").read_text()) for n in WIDTHS]
    panels = []
    for r in cnn:
        panels += [(f"theory, C = {r['C']}", r["theory"]["Q"]), (f"sampled, C = {r['C']}", r["sim"]["Q"])]
    fig = plot_patch_q(panels, ncols=2, image_grid=(4, 4),
                       title="MNIST 0/1 CNN (7×7 windows, Ñ = 16): learned Q − 1 (lines: image rows of patches)")
    print(*save_figure(fig, FIGS / "cnn_mnist_q.png"))

    print(*save_figure(eps_figure(cnn, fc, "MNIST 0/1"), FIGS / "cnn_vs_fc.png"))
    cifar = [DATA / f"cifar10_C{c}.json" for c in WIDTHS], [DATA / f"fc_cifar10_N{n}.json" for n in WIDTHS]
    if all(p.exists() for p in cifar[0] + cifar[1]):
        cnn, fc = ([json.loads(p.read_text()) for p in paths] for paths in cifar)
        print(*save_figure(eps_figure(cnn, fc, "CIFAR-10 airplane/automobile"), FIGS / "cnn_vs_fc_cifar10.png"))


def converged(r: dict) -> bool:
    """The reproductions' rule: a sampled number counts only if R̂ ≤ 1.05 and ESS ≥ 100."""
    return r["sim"]["max_rhat"] <= 1.05 and r["sim"]["min_ess"] >= 100


def eps_figure(cnn: list[dict], fc: list[dict], data: str) -> Figure:
    """ε_g against C (CNN) or N (fully connected): theory, converged sampled runs, infinite width."""
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    for rows, key, color, name in ((cnn, "C", "C0", "CNN (7×7 windows)"), (fc, "N", "C3", "fully connected")):
        x = np.array([r[key] for r in rows], dtype=float)
        ok = [r for r in rows if converged(r)]
        ax.axhline(rows[0]["nngp"]["eg"], color=color, ls="--", lw=1, label=f"{name}: infinite width")
        ax.plot(x, [r["theory"]["eg"] for r in rows], color=color, marker=".", label=f"{name}: theory (RKGP)")
        ax.errorbar([r[key] for r in ok], [r["sim"]["eg"] for r in ok], yerr=[r["sim"]["eg_stderr"] for r in ok],
                    fmt="o", color=color, mfc="white", capsize=2.5, label=f"{name}: sampled ± 1 s.e.")
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(WIDTHS, [str(w) for w in WIDTHS])
    ax.set_xlabel("channels C (CNN) or hidden width N (fully connected)")
    ax.set_ylabel(r"test error $\epsilon_g$")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{data}, P = 100, T = 0.05, erf (sampled: converged runs only)", fontsize=10)
    return fig

if __name__ == "__main__":
    main()
