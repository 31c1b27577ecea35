"""Multi-output theory benchmark: RKGP fit with D = 10 outputs against the floor and against deepbays.

Usage (one command; numbers go to docs/benchmarks.md, section "Theory with D outputs"):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_multioutput.py --sizes 1000 4000 \
        --deepbays-sizes 50 100 200 400 --deepbays-path /tmp/deepbays-site:/tmp/deepbays-stubs

Data: MNIST, all ten digits, one-hot targets (D = 10), the "paper" preset, when the files are found
(``../shared/data`` or ``$FINWIDTH_DATA``); otherwise Gaussian inputs with one-hot labels of a random
linear teacher. Network: one hidden erf layer, N_1 = P/2, λ = 1.

* floor: the NNGP kernel plus one ``eigh`` of it, what any eigenbasis method must pay; timed alternately
  with the fit (best of --repeats) so that both see the same machine load; wall and CPU seconds.
* deepbays 0.1.11 ``FC_1HL_multiclass`` (side environment, never a dependency; run through
  ``tests/fixtures/deepbays_multiclass/adapter.py`` because its ``preprocess`` raises as shipped): dense
  DP × DP float32 inverse at every evaluation, fsolve with a finite-difference Jacobian. Timed one after
  the other with finwidth's fit on the same data, at --deepbays-temperature (default 1, where deepbays
  reaches the saddle point; the row says whether it did: its Q against finwidth's). Sizes stop growing once
  a run exceeds --budget seconds. --deepbays-low-t-size adds one row at --temperature (1e-3), where
  deepbays' fsolve does not reach the saddle point.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import pathlib
import platform
import sys
import time
import warnings

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: deepbays' Q within this relative distance of finwidth's counts as the same saddle point
SAME_Q = 1e-5


def _data(P, seed=0):
    """(X, Y one-hot (P, 10), source) for the first P MNIST training images, or a synthetic stand-in."""
    try:
        from finwidth.data import load

        d = load("mnist", classes=range(10), n_train=P, n_test=1, labels="onehot")
        return d.X_train, d.y_train, "MNIST"
    except Exception as exc:  # files absent: say so and use synthetic data
        print(f"MNIST not used ({type(exc).__name__}: {exc}); synthetic data instead")
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(P, 784))
        lab = np.argmax(X @ rng.normal(size=(784, 10)), axis=1)
        return X, np.eye(10)[lab], "synthetic"


def _time_pair(a, b, repeat):
    """Best-of-``repeat`` wall and CPU seconds of a and b, alternating a, b, a, b, …"""
    best = {"a": [np.inf, np.inf], "b": [np.inf, np.inf]}
    out = {}
    for _ in range(repeat):
        for key, fn in (("a", a), ("b", b)):
            t, c = time.perf_counter(), time.process_time()
            out[key] = fn()
            best[key] = [min(best[key][0], time.perf_counter() - t), min(best[key][1], time.process_time() - c)]
    return (best["a"], out["a"]), (best["b"], out["b"])


def _load_deepbays(path):
    sys.path[:0] = path.split(":")
    try:
        from deepbays.rkgp import FC_1HL_multiclass
    except Exception as exc:
        print(f"deepbays baseline skipped: cannot import from {path}: {exc}")
        return None, None
    spec = importlib.util.spec_from_file_location(
        "deepbays_adapter", ROOT / "tests" / "fixtures" / "deepbays_multiclass" / "adapter.py")
    adapter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(adapter)
    return FC_1HL_multiclass, adapter


def _deepbays_row(FC_1HL_multiclass, adapter, P, T):
    from finwidth import RKGP, Network

    X, Y, source = _data(P)
    net = Network([P // 2], "erf")

    def db():
        mdl = FC_1HL_multiclass(P // 2, 10, T, l0=1.0, l1=1.0, act="erf")
        adapter.prepare(mdl, X, Y)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fsolve's "not making good progress", reported below instead
            mdl.optimize()
        return mdl

    (t_db, mdl), (t_fw, m) = _time_pair(db, lambda: RKGP(net, T).fit(X, Y), 1)
    Qdb = np.asarray(mdl.optQ, dtype=float)
    gap = float(np.max(np.abs(Qdb - m.qbar_[0])) / np.max(np.abs(m.qbar_[0])))
    verdict = "same saddle point" if gap <= SAME_Q else "NOT the saddle point"
    note = (f"{source}, T = {T:g}; deepbays: max|ΔQ|/max|Q| = {gap:.1e} ({verdict}), converged flag "
            f"{bool(mdl.converged)}, λ_min(Q) = {np.linalg.eigvalsh(Qdb)[0]:.3g}; CPU {t_db[1]:.3g} s / {t_fw[1]:.3g} s")
    return (P, "deepbays `FC_1HL_multiclass` / finwidth fit", t_db[0], t_fw[0], t_db[0] / t_fw[0], note), t_db[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 4000])
    ap.add_argument("--deepbays-sizes", type=int, nargs="*", default=[50, 100, 200, 400])
    ap.add_argument("--deepbays-path", default=None, help="colon-separated sys.path entries with deepbays 0.1.11")
    ap.add_argument("--temperature", type=float, default=1e-3)
    ap.add_argument("--deepbays-temperature", type=float, default=1.0)
    ap.add_argument("--deepbays-low-t-size", type=int, default=50, help="0: no row at --temperature")
    ap.add_argument("--repeats", type=int, default=3, help="best of (P ≤ 1000; one run above)")
    ap.add_argument("--budget", type=float, default=600.0, help="stop growing the deepbays size past this (s)")
    args = ap.parse_args(argv)

    from finwidth import RKGP, Network, kernels

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numpy {np.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    T = args.temperature
    rows = []
    for P in args.sizes:
        X, Y, source = _data(P)
        net = Network([P // 2], "erf")

        def floor():
            return np.linalg.eigh(kernels.nngp(net, X).train)

        reps = args.repeats if P <= 1000 else 1
        (t_floor, _), (t_fit, m) = _time_pair(floor, lambda: RKGP(net, T).fit(X, Y), reps)
        w = np.linalg.eigvalsh(m.renormalization_)
        rows.append((P, "RKGP fit, D = 10 / floor", t_fit[0], t_floor[0], t_fit[0] / t_floor[0],
                     f"{source}, T = {T:g}; eig 𝒬 in [{w[0]:.4g}, {w[-1]:.4g}], residual {m.residual_:.1e}; "
                     f"CPU {t_fit[1]:.3g} s / {t_floor[1]:.3g} s = {t_fit[1] / t_floor[1]:.3g}"))
        print(rows[-1], flush=True)

    if args.deepbays_path:
        FC, adapter = _load_deepbays(args.deepbays_path)
        if FC is not None:
            import torch

            print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
            for P in args.deepbays_sizes:
                row, t_db = _deepbays_row(FC, adapter, P, args.deepbays_temperature)
                rows.append(row)
                print(rows[-1], flush=True)
                if t_db > args.budget:
                    print(f"# deepbays took {t_db:.0f} s > --budget {args.budget:g} s at P = {P}: larger P not run")
                    break
            if args.deepbays_low_t_size:
                rows.append(_deepbays_row(FC, adapter, args.deepbays_low_t_size, T)[0])
                print(rows[-1], flush=True)
    print(f"# load average {os.getloadavg()[0]:.2f} at end")
    print("\n| P | case | time (s) | floor or finwidth (s) | ratio | note |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3g} | {r[3]:.3g} | {r[4]:.3g} | {r[5]} |")


if __name__ == "__main__":
    main()
