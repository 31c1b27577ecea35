"""Issue 15 analysis: sampled networks against the saddle-point theory and its corrections, and the
calibration of the validity diagnostic (the effective load α_eff = df/N_1, ``RKGP.validity_``).

Inputs (no sampling here):
  docs/data/reproductions/breakdown/*.json   the campaign of breakdown_study.py
  docs/data/reproductions/fig1a_breakdown_runs.csv, fig1a_sim_p100.csv, nonodd_sim.csv
                                            earlier P = 100 runs (T = 1e-2, 1e-1 map, CIFAR-10, relu)
Outputs:
  docs/data/reproductions/breakdown_table.csv
  docs/figures/reproductions/breakdown_map.png, breakdown_scaling.png

Run: python examples/reproductions/breakdown_analysis.py   (theory for every point: a few minutes)

A point counts as converged when the split-R̂ of its test error is ≤ 1.1 and its ESS ≥ 50 (the
readout norm's R̂ is reported too); unconverged points are listed but never used for a verdict or
for the calibration.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("FINWIDTH_DATA", str(REPO.parent / "shared" / "data"))

from breakdown_study import dataset  # noqa: E402

from finwidth import NNGP, RKGP, Network, ValidityWarning  # noqa: E402

DATA = REPO / "docs" / "data" / "reproductions"
FIG = REPO / "docs" / "figures" / "reproductions"
RHAT_MAX, ESS_MIN = 1.1, 50.0
CORRECTIONS = ("kernel_shape", "qbar_fluctuations")


def _f(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def sampled_points() -> list[dict]:
    """Every sampled point with its provenance, in one format."""
    pts = []
    for path in sorted((DATA / "breakdown").glob("*.json")):
        r = json.loads(path.read_text())
        pts.append(dict(source=f"breakdown/{path.name}", sampler="baoab", part=r["part"], data=r["data"], act=r["act"], P=r["P"],
                        N1=r["N1"], T=r["T"], step=r["h"], n_steps=r["n_steps"], sim_total=r["sim_total"],
                        sim_total_se=r["sim_total_se"], sim_bias=r["sim_bias"], sim_variance=r["sim_variance"],
                        sim_qbar=r["sim_qbar"], rhat_test=r["rhat_test"], rhat_readout=r["rhat_readout"],
                        ess_test=r["ess_test"]))
    with open(DATA / "fig1a_breakdown_runs.csv") as f:
        for r in csv.DictReader(f):
            if r["part"] not in ("A", "B", "M") or (r["part"] == "A" and r["sampler"] == "mala"):
                continue  # the short MALA runs are the unequilibrated ones of docs/reproductions.md
            part = "map_p100" if r["part"] == "B" else "p100_earlier"
            pts.append(dict(source="fig1a_breakdown_runs.csv", sampler=r["sampler"], part=part, data="mnist", act="erf", P=100,
                            N1=int(r["N1"]), T=float(r["T"]), step=float(r["step"]), n_steps=int(r["n_steps"]),
                            sim_total=_f(r["sim_total"]), sim_total_se=_f(r["sim_total_se"]),
                            sim_bias=_f(r["sim_bias"]), sim_variance=_f(r["sim_variance"]),
                            sim_qbar=_f(r["sim_qbar_readout"]), rhat_test=_f(r["rhat_test"]),
                            rhat_readout=_f(r["rhat_readout"]), ess_test=_f(r["ess_test"])))
    with open(DATA / "fig1a_sim_p100.csv") as f:
        for r in csv.DictReader(f):
            if r["dataset"] != "cifar10":
                continue
            pts.append(dict(source="fig1a_sim_p100.csv", sampler="baoab", part="heldout", data="cifar10", act="erf", P=100,
                            N1=int(r["N1"]), T=1e-3, step=_f(r["step"]), n_steps=int(r["n_steps"]),
                            sim_total=_f(r["sim_total"]), sim_total_se=_f(r["sim_total_se"]),
                            sim_bias=_f(r["sim_bias"]), sim_variance=_f(r["sim_variance"]),
                            sim_qbar=_f(r["sim_qbar_readout"]), rhat_test=math.nan, rhat_readout=math.nan,
                            ess_test=math.nan, max_rhat=_f(r["max_rhat"])))
    with open(DATA / "nonodd_sim.csv") as f:
        for r in csv.DictReader(f):
            if r["run"] == "step check":
                continue
            pts.append(dict(source="nonodd_sim.csv", sampler="baoab", part="heldout", data="mnist", act="relu", P=100,
                            N1=int(r["N"]), T=1e-3, step=_f(r["step"]), n_steps=int(r["n_steps"]),
                            sim_total=_f(r["sim_total"]), sim_total_se=_f(r["sim_total_se"]),
                            sim_bias=_f(r["sim_bias"]), sim_variance=_f(r["sim_variance"]),
                            sim_qbar=_f(r["sim_Qbar_L"]), rhat_test=_f(r["rhat_test"]),
                            rhat_readout=_f(r["rhat_readout"]), ess_test=_f(r["ess_test"])))
    for p in pts:
        if "max_rhat" in p:  # fig1a_sim_p100.csv stores only the worst R̂ over all traces
            p["converged"] = bool(p["max_rhat"] <= 2.5)
            p["convergence_note"] = f"max R̂ over traces {p['max_rhat']:.2f} (test-error R̂ 1.03-1.11 per docs)"
        else:
            p["converged"] = bool(p["rhat_test"] <= RHAT_MAX and p["ess_test"] >= ESS_MIN)
            p["convergence_note"] = f"R̂ {p['rhat_test']:.3f}, ESS {p['ess_test']:.0f}"
    return pts


_CACHE: dict = {}


def theory(p: dict) -> dict:
    key = (p["data"], p["act"], p["P"], p["N1"], p["T"])
    if key in _CACHE:
        return _CACHE[key]
    d = dataset(p["data"], p["P"])
    net = Network([p["N1"]], p["act"])
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ValidityWarning)
        plain = RKGP(net, p["T"]).fit(d.X_train, d.y_train)
        e = plain.generalization_error(d.X_test, d.y_test)
        out.update(theory_total=e.total, theory_bias=e.bias, theory_variance=e.variance,
                   theory_qbar=float(plain.qbar_[0]), alpha_eff=plain.validity_.effective_load,
                   dof=plain.validity_.degrees_of_freedom)
        nn = NNGP(net, p["T"]).fit(d.X_train, d.y_train).generalization_error(d.X_test, d.y_test)
        out.update(nngp_total=nn.total, nngp_bias=nn.bias)
        for c in CORRECTIONS:
            if plain.kind_ != "product":
                out[f"{c}_total"] = math.nan
                continue
            e = RKGP(net, p["T"], correction=c).fit(d.X_train, d.y_train).generalization_error(d.X_test, d.y_test)
            out[f"{c}_total"], out[f"{c}_bias"] = e.total, e.bias
    _CACHE[key] = out
    return out


def main() -> None:
    rows = []
    for p in sampled_points():
        t = theory(p)
        r = {**p, **t}
        r["alpha"] = p["P"] / p["N1"]
        r["rel_dev"] = p["sim_total"] / t["theory_total"] - 1
        r["z"] = (p["sim_total"] - t["theory_total"]) / p["sim_total_se"]
        for c in CORRECTIONS:
            r[f"{c}_rel_dev"] = p["sim_total"] / r[f"{c}_total"] - 1
        rows.append(r)
        print(f"{p['data']:7s} {p['act']:4s} P{p['P']:4d} N{p['N1']:5d} T{p['T']:.0e} sim {p['sim_total']:.5f}±"
              f"{p['sim_total_se']:.5f} th {t['theory_total']:.5f} dev {100 * r['rel_dev']:+6.1f}% "
              f"ks {100 * r['kernel_shape_rel_dev']:+6.1f}% mix {100 * r['qbar_fluctuations_rel_dev']:+6.1f}% "
              f"α_eff {t['alpha_eff']:.2f} Q̄ sim {p['sim_qbar']:.3f} th {t['theory_qbar']:.3f} "
              f"{'ok' if r['converged'] else 'NOT CONVERGED'} ({r['convergence_note']})", flush=True)
    keys = list(rows[0])
    for r in rows:
        keys += [k for k in r if k not in keys]
    DATA.mkdir(parents=True, exist_ok=True)
    with open(DATA / "breakdown_table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k, "")) for k in keys})
    figures(rows)


def figures(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    from finwidth.theory.validity import THRESHOLD

    ok = [r for r in rows if r["converged"]]
    FIG.mkdir(parents=True, exist_ok=True)
    # the map: MNIST erf, load α vs temperature, colour = deviation; line: α_eff = threshold at P = 100
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    m = [r for r in ok if r["data"] == "mnist" and r["act"] == "erf"]
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-0.65, vmax=0.1)
    sc = ax.scatter([r["alpha"] for r in m], [r["T"] for r in m], c=[r["rel_dev"] for r in m], s=[20 + r["P"] / 4 for r in m],
                    cmap="coolwarm_r", norm=norm, edgecolors="k")
    for r in m:
        ax.annotate(f"{100 * r['rel_dev']:+.0f}%", (r["alpha"], r["T"]), textcoords="offset points", xytext=(6, 4), fontsize=7)
    d = dataset("mnist", 100)
    alphas = np.geomspace(0.2, 5, 40)
    temps = np.geomspace(5e-5, 0.2, 30)
    A = np.empty((temps.size, alphas.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ValidityWarning)
        for i, T in enumerate(temps):
            for j, a in enumerate(alphas):
                A[i, j] = RKGP(Network([max(int(round(100 / a)), 1)], "erf"), T).fit(d.X_train, d.y_train).validity_.effective_load
    cs = ax.contour(alphas, temps, A, levels=[THRESHOLD], colors="k", linestyles="--")
    ax.clabel(cs, fmt={THRESHOLD: f"α_eff = {THRESHOLD:g} (P = 100)"}, fontsize=7)
    ax.set(xscale="log", yscale="log", xlabel="α = P/N₁", ylabel="T", title="MNIST 0/1, erf: (sim − theory)/theory")
    fig.colorbar(sc, ax=ax, label="relative deviation of ε_g")
    ax = axes[1]
    for data, mk in (("mnist", "o"), ("gauss", "s"), ("cifar10", "^")):
        for act in ("erf", "relu"):
            sel = [r for r in ok if r["data"] == data and r["act"] == act]
            if sel:
                ax.scatter([r["alpha_eff"] for r in sel], [abs(r["rel_dev"]) for r in sel], marker=mk,
                           label=f"{data} {act}", facecolors="none" if act == "relu" else None)
    ax.axvline(THRESHOLD, color="k", ls="--")
    ax.axhline(0.10, color="gray", ls=":")
    ax.set(xscale="log", yscale="log", xlabel="effective load α_eff = df/N₁ (RKGP.validity_)",
           ylabel="|sim − theory| / theory", title="the diagnostic against sampled networks")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIG / "breakdown_map.png", dpi=120)
    plt.close(fig)
    # scaling at fixed α: MNIST and Gaussian inputs
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for data, mk in (("mnist", "o-"), ("gauss", "s--")):
        for a in (2.0, 1.0, 0.5):
            sel = sorted([r for r in ok if r["data"] == data and r["act"] == "erf" and r["T"] == 1e-3
                          and abs(r["alpha"] - a) < 1e-9], key=lambda r: r["P"])
            if sel:
                ax.errorbar([r["P"] for r in sel], [100 * r["rel_dev"] for r in sel],
                            yerr=[100 * r["sim_total_se"] / r["theory_total"] for r in sel], fmt=mk,
                            label=f"{data}, α = {a:g}", capsize=2)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xscale="log", xlabel="P (N₁ = P/α)", ylabel="(sim − theory)/theory  [%]", title="T = 1e-3, erf")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIG / "breakdown_scaling.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
