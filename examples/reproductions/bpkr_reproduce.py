"""Issue 7, item 4: deep linear networks, BPKR theory (finwidth.theory.bpkr.BPKR) against closed forms
and against the exact block-Gibbs sampler (finwidth.simulate.gibbs.gibbs_deep_linear).

1. The T = 0 table of the BPKR notes §A.14(i): Q and Π = Q^L for α ∈ {0.5, 1, 2}, r₀ ∈ {0.5, 2},
   L ∈ {1, 2, 4, 16}, from the library on data built to have K = I (P = 100, N_0 = 200), against an
   independent root of Q − 1 + α − α r₀ Q^{−L} = 0 (scipy brentq) and the values printed in the notes.
2. The analytic isotropic learning curve (§A.5, §A.14(ii)): N_0 = 2000, P = 1000, σ_T = 1, σ_ε = 0.5,
   T = 0, σ² = 1/λ in every layer. Library on one sampled data set vs the formula at that data set's r₀.
3. Width and depth trends of ε_g = bias + variance at T = 0.01 on a linear teacher (N_0 = 200, P = 100,
   label noise 0.5) in two regimes: λ_0 = 1 (r₀ ≈ 1.6 > 1: wider is better) and λ_0 = 1/4
   (r₀ ≈ 0.4 < 1: narrower is better); theory curves for L = 1..4.
4. Exact Gibbs sampling at L = 1, 2, 3 and N = 25, 100, 400 in both regimes: ε_g with its split, the
   readout-norm estimate of Q̄_L and the hidden-layer kernels (trace and task alignment, §A.8).

Run (one core; 40 min on the shared, contended 2-core machine, dominated by Gibbs at N = 400):
    OMP_NUM_THREADS=1 python examples/reproductions/bpkr_reproduce.py
    python examples/reproductions/bpkr_reproduce.py --table     # markdown agreement table from the CSV
Writes docs/data/reproductions/bpkr_*.csv and docs/figures/reproductions/bpkr_*.png.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
from scipy.optimize import brentq

from finwidth import Network
from finwidth.data import teacher
from finwidth.simulate.gibbs import gibbs_deep_linear
from finwidth.theory.bpkr import BPKR

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs" / "data" / "reproductions"
FIG = ROOT / "docs" / "figures" / "reproductions"

# values printed in the BPKR notes §A.14(i): (alpha, r0) -> {L: (Q, Pi)}
NOTES_T0 = {
    (0.5, 0.5): {1: (0.80902, 0.80902), 2: (0.84781, 0.71878), 4: (0.89305, 0.63606), 16: (0.96231, 0.54077)},
    (0.5, 2.0): {1: (1.28078, 1.28078), 2: (1.19743, 1.43384), 4: (1.12478, 1.60056), 16: (1.03934, 1.85411)},
    (1.0, 0.5): {1: (0.70711, 0.70711), 2: (0.79370, 0.62996), 4: (0.87055, 0.57435), 16: (0.96005, 0.52081)},
    (1.0, 2.0): {1: (1.41421, 1.41421), 2: (1.25992, 1.58740), 4: (1.14870, 1.74110), 16: (1.04162, 1.92009)},
    (2.0, 0.5): {1: (0.61803, 0.61803), 2: (0.75488, 0.56984), 4: (0.85667, 0.53860), 16: (0.95885, 0.51050)},
    (2.0, 2.0): {1: (1.56155, 1.56155), 2: (1.31460, 1.72816), 4: (1.16577, 1.84692), 16: (1.04289, 1.95801)},
}


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def t0_reference(alpha: float, r0: float, L: int) -> float:
    """Positive root of Q − 1 + α − α r₀ Q^{−L} (increasing in Q, so unique)."""
    return brentq(lambda q: q - 1.0 + alpha - alpha * r0 * q ** (-L), 1e-12, 10.0 + r0, xtol=1e-15, rtol=1e-14)


def part1_t0_table() -> list[dict]:
    P, N0 = 100, 200
    rng = np.random.default_rng(0)
    Qm, _ = np.linalg.qr(rng.standard_normal((N0, P)))  # (N0, P), orthonormal columns
    X = math.sqrt(N0) * Qm.T  # C = X Xᵀ/N0 = I
    u = rng.standard_normal(P)
    u /= np.linalg.norm(u)
    rows = []
    for (alpha, r0), ref in NOTES_T0.items():
        y = math.sqrt(P * r0) * u  # yᵀ K⁻¹ y / P = r0
        N = int(round(P / alpha))
        for L, (q_notes, pi_notes) in ref.items():
            b = BPKR(Network([N] * L, "linear"), 0.0).fit(X, y)
            q_ref = t0_reference(alpha, r0, L)
            rows.append(dict(alpha=alpha, r0=r0, L=L, N=N, r0_library=b.width_criterion_.r, Q_library=float(b.qbar_[0]),
                             Pi_library=b.pi_, Q_brentq=q_ref, Pi_brentq=q_ref**L, Q_notes=q_notes, Pi_notes=pi_notes,
                             max_abs_dev_notes=max(abs(b.qbar_[0] - q_notes), abs(b.pi_ - pi_notes))))
    return rows


def part2_isotropic() -> list[dict]:
    N0, P, Pt, sT, se = 2000, 1000, 2000, 1.0, 0.5
    rng = np.random.default_rng(1)
    w = rng.standard_normal(N0)
    w *= math.sqrt(N0) * sT / np.linalg.norm(w)  # |w|²/N0 = σ_T² exactly
    X = rng.standard_normal((P, N0))
    y = X @ w / math.sqrt(N0) + se * rng.standard_normal(P)
    Xt = rng.standard_normal((Pt, N0))
    yt = Xt @ w / math.sqrt(N0)  # clean test labels
    a0 = P / N0
    rows = []
    for N, L, s2, r0_n, q_n, eps_n in ((500, 1, 1.0, 1.5, 1.3028, 1.4014), (500, 3, 1.0, 1.5, 1.1223, 1.4568),
                                       (250, 2, 1.2, 0.8681, 0.9389, 1.5116)):
        lam = 1.0 / s2
        b = BPKR(Network([N] * L, "linear", priors=[lam] * (L + 1)), 0.0).fit(X, y)
        e = b.generalization_error(Xt, yt)
        r0_emp = b.width_criterion_.r
        s = s2 ** (L + 1)
        alpha = P / N
        q_f = t0_reference(alpha, r0_emp, L)
        # §A.5 closed form; the bias part uses the design's σ_T, σ_ε (its sample fluctuations are O(1/√P))
        eps_formula = sT**2 * (1 - a0) + se**2 * a0 / (1 - a0) + s * (1 - a0) * q_f**L
        rows.append(dict(N=N, L=L, sigma2=s2, r0_notes=r0_n, r0_sample=r0_emp, Q_notes=q_n, Q_library=float(b.qbar_[0]),
                         Q_brentq_at_sample_r0=q_f, eps_notes=eps_n, eps_formula_at_sample_r0=eps_formula,
                         eps_library=e.total, bias_library=e.bias, variance_library=e.variance,
                         variance_formula=s * (1 - a0) * q_f**L))
    return rows


REGIMES = {"wide-better": 1.0, "narrow-better": 0.25}  # λ_0; the other layers have λ = 1
T_GIBBS = 0.01


def linear_teacher():
    return teacher("linear", n_features=200, n_train=100, n_test=500, seed=0, noise=0.5)


def part3_theory_trends(d) -> list[dict]:
    rows = []
    for regime, lam0 in REGIMES.items():
        for L in (1, 2, 3, 4):
            for N in [int(x) for x in np.unique(np.round(np.logspace(np.log10(20), np.log10(4000), 25)))] + [10**9]:
                b = BPKR(Network([N] * L, "linear", priors=[lam0] + [1.0] * L), T_GIBBS).fit(d.X_train, d.y_train)
                e = b.generalization_error(d.X_test, d.y_test)
                rows.append(dict(regime=regime, lambda_0=lam0, L=L, N=N, r0=b.width_criterion_.r, Pi=b.pi_,
                                 Qbar_L=float(b.qbar_[-1]), total=e.total, bias=e.bias, variance=e.variance))
    return rows


def jackknife(per_replica_fn, samples: np.ndarray):
    """Delete-one-replica jackknife of a statistic of samples shaped (S, R, P_t)."""
    R = samples.shape[1]
    full = per_replica_fn(samples)
    loo = np.array([per_replica_fn(np.delete(samples, r, axis=1)) for r in range(R)])
    se = np.sqrt((R - 1) / R * np.sum((loo - loo.mean(axis=0)) ** 2, axis=0))
    return full, se


def part4_gibbs(d) -> list[dict]:
    rows = []
    yt = d.y_test
    y = d.y_train

    def total(s):
        return float(np.mean((s - yt) ** 2))

    def variance(s):
        flat = s.reshape(-1, s.shape[-1])
        return float(np.mean(np.var(flat, axis=0, ddof=1)))

    for regime, lam0 in REGIMES.items():
        for L in (1, 2, 3):
            for N in (25, 100, 400):
                net = Network([N] * L, "linear", priors=[lam0] + [1.0] * L)
                b = BPKR(net, T_GIBBS).fit(d.X_train, d.y_train)
                e = b.generalization_error(d.X_test, d.y_test)
                hk = b.hidden_kernels()
                t = time.perf_counter()
                g = gibbs_deep_linear(net, d.X_train, d.y_train, temperature=T_GIBBS, n_sweeps=1200, burn_in=200,
                                      replicas=8, seed=L * 1000 + N, X_test=d.X_test, record_every=4)
                wall = time.perf_counter() - t
                tot, tot_se = jackknife(total, g.test_pred)
                var, var_se = jackknife(variance, g.test_pred)
                bias, bias_se = jackknife(lambda s: total(s) - variance(s), g.test_pred)
                q = g.readout_norm * net.priors[-1] / N
                qm, qse = float(q.mean()), float(q.mean(axis=0).std(ddof=1) / math.sqrt(q.shape[1]))
                row = dict(regime=regime, lambda_0=lam0, L=L, N=N, alpha=100 / N, r0=b.width_criterion_.r, T=T_GIBBS,
                           theory_total=e.total, gibbs_total=tot, gibbs_total_se=tot_se,
                           z_total=(tot - e.total) / tot_se, rel_dev_total=(tot - e.total) / e.total,
                           theory_bias=e.bias, gibbs_bias=bias, gibbs_bias_se=bias_se,
                           theory_variance=e.variance, gibbs_variance=var, gibbs_variance_se=var_se,
                           theory_Qbar_L=float(b.qbar_[-1]), gibbs_Qbar_L=qm, gibbs_Qbar_L_se=qse,
                           z_Qbar=(qm - b.qbar_[-1]) / qse)
                for ell in range(1, L + 1):
                    Rth = hk[ell - 1]
                    tr_th = float(np.trace(Rth)) / len(y)
                    al_th = float(y @ Rth @ y / (y @ y))
                    tr_m, tr_se = g.mean_and_stderr("hidden_trace")
                    al_m, al_se = g.mean_and_stderr("hidden_alignment")
                    row[f"theory_trace_{ell}"] = tr_th
                    row[f"gibbs_trace_{ell}"] = float(tr_m[ell - 1])
                    row[f"gibbs_trace_{ell}_se"] = float(tr_se[ell - 1])
                    row[f"theory_align_{ell}"] = al_th
                    row[f"gibbs_align_{ell}"] = float(al_m[ell - 1])
                    row[f"gibbs_align_{ell}_se"] = float(al_se[ell - 1])
                for ell in range(L + 1, 4):
                    for k in ("theory_trace", "gibbs_trace", "gibbs_trace_se", "theory_align", "gibbs_align", "gibbs_align_se"):
                        key = f"{k}_{ell}" if not k.endswith("_se") else f"{k[:-3]}_{ell}_se"
                        row[key] = float("nan")
                row["wall_s"] = wall
                rows.append(row)
                print(f"{regime:13s} L={L} N={N:4d}  eps theory {e.total:.4f} gibbs {tot:.4f}±{tot_se:.4f} "
                      f"(z={row['z_total']:+.1f})  Qbar {b.qbar_[-1]:.4f} vs {qm:.4f}±{qse:.4f}  {wall:.0f}s", flush=True)
    return rows


def plots(trend_rows, gibbs_rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), sharex=True)
    colors = {1: "C0", 2: "C1", 3: "C2", 4: "C3"}
    for i, regime in enumerate(REGIMES):
        for j, part in enumerate(("total", "bias", "variance")):
            ax = axes[i, j]
            for L in (1, 2, 3, 4):
                rr = [r for r in trend_rows if r["regime"] == regime and r["L"] == L and r["N"] < 10**9]
                ax.plot([r["N"] for r in rr], [r[part] for r in rr], color=colors[L], label=f"BPKR L={L}")
                inf = [r for r in trend_rows if r["regime"] == regime and r["L"] == L and r["N"] == 10**9][0]
                ax.axhline(inf[part], color=colors[L], ls=":", lw=0.8)
                gg = [r for r in gibbs_rows if r["regime"] == regime and r["L"] == L]
                if gg:
                    ax.errorbar([r["N"] for r in gg], [r[f"gibbs_{part}"] for r in gg],
                                yerr=[r[f"gibbs_{part}_se"] for r in gg], fmt="o", ms=4, color=colors[L], capsize=2)
            ax.set_xscale("log")
            r0 = trend_rows[[k for k, r in enumerate(trend_rows) if r["regime"] == regime][0]]["r0"]
            ax.set_title(f"{regime} (λ0={REGIMES[regime]}, r0={r0:.2f}): {part}", fontsize=9)
            if i == 1:
                ax.set_xlabel("hidden width N")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Deep linear nets, linear teacher N0=200, P=100, T=0.01: BPKR (lines; dotted = N→∞) vs exact Gibbs (points, ±1 s.e.)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(FIG / "bpkr_trends.png", dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, kind in zip(axes, ("align", "trace")):
        xs, ys, es, cs = [], [], [], []
        for r in gibbs_rows:
            for ell in range(1, r["L"] + 1):
                xs.append(r[f"theory_{kind}_{ell}"])
                ys.append(r[f"gibbs_{kind}_{ell}"])
                es.append(r[f"gibbs_{kind}_{ell}_se"])
                cs.append(colors[ell])
        for x, yv, e, c in zip(xs, ys, es, cs):
            ax.errorbar(x, yv, yerr=e, fmt="o", ms=3, color=c)
        lo, hi = min(xs + ys), max(xs + ys)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"BPKR §A.8 prediction ({'yᵀRy/|y|²' if kind == 'align' else 'Tr R/P'})")
        ax.set_ylabel("exact Gibbs")
        ax.set_title(f"hidden kernels R_ℓ: {'task alignment' if kind == 'align' else 'trace'} (colour = layer ℓ)", fontsize=9)
    fig.tight_layout()
    fig.savefig(FIG / "bpkr_hidden_kernels.png", dpi=90)
    plt.close(fig)


def markdown_table() -> str:
    """The agreement table of bpkr_gibbs.csv in markdown."""
    with open(DATA / "bpkr_gibbs.csv") as fh:
        rows = list(csv.DictReader(fh))
    head = ["regime", "L", "N", "α", "ε_g theory", "ε_g Gibbs ± s.e.", "rel. dev.", "z", "bias th / Gibbs",
            "variance th / Gibbs", "Q̄_L theory", "Q̄_L Gibbs ± s.e.", "z(Q̄)", "align ℓ=L th / Gibbs", "wall s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        f = {k: float(v) for k, v in r.items() if k != "regime"}
        L = int(f["L"])
        out.append("| " + " | ".join([
            r["regime"], str(L), str(int(f["N"])), f"{f['alpha']:.2g}", f"{f['theory_total']:.4f}",
            f"{f['gibbs_total']:.4f} ± {f['gibbs_total_se']:.4f}", f"{100 * f['rel_dev_total']:+.2f}%",
            f"{f['z_total']:+.1f}", f"{f['theory_bias']:.4f} / {f['gibbs_bias']:.4f}",
            f"{f['theory_variance']:.4f} / {f['gibbs_variance']:.4f}", f"{f['theory_Qbar_L']:.4f}",
            f"{f['gibbs_Qbar_L']:.4f} ± {f['gibbs_Qbar_L_se']:.4f}", f"{f['z_Qbar']:+.1f}",
            f"{f[f'theory_align_{L}']:.4f} / {f[f'gibbs_align_{L}']:.4f} ± {f[f'gibbs_align_{L}_se']:.4f}",
            f"{f['wall_s']:.0f}"]) + " |")
    return "\n".join(out)


def main() -> None:
    import sys

    if "--table" in sys.argv:
        print(markdown_table())
        return
    FIG.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = part1_t0_table()
    write_csv(DATA / "bpkr_t0_table.csv", rows)
    print("T = 0 table: max |library − notes| =", max(r["max_abs_dev_notes"] for r in rows),
          " max |library − brentq| =", max(abs(r["Q_library"] - r["Q_brentq"]) for r in rows))
    rows = part2_isotropic()
    write_csv(DATA / "bpkr_isotropic.csv", rows)
    for r in rows:
        print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()})
    d = linear_teacher()
    trend = part3_theory_trends(d)
    write_csv(DATA / "bpkr_trends_theory.csv", trend)
    gib = part4_gibbs(d)
    write_csv(DATA / "bpkr_gibbs.csv", gib)
    plots(trend, gib)
    print(f"total wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
