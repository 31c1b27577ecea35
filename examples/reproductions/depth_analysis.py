"""Issue 7, item 2: depth. Theory r_L = yᵀK_L⁻¹y/P against L, the critical depth, ε_g against N at
L = 1..4, and the simulations of depth_sim.toml / depth_sim2.toml (and the L = 1 relu points of
nonodd_sim.toml) against the theory.

Run after the sweeps (their stores under RUNS, default ``runs``):
    OMP_NUM_THREADS=1 FINWIDTH_DATA=../shared/data python examples/reproductions/depth_analysis.py [--runs runs]
Writes docs/data/reproductions/depth_*.csv and docs/figures/reproductions/depth_*.png and prints the
agreement table (markdown).

Also provides :func:`sim_table`, used by the readout-prior and non-odd analysis scripts.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

from finwidth import Network, RKGP
from finwidth.data import load
from finwidth.experiments.verdicts import chain_quality, converged

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs" / "data" / "reproductions"
FIG = ROOT / "docs" / "figures" / "reproductions"
T = 1e-3
SETS = {"mnist": "MNIST 0/1", "cifar10": "CIFAR-10 plane/car"}


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


SIM_COLUMNS = {
    "data.name": "data", "L": "L", "N1": "N", "lambda_L": "lambda_L", "simulation.step_size": "step",
    "simulation.n_steps": "n_steps", "simulation.seed": "seed", "nngp.total": "nngp_total",
    "rkgp.total": "theory_total", "rkgp.bias": "theory_bias", "rkgp.variance": "theory_variance",
    "rkgp.qbar_L": "theory_Qbar_L", "sim.total": "sim_total", "sim.total_stderr": "sim_total_se",
    "sim.bias": "sim_bias", "sim.bias_stderr": "sim_bias_se", "sim.variance": "sim_variance",
    "sim.variance_stderr": "sim_variance_se", "sim.qbar_readout": "sim_Qbar_L",
    "sim.qbar_readout_stderr": "sim_Qbar_L_se", "sim.train_error": "sim_train",
    "sim.rhat_test_mse_rb": "rhat_test", "sim.rhat_readout_norm_rb": "rhat_readout",
    "sim.ess_test_mse_rb": "ess_test", "sim.wall_s": "sim_wall_s",
}


def sim_table(store: Path, label: str) -> list[dict]:
    """Rows of a sweep store with theory, simulation, relative deviation and z-score, and whether the
    chains pass the convergence rule of :mod:`finwidth.experiments.verdicts` (markdown marks those
    that do not "(not converged)": no verdict is drawn from them)."""
    from finwidth.experiments import ResultStore

    if not store.exists():
        print(f"(store {store} missing: skipped)")
        return []
    t = ResultStore(store).collect()
    rows = []
    for _, r in t.iterrows():
        row = {"run": label}
        for col, name in SIM_COLUMNS.items():
            if col in t.columns:
                v = r[col]
                row[name] = v.item() if hasattr(v, "item") else v
        row["alpha"] = float(r["P"]) / float(r["N1"])
        row["rel_dev"] = (row["sim_total"] - row["theory_total"]) / row["theory_total"]
        row["z"] = (row["sim_total"] - row["theory_total"]) / row["sim_total_se"]
        row["z_Qbar"] = (row["sim_Qbar_L"] - row["theory_Qbar_L"]) / row["sim_Qbar_L_se"]
        row["converged"] = converged(*chain_quality(r))
        rows.append(row)
    return rows


def markdown(rows: list[dict], extra: tuple[str, ...] = ()) -> str:
    head = ["run", "data", "L", "N", "α", *extra, "step", "theory ε_g", "sim ε_g ± s.e.", "rel. dev.", "z",
            "NNGP ε_g", "theory Q̄_L", "sim Q̄_L ± s.e.", "z(Q̄)", "R̂ (test, readout)", "wall s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["run"], r["data"], str(r["L"]), str(r["N"]), f"{r['alpha']:.2g}",
                 *[f"{r[e]:.3g}" for e in extra], f"{r['step']:.3g}",
                 f"{r['theory_total']:.5f}", f"{r['sim_total']:.5f} ± {r['sim_total_se']:.5f}",
                 f"{100 * r['rel_dev']:+.1f}%" + ("" if r.get("converged", True) else " (not converged)"), f"{r['z']:+.1f}", f"{r.get('nngp_total', math.nan):.5f}",
                 f"{r['theory_Qbar_L']:.4f}", f"{r['sim_Qbar_L']:.4f} ± {r['sim_Qbar_L_se']:.4f}", f"{r['z_Qbar']:+.1f}",
                 f"{r['rhat_test']:.2f}, {r['rhat_readout']:.2f}", f"{r['sim_wall_s']:.0f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def theory_rl() -> list[dict]:
    rows = []
    for name in SETS:
        for P in (100, 300, 1000):
            d = load(name, classes=(0, 1), n_train=P, n_test=1000, preset="paper")
            for act in ("relu", "erf"):
                for L in range(1, 9):
                    m = RKGP(Network([10**9] * L, act), temperature=0.0, mean_correction=False).fit(d.X_train, d.y_train)
                    rows.append(dict(data=name, P=P, activation=act, L=L, r_L=m.width_criterion_.r))
    return rows


def critical_depths(rl_rows) -> list[dict]:
    out = []
    for name in SETS:
        for P in (100, 300, 1000):
            for act in ("relu", "erf"):
                rr = [r for r in rl_rows if r["data"] == name and r["P"] == P and r["activation"] == act]
                above = [r["L"] for r in rr if r["r_L"] > 1]
                out.append(dict(data=name, P=P, activation=act, L_c=min(above) if above else "> 8",
                                r_1=rr[0]["r_L"], r_8=rr[-1]["r_L"]))
    return out


def theory_curves() -> list[dict]:
    rows = []
    widths = [int(x) for x in np.unique(np.round(np.logspace(np.log10(20), np.log10(5000), 20)))] + [10**9]
    for name in SETS:
        d = load(name, classes=(0, 1), n_train=100, n_test=1000, preset="paper")
        for L in (1, 2, 3, 4):
            for N in widths:
                m = RKGP(Network([N] * L, "relu"), temperature=T).fit(d.X_train, d.y_train)
                e = m.generalization_error(d.X_test, d.y_test)
                rows.append(dict(data=name, P=100, L=L, N=N, T=T, kind=m.kind_, Qbar_L=float(m.qbar_[-1]),
                                 total=e.total, bias=e.bias, variance=e.variance))
    return rows


def plots(rl_rows, curves, sims) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, name in zip(axes, SETS):
        for P, c in zip((100, 300, 1000), ("C0", "C1", "C2")):
            for act, ls in (("relu", "-o"), ("erf", "--s")):
                rr = [r for r in rl_rows if r["data"] == name and r["P"] == P and r["activation"] == act]
                ax.plot([r["L"] for r in rr], [r["r_L"] for r in rr], ls, color=c, ms=3, label=f"{act}, P={P}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("depth L")
        ax.set_title(f"{SETS[name]}: r_L = yᵀK_L⁻¹y/P (λ=1); finite width wins below 1", fontsize=9)
    axes[0].set_ylabel("r_L")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIG / "depth_rL.png", dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {1: "C0", 2: "C1", 3: "C2", 4: "C3"}
    for ax, name in zip(axes, SETS):
        for L in (1, 2, 3, 4):
            cc = [r for r in curves if r["data"] == name and r["L"] == L and r["N"] < 10**9]
            inf = [r for r in curves if r["data"] == name and r["L"] == L and r["N"] == 10**9][0]
            ax.plot([r["N"] for r in cc], [r["total"] for r in cc], color=colors[L], label=f"theory L={L}")
            ax.axhline(inf["total"], color=colors[L], ls=":", lw=0.8)
            for run_kind, fmt, shift in (("main", "o", 1.0), ("step check", "s", 1.05), ("long run (5x)", "^", 0.95)):
                ss = [s for s in sims if s["data"] == name and s["L"] == L
                      and (s["run"] == run_kind or (run_kind == "main" and s["run"] not in ("step check", "long run (5x)")))]
                if ss:
                    ax.errorbar([s["N"] * shift for s in ss], [s["sim_total"] for s in ss],
                                yerr=[s["sim_total_se"] for s in ss], fmt=fmt, color=colors[L], capsize=2, ms=4,
                                mfc=None if run_kind == "main" else "none")
        ax.set_xscale("log")
        ax.set_xlabel("hidden width N (all layers)")
        ax.set_ylabel("ε_g")
        ax.set_title(f"{SETS[name]}, relu, P=100, T=1e-3\nlines: theory (dotted: NNGP); ● BAOAB, □ half step, △ 5x longer", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIG / "depth_width.png", dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--no-theory", action="store_true", help="reuse the theory CSVs")
    args = ap.parse_args()
    runs = Path(args.runs)
    FIG.mkdir(parents=True, exist_ok=True)
    if args.no_theory:
        with open(DATA / "depth_rL.csv") as fh:
            rl = [dict(r, P=int(r["P"]), L=int(r["L"]), r_L=float(r["r_L"])) for r in csv.DictReader(fh)]
        with open(DATA / "depth_theory_curves.csv") as fh:
            curves = [dict(r, L=int(r["L"]), N=int(r["N"]), total=float(r["total"])) for r in csv.DictReader(fh)]
    else:
        rl = theory_rl()
        write_csv(DATA / "depth_rL.csv", rl)
        curves = theory_curves()
        write_csv(DATA / "depth_theory_curves.csv", curves)
    crit = critical_depths(rl)
    write_csv(DATA / "depth_critical.csv", crit)
    for c in crit:
        print(c)
    sims = (sim_table(runs / "depth_sim", "depth_sim") + sim_table(runs / "depth_sim2", "depth_sim2")
            + sim_table(runs / "nonodd_sim", "nonodd_sim (L=1)") + sim_table(runs / "depth_stepcheck", "step check")
            + sim_table(runs / "depth_long", "long run (5x)"))
    if sims:
        sims.sort(key=lambda r: (r["data"], r["L"], r["N"], r["run"]))
        write_csv(DATA / "depth_sim.csv", sims)
        print(markdown(sims))
    plots(rl, curves, sims)


if __name__ == "__main__":
    main()
