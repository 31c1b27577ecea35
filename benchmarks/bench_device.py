"""The theory and the sampler on a torch device against the CPU, side by side in one session.

Usage (one command; numbers go to docs/benchmarks.md, section "On a GPU"):

    .venv/bin/python benchmarks/bench_device.py --device cuda --sizes 12665 50000 --cpu-sizes 12665 \\
        [--cases rkgp nngp sampler] [--threads 16] [--json out.json]

Without a GPU the same command runs end to end on torch's CPU device (``--device cpu --sizes 1000``): a check
of the command and of the device path, not a speed record.

Cases, at each P of ``--sizes`` (data and network as ``bench_large_p.py``: the first P MNIST training images,
labels 0/1 up to P = 12 665 and "digit ≥ 5" above; 1HL erf, N₁ = P/2, λ = 1, T = 1e-3):

* ``rkgp``: ``RKGP(net, T, solver="dense", device=DEVICE).fit(X, y)`` (kernel, one eigh, the O(P) saddle), then
  ``predict(X[:1000], return_var=True)`` (the first call builds and factorises the renormalised kernel);
* ``nngp``: ``NNGP(net, T, device=DEVICE).fit(X, y)`` and the same prediction;
* where P is also in ``--cpu-sizes``: the same fits with ``device=None`` (numpy, ``--threads`` BLAS threads), and
  the agreement |Q̄_device/Q̄_cpu − 1| and max |mean_device − mean_cpu|;
* ``sampler``: chain-steps/s of ``sample_posterior`` at the papers' size (N₀ = 784, N₁ = 500, P = 500 MNIST 0/1 as above,
  R = 8 replicas, float32, Euler η = 1e-3 with the exact input reduction), ``device=DEVICE`` against ``"cpu"``.

Reported: wall times (the device is synchronised before each clock read), the peak device memory
(``torch.cuda.max_memory_allocated``, CUDA only) and the process's peak RSS. A tiny fit warms the device up first.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_large_p import _data  # noqa: E402  (the same data as the large-P benchmark)


def _sync(torch, dev) -> None:  # type: ignore[no-untyped-def]
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _theory(kind: str, P: int, dev, threads: int) -> dict:  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    from finwidth import NNGP, RKGP, Network
    from finwidth.threads import threads as blas_threads

    X, y, source = _data(P)
    net = Network([max(1, P // 2)], "erf")
    T = 1e-3
    make = (lambda d: RKGP(net, T, solver="dense", device=d)) if kind == "rkgp" else (lambda d: NNGP(net, T, device=d))
    if dev is not None and dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    with blas_threads(threads):
        _sync(torch, dev)
        t0 = time.perf_counter()
        m = make(dev).fit(X, y)
        _sync(torch, dev)
        t1 = time.perf_counter()
        mean, var = m.predict(X[:1000], return_var=True)
        _sync(torch, dev)
        t2 = time.perf_counter()
    out = {"case": kind, "P": P, "device": "numpy" if dev is None else str(dev), "source": source,
           "fit_s": t1 - t0, "predict_s": t2 - t1, "mean": mean, "qbar": float(m.qbar_[0]) if kind == "rkgp" else None}
    if dev is not None and dev.type == "cuda":
        out["peak_device_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    del m
    return out


def _sampler(dev_name: str, n_steps: int) -> dict:
    import finwidth
    from finwidth import Network

    X, y, _ = _data(500)
    t0 = time.perf_counter()
    res = finwidth.sample_posterior(Network([500], "erf"), X, y, temperature=1e-3, sampler="euler", step_size=1e-3,
                                    n_steps=n_steps, record_every=n_steps, replicas=8, burn_in=0, rao_blackwell=False,
                                    device=dev_name, progress=False)
    return {"case": "sampler", "device": dev_name, "chain_steps_per_s": 8 * res.diagnostics.steps_per_second,
            "wall_s": time.perf_counter() - t0, "n_steps": n_steps}


def main(argv=None) -> None:  # type: ignore[no-untyped-def]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", type=int, nargs="+", default=[12665, 50000])
    ap.add_argument("--cpu-sizes", type=int, nargs="*", default=None, help="sizes also fitted with numpy "
                    "(default: those of --sizes up to 12665)")
    ap.add_argument("--cases", nargs="+", default=["rkgp", "nngp", "sampler"], choices=("rkgp", "nngp", "sampler"))
    ap.add_argument("--threads", type=int, default=1, help="BLAS/torch threads of the CPU path")
    ap.add_argument("--sampler-steps", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # validity/convergence warnings of short or large runs: not what is timed

    import numpy as np
    import torch

    from finwidth import Network, RKGP
    from finwidth.device import resolve_device

    dev = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    cpu_sizes = [P for P in args.sizes if P <= 12665] if args.cpu_sizes is None else args.cpu_sizes
    info = {"device": str(dev), "torch": torch.__version__, "host": platform.node(), "threads": args.threads,
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, "date": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(info), flush=True)
    Xw = np.random.default_rng(0).normal(size=(200, 20))
    RKGP(Network([100], "erf"), 1e-3, device=dev).fit(Xw, Xw[:, 0]).predict(Xw[:5])  # warm-up (context, handles)
    rows = []
    for P in args.sizes:
        for kind in [c for c in args.cases if c != "sampler"]:
            d = _theory(kind, P, dev, args.threads)
            if P in cpu_sizes:
                c = _theory(kind, P, None, args.threads)
                d["speedup_fit"] = c["fit_s"] / d["fit_s"]
                d["max_mean_diff"] = float(np.max(np.abs(d["mean"] - c["mean"])))
                if kind == "rkgp":
                    d["qbar_rel_diff"] = abs(d["qbar"] / c["qbar"] - 1.0)
                rows.append({k: v for k, v in c.items() if k != "mean"})
            rows.append({k: v for k, v in d.items() if k != "mean"})
            print(json.dumps(rows[-1]), flush=True)
    if "sampler" in args.cases:
        for name in (str(dev), "cpu") if dev.type != "cpu" else ("cpu",):
            rows.append(_sampler(name, args.sampler_steps))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
