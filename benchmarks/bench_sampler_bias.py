"""Discretisation bias of Euler and BAOAB against an exact MALA reference (docs/benchmarks.md,
"Sampling", part B′). One core, one command:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sampler_bias.py [--quick] [--json out.json]

Issue-5 goal: the BAOAB step at which its bias equals Euler's bias at the papers' η = 1e-3 is
≥ 5× larger. At the papers' fig-1a point the bias is not resolvable in affordable runs (part B), so
the measurement is made on a small nonlinear posterior whose runs can be ≫ its slowest relaxation:

* 1HL erf network, MNIST 0/1 paper preset (N_0 = 784, input reduction: r = P), P = 20, N_1 = 20,
  λ = (1, 1), T = 1e-2 (``--P``, ``--N1``, ``--T`` change it).
* Step mapping. The Euler bias of a mode of curvature κ is set by ηκ (variance × 1/(1 − ηκ/2)),
  BAOAB's stability and accuracy by h sqrt(κ). The papers' η = 1e-3 at fig-1a is
  η κ_max(fig-1a) = 0.03 (κ_max from ``suggest_step_size`` at that point, measured here), so the
  paper-equivalent Euler step on the small problem is η_eq = 1e-3 κ_fig1a / κ_max. A BAOAB step
  h maps to the papers' units as h sqrt(κ_max / κ_fig1a).
* Run lengths are set in units of the slowest relaxation time, τ_slow = 1/(T λ_min) for the
  overdamped dynamics (Euler, MALA) and 1/sqrt(T λ_min) for BAOAB at its default (critical)
  friction. T = 1e-2 makes the stiffness ratio κ_max/(T λ) ≈ 10³ (3·10⁴ at fig-1a): that ratio sets
  only how many steps a relaxation takes, not the bias at a given ηκ_max.
* Exact reference: MALA at η = 0.25/κ_max (acceptance ≈ 0.95), 2 τ_slow of burn-in and
  20 τ_slow of measurement. Euler at η_eq × {1, 2, 4, 8, 16} (2 + 4 τ_slow each), BAOAB at
  h/h_stab ∈ {0.1, …, 0.7} (h_stab = 2/sqrt(κ_max); 5 + 40 τ_slow each). All runs R = 64
  replicas, float32 parameters (float64 energies and acceptance ratios),
  ``init="readout_conditional"``, raw (not Rao–Blackwellised) observables.
* Observables: train MSE, ⟨|a|²⟩ (readout), ⟨‖W_span‖²⟩ (first layer in the span of the inputs:
  the part the data act on; the orthogonal part is exact prior), test MSE (100 test points).
* Fit, per observable, jointly over all runs (independent estimates with their jackknife standard
  errors): value = m + a₁η + a₂η² (Euler), m + c₁h² + c₂h⁴ (BAOAB), m (MALA). Euler's bias at
  η_eq is a₁η_eq + a₂η_eq²; h* solves |c₁h² + c₂h⁴| = |bias_E(η_eq)|. Uncertainties of h* and of
  the ratio h*/η_eq by drawing the fitted coefficients from their Gaussian (covariance of the fit
  scaled by max(1, χ²/dof)); when BAOAB's bias is below Euler's over the whole measured range
  the ratio is a lower bound (h_max / η_eq).
* Gaussian sanity check (part G): Bayesian linear regression on the hidden features of a prior
  draw of the same network (same data). Euler's stationary law is known in closed form
  (covariance T (H − ηH²/2)⁻¹), BAOAB's configurational law is exact; both checked against the
  samplers in standard-error units.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import finwidth  # noqa: E402
from finwidth import Network  # noqa: E402
from finwidth.simulate import diagnostics as diag  # noqa: E402
from finwidth.simulate import suggest_step_size  # noqa: E402
from finwidth.simulate.guidance import default_friction  # noqa: E402
from finwidth.inputs import InputReduction  # noqa: E402
from finwidth.simulate.networks import BatchedMLP, LinearRegressionTarget  # noqa: E402
from finwidth.simulate.samplers import BAOABSampler, EulerSampler  # noqa: E402

DATA_ROOT = os.environ.get("FINWIDTH_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
PAPER_ETA = 1e-3
OBS = ("train_mse", "readout_norm", "first_layer_span_norm", "test_mse")


def mnist(n_train, n_test):
    ds = finwidth.data.load("mnist", classes=(0, 1), n_train=n_train, n_test=n_test, preset="paper", root=DATA_ROOT)
    return ds.X_train, ds.y_train, ds.X_test, ds.y_test


def fig1a_stiffness():
    """κ_max at the papers' fig-1a point (1HL erf, MNIST 0/1, P = 100, N_1 = 500, T = 1e-3)."""
    X, y, _, _ = mnist(100, 1)
    return suggest_step_size(Network([500], "erf"), X, y, temperature=1e-3)["stiffness"]


# ----------------------------------------------------------------------------------- one run
def run(net, data, T, sampler, h, t_burn, t_meas, R, seed, n_records=400):
    """One sample_posterior run of t_burn + t_meas time units; returns the four observables."""
    X, y, Xt, yt = data
    n_burn = int(math.ceil(t_burn / h))
    n_meas = int(math.ceil(t_meas / h))
    rec = max(1, n_meas // n_records)
    n_meas = rec * (n_meas // rec)
    t0 = time.perf_counter()
    res = finwidth.sample_posterior(net, X, y, temperature=T, sampler=sampler, step_size=h,
                                    n_steps=n_burn + n_meas, burn_in=n_burn, record_every=rec, replicas=R,
                                    X_test=Xt, y_test=yt, seed=seed, dtype="float32",
                                    init="readout_conditional", rao_blackwell=False)
    wall = time.perf_counter() - t0
    # W_perp is exact prior and not simulated: its expected norm N_1 (N_0 − r)/λ_0 is a constant
    r = InputReduction.from_inputs(X).rank
    perp = net.widths[0] * (X.shape[1] - r) / net.priors[0]
    vals = {
        "train_mse": res.train_error_raw,
        "readout_norm": res.layer_norms[1],
        "first_layer_span_norm": finwidth.simulate.Estimate(float(res.layer_norms[0]) - perp,
                                                            res.layer_norms[0].stderr),
        "test_mse": res.generalization_error_raw.total,
    }
    d = res.diagnostics
    keys = ("train_mse_raw", "readout_norm_raw", "test_mse_raw", "energy")
    out = {"sampler": sampler, "h": h, "steps": n_burn + n_meas, "wall_s": wall,
           "rhat_max": max(d.rhat[k] for k in keys), "ess_min": min(d.ess[k] for k in keys),
           "acceptance": d.acceptance, "n_blocks": d.n_blocks,
           **{k: [float(v), v.stderr] for k, v in vals.items()}}
    acc = "" if d.acceptance is None else f" acc {d.acceptance:.3f}"
    print(f"  {sampler:5s} h={h:<9.4g} steps {n_burn + n_meas:7d} {wall:6.1f}s  "
          + "  ".join(f"{k[:10]} {float(v):.5g}±{v.stderr:.1g}" for k, v in vals.items())
          + f"  R̂max {out['rhat_max']:.3f} ESSmin {out['ess_min']:.0f}{acc}", flush=True)
    return out


# ----------------------------------------------------------------------------------- the fit
def joint_fit(rows, obs, leading_only=False):
    """WLS of value = m + a1 η + a2 η² (euler) / m + c1 h² + c2 h⁴ (baoab) / m (mala).

    Returns the coefficients (m, a1, a2, c1, c2), their covariance (scaled by max(1, χ²/dof)) and
    χ²/dof. ``leading_only``: a2 = c2 = 0 (the leading orders only; returned as exact zeros)."""
    A, b, w = [], [], []
    for r in rows:
        h = r["h"]
        row = [1.0, 0, 0, 0, 0]
        if r["sampler"] == "euler":
            row[1:3] = [h, h * h]
        elif r["sampler"] == "baoab":
            row[3:5] = [h ** 2, h ** 4]
        A.append(row)
        b.append(r[obs][0])
        w.append(1.0 / r[obs][1] ** 2)
    A, b, w = np.array(A), np.array(b), np.array(w)
    keep = [0, 1, 3] if leading_only else [0, 1, 2, 3, 4]
    As = A[:, keep]
    covs = np.linalg.inv(As.T @ (w[:, None] * As))
    ths = covs @ As.T @ (w * b)
    dof = len(b) - As.shape[1]
    chi2 = float((w * (b - As @ ths) ** 2).sum() / max(dof, 1))
    theta, cov = np.zeros(5), np.zeros((5, 5))
    theta[keep] = ths
    cov[np.ix_(keep, keep)] = covs * max(1.0, chi2)
    return theta, cov, chi2


def baoab_step_for_bias(c1, c2, target, h_max):
    """Smallest h in (0, h_max] with |c1 h² + c2 h⁴| = target; None if BAOAB's fitted bias stays
    below the target up to h_max."""
    hs = np.linspace(0, h_max, 4001)[1:]
    bias = np.abs(c1 * hs ** 2 + c2 * hs ** 4)
    idx = np.nonzero(bias >= target)[0]
    if idx.size == 0:
        return None
    i = idx[0]
    if i == 0:
        return float(hs[0])
    # linear interpolation between grid points
    h0, h1, b0, b1 = hs[i - 1], hs[i], bias[i - 1], bias[i]
    return float(h0 + (target - b0) * (h1 - h0) / (b1 - b0))


def analyse(rows, obs, eta_eq, h_max, rng, leading_only=False):
    theta, cov, chi2 = joint_fit(rows, obs, leading_only)
    m, a1, a2, c1, c2 = theta
    g = np.array([0, eta_eq, eta_eq ** 2, 0, 0])
    bias_e = float(g @ theta)
    bias_e_se = float(math.sqrt(g @ cov @ g))
    h_star = baoab_step_for_bias(c1, c2, abs(bias_e), h_max)
    draws = rng.multivariate_normal(theta, cov, size=2000)
    ratios = []
    for t in draws:
        be = abs(t[1] * eta_eq + t[2] * eta_eq ** 2)
        hs = baoab_step_for_bias(t[3], t[4], be, h_max)
        ratios.append((hs if hs is not None else h_max) / eta_eq)
    ratios = np.array(ratios)
    return {
        "exact": float(m), "exact_se": float(math.sqrt(cov[0, 0])), "chi2_dof": chi2,
        "euler_slope": float(a1), "euler_slope_se": float(math.sqrt(cov[1, 1])),
        "baoab_c1": float(c1), "baoab_c1_se": float(math.sqrt(cov[3, 3])),
        "euler_bias_at_eta_eq": bias_e, "euler_bias_at_eta_eq_se": bias_e_se,
        "h_star": h_star, "ratio": None if h_star is None else h_star / eta_eq,
        "ratio_lower_bound": h_max / eta_eq if h_star is None else None,
        "ratio_q": [float(q) for q in np.quantile(ratios, [0.025, 0.16, 0.5, 0.84])],
        "p_ratio_ge_5": float(np.mean(ratios >= 5)),
        # 2σ bound on BAOAB's leading coefficient -> a lower bound on h* (and the ratio)
        "h_star_2sigma_lower": float(math.sqrt(abs(bias_e) / (abs(c1) + 2 * math.sqrt(cov[3, 3]))))
        if cov[3, 3] > 0 else None,
    }


# ----------------------------------------------------------------------------------- part G
def gaussian_check(net, X, y, T, kappa_net, R, n_relax, seed=0):
    """Linear regression on the hidden features of a prior draw: Euler vs its closed form, BAOAB exact."""
    red = InputReduction.from_inputs(X)
    model = BatchedMLP(net, X.shape[1], T, first_layer_inputs=red.rank, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    params = model.init_params(1, gen, "prior")
    _, cache = model.forward(params, torch.as_tensor(red.reduce(X)), keep=True)
    Phi = cache["acts"][-1][0]  # [P, N1]
    lam = net.priors[-1]
    target = LinearRegressionTarget(Phi, lam, T)
    mean, cov = target.exact_posterior(y)
    S = Phi.numpy() / math.sqrt(Phi.shape[1])
    H = S.T @ S + T * lam * np.eye(S.shape[1])  # Hessian of U
    kappa = float(np.linalg.eigvalsh(H).max())
    yt = torch.as_tensor(y)

    def closed(c):  # E train MSE and E|w|² under N(mean, c)
        r = y - S @ mean
        return (r @ r + np.trace(S @ c @ S.T)) / len(y), mean @ mean + np.trace(c)

    out = []
    print(f"\nG. Gaussian sanity check: linear regression on prior-draw hidden features (κ_max = {kappa:.3g}; "
          f"network κ_max {kappa_net:.3g})")
    for name, h in [("euler", 0.2 / kappa), ("euler", 0.5 / kappa), ("baoab", 0.5 * 2 / math.sqrt(kappa)),
                    ("baoab", 0.8 * 2 / math.sqrt(kappa))]:
        g = torch.Generator().manual_seed(seed + 1)
        w0 = torch.as_tensor(np.random.default_rng(seed).multivariate_normal(mean, cov, size=R))
        if name == "euler":
            s = EulerSampler(target, None, yt, h, g)
            c_ref = T * np.linalg.inv(H - 0.5 * h * H @ H)
            relax = 1.0 / (T * lam)
        else:
            s = BAOABSampler(target, None, yt, h, g, friction=default_friction(net, T))
            c_ref = cov
            relax = 1.0 / math.sqrt(T * lam)
        s.start([w0])
        n_burn = int(2 * relax / h)  # started from exact draws: only Euler's shift has to develop
        for _ in range(n_burn):
            s.step()
        n_steps = int(n_relax * relax / h)
        every = max(1, n_steps // 500)
        tm, wn = [], []
        for i in range(n_steps):
            s.step()
            if (i + 1) % every == 0:
                w = s.params[0].numpy()
                tm.append(((y - w @ S.T) ** 2).mean(-1))
                wn.append((w ** 2).sum(-1))
        tm, wn = np.array(tm).T, np.array(wn).T
        e_tm, e_wn = closed(c_ref)
        x_tm, x_wn = closed(cov)
        for lab, tr, ref, exact in (("train_mse", tm, e_tm, x_tm), ("|w|^2", wn, e_wn, x_wn)):
            se = diag.batch_means_stderr(tr, n_batches=max(2, int(n_relax // 2)))  # batches ≥ 2 τ_slow
            z = (tr.mean() - ref) / se
            print(f"  {name:5s} h κ-units {h * (kappa if name == 'euler' else math.sqrt(kappa)):.2f}: {lab:9s} "
                  f"measured {tr.mean():.5g} ± {se:.1g}, closed form {ref:.5g} (z = {z:+.2f}); exact posterior "
                  f"{exact:.5g}, bias {100 * (ref / exact - 1):+.2f}% predicted, "
                  f"{100 * (tr.mean() / exact - 1):+.2f}% ± {100 * se / exact:.2f}% measured")
            out.append({"sampler": name, "h": h, "obs": lab, "measured": float(tr.mean()), "se": se,
                        "closed_form": float(ref), "exact": float(exact), "z": float(z)})
    return out


def report(rows, eta_eq, h_stab, kappa, kappa_f, fr_max=0.7):
    """Fits of every observable (full and leading-order models) and the step ratios."""
    h_max = fr_max * h_stab
    rng = np.random.default_rng(0)
    results = {}
    for leading in (False, True):
        model = ("value = m + a1 η | m + c1 h² | m (leading orders)" if leading else
                 "value = m + a1 η + a2 η² | m + c1 h² + c2 h⁴ | m")
        print(f"\nfit per observable ({model}), η_eq = {eta_eq:.4g}:")
        for obs in OBS:
            r = analyse(rows, obs, eta_eq, h_max, rng, leading)
            results[("leading:" if leading else "full:") + obs] = r
            ratio_txt = (f"h* = {r['h_star']:.4g} ({r['h_star'] / h_stab:.2f} h_stab), ratio h*/η_eq = {r['ratio']:.3g}"
                         if r["ratio"] is not None else
                         f"BAOAB below that bias up to h_max = {h_max:.3g}: ratio ≥ {r['ratio_lower_bound']:.3g}")
            qq = r["ratio_q"]
            lo = r["h_star_2sigma_lower"]
            print(f"  {obs:22s} exact {r['exact']:.6g} ± {r['exact_se']:.1g} (χ²/dof {r['chi2_dof']:.2f}); "
                  f"Euler slope {r['euler_slope']:+.4g} ± {r['euler_slope_se']:.2g}; "
                  f"Euler bias at η_eq {r['euler_bias_at_eta_eq']:+.3g} ± {r['euler_bias_at_eta_eq_se']:.2g} "
                  f"({100 * r['euler_bias_at_eta_eq'] / r['exact']:+.3f}%); BAOAB c1 {r['baoab_c1']:+.4g} ± "
                  f"{r['baoab_c1_se']:.2g}")
            print(f"  {'':22s} {ratio_txt}; ratio quantiles 2.5/16/50/84% = {qq[0]:.3g}/{qq[1]:.3g}/{qq[2]:.3g}/"
                  f"{qq[3]:.3g}; P(ratio ≥ 5) = {r['p_ratio_ge_5']:.3f}"
                  + ("" if lo is None else f"; 2σ bound on c1 -> h* ≥ {lo:.3g}, ratio ≥ {lo / eta_eq:.3g}"))
            # the papers' units: η κ_max and h sqrt(κ_max) are the invariants
            if r["ratio"] is not None:
                hp = r["h_star"] * math.sqrt(kappa / kappa_f)
                print(f"  {'':22s} papers' units (fig-1a): BAOAB h* = {hp:.4g} vs η = 1e-3: ratio {hp / PAPER_ETA:.3g}")
                r["h_star_paper_units"] = hp
                r["ratio_paper_units"] = hp / PAPER_ETA
    return results


# ----------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs, R = 16 (smoke test; numbers not for docs)")
    ap.add_argument("--P", type=int, default=20)
    ap.add_argument("--N1", type=int, default=20)
    ap.add_argument("--T", type=float, default=1e-2)
    ap.add_argument("--replicas", type=int, default=64)
    ap.add_argument("--json", default=None)
    ap.add_argument("--from-json", default=None, help="re-analyse the runs stored by --json (no sampling)")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as fh:
            d = json.load(fh)
        report(d["rows"], d["eta_eq"], d["h_stab"], d["kappa"], d["kappa_fig1a"])
        return
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    q = 0.1 if a.quick else 1.0
    R = 16 if a.quick else a.replicas

    net = Network([a.N1], "erf", priors=[1.0, 1.0])
    T = a.T
    data = mnist(a.P, 100)
    g = suggest_step_size(net, data[0], data[1], temperature=T)
    kappa = g["stiffness"]
    kappa_f = fig1a_stiffness()
    eta_eq = PAPER_ETA * kappa_f / kappa
    h_stab = g["baoab_stability_limit"]
    lam_min = min(net.priors)
    tau_od, tau_ud = 1.0 / (T * lam_min), 1.0 / math.sqrt(T * lam_min)
    print(f"problem: 1HL erf, MNIST 0/1 paper preset, P={a.P}, N1={a.N1}, T={T:g}, R={R}; "
          f"κ_max = {kappa:.4g} (fig-1a: {kappa_f:.4g}); stiffness ratio κ_max/(Tλ) = {kappa / (T * lam_min):.3g} "
          f"(fig-1a {kappa_f / 1e-3:.3g})")
    print(f"  η_eq = 1e-3·κ_fig1a/κ_max = {eta_eq:.4g} (η κ_max = {eta_eq * kappa:.3f}); Euler stability "
          f"{g['euler_stability_limit']:.4g}; BAOAB h_stab = {h_stab:.4g}, friction {default_friction(net, T):.3g}; "
          f"τ_slow = {tau_od:g} (overdamped), {tau_ud:.3g} (BAOAB)")

    rows = []
    print("\nruns (float32 parameters, float64 energies, raw observables, R̂/ESS over train/readout/test/energy traces):")
    eta_mala = 0.25 / kappa
    rows.append(run(net, data, T, "mala", eta_mala, 2 * tau_od * q, 20 * tau_od * q, R, seed=100))
    for k, m in enumerate((1, 2, 4, 8, 16)):
        rows.append(run(net, data, T, "euler", m * eta_eq, 2 * tau_od * q, 4 * tau_od * q, R, seed=200 + k))
    fr = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    for k, f in enumerate(fr):
        rows.append(run(net, data, T, "baoab", f * h_stab, 5 * tau_ud * q, 40 * tau_ud * q, R, seed=300 + k))
    results = report(rows, eta_eq, h_stab, kappa, kappa_f)

    gauss = gaussian_check(net, data[0], data[1], T, kappa, R, 10 if a.quick else 40)
    total = time.perf_counter() - t_start
    print(f"\ntotal wall time {total:.0f} s (torch threads {torch.get_num_threads()})")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"P": a.P, "N1": a.N1, "T": T, "R": R, "kappa": kappa, "kappa_fig1a": kappa_f,
                       "eta_eq": eta_eq, "h_stab": h_stab, "rows": rows, "fits": results, "gaussian": gauss,
                       "wall_s": total, "quick": a.quick}, fh, indent=1)


if __name__ == "__main__":
    main()
