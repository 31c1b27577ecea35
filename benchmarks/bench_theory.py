"""Theory benchmarks: RKGP fit time against the floor (kernel + one eigh) and deepbays, side by side.

Usage (one command; numbers go to docs/benchmarks.md, section "Theory"):

    .venv/bin/python benchmarks/bench_theory.py --sizes 1000 4000 10000 [--deepbays-path /tmp/deepbays-site:/tmp/deepbays-stubs]

The side environment for --deepbays-path is made by tests/fixtures/deepbays/make_side_env.sh.
Floor and fit are timed alternately (best of --repeats) so that both see the same machine load.

Ratios are measured in the same run on the same data. The deepbays baselines run only when the
given path imports deepbays 0.1.11 (side environment; never a dependency of finwidth).
"""

from __future__ import annotations

import argparse
import sys
import time

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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 10000])
    ap.add_argument("--deepbays-path", default=None, help="colon-separated sys.path entries with deepbays 0.1.11")
    ap.add_argument("--temperature", type=float, default=1e-3)
    ap.add_argument("--cases", nargs="+", default=["erf", "nonodd", "product", "nested", "deepbays"],
                    help="subset of: erf (1HL erf), nonodd (1HL relu, mean-corrected), product (relu L=3), "
                         "nested (erf L=3, P <= 4000), deepbays (P <= 4000)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats per case (best of); 1 at P > 4000")
    args = ap.parse_args(argv)

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
        if P <= 4000 and "nested" in args.cases:
            net = Network([P // 2] * 3, "erf")
            (t_floor, _), (t_fit, m) = _time_pair(lambda: np.linalg.eigh(kernels.nngp(net, X).train),
                                                  lambda: RKGP(net, T, renormalization="nested").fit(X, y), 1)
            rows.append((P, "nested erf L=3", t_fit, t_floor, t_fit / t_floor,
                         f"choleskys={m.n_factorizations_}"))
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
    print("\n| P | case | fit (s) | floor or baseline (s) | ratio | note |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3g} | {r[3]:.3g} | {r[4]:.3g} | {r[5]} |")


if __name__ == "__main__":
    main()
