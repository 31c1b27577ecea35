"""CNN theory benchmark: the local kernel renormalisation at the papers' geometry, its cost and memory.

Usage (one command; numbers go to docs/benchmarks.md, section "CNN theory"):

    .venv/bin/python benchmarks/bench_cnn.py --sizes 250 500 1000 [--compare-dtypes 500]
        [--deepbays-path /tmp/deepbays-stubs:/tmp/deepbays-site]

Task: MNIST 0/1 (paper preset, labels 0/1), 28×28 images, ``ConvNetwork(784, 4, C, "erf",
image_shape=(28, 28))``: 4×4 windows at stride 4, Ñ = 49 patches, 1225 patch pairs; T = 1e-3,
λ = 1, C = 100 channels (α = P/C up to 10). For each P it reports the store (bytes, dtype, build
time), the solve (evaluations of S and ∇S, time per evaluation, residual), the prediction on P_t
test points, and the peak resident memory of the process. Wall and CPU (process) times are both
given: on a shared machine the CPU time is the stable one.

``--compare-dtypes P`` fits the same problem with float64 and float32 stores side by side and
reports the largest change of Q and of ε_g. ``--deepbays-path`` times deepbays 0.1.11 ``CONV_1HL``
against ``ConvRKGP`` on a small problem it can solve (8×8 images, 4×4 windows, Ñ = 4, P = 60),
alternately, in this process (side environment: tests/fixtures/deepbays/make_side_env.sh).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class _Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_size(P: int, n_test: int, channels: int, dtype: str, temperature: float):
    from finwidth import ConvNetwork
    from finwidth.conv_kernels import PatchInputs
    from finwidth.data import load
    from finwidth.theory import patch_store
    from finwidth.theory.conv import ConvRKGP

    d = load("mnist", classes=(0, 1), n_train=P, n_test=n_test, preset="paper")
    net = ConvNetwork(784, 4, channels, "erf", image_shape=(28, 28))
    # the store alone, to time its construction separately from the solve
    with _Clock() as build:
        store = patch_store.PatchPairStore(PatchInputs(net, d.X_train), "float32" if dtype == "auto" and
                                           patch_store.store_bytes(49, P, "float64") > 2 << 30 else
                                           ("float64" if dtype == "auto" else dtype))
    del store
    with _Clock() as fit:
        model = ConvRKGP(net, temperature, kernel_dtype=dtype).fit(d.X_train, d.y_train)
    with _Clock() as pred:
        err = model.generalization_error(d.X_test, d.y_test)
    return model, err, build, fit, pred


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000])
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--temperature", type=float, default=1e-3)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float64", "float32"])
    ap.add_argument("--compare-dtypes", type=int, default=None, metavar="P")
    ap.add_argument("--deepbays-path", default=None)
    args = ap.parse_args(argv)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}; OMP threads: "
          f"{__import__('os').environ.get('OMP_NUM_THREADS', 'unset')}")
    print("| P | store | build wall / cpu (s) | fit wall / cpu (s) | evaluations | cpu per evaluation (s) | "
          "residual | predict wall / cpu (s) | ε_g | peak RSS (GiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for P in args.sizes:
        model, err, build, fit, pred = run_size(P, args.n_test, args.channels, args.dtype, args.temperature)
        per_eval = (fit.cpu - build.cpu) / max(model.n_evaluations_, 1)
        print(f"| {P} | {model.store_bytes_ / 2**30:.2f} GiB {model.kernel_dtype_} | {build.wall:.1f} / {build.cpu:.1f} | "
              f"{fit.wall:.1f} / {fit.cpu:.1f} | {model.n_evaluations_} | {per_eval:.2f} | {model.residual_:.1e} | "
              f"{pred.wall:.1f} / {pred.cpu:.1f} | {err.total:.5f} | {_peak_gib():.2f} |", flush=True)
    if args.compare_dtypes:
        P = args.compare_dtypes
        a = run_size(P, args.n_test, args.channels, "float64", args.temperature)
        b = run_size(P, args.n_test, args.channels, "float32", args.temperature)
        dq = float(np.max(np.abs(a[0].qbar_ - b[0].qbar_)) / np.max(np.abs(a[0].qbar_)))
        de = abs(a[1].total - b[1].total) / a[1].total
        print(f"\nfloat32 vs float64 store at P = {P}: max|ΔQ|/max|Q| = {dq:.2e}, |Δε_g|/ε_g = {de:.2e}; "
              f"fit cpu {b[3].cpu:.1f} s vs {a[3].cpu:.1f} s")
    if args.deepbays_path:
        compare_deepbays(args.deepbays_path)


def compare_deepbays(path: str) -> None:
    import torch

    sys.path[:0] = path.split(":")
    from deepbays.rkgp import CONV_1HL

    from finwidth import ConvNetwork
    from finwidth.theory.conv import ConvRKGP

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 64))
    y = np.tanh(X.reshape(-1, 8, 8)[:, :4, :4].mean(axis=(1, 2)) * 2)
    net = ConvNetwork(64, 4, 100, "erf", image_shape=(8, 8))
    times = {"finwidth": [], "deepbays": []}
    for _ in range(2):
        with _Clock() as c:
            ours = ConvRKGP(net, 0.01).fit(X, y)
        times["finwidth"].append(c.wall)
        with _Clock() as c:
            np.random.seed(0)
            m = CONV_1HL(100, 0.01, 4, 4)
            m.preprocess(X, torch.tensor(y))
            m.optimize(minimizationTol=1e-12)
        times["deepbays"].append(c.wall)
    Q = np.asarray(m.optQ)
    print(f"\n8×8 images, 4×4 windows (Ñ = 4), P = 60, C = 100, T = 0.01: finwidth {min(times['finwidth']):.3f} s, "
          f"deepbays CONV_1HL {min(times['deepbays']):.1f} s (best of 2, alternating); "
          f"ratio {min(times['deepbays']) / min(times['finwidth']):.0f}×; max|ΔQ| = {np.max(np.abs(ours.qbar_ - Q)):.1e}")


if __name__ == "__main__":
    main()
