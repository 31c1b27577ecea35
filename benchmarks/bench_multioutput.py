"""Multi-output theory benchmark: RKGP fit with D = 10 outputs against the floor and against deepbays.

Usage (one command; numbers go to docs/benchmarks.md, section "Theory with D outputs"):

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_multioutput.py --sizes 1000 4000 \
        --deepbays-sizes 50 100 200 400 --deepbays-python /tmp/deepbays-venv/bin/python

Data: MNIST, all ten digits, one-hot targets (D = 10), the "paper" preset, when the files are found
(``../shared/data`` or ``$FINWIDTH_DATA``); otherwise Gaussian inputs with one-hot labels of a random
linear teacher. Network: one hidden erf layer, N_1 = P/2, λ = 1.

* floor: the NNGP kernel plus one ``eigh`` of it, what any eigenbasis method must pay; timed alternately
  with the fit (best of --repeats) so that both see the same machine load; wall and CPU seconds.
* deepbays 0.1.11 ``FC_1HL_multiclass`` (its side environment, in a subprocess: ``deepbays_multiclass_worker.py``,
  through ``tests/fixtures/deepbays_multiclass/adapter.py`` because its ``preprocess`` raises as shipped): dense
  DP × DP float32 inverse at every evaluation, fsolve with a finite-difference Jacobian. Timed one after
  the other with finwidth's fit on the same data, at --deepbays-temperature (default 1, where deepbays
  reaches the saddle point; the row says whether it did: its Q against finwidth's). Sizes stop growing once
  a run exceeds --budget seconds. --deepbays-low-t-size adds one row at --temperature (1e-3), where the
  fixtures found its fsolve stopping short of the saddle point (tests/fixtures/deepbays_multiclass/README.md);
  the row says whether it did.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import tempfile
import time

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


def _deepbays_row(cmd, P, T, tmp):
    """deepbays' fit in its side environment (a subprocess, ``deepbays_multiclass_worker.py``), then
    finwidth's on the same data in this process; (row, deepbays wall seconds) or (None, None) if it failed."""
    from finwidth import RKGP, Network

    X, Y, source = _data(P)
    src, dst = tmp / f"in{P}.npz", tmp / f"out{P}.json"
    np.savez(src, X=X, Y=Y, N1=P // 2, T=T)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=cmd["pythonpath"])
    proc = subprocess.run([cmd["python"], str(ROOT / "benchmarks" / "deepbays_multiclass_worker.py"), str(src),
                           str(dst)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"# deepbays failed at P = {P}: {proc.stderr.strip().splitlines()[-1:]}")
        return None, None
    db = json.loads(dst.read_text())
    t, c = time.perf_counter(), time.process_time()
    m = RKGP(Network([P // 2], "erf"), T).fit(X, Y)
    t_fw = (time.perf_counter() - t, time.process_time() - c)
    Qdb = np.asarray(db["Q"])
    gap = float(np.max(np.abs(Qdb - m.qbar_[0])) / np.max(np.abs(m.qbar_[0])))
    verdict = "same saddle point" if gap <= SAME_Q else "NOT the saddle point"
    note = (f"{source}, T = {T:g}; deepbays: max|ΔQ|/max|Q| = {gap:.1e} ({verdict}), converged flag "
            f"{db['converged']}, λ_min(Q) = {np.linalg.eigvalsh(Qdb)[0]:.3g}; torch {db['torch']}, "
            f"{db['threads']} thread; CPU {db['cpu']:.3g} s / {t_fw[1]:.3g} s")
    return (P, "deepbays `FC_1HL_multiclass` / finwidth fit", db["wall"], t_fw[0], db["wall"] / t_fw[0], note), db["wall"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 4000])
    ap.add_argument("--deepbays-sizes", type=int, nargs="*", default=[50, 100, 200, 400])
    ap.add_argument("--deepbays-python", default=None, help="python of deepbays' side environment (none: no deepbays rows)")
    ap.add_argument("--deepbays-pythonpath", default="/tmp/deepbays-stubs", help="PYTHONPATH for it")
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

    if args.deepbays_python:
        cmd = {"python": args.deepbays_python, "pythonpath": args.deepbays_pythonpath}
        with tempfile.TemporaryDirectory(prefix="bench-multiout-") as tmp:
            for P in args.deepbays_sizes:
                row, t_db = _deepbays_row(cmd, P, args.deepbays_temperature, pathlib.Path(tmp))
                if row is None:
                    break
                rows.append(row)
                print(rows[-1], flush=True)
                if t_db > args.budget:
                    print(f"# deepbays took {t_db:.0f} s > --budget {args.budget:g} s at P = {P}: larger P not run")
                    break
            if args.deepbays_low_t_size:
                row, _ = _deepbays_row(cmd, args.deepbays_low_t_size, T, pathlib.Path(tmp))
                if row is not None:
                    rows.append(row)
                    print(rows[-1], flush=True)
    print(f"# load average {os.getloadavg()[0]:.2f} at end")
    print("\n| P | case | time (s) | floor or finwidth (s) | ratio | note |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3g} | {r[3]:.3g} | {r[4]:.3g} | {r[5]} |")


if __name__ == "__main__":
    main()
