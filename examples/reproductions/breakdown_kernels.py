"""Issue 15: *how* the sampled networks differ from the saddle point — the posterior mean of the
hidden-feature kernel K_Φ = ΦΦᵀ/(λ_1 N_1) and of the first-layer weight covariance, measured with
``sample_posterior(..., observers=...)``, against the theory's Q̄·K and the kernel-shape formula.

Points (P = 100, T = 1e-3, erf, λ = 1): MNIST 0/1 at α = 2 (N_1 = 50, the breakdown) and α = 0.5
(N_1 = 200, the theory holds), Gaussian inputs (N_0 = 50, labels 0.2·sign) at α = 2.

For each point it reports (docs/reproductions.md, "How the sampled predictor differs"):
  * scale or shape: ⟨K_Φ⟩ in the whitened basis of K (K^{-1/2}⟨K_Φ⟩K^{-1/2}): its median eigenvalue
    (a pure rescaling would make all eigenvalues equal), the Rayleigh quotient along K^{-1/2}y, the
    spread, and how much of ‖⟨K_Φ⟩ − cK‖ lies outside the label direction;
  * the kernel-shape formula K_c = K + (Q̄/N_1)K(aaᵀ − G⁻¹)K (deepbays FC_1HL_corrected, which is the
    first-order posterior mean of K_Φ in the Gaussian-equivalent theory) against ⟨K_Φ⟩;
  * the GP built from the *measured* mean kernel (Q̄_sim ⟨K_Φ⟩): how much of the sampled networks'
    bias a single renormalised GP of any shape can reach;
  * the first-layer covariance Σ̂ = ⟨W_spanᵀW_span⟩/N_1 (prior: identity/λ_0): its spikes and their
    overlap with the class-mean difference and the mean input.

Run: nice -n 10 python examples/reproductions/breakdown_kernels.py   (about 10 CPU-minutes)
Writes docs/data/reproductions/breakdown_kernels.json (cached runs in $STUDY_CACHE).
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from breakdown_study import CACHE, REPO, dataset, write_json  # noqa: E402

from finwidth import RKGP, Network, ValidityWarning, kernels, sample_posterior  # noqa: E402
from finwidth.inputs import InputReduction  # noqa: E402
from finwidth.theory.gp import generalization_error, gp_fit, gp_predict  # noqa: E402

OUT = REPO / "docs" / "data" / "reproductions" / "breakdown_kernels.json"
POINTS = [("mnist", 100, 50), ("mnist", 100, 200), ("gauss", 100, 50)]
T = 1e-3


def observers(N1: int) -> dict:
    def k_train(s):
        F = s.features.double()
        return F @ F.transpose(1, 2) / N1

    def k_test(s):
        return s.test_features.double() @ s.features.double().transpose(1, 2) / N1

    def k_diag(s):
        return (s.test_features.double() ** 2).sum(-1) / N1

    def w_cov(s):  # first layer in the reduced input basis: [R, N1, r]
        W = s.params[0].double()
        return W.transpose(1, 2) @ W / N1

    return {"K": k_train, "Kx": k_test, "Kd": k_diag, "Sigma": w_cov}


def sample(data: str, P: int, N1: int):
    key = CACHE / f"kernels_{data}_P{P}_N{N1}_T{T:g}.npz"
    if key.exists():
        with np.load(key) as z:
            return {k: z[k] for k in z.files}
    d = dataset(data, P)
    res = sample_posterior(Network([N1], "erf"), d.X_train, d.y_train, temperature=T, sampler="baoab",
                           step_size=0.1, n_steps=12_000, record_every=60, replicas=8, X_test=d.X_test,
                           y_test=d.y_test, init="readout_conditional", seed=21, observers=observers(N1))
    g, o = res.generalization_error, res.observed
    out = {k: o[k].mean for k in o} | {f"{k}_se": o[k].stderr for k in o}
    out.update(eps=np.array([g.total.value, g.bias.value, g.variance.value, g.total.stderr, g.bias.stderr]),
               qbar=np.array([res.qbar_readout.value, res.qbar_readout.stderr]),
               rhat=np.array([res.diagnostics.rhat.get("test_mse_rb", math.nan)]),
               ess=np.array([res.diagnostics.ess.get("test_mse_rb", math.nan)]))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = key.with_name(key.name + ".tmp.npz")
    np.savez(tmp, **out)
    os.replace(tmp, key)
    return out


def top_modes(M: np.ndarray, yw: np.ndarray, m: int) -> dict:
    """Whitened mean kernel restricted to the m leading modes of K (the last m coordinates)."""
    Mm, ym = M[-m:, -m:], yw[-m:] / np.linalg.norm(yw[-m:])
    ev = np.linalg.eigvalsh(Mm)
    c = float(np.median(ev))
    D = Mm - c * np.eye(m)
    Py = np.outer(ym, ym)
    return {f"top{m}_median": c, f"top{m}_min": float(ev[0]), f"top{m}_max": float(ev[-1]),
            f"top{m}_label_rayleigh": float(ym @ Mm @ ym),
            f"top{m}_label_weight": float(np.sum(yw[-m:] ** 2)),
            f"top{m}_change_outside_labels": float(np.linalg.norm(D - Py @ D @ Py) / np.linalg.norm(D))}


def analyse(data: str, P: int, N1: int, s: dict) -> dict:
    d = dataset(data, P)
    net = Network([N1], "erf")
    b = kernels.nngp(net, d.X_train, d.X_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ValidityWarning)
        th = RKGP(net, T).fit(d.X_train, d.y_train)
    q = float(th.qbar_[0])
    K, Km = b.train, s["K"]
    k, U = np.linalg.eigh(K)
    keep = k > 1e-9 * k[-1]
    W = U[:, keep] / np.sqrt(k[keep])
    M = W.T @ Km @ W  # whitened mean kernel: identity for ⟨K_Φ⟩ = K
    ev = np.linalg.eigvalsh(M)
    yw = W.T @ d.y_train
    yw /= np.linalg.norm(yw)
    c = float(np.median(ev))
    D = M - c * np.eye(M.shape[0])
    Py = np.outer(yw, yw)
    # the kernel-shape formula (first-order posterior mean of K_Φ, Gaussian-equivalent theory)
    G = q * K + T * np.eye(P)
    Gi = np.linalg.inv(G)
    a = Gi @ d.y_train
    Kc = K + (q / N1) * K @ (np.outer(a, a) - Gi) @ K
    err = lambda A: float(np.linalg.norm(A - Km) / np.linalg.norm(Km))  # noqa: E731

    def gp(Ktr, Kx, Kd, amp):
        m, v = gp_predict(gp_fit(amp * Ktr, d.y_train, T), amp * Kx, amp * Kd, return_var=True)
        return generalization_error(d.y_test, m, v)

    qs = float(s["qbar"][0])
    mean_kernel = gp(Km, s["Kx"], s["Kd"], qs)
    theory = th.generalization_error(d.X_test, d.y_test)
    # first-layer covariance in the reduced basis (prior: identity / λ_0 = identity)
    red = InputReduction.from_inputs(d.X_train)
    Z = red.reduce(d.X_train)
    Sg = s["Sigma"]
    sev, sV = np.linalg.eigh(Sg)
    dirs = {}
    if data == "mnist":
        diff = Z[d.y_train == 1].mean(0) - Z[d.y_train == 0].mean(0)
        dirs = {"class_mean_difference": diff, "mean_input": Z.mean(0)}
    else:
        w = d.info["w"]
        dirs = {"teacher": red.reduce(w[None, :])[0]}
    overlaps = {n: {"rayleigh": float((u / np.linalg.norm(u)) @ Sg @ (u / np.linalg.norm(u))),
                    "weight_on_top2": float(np.sum((sV[:, -2:].T @ (u / np.linalg.norm(u))) ** 2))}
                for n, u in dirs.items()}
    return {
        "data": data, "P": P, "N1": N1, "alpha": P / N1, "T": T,
        "sim_eps": s["eps"][:3].tolist(), "sim_eps_se": s["eps"][3:].tolist(), "sim_qbar": s["qbar"].tolist(),
        "rhat_test": float(s["rhat"][0]), "ess_test": float(s["ess"][0]),
        "theory_eps": [theory.total, theory.bias, theory.variance], "theory_qbar": q,
        "trace_ratio": float(np.trace(Km) / np.trace(K)),
        "whitened_median": c, "whitened_min": float(ev[0]), "whitened_max": float(ev[-1]),
        "whitened_label_rayleigh": float(yw @ M @ yw),
        "shape_change_fraction_outside_labels": float(np.linalg.norm(D - Py @ D @ Py) / np.linalg.norm(D)),
        # statistical noise of the measured kernel in the same whitened norm (entrywise stderr, whitened)
        "whitened_noise_over_change": float(np.linalg.norm(W.T @ s["K_se"] @ W) / np.linalg.norm(D)),
        # the 20 leading kernel modes only (well measured; they carry the labels)
        **top_modes(M, yw, 20),
        "rel_error_K_vs_measured": err(K), "rel_error_kernel_shape_vs_measured": err(Kc),
        "K_measured_stderr_rel": float(np.linalg.norm(s["K_se"]) / np.linalg.norm(Km)),
        "gp_of_measured_mean_kernel_eps": [mean_kernel.total, mean_kernel.bias, mean_kernel.variance],
        "first_layer_cov_top": sev[-4:][::-1].tolist(), "first_layer_cov_median": float(np.median(sev)),
        "first_layer_overlaps": overlaps,
    }


def main() -> None:
    torch.set_num_threads(1)
    out = []
    for data, P, N1 in POINTS:
        r = analyse(data, P, N1, sample(data, P, N1))
        out.append(r)
        print(json.dumps(r, indent=1), flush=True)
    write_json(OUT, out)


if __name__ == "__main__":
    main()
