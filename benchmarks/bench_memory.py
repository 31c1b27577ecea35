"""Peak memory of the theory fits, in units of one P×P float64 matrix (8 P² bytes).

Usage (one command; numbers go to docs/benchmarks.md, section "Memory"):

    .venv/bin/python benchmarks/bench_memory.py --sizes 4000 [--cases kernel eigh nngp erf nonodd product krylov]

Each case runs in a fresh subprocess: it loads its data (Gaussian inputs, N_0 = 784, ±1 labels), imports
everything and runs a tiny warm-up fit, reads its peak resident memory (``ru_maxrss``), runs the case
once, and reads the peak again. The difference is the case's own peak above what the process held
already (inputs, libraries), which includes LAPACK's workspaces (not seen by ``tracemalloc``). It also
prints the case's wall time and its answer (Q̄ for the RKGP fits, the log evidence for NNGP, all digits),
so that two versions of finwidth can be compared by running this script with each one's ``src`` first on
``PYTHONPATH``. Cases:

* ``kernel``: ``kernels.nngp`` (1HL erf) alone; ``eigh``: ``numpy.linalg.eigh`` of a P×P matrix alone;
* ``nngp``: ``NNGP(...).fit``; ``erf``: 1HL erf ``RKGP.fit``; ``nonodd``: 1HL relu with the mean term;
  ``product``: relu, L = 3, product form; ``krylov``: 1HL erf on the matrix-free path (rtol 1e-2);
* ``nonodd_eigh`` (not in the default list): the non-odd fit, then its solver again on numpy's ``eigh``
  eigenbasis of the kernel (the eigenbasis path): its Q̄ is the reference for ``nonodd``'s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worker(case: str, P: int) -> dict:
    import numpy as np

    from finwidth import Network, kernels
    from finwidth.theory.nngp import NNGP
    from finwidth.theory.rkgp import RKGP

    rng = np.random.default_rng(0)
    X = rng.normal(size=(P, 784))
    y = np.sign(X[:, :5].sum(1))
    T = 1e-2
    cases = {
        "kernel": lambda: kernels.nngp(Network([P], "erf"), X),
        "eigh": lambda: np.linalg.eigh(A),
        "nngp": lambda: NNGP(Network([P], "erf"), T).fit(X, y),
        "erf": lambda: RKGP(Network([P // 2], "erf"), T, solver="dense").fit(X, y),
        "nonodd": lambda: RKGP(Network([P // 2], "relu"), T, solver="dense").fit(X, y),
        "product": lambda: RKGP(Network([P // 2] * 3, "relu"), T, solver="dense").fit(X, y),
        "krylov": lambda: RKGP(Network([P // 2], "erf"), T, solver="krylov", solver_options={"rtol": 1e-2}).fit(X, y),
    }
    def nonodd_eigh():
        from finwidth.theory import spectral

        net = Network([P // 2], "relu")
        m = RKGP(net, T, solver="dense").fit(X, y)
        basis = spectral.eigenbasis(kernels.nngp(net, X).train)
        m._fit_nonodd(basis, basis.project(y), X)  # the mean vector projected on numpy's eigenvectors
        return m

    cases["nonodd_eigh"] = nonodd_eigh
    # warm-up: every code path once on a tiny problem (imports, BLAS buffers)
    Xs, ys = X[:64], y[:64]
    RKGP(Network([32], "relu"), T).fit(Xs, ys)
    NNGP(Network([32], "erf"), T).fit(Xs, ys)
    A = np.ones((P, P)) if case == "eigh" else None  # eigh's input is the caller's: only what eigh adds counts
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    out = cases[case]()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    answer = getattr(out, "qbar_", None)
    answer = getattr(out, "log_evidence_", None) if answer is None else float(answer[0])
    del out
    return {"case": case, "P": P, "peak_mib": peak / 2**20, "base_mib": base / 2**20,
            "matrices": (peak - base) / (8.0 * P * P), "seconds": seconds, "answer": answer}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000])
    ap.add_argument("--cases", nargs="+", default=["kernel", "eigh", "nngp", "erf", "nonodd", "product", "krylov"])
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker[0], int(args.worker[1]))))
        return
    print("| P | case | peak above baseline (P×P float64 matrices) | peak RSS (MiB) | time (s) | Q̄ or log evidence |\n"
          "|---|---|---|---|---|---|")
    for P in args.sizes:
        for case in args.cases:
            res = subprocess.run([sys.executable, __file__, "--worker", case, str(P)], capture_output=True, text=True,
                                 cwd=ROOT, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            ans = "" if r["answer"] is None else repr(r["answer"])
            print(f"| {P} | {case} | {r['matrices']:.2f} | {r['peak_mib']:.0f} | {r['seconds']:.2f} | {ans} |", flush=True)


if __name__ == "__main__":
    main()
