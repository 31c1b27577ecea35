"""Where a sampler step's time goes at P > N_0 (docs/benchmarks.md, "A at P > N₀").

    .venv/bin/python benchmarks/bench_sampler_breakdown.py [--sizes 1000 2000 4000] [--group 8]
        [--ranks 400 250]

One replica group (``--group`` replicas of N_1 = 500, MNIST 0/1 paper preset, float32; 8 is what
``bench_sampling.py --threads 1`` runs) on one thread (torch's and the BLAS libraries'), each part
timed alone (best of 5) and given
per chain-step:

* the floor: the first layer's two products alone, forward W Lᵀ and backward D L
  (``LowerTrapezoid``: r × r BLAS trmm plus the dense (P − r) × r block), with their rate on the
  exact method's flops 2·2·N_1(P r − r²/2);
* erf and its derivative as the gradient computes them (in place, into a reused buffer);
* the whole gradient (``BatchedMLP.potential_and_grad`` of the group) and the whole Euler step
  (gradient, per-replica Gaussian noise and the update: what a run does between energy checks);
* the papers' single-chain loop (``bench_sampling.paper_loop_steps_per_second``, best of 2) on the
  same thread, the ratios papers' step / ours, and the ceiling papers' step / floor (what the
  exact method would reach if everything but the two products were free);
* with ``--ranks``, the whole step with the truncated reduction at those k (below r only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_sampling  # noqa: E402

import finwidth  # noqa: E402
from finwidth.inputs import InputReduction  # noqa: E402
from finwidth.simulate.models import build_model  # noqa: E402
from finwidth.simulate.samplers import NoiseStreams, make_sampler  # noqa: E402

N1, T, ETA = 500, 1e-3, 1e-3


def _best(f, n=5):
    f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def _model(X, y, k, group):
    """The group's model, reduced inputs (declared lower trapezoidal), targets and parameters."""
    red = InputReduction.from_inputs(X, rank=k)
    model = build_model(finwidth.Network([N1], "erf"), X.shape[1], T, first_layer_inputs=red.rank)
    A0 = model.prepare_inputs(red.train_lower)
    model.use_lower_inputs(A0)
    params = model.init_params(group, torch.Generator().manual_seed(0), "prior")
    return red.rank, model, A0, torch.tensor(y, dtype=torch.float32), params


def _step_time(model, A0, yt, params, group, n=3):
    """Seconds per Euler step of the group (gradient, noise from per-replica streams, update)."""
    s = make_sampler("euler", model, A0, yt, ETA, NoiseStreams.per_replica(range(group)))
    s.start(params)
    return _best(lambda: s.advance(n)) / n


def breakdown(P, group, ranks=()):
    """The measurements at one P (seconds per chain-step), printed and returned."""
    ds = finwidth.data.load("mnist", classes=(0, 1), n_train=P, n_test=0, preset="paper")
    X, y = ds.X_train, ds.y_train
    r, model, A0, yt, params = _model(X, y, None, group)
    tz = model._lower_for(A0)
    W = params[0]
    H = tz.right_mul_t(W)
    D = torch.empty_like(H)
    t_fwd = _best(lambda: tz.right_mul_t(W, out=H))
    t_bwd = _best(lambda: tz.right_mul(H))
    t_act = _best(lambda: model.act_into(tz.right_mul_t(W, out=H), D)) - t_fwd
    t_grad = _best(lambda: model.potential_and_grad(params, A0, yt, need_energy=False))
    t_step = _step_time(model, A0, yt, params, group)
    paper = max(bench_sampling.paper_loop_steps_per_second(X, y, N1, T, ETA, max(10, 20000 // P)) for _ in range(2))
    t_paper = 1.0 / paper
    flops = 2 * 2 * N1 * (P * r - r * r / 2)  # per chain-step, the two first-layer products
    flops_paper = 2 * 2 * N1 * P * X.shape[1]
    floor = (t_fwd + t_bwd) / group
    out = {"P": P, "r": r, "floor": floor, "forward": t_fwd / group, "backward": t_bwd / group,
           "act": t_act / group, "gradient": t_grad / group, "step": t_step / group, "paper": t_paper,
           "gflops_floor": flops / floor / 1e9, "flop_ratio": flops / flops_paper, "truncated": {}}
    for k in ranks:
        if k < r:
            _, mk, A0k, ytk, pk = _model(X, y, k, group)
            out["truncated"][k] = _step_time(mk, A0k, ytk, pk, group) / group
    ms = {k: 1e3 * v for k, v in out.items() if isinstance(v, float)}
    print(f"P={P} r={r} (group of {group}, one thread, load average {os.getloadavg()[0]:.1f}), ms per chain-step: "
          f"floor {ms['floor']:.1f} (forward {ms['forward']:.1f} + backward {ms['backward']:.1f}, "
          f"{out['gflops_floor']:.0f} GFLOP/s), erf+derivative {ms['act']:.1f}, whole gradient {ms['gradient']:.1f}, "
          f"whole Euler step {ms['step']:.1f}; papers' loop {ms['paper']:.1f}", flush=True)
    print(f"  papers' step / ours: {t_paper / out['step']:.2f} (gradient alone {t_paper / out['gradient']:.2f}; "
          f"ceiling papers' step / floor {t_paper * group / (t_fwd + t_bwd):.2f}); first-layer flops ours/papers "
          f"{out['flop_ratio']:.2f}; floor / whole step {out['floor'] / out['step']:.2f}" + "".join(
              f"; truncated k = {k}: step {1e3 * t:.1f} ms, papers' / ours {t_paper / t:.2f}"
              for k, t in out["truncated"].items()), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    ap.add_argument("--group", type=int, default=8, help="replicas in the group (one thread)")
    ap.add_argument("--ranks", type=int, nargs="*", default=[], help="truncated input ranks k")
    a = ap.parse_args()
    torch.set_num_threads(1)
    import scipy.linalg.cython_blas  # noqa: F401  (load scipy's BLAS, which the trapezoid calls, before limiting it)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        for P in a.sizes:
            breakdown(P, a.group, a.ranks)


if __name__ == "__main__":
    main()
