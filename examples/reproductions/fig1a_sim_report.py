"""Collect the P = 100 simulation rows of NMI fig. 1a and compare them with the theory.

Reads the result stores of fig1a_sim_mnist_p100.toml, fig1a_sim_cifar10_p100.toml and
fig1a_sim_cifar10_stepcheck.toml (default runs/<sweep name>, or the folders given as arguments) and the theory curves written by
fig1a_theory.py, and writes
- docs/data/reproductions/fig1a_sim_p100.csv: per point the simulated ε_g ± s.e. (bias, variance),
  the RKGP and NNGP values at T = 1e-3 on the same 1000 test images, the relative deviation
  (sim − theory)/theory, z = (sim − theory)/s.e., Q̄ (theory) and the readout-norm estimate, max R̂,
  R̂ and ESS of the test-error trace with whether they pass the convergence rule of
  finwidth.experiments.verdicts (rows that do not are printed "NOT CONVERGED": no verdict),
  the step size, the number of steps and the wall time;
- docs/figures/reproductions/fig1a_p100.png.

Run: python examples/reproductions/fig1a_sim_report.py [STORE ...]
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

from finwidth.experiments.store import ResultStore
from finwidth.experiments.verdicts import chain_quality, converged

REPO = Path(__file__).resolve().parents[2]
DATA_OUT = REPO / "docs" / "data" / "reproductions"
FIG_OUT = REPO / "docs" / "figures" / "reproductions"
PUBLISHED_P100 = {"mnist": 0.06967739373994239, "cifar10": 0.2582984345677857}  # demo/plot_fig1a.py
ROW_STEP = {"mnist": 0.1, "cifar10": 0.05}  # the rows' BAOAB steps; other steps are step-size checks


def rows_from(store: Path) -> list[dict]:
    frame = ResultStore(store).collect()
    out = []
    for _, r in frame.sort_values("N1").iterrows():
        sim, se, th = r.get("sim.total"), r.get("sim.total_stderr"), r.get("rkgp.total")
        rhats = [v for k, v in r.items() if str(k).startswith("sim.rhat") and isinstance(v, float) and not math.isnan(v)]
        rhat_test, ess_test = chain_quality(r)
        out.append({
            "store": store.name, "dataset": r["data.name"], "P": int(r["P"]), "N1": int(r["N1"]), "alpha": r["P"] / r["N1"],
            "sim_total": sim, "sim_total_se": se, "sim_bias": r.get("sim.bias"), "sim_variance": r.get("sim.variance"),
            "theory_total": th, "theory_bias": r.get("rkgp.bias"), "theory_variance": r.get("rkgp.variance"),
            "nngp_total": r.get("nngp.total"), "rel_dev": sim / th - 1, "z": (sim - th) / se,
            "theory_qbar": r.get("rkgp.qbar_L"), "sim_qbar_readout": r.get("sim.qbar_readout"),
            "sim_qbar_readout_se": r.get("sim.qbar_readout_stderr"), "max_rhat": max(rhats) if rhats else float("nan"),
            "rhat_test": rhat_test, "ess_test": ess_test, "converged": converged(rhat_test, ess_test),
            "step": r.get("simulation.step_size"), "n_steps": int(r.get("simulation.n_steps")), "wall_s": r.get("sim.wall_s"),
        })
    return out


def main() -> None:
    stores = [Path(a) for a in sys.argv[1:]] or [REPO / "runs" / n for n in (
        "fig1a_sim_mnist_p100", "fig1a_sim_cifar10_p100", "fig1a_sim_cifar10_stepcheck")]
    rows = [r for s in stores if s.exists() for r in rows_from(s)]
    DATA_OUT.mkdir(parents=True, exist_ok=True)
    with open(DATA_OUT / "fig1a_sim_p100.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    for r in rows:
        print(f"{r['dataset']:8s} h={r['step']:<5g} N1={r['N1']:5d} sim {r['sim_total']:.5f}±{r['sim_total_se']:.5f} theory {r['theory_total']:.5f} "
              f"dev {100 * r['rel_dev']:+6.1f}% z {r['z']:+6.1f}  Q̄ th {r['theory_qbar']:.3f} sim {r['sim_qbar_readout']:.3f}  "
              f"R̂ {r['max_rhat']:.3f}  {r['wall_s']:.0f}s" + ("" if r["converged"] else
              f"  NOT CONVERGED (R̂(ε_g) {r['rhat_test']}, ESS {r['ess_test']}): no verdict"))
    plot(rows)


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    theory = list(csv.DictReader(open(DATA_OUT / "fig1a_theory.csv")))
    names = [n for n in ("mnist", "cifar10") if any(r["dataset"] == n for r in rows)]
    fig, axes = plt.subplots(2, len(names), figsize=(5.2 * len(names), 7), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.3]})
    for j, name in enumerate(names):
        ax, axd = axes[0, j], axes[1, j]
        th = [t for t in theory if t["dataset"] == name and t["P"] == "100" and t["setting"] == "sim"]
        ax.plot([float(t["N1"]) for t in th], [float(t["rkgp_total"]) for t in th], "-", color="C0", label="RKGP theory, T = 1e-3")
        ax.axhline(float(th[0]["nngp_total"]), color="C0", ls=":", label="NNGP (infinite width), T = 1e-3")
        ax.axhline(PUBLISHED_P100[name], color="C7", ls="-.", lw=0.8, label="published level (T = 0, 500 test)")
        rr = [r for r in rows if r["dataset"] == name and r["step"] == ROW_STEP[name]]
        ax.errorbar([r["N1"] for r in rr], [r["sim_total"] for r in rr], [r["sim_total_se"] for r in rr], fmt="o",
                    color="C3", ms=4, capsize=2, label="sampled networks (BAOAB), ±1 s.e.")
        ax.set_xscale("log")
        ax.set_ylabel(r"$\epsilon_g$")
        ax.set_title(f"{'MNIST 0/1' if name == 'mnist' else 'CIFAR-10 plane/car'}, P = 100, 1HL erf")
        ax.legend(fontsize=7)
        axd.errorbar([r["N1"] for r in rr], [100 * r["rel_dev"] for r in rr],
                     [100 * r["sim_total_se"] / r["theory_total"] for r in rr], fmt="o", color="C3", ms=4, capsize=2)
        axd.axhline(0, color="k", lw=0.8)
        axd.set_xscale("log")
        axd.set_xlabel("$N_1$")
        axd.set_ylabel("(sim − theory)/theory [%]")
    fig.tight_layout()
    FIG_OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIG_OUT / "fig1a_p100.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
