"""Sampling benchmarks (docs/benchmarks.md, "Sampling"): everything is measured side by side in one run.

    .venv/bin/python benchmarks/bench_sampling.py [--threads 2] [--quick] [--json out.json]

A. Throughput: chain-steps per second at N_0 = 784, N_1 = 500, P = 500, R = 8, float32, CPU, for
   finwidth's batched samplers against a faithful single-chain loop of the papers' update (one
   replica at a time: an ``nn.Module``, autograd, an optimiser step per iteration).
B. Accuracy versus step: the papers' figure-1a setting (1HL erf, MNIST 0/1 "paper" preset,
   P = 100, N_1 = 500, T = 1e-3). Discretisation bias of the raw train error (the observable most
   sensitive to the stiff, data-dominated directions) and of ε_g, for Euler at η = 1e-3 and BAOAB
   at several steps, against a reference BAOAB run at a small step (its O(h²) bias is far below
   the error bars).
C. Compute to a given standard error on ε_g at that point: finwidth (BAOAB + input reduction +
   Rao–Blackwellised readout) against the papers' protocol (5·10⁶ Euler steps at η = 1e-3 per
   replica), whose cost is estimated from the measured steps/s of the single-chain loop and the
   integrated autocorrelation time of its raw test-MSE, measured with the same Euler dynamics on
   a shorter run (a lower bound when the run is too short to resolve τ, which favours the papers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

import finwidth
from finwidth import Network
from finwidth.simulate import diagnostics as diag

DATA_ROOT = os.environ.get("FINWIDTH_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def mnist(n_train, n_test):
    try:
        ds = finwidth.data.load("mnist", classes=(0, 1), n_train=n_train, n_test=n_test, preset="paper",
                                root=DATA_ROOT)
        return ds.X_train, ds.y_train, ds.X_test, ds.y_test, "MNIST 0/1 (paper preset)"
    except finwidth.DataError:
        rng = np.random.default_rng(0)
        X, Xt = rng.standard_normal((n_train, 784)), rng.standard_normal((n_test, 784))
        w = rng.standard_normal(784)
        return X, (X @ w > 0).astype(float), Xt, (Xt @ w > 0).astype(float), "synthetic (MNIST files not found)"


# ---------------------------------------------------------------- the papers' single-chain loop
class PaperNet(torch.nn.Module):
    """1HL network as in the papers' code: x/sqrt(N0) -> Linear(no bias, N(0,1) init) -> erf -> /sqrt(N1) -> Linear."""

    def __init__(self, n0, n1):
        super().__init__()
        self.n0, self.n1 = n0, n1
        self.l0 = torch.nn.Linear(n0, n1, bias=False)
        self.l1 = torch.nn.Linear(n1, 1, bias=False)
        for p in self.parameters():
            torch.nn.init.normal_(p, std=1.0)

    def forward(self, x):
        return self.l1(torch.erf(self.l0(x / math.sqrt(self.n0))) / math.sqrt(self.n1)).squeeze(-1)


class LangevinOpt(torch.optim.Optimizer):
    """θ ← θ − lr ∇loss + sqrt(2 lr T) ξ (the papers' update; the prior is inside the loss)."""

    def __init__(self, params, lr, temperature):
        super().__init__(params, dict(lr=lr, temperature=temperature))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            c = math.sqrt(2 * g["lr"] * g["temperature"])
            for p in g["params"]:
                p.add_(p.grad, alpha=-g["lr"]).add_(torch.randn_like(p), alpha=c)


def paper_loop_steps_per_second(X, y, n1, T, lr, n_steps, lam=(1.0, 1.0)):
    net = PaperNet(X.shape[1], n1)
    opt = LangevinOpt(net.parameters(), lr, T)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)

    def one():
        out = net(Xt)
        loss = 0.5 * ((out - yt) ** 2).sum() + 0.5 * T * (lam[0] * (net.l0.weight ** 2).sum()
                                                          + lam[1] * (net.l1.weight ** 2).sum())
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(5):
        one()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        one()
    return n_steps / (time.perf_counter() - t0)


def ours_steps_per_second(X, y, n1, T, sampler, h, n_steps, R, **kw):
    net = Network([n1], "erf")
    res = finwidth.sample_posterior(net, X, y, temperature=T, sampler=sampler, step_size=h, n_steps=n_steps,
                                    record_every=n_steps, replicas=R, burn_in=0, **kw)
    return R * res.diagnostics.steps_per_second


# ---------------------------------------------------------------- parts
def part_a(quick):
    X, y, _, _, src = mnist(500, 10)
    n = 30 if quick else 150
    T, R = 1e-3, 8
    base = paper_loop_steps_per_second(X, y, 500, T, 1e-3, n)
    rows = {"paper loop (1 chain at a time, autograd + optimiser)": base}
    for name, sampler, h, kw in [
        ("finwidth euler, input reduction", "euler", 1e-3, {}),
        ("finwidth euler, no input reduction", "euler", 1e-3, {"input_reduction": False}),
        ("finwidth baoab, input reduction", "baoab", 0.05, {}),
    ]:
        rows[name] = ours_steps_per_second(X, y, 500, T, sampler, h, n, R, **kw)
    print(f"\nA. chain-steps/s, N0=784 N1=500 P=500 R={R} float32 CPU ({src}), torch threads {torch.get_num_threads()}")
    for k, v in rows.items():
        print(f"  {k:55s} {v:9.1f} chain-steps/s   ratio {v / base:5.2f}x")
    return {"data": src, "chain_steps_per_s": rows}


def _fig1a():
    X, y, Xt, yt, src = mnist(100, 1000)
    return Network([500], "erf"), X, y, Xt, yt, src


def part_b(quick):
    net, X, y, Xt, yt, src = _fig1a()
    T, R = 1e-3, 8
    n = 4000 if quick else 40000
    out = {}

    def run(sampler, h, n_steps, seed):
        t0 = time.perf_counter()
        r = finwidth.sample_posterior(net, X, y, temperature=T, sampler=sampler, step_size=h, n_steps=n_steps,
                                      record_every=max(1, n_steps // 2000), replicas=R, X_test=Xt, y_test=yt,
                                      seed=seed, init="readout_conditional")
        return r, time.perf_counter() - t0

    ref_h = 0.01
    ref, _ = run("baoab", ref_h, 4 * n, 100)
    out["reference"] = {"sampler": "baoab", "h": ref_h, "train_error_raw": [float(ref.train_error_raw), ref.train_error_raw.stderr],
                        "eps_g": [float(ref.generalization_error.total), ref.generalization_error.total.stderr]}
    print(f"\nB. bias vs step, fig-1a point ({src}, P=100, N1=500, T=1e-3, R={R})")
    print(f"  reference baoab h={ref_h}: train_raw {ref.train_error_raw!r}  eps_g {ref.generalization_error.total!r}")
    rows = []
    cases = [("euler", 1e-3)] + [("baoab", h) for h in (0.02, 0.05, 0.1, 0.2)]
    for i, (s, h) in enumerate(cases):
        steps = int(n * (0.05 / h)) if s == "baoab" else 4 * n
        steps = max(steps, n)
        r, wall = run(s, h, steps, i)
        db = float(r.train_error_raw) - float(ref.train_error_raw)
        se = math.hypot(r.train_error_raw.stderr, ref.train_error_raw.stderr)
        de = float(r.generalization_error.total) - float(ref.generalization_error.total)
        see = math.hypot(r.generalization_error.total.stderr, ref.generalization_error.total.stderr)
        rows.append({"sampler": s, "h": h, "steps": steps, "train_bias": db, "train_bias_se": se,
                     "train_rel_bias": db / float(ref.train_error_raw), "eps_bias": de, "eps_bias_se": see})
        print(f"  {s:5s} h={h:<6g} steps={steps:6d}: train_raw bias {db:+.3e} ± {se:.1e} "
              f"({100 * db / float(ref.train_error_raw):+.2f}%), eps_g bias {de:+.2e} ± {see:.1e}")
    out["rows"] = rows
    return out


def part_c(quick):
    net, X, y, Xt, yt, src = _fig1a()
    T, R = 1e-3, 8
    # papers' protocol: per-chain steps/s of the single-chain loop at this size
    base = paper_loop_steps_per_second(X, y, 500, T, 1e-3, 50 if quick else 300)
    # its autocorrelation: our Euler (identical dynamics) at η = 1e-3, raw test MSE, papers' record spacing scaled
    n_e = 20000 if quick else 300000
    e = finwidth.sample_posterior(net, X, y, temperature=T, sampler="euler", step_size=1e-3, n_steps=n_e,
                                  record_every=max(1, n_e // 3000), replicas=R, X_test=Xt, y_test=yt, seed=7,
                                  rao_blackwell=False, burn_in=n_e // 10)
    tr = e.traces["test_mse_raw"][-int(0.9 * e.traces["test_mse_raw"].shape[0]):].T
    tau_steps = diag.integrated_time(tr) * e.config["record_every"]
    var1 = tr.var(axis=1, ddof=1).mean()
    resolved = tau_steps < (0.9 * n_e) / 20
    n_proto = 5_000_000
    se_proto = math.sqrt(var1 * tau_steps / ((n_proto - 500_000) * R))
    cost_proto = R * n_proto / base
    # ours
    n_o = 5000 if quick else 40000
    h = 0.1
    t0 = time.perf_counter()
    o = finwidth.sample_posterior(net, X, y, temperature=T, sampler="baoab", step_size=h, n_steps=n_o,
                                  record_every=max(1, n_o // 2000), replicas=R, X_test=Xt, y_test=yt, seed=8,
                                  init="readout_conditional")
    cost_o = time.perf_counter() - t0
    se_o = o.generalization_error.total.stderr
    work_ratio = (cost_proto * se_proto ** 2) / (cost_o * se_o ** 2)
    print(f"\nC. compute to a given stderr on eps_g, fig-1a point ({src})")
    print(f"  papers' loop: {base:.1f} steps/s per chain -> protocol {R}x5e6 steps = {cost_proto / 3600:.1f} h CPU")
    print(f"  Euler eta=1e-3 raw test-MSE: tau = {tau_steps:.3g} steps ({'resolved' if resolved else 'NOT resolved: lower bound'}"
          f" from {n_e} steps), per-sample sd {math.sqrt(var1):.3g} -> protocol stderr {se_proto:.3g}")
    print(f"  finwidth baoab h={h}, RB + input reduction: {n_o} steps x R={R} in {cost_o:.1f} s, eps_g = {o.generalization_error!r}"
          f", stderr {se_o:.3g}, rhat {o.diagnostics.max_rhat:.3f}")
    print(f"  work ratio (time x stderr^2, papers / finwidth) = {work_ratio:.3g}")
    print(f"  theory (RKGP): eps_g = {finwidth.RKGP(net, T).fit(X, y).generalization_error(Xt, yt).total:.5f}")
    return {"paper_steps_per_s": base, "tau_euler_steps": tau_steps, "tau_resolved": bool(resolved),
            "protocol_cost_s": cost_proto, "protocol_stderr": se_proto, "ours_cost_s": cost_o, "ours_stderr": se_o,
            "ours_eps_g": float(o.generalization_error.total), "work_ratio": work_ratio}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test; numbers not for docs)")
    ap.add_argument("--parts", default="abc")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = {"threads": a.threads, "torch": torch.__version__}
    for p in a.parts:
        out[p] = {"a": part_a, "b": part_b, "c": part_c}[p](a.quick)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
