"""Benchmark: NNGP kernel construction against the bare X @ X.T product, side by side.

Run (from the repository root):

    .venv/bin/python benchmarks/bench_kernels.py            # P = 1000, 4000, 10000
    .venv/bin/python benchmarks/bench_kernels.py --sizes 1000 4000 --repeats 3
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_kernels.py --sizes 1000 4000 --acts tanh --scale 1 8

``--scale s`` multiplies X by sqrt(s): the input variances (and those of deeper layers) grow with
it, which matters for tanh (the Hermite series needs more terms at larger variances; the scale-1
MNIST variances are ≈ 0.1, so ``--scale 8`` is a harder, O(1) case).

Every case runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its
own: one process times the bare ``X @ X.T`` (float64, N_0 = 784), another builds the train×train
kernel with ``finwidth.kernels.nngp`` (which includes that same product). Times are the best of
``--repeats``; the ratio is kernel time / bare product time, measured in the same run. Inputs
are the first P MNIST training images scaled to [0, 1] when ../shared/data (or FINWIDTH_DATA)
has them, Gaussian random data otherwise. The printed Markdown table goes into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_inputs(P: int):  # type: ignore[no-untyped-def]
    import numpy as np

    candidates = [os.environ.get("FINWIDTH_DATA", ""), str(ROOT.parent / "shared" / "data")]
    for base in candidates:
        if not base:
            continue
        img = Path(base) / "mnist" / "train-images-idx3-ubyte.gz"
        lab = Path(base) / "mnist" / "train-labels-idx1-ubyte.gz"
        if img.exists() and lab.exists():
            from finwidth.data.formats import read_mnist_idx

            images, _ = read_mnist_idx(img, lab)
            X = np.asarray(images[:P], dtype=np.float64).reshape(P, -1) / 255.0
            return np.ascontiguousarray(X), "MNIST"
    rng = np.random.default_rng(0)
    return rng.standard_normal((P, 784)), "random"


def _worker(mode: str, P: int, depth: int, act: str, repeats: int, scale: float = 1.0) -> dict:
    import numpy as np

    from finwidth import Network
    from finwidth.kernels import nngp

    X, source = _load_inputs(P)
    X = X * scale**0.5
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        if mode == "bare":
            out = X @ X.T
        else:
            out = nngp(Network([1] * depth, act), X).train
        best = min(best, time.perf_counter() - t0)
        del out
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    C = X @ X.T / X.shape[1]
    return {"time_s": best, "peak_rss_mib": rss1 / 1024, "rss_before_mib": rss0 / 1024, "source": source,
            "dtype": str(np.float64.__name__), "max_input_variance": float(np.max(np.diag(C)))}


def _run_case(mode: str, P: int, depth: int, act: str, repeats: int, scale: float = 1.0) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, str(P), str(depth), act, "--repeats", str(repeats),
           "--scale", str(scale)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 10000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--acts", nargs="+", default=["erf", "relu", "tanh"])
    ap.add_argument("--scale", type=float, nargs="+", default=[1.0], help="input scale factors s (X → sqrt(s) X)")
    ap.add_argument("--worker", nargs=4, metavar=("MODE", "P", "L", "ACT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        mode, P, depth, act = args.worker
        print(json.dumps(_worker(mode, int(P), int(depth), act, args.repeats, args.scale[0])))
        return

    print(f"# machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at start, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
    rows = []
    for P in args.sizes:
        bare = _run_case("bare", P, 1, "erf", args.repeats)
        for sc in args.scale:
            for act in args.acts:
                for depth in (1, 3):
                    k = _run_case("nngp", P, depth, act, args.repeats, sc)
                    rows.append((P, act, depth, bare, k))
                    print(f"P={P} {act} L={depth} scale {sc}: kernel {k['time_s']:.3f} s, bare X@X.T "
                          f"{bare['time_s']:.3f} s, ratio {k['time_s'] / bare['time_s']:.2f}, peak RSS "
                          f"{k['peak_rss_mib']:.0f} MiB (bare {bare['peak_rss_mib']:.0f} MiB), max input variance "
                          f"{k['max_input_variance']:.3g} [{k['source']}]", flush=True)
    print(f"# load average {os.getloadavg()[0]:.2f} at end")
    print()
    print("| P | activation | L | max c_0 | kernel (s) | bare X Xᵀ (s) | ratio | peak RSS kernel (MiB) | peak RSS bare (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for P, act, depth, bare, k in rows:
        print(f"| {P} | {act} | {depth} | {k['max_input_variance']:.3g} | {k['time_s']:.3f} | {bare['time_s']:.3f} | "
              f"{k['time_s'] / bare['time_s']:.2f} | {k['peak_rss_mib']:.0f} | {bare['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
