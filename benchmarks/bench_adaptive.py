"""Adaptive-kernel solver benchmark: the fast path (Anderson-accelerated fixed point) against the
Newton–Krylov width continuation, side by side on the same problems, and optionally against an
earlier version of the library.

Usage (one command; the numbers go to docs/benchmarks.md, section "Adaptive kernels"):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_adaptive.py [--cases NAME ...] [--baseline-src DIR]
        [--baseline-cases NAME ...]

Per case, in this process: the default fit (the fast path; best of ``--repeats``) and the same fit
with the fast path switched off (``finwidth.theory.adaptive_eos.MAX_FIXED_POINT = 0``, so the
Newton–Krylov continuation runs from the start: the algorithm of earlier versions, on today's
kernel code), timed alternately; the two Σ are compared. ``--baseline-src DIR`` also runs each case
in a subprocess with DIR (the ``src`` folder of another checkout, e.g. made by
``git archive <commit> src | tar -x -C /tmp/old``) first on the path, and reports its time and the
difference of its Σ from ours (``--baseline-cases``: only for these cases; the version before the fast
path, commit c3ff970, takes minutes of CPU per P = 200 fit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {
    # name: (description, builder arguments)
    "linear-mf-P200": "linear, mean field, P = 200, N_0 = 300, N = 100, λ = (1, 0.01), T = 0.05, linear teacher + noise 0.5",
    "erf-mf-P200": "erf, mean field, P = 200, N_0 = 300, N = 100, λ = (1, 0.1), T = 0.005, teacher tanh(2 w·x/√N_0)",
    "erf-mf-P200-N0-50": "erf, mean field, P = 200, N_0 = 50, N = 100, λ = (1, 0.1), T = 0.005, teacher tanh(2 w·x/√N_0)",
    "cnn-erf-P200": "CNN erf, mean field, P = 200, N_0 = 64, patches of 8, C = 50, λ = (1, 0.1), T = 0.01, teacher tanh",
    "linear-std-P60": "linear, standard scaling, P = 60, N_0 = 120, N = 30, λ = (1, 0.2), T = 0.1 (docs/theories.md table 1)",
    "erf-mf-P20": "erf, mean field, P = 20, N_0 = 5, N = 100, λ = (1, 0.1), T = 0.005 (docs/theories.md table 3)",
}


def build(name: str):
    """(network, temperature, scaling, X, y) of a case; depends only on the public API of finwidth."""
    from finwidth import Network
    from finwidth.convnet import ConvNetwork

    rng = np.random.default_rng(0)
    if name in ("linear-mf-P200", "erf-mf-P200", "erf-mf-P200-N0-50"):
        P, N0 = 200, (50 if name.endswith("N0-50") else 300)
        w = rng.standard_normal(N0)
        X = rng.standard_normal((P, N0))
        if name.startswith("linear"):
            y = X @ w / math.sqrt(N0) + 0.5 * rng.standard_normal(P)
            return Network([100], "linear", priors=(1.0, 0.01)), 0.05, "mean_field", X, y
        return Network([100], "erf", priors=(1.0, 0.1)), 0.005, "mean_field", X, np.tanh(2 * X @ w / math.sqrt(N0))
    if name == "cnn-erf-P200":
        X = rng.standard_normal((200, 64))
        w = rng.standard_normal(8)
        y = np.tanh(X.reshape(200, 8, 8) @ w / math.sqrt(8)).mean(1) * 2
        return ConvNetwork(64, 8, 50, "erf", priors=(1.0, 0.1)), 0.01, "mean_field", X, y
    if name == "linear-std-P60":
        N0, P = 120, 60
        w = rng.standard_normal(N0)
        X = rng.standard_normal((P, N0))
        y = X @ w / math.sqrt(N0) + 0.5 * rng.standard_normal(P)
        return Network([30], "linear", priors=(1.0, 0.2)), 0.1, "standard", X, y
    if name == "erf-mf-P20":
        P, N0 = 20, 5
        w = rng.standard_normal(N0)
        X = rng.standard_normal((P, N0))
        return Network([100], "erf", priors=(1.0, 0.1)), 0.005, "mean_field", X, np.tanh(2 * X @ w / math.sqrt(N0))
    raise SystemExit(f"unknown case {name!r}; known: {', '.join(CASES)}")


def fit_once(name: str):
    from finwidth.theory.adaptive import AdaptiveKernel

    net, T, scaling, X, y = build(name)
    t, c = time.perf_counter(), time.process_time()
    ak = AdaptiveKernel(net, T, scaling=scaling).fit(X, y)
    ak.bench_cpu_seconds = time.process_time() - c  # CPU time: the steadier measure on a loaded machine
    return time.perf_counter() - t, ak


def _worker(name: str, out: str) -> None:
    """Baseline side: fit once, save Σ and the time (runs under another source tree)."""
    _warm_imports()
    dt, ak = fit_once(name)
    np.savez(out, sigma=ak.sigma_, seconds=dt, cpu_seconds=ak.bench_cpu_seconds, residual=ak.residual_)


def _warm_imports() -> None:
    """Import everything (torch, through the input reduction) before anything is timed."""
    from finwidth import Network
    from finwidth.theory.adaptive import AdaptiveKernel

    AdaptiveKernel(Network([5], "linear"), 0.1).fit(np.eye(3), np.ones(3))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--repeats", type=int, default=3, help="fast-path repeats (best of); the fallback runs once")
    ap.add_argument("--baseline-src", default=None, help="src folder of another finwidth checkout")
    ap.add_argument("--baseline-cases", nargs="+", default=None, choices=list(CASES),
                    help="run the --baseline-src fit only for these cases (default: all)")
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(*args.worker)
        return

    from finwidth.theory import adaptive_eos

    _warm_imports()
    rows = []
    for name in args.cases:
        fast_t = fast_c = math.inf
        saved = adaptive_eos.MAX_FIXED_POINT
        for rep in range(args.repeats):
            dt, fast = fit_once(name)
            fast_t, fast_c = min(fast_t, dt), min(fast_c, fast.bench_cpu_seconds)
            if rep == 0:  # the fallback between the first and second fast fits (same machine load)
                adaptive_eos.MAX_FIXED_POINT = 0
                try:
                    slow_t, slow = fit_once(name)
                finally:
                    adaptive_eos.MAX_FIXED_POINT = saved
        scale = float(np.abs(slow.sigma_).max())
        diff = float(np.abs(fast.sigma_ - slow.sigma_).max()) / scale
        row = dict(case=name, fast_s=fast_t, fast_cpu_s=fast_c, fast_solver=fast.solver_,
                   fast_evals=fast.n_evaluations_, fast_residual=fast.residual_, fallback_s=slow_t,
                   fallback_cpu_s=slow.bench_cpu_seconds, fallback_evals=slow.n_evaluations_,
                   fallback_residual=slow.residual_, sigma_rel_diff=diff)
        if args.baseline_src and (args.baseline_cases is None or name in args.baseline_cases):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "base.npz")
                env = dict(os.environ, PYTHONPATH=str(Path(args.baseline_src).resolve()))
                subprocess.run([sys.executable, __file__, "--worker", name, out], check=True, env=env)
                base = np.load(out)
                row["baseline_s"] = float(base["seconds"])
                row["baseline_cpu_s"] = float(base["cpu_seconds"])
                row["baseline_sigma_rel_diff"] = float(np.abs(base["sigma"] - fast.sigma_).max()) / scale
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| case | fast path: wall (CPU) s | evaluations | Newton–Krylov continuation: wall (CPU) s | evaluations | "
          "ratio wall (CPU) | max |ΔΣ|/max |Σ| | baseline: wall (CPU) s | ratio to baseline wall (CPU) | "
          "baseline max |ΔΣ|/max |Σ| |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = "— | — | —"
        if "baseline_s" in r:
            base = (f"{r['baseline_s']:.3g} ({r['baseline_cpu_s']:.3g}) | {r['baseline_s'] / r['fast_s']:.3g} "
                    f"({r['baseline_cpu_s'] / r['fast_cpu_s']:.3g}) | {r['baseline_sigma_rel_diff']:.1e}")
        print(f"| {r['case']} | {r['fast_s']:.3g} ({r['fast_cpu_s']:.3g}) | {r['fast_evals']} ({r['fast_solver']}) | "
              f"{r['fallback_s']:.3g} ({r['fallback_cpu_s']:.3g}) | {r['fallback_evals']} | "
              f"{r['fallback_s'] / r['fast_s']:.3g} ({r['fallback_cpu_s'] / r['fast_cpu_s']:.3g}) | "
              f"{r['sigma_rel_diff']:.1e} | {base} |")
    print("\ncases:")
    for name in args.cases:
        print(f"  {name}: {CASES[name]}")


if __name__ == "__main__":
    main()
