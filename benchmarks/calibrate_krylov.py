"""Calibration of the Krylov fit's standard error: many seeds, with and without deflation, against the dense answer.

Usage (one command; numbers go to docs/benchmarks.md, "Deflated stochastic Lanczos quadrature"):

    FINWIDTH_DATA=/work/shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate_krylov.py \\
        [--size 1000] [--seeds 24] [--rtol 2e-3] [--json out.json]

Data: the first P MNIST 0/1 training images, `paper` preset, 1HL erf, N_1 = P/2, T = 1e-3. The dense answer is
``spectral.solve_product`` on numpy's eigendecomposition (independent of the Krylov code). For each seed,
z = (Q̄_krylov − Q̄_dense)/qbar_stderr: calibrated error bars give z with mean ≈ 0 and standard deviation ≈ 1
(uncertain by about ±1/√(2·seeds) with this many seeds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    from finwidth import Network, kernels
    from finwidth.data import load
    from finwidth.theory import scalable, spectral

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=24)
    ap.add_argument("--rtol", type=float, default=2e-3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    P, T = args.size, 1e-3
    d = load("mnist", classes=(0, 1), n_train=P, n_test=0)
    net = Network([P // 2], "erf")
    K = kernels.nngp(net, d.X_train).train
    basis = spectral.eigenbasis(K)
    dense = float(spectral.solve_product(basis, basis.project(d.y_train), T, net.widths).qbar[0])
    print(f"# MNIST 0/1 P = {P}, N_1 = {P // 2}, T = {T:g}, rtol = {args.rtol:g}; dense Q̄ = {dense:.9f}", flush=True)
    rows = []
    for deflate in ("auto", 0):
        t0 = time.perf_counter()
        part = []
        for seed in range(args.seeds):
            sol = scalable.solve_product_krylov(lambda V: K @ V, d.y_train, T, net.widths, rtol=args.rtol, seed=seed,
                                                deflate=deflate)
            part.append({"deflate": deflate, "seed": seed, "qbar": float(sol.qbar[0]), "stderr": float(sol.qbar_stderr[0]),
                         "quad": float(sol.qbar_quadrature_error[0]), "deflated": sol.n_deflated,
                         "probes": sol.n_probes, "products": sol.n_products,
                         "z": float((sol.qbar[0] - dense) / sol.qbar_stderr[0])})
        z = np.array([r["z"] for r in part])
        mean = {key: float(np.mean([r[key] for r in part])) for key in ("stderr", "deflated", "probes", "products")}
        print(f"deflate={deflate!r}: z mean {z.mean():+.2f}, z std {z.std(ddof=1):.2f}, |z| > 2 in "
              f"{int(np.sum(np.abs(z) > 2))}/{z.size}; mean standard error {mean['stderr']:.2e}, pairs deflated "
              f"{mean['deflated']:.0f}, probes {mean['probes']:.0f}, products {mean['products']:.0f}, "
              f"{(time.perf_counter() - t0) / z.size:.2f} s per fit", flush=True)
        rows += part
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
