"""Large-P theory fits: the matrix-free (Krylov) path against the dense fit and the floor, with peak memory.

Usage (one command; numbers go to docs/benchmarks.md, section "Large P"):

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_large_p.py --sizes 4000 12665 [--cases floor dense krylov] \\
        [--rtol 1e-3] [--storage float64] [--threads 1] [--deflate auto|0|k] [--max-probes n] [--json out.json]

Data: the first P MNIST 0/1 training images, `paper` preset, labels 0/1 (for P > 12 665: all ten digits,
label 1 for digits ≥ 5), 1HL erf, N_1 = P/2, λ = 1, T = 1e-3 (``--width-ratio``, ``--temperature``).

Cases, each in its own subprocess so that its peak resident memory (``ru_maxrss``) is its own:

* ``floor``: the kernel plus one ``eigh`` of it: what any eigenbasis method pays (Q̄ is then solved on that
  eigenbasis, ``spectral.solve_product``: the reference for the dense fit, to be equal to 1e-10);
* ``dense``: ``RKGP(net, T, solver="dense").fit``; ``auto``: ``RKGP(net, T).fit`` (the solver it chose is printed);
* ``krylov``: ``RKGP(net, T, solver="krylov", solver_options={"rtol": ..., "storage": ...}).fit``: Q̄ with its
  standard error (Hutchinson probes) and quadrature bound, probes, Lanczos steps, products K V.

``--outputs 10``: all ten digits, one-hot targets, the D = 10 theory (``RKGP.fit`` with Y of shape (P, 10)); the
row's Q̄ column is then tr 𝒬/D, its error the root-sum-square of the diagonal standard errors over D.
``--probes``: the first batch of Hutchinson probes. The worker streams the solver's progress lines to stderr
(steps, probes, current estimate, seconds per product), so a run stopped by a timeout shows how far it got.

Reported: wall time, peak RSS, Q̄, and for the Krylov path |Q̄ − Q̄_dense| in units of its standard error
where both ran. Cases run one after the other in the same session (the machine's load is printed).
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


def _data(P: int, outputs: int = 1):  # type: ignore[no-untyped-def]
    import numpy as np

    from finwidth.data import load

    if outputs > 1:
        d = load("mnist", classes=None, n_train=P, n_test=0, labels="onehot")  # all ten digits, one-hot
        return d.X_train, d.y_train, "MNIST ten-class one-hot"
    if P <= 12665:
        d = load("mnist", classes=(0, 1), n_train=P, n_test=0)
        return d.X_train, d.y_train, "MNIST 0/1"
    d = load("mnist", n_train=P, n_test=0)  # all digits, labels = digit
    return d.X_train, (d.y_train >= 5).astype(np.float64), "MNIST digit ≥ 5"


def _worker(case: str, P: int, args: dict) -> dict:
    import numpy as np

    from finwidth import Network, kernels
    from finwidth.theory import spectral
    from finwidth.theory.rkgp import RKGP

    X, y, source = _data(P, args.get("outputs", 1))
    net = Network([max(1, int(round(P * args["width_ratio"])))], "erf")
    T = args["temperature"]
    t0 = time.perf_counter()
    out: dict = {"case": case, "P": P, "source": source}
    if case == "floor":
        basis = spectral.eigenbasis(kernels.nngp(net, X).train)  # numpy eigh (values and vectors)
        out["time_s"] = time.perf_counter() - t0  # the floor itself; the solve below only makes the reference
        out["qbar"] = float(spectral.solve_product(basis, basis.project(y), T, net.widths).qbar[0])
    elif case in ("dense", "auto"):
        m = RKGP(net, T, solver=case).fit(X, y)
        out["qbar"] = float(m.qbar_[0])
        out["solver"] = m.solver_
    else:
        def progress(line: str) -> None:  # streamed to the log (stderr), so that a stopped run shows how far it got
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"[{time.strftime('%H:%M:%S')} {time.perf_counter() - t0:7.0f} s, peak {rss:.1f} GiB] {line}",
                  file=sys.stderr, flush=True)

        opts = {"rtol": args["rtol"], "storage": args["storage"], "threads": args["threads"], "progress": progress}
        if args.get("probes"):
            opts["probes"] = args["probes"]
        for key in ("deflate", "max_probes"):
            if args.get(key) is not None:
                opts[key] = args[key]
        m = RKGP(net, T, solver="krylov", solver_options=opts).fit(X, y)
        s = m.krylov_
        out.update(deflated=getattr(s, "n_deflated", 0), probes=s.n_probes, label_steps=s.label_steps, probe_steps=int(s.probe_steps.max()),
                   products=s.n_products, storage=m._operator.storage, tiles_mib=m._operator.nbytes / 2**20,
                   product_error=m._operator.product_error)
        if y.ndim == 2:
            out.update(outputs=y.shape[1], renormalization_eigenvalues=np.linalg.eigvalsh(m.renormalization_).tolist(),
                       renormalization=m.renormalization_.tolist(),
                       renormalization_stderr=m.renormalization_stderr_.tolist(),
                       renormalization_quadrature_error=m.renormalization_quadrature_error_.tolist(),
                       qbar=float(np.trace(m.renormalization_)) / y.shape[1],
                       stderr=float(np.sqrt(np.sum(np.diag(m.renormalization_stderr_) ** 2))) / y.shape[1],
                       quad=float(np.sum(np.abs(np.diag(m.renormalization_quadrature_error_)))) / y.shape[1])
        else:
            out.update(qbar=float(m.qbar_[0]), stderr=float(m.qbar_stderr_[0]),
                       quad=float(m.qbar_quadrature_error_[0]))
    out.setdefault("time_s", time.perf_counter() - t0)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000, 12665])
    ap.add_argument("--cases", nargs="+", default=["floor", "dense", "krylov"])
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--storage", default="float64")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=1e-3)
    ap.add_argument("--width-ratio", type=float, default=0.5, help="N_1 = ratio · P")
    ap.add_argument("--probes", type=int, default=None, help="first batch of Hutchinson probes (krylov)")
    ap.add_argument("--deflate", default=None, help="solver_options deflate: 'auto' (default), 0 or a number of pairs")
    ap.add_argument("--max-probes", type=int, default=None, help="solver_options max_probes (default 2048)")
    ap.add_argument("--outputs", type=int, default=1, choices=(1, 10),
                    help="10: all ten MNIST digits, one-hot targets, the D = 10 theory (krylov case)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "P"), help=argparse.SUPPRESS)
    ap.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker[0], int(args.worker[1]), json.loads(args.worker_args))))
        return
    wargs = {"rtol": args.rtol, "storage": args.storage, "threads": args.threads, "probes": args.probes,
             "outputs": args.outputs,
             "deflate": None if args.deflate in (None, "auto") else int(args.deflate), "max_probes": args.max_probes,
             "temperature": args.temperature, "width_ratio": args.width_ratio}
    print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average {os.getloadavg()[0]:.2f} at start, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}", flush=True)
    rows = []
    for P in args.sizes:
        for case in args.cases:
            cmd = [sys.executable, __file__, "--worker", case, str(P), "--worker-args", json.dumps(wargs)]
            # the worker's stderr (progress lines, tracebacks) goes straight to ours: a stopped run keeps them
            res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
            if res.returncode != 0:
                row = {"case": case, "P": P, "error": f"exit status {res.returncode} (traceback above)"}
            else:
                row = json.loads(res.stdout.strip().splitlines()[-1])
            row["load"] = os.getloadavg()[0]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"# load average {os.getloadavg()[0]:.2f} at end")
    dense = {r["P"]: r["qbar"] for r in rows if r.get("solver") == "dense" and "qbar" in r}
    floor = {r["P"]: r for r in rows if r["case"] == "floor" and "qbar" in r}
    print("\n| P | case | time (s) | peak RSS (MiB) | Q̄ | note |\n|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['P']} | {r['case']} | — | — | — | failed: {r['error']} |")
            continue
        q = f"{r['qbar']:.12f}" if "qbar" in r else ""
        note = ""
        if r["case"] == "auto":
            note = f"solver chosen: {r['solver']}; "
        if r.get("solver") == "dense" and r["P"] in floor:
            f = floor[r["P"]]
            note += (f"{r['time_s'] / f['time_s']:.2f}× the floor; |Q̄ − Q̄_eigh| / Q̄ = "
                    f"{abs(r['qbar'] - f['qbar']) / f['qbar']:.1e}")
        if r["case"] == "krylov":
            note = (f"± {r['stderr']:.1e} (stderr), quadrature ≤ {r['quad']:.1e}; {r.get('deflated', 0)} pairs deflated, "
                    f"{r['probes']} probes, "
                    f"{r['label_steps']}/{r['probe_steps']} steps, {r['products']} products, {r['storage']} tiles "
                    f"{r['tiles_mib']:.0f} MiB")
            if r["P"] in dense:
                d = r["qbar"] - dense[r["P"]]
                note += (f"; Q̄ − Q̄_dense = {d:+.1e} ({d / r['stderr']:+.1f} stderr)" if r["stderr"] > 0 else
                         f"; Q̄ − Q̄_dense = {d:+.1e} (exact trace: unit vectors)")
        print(f"| {r['P']} | {r['case']} | {r['time_s']:.1f} | {r['peak_rss_mib']:.0f} | {q} | {note} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
