"""NMI 2023 fig. 1a setting, small-width end: does the renormalised-kernel theory break down at
α_1 = P/N_1 ≳ 1, or do the simulations fail to equilibrate?

MNIST 0/1 (paper preset), P = 100, P_test = 1000, 1HL erf, λ_0 = λ_1 = 1.

Part A (T = 1e-3, N_1 = 50 and 100): the same posterior sampled
  - by BAOAB (h = 0.1) from the prior (all weights N(0, 1) = the prior at λ = 1, the papers' init)
    and from the readout-conditional init (hidden layer from the prior, readout exact given it);
  - by BAOAB at half the step (h = 0.05, N_1 = 50): time-step bias;
  - by MALA (Metropolis-adjusted, exact stationary law) from both inits (N_1 = 100: one init);
  traces of the readout norm Q̄_readout = λ_1 |a|²/N_1 and of the test error are kept.
  N_1 = 500 at h = 0.05 checks the step at the wide end against the row's h = 0.1.
Part B (coarse map): BAOAB h = 0.1 from the readout-conditional init, N_1 ∈ {25, 50, 100, 200},
  T ∈ {1e-3, 1e-2, 1e-1} (T = 1e-3, N_1 = 50/100/200 come from part A and the P = 100 row).

Each run is cached (JSON) in $FIG1A_CACHE (default /tmp/fig1a_breakdown), so a killed script resumes.
Writes docs/data/reproductions/fig1a_breakdown_runs.csv, fig1a_breakdown_traces.csv and
docs/figures/reproductions/fig1a_breakdown.png.

Run: OMP_NUM_THREADS=1 python examples/reproductions/fig1a_breakdown.py [A|B|write]
(measured run times in docs/reproductions.md)
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from finwidth import NNGP, RKGP, Network, sample_posterior
from finwidth.data import load

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("FINWIDTH_DATA", str(REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("FIG1A_CACHE", "/tmp/fig1a_breakdown"))
DATA_OUT = REPO / "docs" / "data" / "reproductions"
FIG_OUT = REPO / "docs" / "figures" / "reproductions"
P = 100

# (tag, N1, T, sampler, step, init, n_steps, record_every, seed). Budgeted for one shared core:
# Langevin times 1000-1500 at T = 1e-3 (BAOAB relaxes the prior-dominated modes in ~1/sqrt(Tλ) ≈ 32).
RUNS = [
    ("A", 50, 1e-3, "baoab", 0.1, "prior", 15000, 50, 1),
    ("A", 50, 1e-3, "baoab", 0.1, "readout_conditional", 15000, 50, 2),
    ("A", 50, 1e-3, "baoab", 0.05, "readout_conditional", 20000, 50, 3),
    ("A", 50, 1e-3, "mala", 0.04, "prior", 30000, 100, 4),
    ("A", 50, 1e-3, "mala", 0.04, "readout_conditional", 30000, 100, 5),
    ("A", 100, 1e-3, "baoab", 0.1, "prior", 12000, 50, 1),
    ("A", 100, 1e-3, "baoab", 0.1, "readout_conditional", 12000, 50, 2),
    ("A", 100, 1e-3, "mala", 0.04, "readout_conditional", 25000, 100, 5),
    # step halving at the wide end; the h = 0.1 run is the P = 100 row (fig1a_sim_mnist_p100.toml)
    ("A", 500, 1e-3, "baoab", 0.05, "readout_conditional", 12000, 100, 6),
]
# long MALA runs (exact stationary law; overdamped, so slower than BAOAB per unit time)
RUNS += [("M", 50, 1e-3, "mala", 0.06, "readout_conditional", 200000, 500, 7),
         ("M", 100, 1e-3, "mala", 0.06, "readout_conditional", 100000, 500, 7)]
# coarse map; at T = 1e-3 the N_1 = 50, 100 points are the part-A runs above and N_1 = 200 is in the row
RUNS += [("B", 25, 1e-3, "baoab", 0.1, "readout_conditional", 10000, 50, 10)]
RUNS += [("B", N1, T, "baoab", 0.1, "readout_conditional", 5000, 25, 10)
         for T in (1e-2, 1e-1) for N1 in (25, 50, 100, 200)]


def run_key(run) -> str:
    tag, N1, T, sampler, h, init, n, rec, seed = run
    return f"{tag}_N{N1}_T{T:g}_{sampler}_h{h:g}_{init}_n{n}_s{seed}"


def one(run, data) -> dict:
    path = CACHE / f"{run_key(run)}.json"
    if path.exists():
        return json.loads(path.read_text())
    tag, N1, T, sampler, h, init, n, rec, seed = run
    net = Network([N1], "erf")
    th = RKGP(net, temperature=T).fit(data.X_train, data.y_train)
    th_err = th.generalization_error(data.X_test, data.y_test)
    inf = NNGP(net, temperature=T).fit(data.X_train, data.y_train).generalization_error(data.X_test, data.y_test)
    t0 = time.perf_counter()
    res = sample_posterior(net, data.X_train, data.y_train, temperature=T, sampler=sampler, step_size=h,
                           n_steps=n, record_every=rec, replicas=8, X_test=data.X_test, y_test=data.y_test,
                           init=init, seed=seed)
    wall = time.perf_counter() - t0
    g = res.generalization_error
    dg = res.diagnostics
    out = {
        "part": tag, "N1": N1, "alpha": P / N1, "T": T, "sampler": sampler, "step": h, "init": init,
        "n_steps": n, "seed": seed, "sim_total": g.total.value, "sim_total_se": g.total.stderr,
        "sim_bias": g.bias.value, "sim_variance": g.variance.value,
        "sim_qbar_readout": res.qbar_readout.value, "sim_qbar_readout_se": res.qbar_readout.stderr,
        "sim_train_mse": res.train_error.value,
        "theory_total": th_err.total, "theory_bias": th_err.bias, "theory_variance": th_err.variance,
        "theory_qbar": float(np.ravel(th.qbar_)[0]), "nngp_total": inf.total,
        "rel_dev": g.total.value / th_err.total - 1, "z": (g.total.value - th_err.total) / g.total.stderr,
        "max_rhat": dg.max_rhat, "rhat_test": dg.rhat.get("test_mse_rb", float("nan")),
        "rhat_readout": dg.rhat.get("readout_norm_rb", float("nan")),
        "ess_test": dg.ess.get("test_mse_rb", float("nan")), "burn_in_steps": dg.burn_in_steps,
        "acceptance": dg.acceptance if dg.acceptance is not None else float("nan"), "wall_s": wall,
        # replica-averaged traces (and the replica spread) for the trace figure
        "trace_steps": res.record_steps.tolist(),
        "trace_readout": res.traces["readout_norm_rb"].mean(1).tolist(),
        "trace_readout_sd": res.traces["readout_norm_rb"].std(1).tolist(),
        "trace_test": res.traces["test_mse_rb"].mean(1).tolist(),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, path)
    return out


def main() -> None:
    torch.set_num_threads(1)
    data = load("mnist", classes=(0, 1), n_train=P, n_test=1000, preset="paper")
    only = sys.argv[1] if len(sys.argv) > 1 else None  # "A", "B", or "write" (tables/figure from the cache)
    rows = []
    for run in RUNS:
        if only == "write" or (only and run[0] != only):
            if (CACHE / f"{run_key(run)}.json").exists():
                rows.append(one(run, data))
            continue
        r = one(run, data)
        rows.append(r)
        print(f"{run_key(run):55s} sim {r['sim_total']:.5f}±{r['sim_total_se']:.5f} theory {r['theory_total']:.5f} "
              f"dev {100 * r['rel_dev']:+6.1f}% z {r['z']:+7.1f} Q̄ sim {r['sim_qbar_readout']:.3f} th "
              f"{r['theory_qbar']:.3f} R̂ {r['max_rhat']:.3f} acc {r['acceptance']:.2f} {r['wall_s']:.0f}s", flush=True)
    write(rows)


def write(rows: list[dict]) -> None:
    DATA_OUT.mkdir(parents=True, exist_ok=True)
    keys = [k for k in rows[0] if not k.startswith("trace")]
    with open(DATA_OUT / "fig1a_breakdown_runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in keys})
    with open(DATA_OUT / "fig1a_breakdown_traces.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["N1", "T", "sampler", "step", "init", "step_index", "readout_norm_mean", "readout_norm_sd",
                    "test_mse_mean"])
        for r in rows:
            if r["part"] not in ("A", "M"):
                continue
            idx = np.unique(np.linspace(0, len(r["trace_steps"]) - 1, 100).astype(int))
            for i in idx:
                w.writerow([r["N1"], r["T"], r["sampler"], r["step"], r["init"], r["trace_steps"][i],
                            f"{r['trace_readout'][i]:.5g}", f"{r['trace_readout_sd'][i]:.4g}", f"{r['trace_test'][i]:.5g}"])
    plot(rows)


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    A = [r for r in rows if r["part"] in ("A", "M") and r["N1"] in (50, 100)]
    B = [r for r in rows if r["part"] == "B"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    styles = {("baoab", 0.1, "prior"): "C0", ("baoab", 0.1, "readout_conditional"): "C1",
              ("baoab", 0.05, "readout_conditional"): "C2", ("mala", 0.04, "prior"): "C3",
              ("mala", 0.04, "readout_conditional"): "C4", ("mala", 0.06, "readout_conditional"): "C5"}
    for ax_i, N1 in enumerate((50, 100)):
        ax = axes[ax_i]
        for r in (r for r in A if r["N1"] == N1):
            c = styles.get((r["sampler"], r["step"], r["init"]), "k")
            t = np.asarray(r["trace_steps"]) * r["step"]  # Langevin time
            ax.plot(t, np.asarray(r["trace_readout"]) / N1, color=c, lw=1,
                    label=f"{r['sampler']} h={r['step']:g}, {r['init'].replace('readout_conditional', 'readout-cond.')}")
        ax.axhline(A[[a["N1"] for a in A].index(N1)]["theory_qbar"], color="k", ls="--", lw=1, label="theory Q̄")
        ax.set_xscale("log")
        ax.set_xlabel("Langevin time (steps × h)")
        ax.set_ylabel("readout norm λ₁⟨|a|²|Φ⟩/N₁ (mean of 8 replicas)")
        ax.set_title(f"N₁ = {N1} (α = {P / N1:g}), T = 1e-3")
        ax.legend(fontsize=7)
    ax = axes[2]
    # the map: every BAOAB h = 0.1 run from the readout-conditional init, plus N_1 = 200, T = 1e-3 from the row
    pts = [(r["T"], r["alpha"], r["rel_dev"], r["sim_total_se"] / r["theory_total"]) for r in rows
           if r["sampler"] == "baoab" and r["step"] == 0.1 and r["init"] == "readout_conditional"]
    row_csv = DATA_OUT / "fig1a_sim_p100.csv"
    if row_csv.exists():
        pts += [(1e-3, float(r["alpha"]), float(r["rel_dev"]), float(r["sim_total_se"]) / float(r["theory_total"]))
                for r in csv.DictReader(open(row_csv)) if r["dataset"] == "mnist" and r["N1"] == "200"]
    for T, c in zip((1e-3, 1e-2, 1e-1), ("C0", "C1", "C2")):
        pp = sorted(p for p in pts if p[0] == T)
        if pp:
            ax.errorbar([p[1] for p in pp], [100 * p[2] for p in pp], [100 * p[3] for p in pp], marker="o", color=c,
                        label=f"T = {T:g}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks([0.5, 1, 2, 4], ["0.5", "1", "2", "4"])
    ax.minorticks_off()
    ax.set_xlabel("α₁ = P/N₁ (P = 100)")
    ax.set_ylabel("(sim − theory)/theory  [%]")
    ax.set_title("BAOAB vs RKGP, MNIST 0/1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    FIG_OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIG_OUT / "fig1a_breakdown.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
