"""Issue 13.7: sampled multi-output erf networks against the multi-output RKGP on MNIST.

One hidden erf layer, priors 1, T = 0.05, one-hot targets (D = 3: digits 0, 1, 2; D = 10: all digits),
P = 200 training and 500 test images (the ``paper`` preset: standardised pixels). Per (D, N_1): the
theory (RKGP with (P, D) targets: ε_g summed over the outputs, accuracy, Q_1, the test-averaged
output–output correlation matrix; NNGP for the infinite-width reference) and BAOAB (the ``baoab`` step
of suggest_step_size, 8 replicas, readout-conditional start, Rao–Blackwellised), each run checkpointed.
Results: docs/data/reproductions/multioutput/mnist_D{D}_N{N}.json (written atomically), one per run.

    nice -n 10 python examples/reproductions/multioutput_mnist.py [D:N ...] [--steps S]
    python examples/reproductions/multioutput_mnist.py --report

(default: the six runs 3:50 3:100 3:200 10:50 10:100 10:200, 24 000 steps each; the step-size check:
``3:50 --steps 48000 --step-factor 0.5``). ``--report`` reads every run's JSON and writes the agreement
table docs/data/reproductions/multioutput/table.csv and docs/figures/reproductions/multioutput_corr.png
(the output–output correlation matrices, theory vs sampled, of the converged runs). Reported in
docs/reproductions.md ("Several outputs: sampled networks against the multi-output RKGP on MNIST") only
where R̂ ≤ 1.05 and ESS ≥ 100 (finwidth.experiments.verdicts).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from finwidth import NNGP, RKGP, Network, data
from finwidth.errors import NotConvergedWarning
from finwidth.experiments.verdicts import converged
from finwidth.simulate import sample_posterior, suggest_step_size

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "data" / "reproductions" / "multioutput"
FIG = ROOT / "docs" / "figures" / "reproductions"
T, P, P_TEST = 0.05, 200, 500
CLASSES = {3: [0, 1, 2], 10: list(range(10))}


def _offdiag_max(C: np.ndarray) -> tuple[int, int]:
    """Index (a, b), a < b, of the largest |off-diagonal| entry."""
    A = np.abs(np.triu(C, 1))
    a, b = np.unravel_index(np.argmax(A), A.shape)
    return int(a), int(b)


def run(D: int, N: int, n_steps: int, ckpt_dir: Path, step_factor: float = 1.0) -> dict:
    d = data.load("mnist", classes=CLASSES[D], n_train=P, n_test=P_TEST, labels="onehot", preset="paper")
    net = Network([N], "erf")
    t0 = time.perf_counter()
    th = RKGP(net, temperature=T).fit(d.X_train, d.y_train)
    eg_th = th.generalization_error(d.X_test, d.y_test)
    corr_th = th.output_correlation(d.X_test, average=True)
    gp = NNGP(net, temperature=T).fit(d.X_train, d.y_train)
    eg_gp = gp.generalization_error(d.X_test, d.y_test)
    # infinite width: independent outputs; the RKGP at N_1 = 1e9 checks that its correlations vanish
    corr_gp = RKGP(Network([10 ** 9], "erf"), temperature=T).fit(d.X_train, d.y_train).output_correlation(
        d.X_test, average=True)
    t_theory = time.perf_counter() - t0
    h = step_factor * suggest_step_size(net, d.X_train, d.y_train, temperature=T)["baoab"]
    ck = ckpt_dir / f"mnist_D{D}_N{N}_n{n_steps}_h{h:.4g}.ckpt"
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NotConvergedWarning)
        res = sample_posterior(net, d.X_train, d.y_train, temperature=T, step_size=h, n_steps=n_steps, replicas=8,
                               X_test=d.X_test, y_test=d.y_test, init="readout_conditional", seed=10 * D + N,
                               checkpoint=ck, resume=True, progress=False)
    dg, err = res.diagnostics, res.generalization_error
    rhat, ess = dg.rhat.get("test_mse_rb", dg.max_rhat), dg.ess.get("test_mse_rb", dg.min_ess)
    a, b = _offdiag_max(corr_th)
    return {
        "D": D, "classes": CLASSES[D], "N1": N, "T": T, "P": P, "P_test": P_TEST, "step_size": h, "n_steps": n_steps,
        "theory": {"eg": eg_th.total, "bias": eg_th.bias, "variance": eg_th.variance, "accuracy": eg_th.accuracy,
                   "Q": th.qbar_[-1].tolist(), "trQ_over_D": float(np.trace(th.qbar_[-1]) / D),
                   "corr": corr_th.tolist(), "corr_pair": [a, b], "corr_max": float(corr_th[a, b]), "wall_s": t_theory},
        "nngp": {"eg": eg_gp.total, "accuracy": eg_gp.accuracy, "corr_max": float(np.abs(np.triu(corr_gp, 1)).max())},
        "sim": {"eg": float(err.total), "eg_stderr": err.total.stderr,
                "accuracy": float(err.accuracy), "accuracy_stderr": err.accuracy.stderr,
                "Q": res.qbar_matrix.tolist(), "Q_stderr": res.qbar_matrix_stderr.tolist(),
                "trQ_over_D": float(res.qbar_readout), "trQ_over_D_stderr": res.qbar_readout.stderr,
                "corr": res.output_correlation.tolist(), "corr_stderr": res.output_correlation_stderr.tolist(),
                "corr_at_pair": float(res.output_correlation[a, b]),
                "corr_at_pair_stderr": float(res.output_correlation_stderr[a, b]),
                "rhat_eg": rhat, "ess_eg": ess, "converged": converged(rhat, ess),
                "max_rhat": dg.max_rhat, "min_ess": dg.min_ess, "rhat": dg.rhat, "ess": dg.ess,
                "problems": dg.problems, "warnings": [str(w.message) for w in caught],
                "wall_s": time.perf_counter() - t0},
    }


def _write_atomic(path: Path, write) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", newline="") as f:
        write(f)
    os.replace(f.name, path)


def report() -> None:
    """Agreement table (CSV) and the correlation-matrix figure from the per-run JSONs."""
    import csv

    runs = sorted((json.loads(p.read_text()) for p in OUT.glob("mnist_D*_N*.json")), key=lambda r: (r["D"], r["N1"]))
    cols = ["D", "N1", "alpha", "n_steps", "converged", "rhat_eg", "ess_eg", "max_rhat", "min_ess",
            "nngp_eg", "theory_eg", "sim_eg", "sim_eg_se", "nngp_acc", "theory_acc", "sim_acc", "sim_acc_se",
            "theory_trQ", "sim_trQ", "sim_trQ_se", "corr_pair", "theory_corr", "sim_corr", "sim_corr_se",
            "sim_corr_maxabs", "nngp_corr_maxabs", "corr_frob_rel",
            "Q_pair", "theory_Qoff", "sim_Qoff", "sim_Qoff_se", "Q_frob_rel"]
    rows = []
    for r in runs:
        t, s, g = r["theory"], r["sim"], r["nngp"]
        Ct, Cs = np.array(t["corr"]), np.array(s["corr"])
        off = ~np.eye(r["D"], dtype=bool)
        Qt, Qs, Qse = np.array(t["Q"]), np.array(s["Q"]), np.array(s["Q_stderr"])
        qa, qb = _offdiag_max(Qt)
        one = np.eye(r["D"])
        rows.append(dict(zip(cols, [
            r["D"], r["N1"], r["P"] / r["N1"], r["n_steps"], s["converged"], s["rhat_eg"], s["ess_eg"], s["max_rhat"],
            s["min_ess"], g["eg"], t["eg"], s["eg"], s["eg_stderr"], g["accuracy"], t["accuracy"], s["accuracy"],
            s["accuracy_stderr"], t["trQ_over_D"], s["trQ_over_D"], s["trQ_over_D_stderr"],
            "-".join(str(r["classes"][i]) for i in t["corr_pair"]), t["corr_max"], s["corr_at_pair"],
            s["corr_at_pair_stderr"], float(np.abs(Cs[off]).max()), g["corr_max"],
            float(np.linalg.norm((Cs - Ct)[off]) / np.linalg.norm(Ct[off])),
            f"{r['classes'][qa]}-{r['classes'][qb]}", Qt[qa, qb], Qs[qa, qb], Qse[qa, qb],
            float(np.linalg.norm(Qs - Qt) / np.linalg.norm(Qt - one))])))

    def write_csv(f):
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)

    _write_atomic(OUT / "table.csv", write_csv)
    for row in rows:
        print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    good = [r for r in runs if r["sim"]["converged"]]
    if not good:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(good), figsize=(3.2 * len(good), 6.2), squeeze=False)
    for j, r in enumerate(good):
        for i, (name, C) in enumerate((("theory (RKGP)", r["theory"]["corr"]), ("sampled (BAOAB)", r["sim"]["corr"]))):
            C = np.array(C)
            np.fill_diagonal(C, np.nan)          # the diagonal is 1: show the off-diagonal structure
            ax = axes[i, j]
            im = ax.imshow(C, cmap="RdBu_r", vmin=-0.35, vmax=0.35)
            ax.set_title(f"D={r['D']}, N1={r['N1']}: {name}", fontsize=8)
            ax.set_xticks(range(r["D"]), r["classes"], fontsize=6)
            ax.set_yticks(range(r["D"]), r["classes"], fontsize=6)
    fig.colorbar(im, ax=axes, shrink=0.6, label="output–output correlation")
    FIG.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=FIG, delete=False, suffix=".png") as f:
        fig.savefig(f, dpi=110, bbox_inches="tight")
    os.replace(f.name, FIG / "multioutput_corr.png")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="*", default=["3:50", "3:100", "3:200", "10:50", "10:100", "10:200"], help="D:N_1 pairs")
    ap.add_argument("--steps", type=int, default=24000)
    ap.add_argument("--step-factor", type=float, default=1.0, help="times the suggested BAOAB step (bias check)")
    ap.add_argument("--checkpoints", default=os.environ.get("TMPDIR", "/tmp"))
    ap.add_argument("--report", action="store_true", help="write table.csv and the figure from the JSONs")
    args = ap.parse_args()
    if args.report:
        report()
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for spec in args.runs:
        D, N = (int(x) for x in spec.split(":"))
        out = run(D, N, args.steps, Path(args.checkpoints), args.step_factor)
        _write_atomic(OUT / (f"mnist_D{D}_N{N}.json" if args.step_factor == 1.0 else f"h{args.step_factor:g}_D{D}_N{N}.json"), lambda f: json.dump(out, f, indent=1))
        s, t = out["sim"], out["theory"]
        print(f"D={D} N={N}: eg sim {s['eg']:.4f} ± {s['eg_stderr']:.4f} theory {t['eg']:.4f} nngp {out['nngp']['eg']:.4f}; "
              f"acc {s['accuracy']:.3f}/{t['accuracy']:.3f}; trQ/D {s['trQ_over_D']:.4f}/{t['trQ_over_D']:.4f}; "
              f"corr{t['corr_pair']} {s['corr_at_pair']:.3f} ± {s['corr_at_pair_stderr']:.3f} / {t['corr_max']:.3f}; "
              f"R̂ {s['rhat_eg']:.3f} ESS {s['ess_eg']:.0f} (max R̂ {s['max_rhat']:.3f}, min ESS {s['min_ess']:.0f}); "
              f"{s['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
