"""Theory benchmarks: RKGP fit time against the floor (kernel + one eigh) and deepbays, side by side.

Usage (one command; numbers go to docs/benchmarks.md, section "Theory"):

    .venv/bin/python benchmarks/bench_theory.py --sizes 1000 4000 10000 [--deepbays-path /tmp/deepbays-site:/tmp/deepbays-stubs]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_theory.py --sizes 1000 4000 --cases nested nested-mnist \
        [--baseline-src DIR]

The side environment for --deepbays-path is made by tests/fixtures/deepbays/make_side_env.sh.
Floor and fit are timed alternately (best of --repeats) so that both see the same machine load.
``nested-mnist`` is the nested erf L = 2 fit on the first 2000 MNIST training images (the paper
preset, ±1 labels by digit parity; FINWIDTH_DATA or ../shared/data). ``--baseline-src DIR`` (the
``src`` folder of another checkout, e.g. ``git archive <commit> src | tar -x -C /tmp/old``) also runs
each nested fit once in a subprocess with DIR first on the path: its time, factorisations and the
difference of its Q̄ from ours.

Ratios are measured in the same run on the same data. The deepbays baselines run only when the
given path imports deepbays 0.1.11 (side environment; never a dependency of finwidth).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _data(P, N0=784, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, N0))
    y = np.sign(X[:, :5].sum(1))
    return X, y


def _time(fn, repeat=1):
    best = np.inf
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _time_pair(a, b, repeat):
    """Best-of-``repeat`` times of a and b, alternating a, b, a, b, … so that both see the same load."""
    best_a = best_b = np.inf
    out_a = out_b = None
    for _ in range(repeat):
        t = time.perf_counter()
        out_a = a()
        best_a = min(best_a, time.perf_counter() - t)
        t = time.perf_counter()
        out_b = b()
        best_b = min(best_b, time.perf_counter() - t)
    return (best_a, out_a), (best_b, out_b)


def _nested_problem(name, P):
    """(network, X, y) of a nested benchmark case."""
    from finwidth.network import Network

    if name == "nested-mnist":
        from finwidth.data import load

        d = load("mnist", n_train=P, n_test=1)
        y = np.where(np.asarray(d.y_train) % 2 == 0, 1.0, -1.0)
        return Network([P // 2] * 2, "erf"), np.asarray(d.X_train, dtype=np.float64), y
    X, y = _data(P)
    return Network([P // 2] * 3, "erf"), X, y


class _CholeskyCounter:
    """Counts Cholesky factorisations of matrices with at least ``min_size`` rows, independently of the
    library's own ``n_factorizations_``: wraps scipy.linalg.cho_factor / cholesky and numpy.linalg.cholesky
    (looked up at call time by the library's modules) while active. Also counts ``eigh`` calls."""

    def __init__(self, min_size):
        self.min_size = min_size
        self.cholesky = 0
        self.eigh = 0

    def __enter__(self):
        import scipy.linalg

        self._saved = []
        for mod, name, kind in ((scipy.linalg, "cho_factor", "cholesky"), (scipy.linalg, "cholesky", "cholesky"),
                                (np.linalg, "cholesky", "cholesky"), (np.linalg, "eigh", "eigh"),
                                (scipy.linalg, "eigh", "eigh")):
            orig = getattr(mod, name)
            self._saved.append((mod, name, orig))

            def wrapped(a, *args, _orig=orig, _kind=kind, **kw):
                if np.shape(a)[-1] >= self.min_size:
                    setattr(self, _kind, getattr(self, _kind) + 1)
                return _orig(a, *args, **kw)

            setattr(mod, name, wrapped)
        return self

    def __exit__(self, *exc):
        for mod, name, orig in self._saved:
            setattr(mod, name, orig)


def _nested_worker(name, P, T, out):
    """Baseline side: one nested fit (runs under another source tree)."""
    from finwidth.theory.rkgp import RKGP

    net, X, y = _nested_problem(name, P)
    t, c = time.perf_counter(), time.process_time()
    with _CholeskyCounter(P // 2) as count:
        m = RKGP(net, T, renormalization="nested").fit(X, y)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    with open(out, "w") as fh:
        json.dump({"seconds": dt, "cpu_seconds": dc, "factorizations": int(m.n_factorizations_),
                   "counted_choleskys": count.cholesky, "counted_eighs": count.eigh,
                   "qbar": [float(q) for q in m.qbar_]}, fh)


def _nested_rows(args, rows):
    from finwidth import kernels
    from finwidth.theory.rkgp import RKGP

    T = args.temperature
    for name in [c for c in ("nested", "nested-mnist") if c in args.cases]:
        for P in (args.sizes if name == "nested" else [2000]):
            if P > 4000:
                continue
            net, X, y = _nested_problem(name, P)
            reps = args.repeats if P <= 2000 else 1
            cpu = {}

            def timed(key, fn):
                def run():
                    c = time.process_time()
                    out = fn()
                    cpu[key] = min(cpu.get(key, np.inf), time.process_time() - c)
                    return out
                return run

            (t_floor, _), (t_fit, m) = _time_pair(timed("floor", lambda: np.linalg.eigh(kernels.nngp(net, X).train)),
                                                  timed("fit", lambda: RKGP(net, T, renormalization="nested").fit(X, y)),
                                                  reps)
            with _CholeskyCounter(P // 2) as count:  # one more fit, untimed: factorisations counted from outside
                m_counted = RKGP(net, T, renormalization="nested").fit(X, y)
            assert np.array_equal(m_counted.qbar_, m.qbar_)
            # CPU time too: on a loaded machine it is the steadier measure of the work (one BLAS thread)
            note = (f"Q̄={np.array2string(m.qbar_, precision=8)} choleskys={m.n_factorizations_} (counted "
                    f"{count.cholesky}, eigh {count.eigh}) residual={m.residual_:.1e}; CPU {cpu['fit']:.3g} s / "
                    f"{cpu['floor']:.3g} s = {cpu['fit'] / cpu['floor']:.3g}")
            if args.baseline_src:
                with tempfile.TemporaryDirectory() as tmp:
                    out = os.path.join(tmp, "base.json")
                    env = dict(os.environ, PYTHONPATH=str(Path(args.baseline_src).resolve()))
                    subprocess.run([sys.executable, __file__, "--nested-worker", name, str(P), str(T), out],
                                   check=True, env=env)
                    with open(out) as fh:
                        base = json.load(fh)
                dq = float(np.max(np.abs(np.array(base["qbar"]) - m.qbar_) / m.qbar_))
                note += (f"; baseline {base['seconds']:.3g} s = {base['seconds'] / t_floor:.3g} floors "
                         f"(CPU {base['cpu_seconds'] / cpu['floor']:.3g}), choleskys={base['factorizations']} (counted "
                         f"{base['counted_choleskys']}, eigh {base['counted_eighs']}), "
                         f"max rel. ΔQ̄={dq:.1e}")
            label = f"{'MNIST ' if name == 'nested-mnist' else ''}nested erf L={net.depth}"
            rows.append((P, label, t_fit, t_floor, t_fit / t_floor, note))
            print(rows[-1], flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 10000])
    ap.add_argument("--deepbays-path", default=None, help="colon-separated sys.path entries with deepbays 0.1.11")
    ap.add_argument("--temperature", type=float, default=1e-3)
    ap.add_argument("--cases", nargs="+", default=["erf", "nonodd", "product", "nested", "deepbays"],
                    help="subset of: erf (1HL erf), nonodd (1HL relu, mean-corrected), product (relu L=3), "
                         "nested (erf L=3, P <= 4000), nested-mnist (erf L=2, MNIST, P = 2000), "
                         "deepbays (P <= 4000)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats per case (best of); 1 at P > 4000")
    ap.add_argument("--baseline-src", default=None, help="src folder of another finwidth checkout (nested rows)")
    ap.add_argument("--nested-worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.nested_worker:
        name, P, T, out = args.nested_worker
        _nested_worker(name, int(P), float(T), out)
        return

    from finwidth import kernels
    from finwidth.network import Network
    from finwidth.theory.rkgp import RKGP

    db_rkgp = None  # deepbays.rkgp from the side environment, when given
    if args.deepbays_path:
        sys.path[:0] = args.deepbays_path.split(":")
        try:
            import deepbays.rkgp as db_rkgp
        except Exception as exc:  # report, don't fail
            print(f"deepbays baseline skipped: cannot import from {args.deepbays_path}: {exc}")
    else:
        print("deepbays baseline skipped: no --deepbays-path given")

    T = args.temperature
    rows = []
    for P in args.sizes:
        X, y = _data(P)
        cases = [("1HL erf", Network([P // 2], "erf"), {}, "erf"),
                 ("1HL relu non-odd", Network([P // 2], "relu"), {}, "nonodd"),
                 ("product relu L=3", Network([P // 2] * 3, "relu"), {}, "product")]
        cases = [c[:3] for c in cases if c[3] in args.cases]
        for name, net, kw in cases:
            def floor():
                K = kernels.nngp(net, X).train
                return np.linalg.eigh(K)
            reps = args.repeats if P <= 4000 else 1
            (t_floor, _), (t_fit, m) = _time_pair(floor, lambda: RKGP(net, T, **kw).fit(X, y), reps)
            rows.append((P, name, t_fit, t_floor, t_fit / t_floor, f"Q̄={m.qbar_[0]:.6g}"))
            print(rows[-1], flush=True)
        if db_rkgp is not None and P <= 4000 and "deepbays" in args.cases:
            # (deepbays class, activation): the odd 1HL class, and the 0.1.11 non-odd class that the
            # theory notes report crashing on every case
            for cls_name, act in (("FC_1HL", "erf"), ("FC_1HL_nonodd", "relu")):
                def db():
                    mdl = getattr(db_rkgp, cls_name)(P // 2, T, l0=1.0, l1=1.0, act=act)
                    mdl.preprocess(X, y)
                    mdl.optimize()
                    return mdl
                try:
                    (t_db, mdl), (t_fw, m) = _time_pair(db, lambda: RKGP(Network([P // 2], act), T).fit(X, y), 1)
                    note = f"Q̄ deepbays={float(np.ravel(mdl.optQ)[0]):.6g} finwidth={m.qbar_[0]:.6g}"
                    rows.append((P, f"deepbays {cls_name} vs finwidth", t_db, t_fw, t_db / t_fw, note))
                except Exception as exc:
                    rows.append((P, f"deepbays {cls_name}", float("nan"), float("nan"), float("nan"),
                                 f"failed: {type(exc).__name__}: {str(exc)[:80]}"))
                print(rows[-1], flush=True)
    _nested_rows(args, rows)
    print("\n| P | case | fit (s) | floor or baseline (s) | ratio | note |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3g} | {r[3]:.3g} | {r[4]:.3g} | {r[5]} |")


if __name__ == "__main__":
    main()
