"""Where a sampler step's time goes at P > N_0 (docs/benchmarks.md, "A at P > N₀").

    .venv/bin/python benchmarks/bench_sampler_breakdown.py 4000 [k1 k2 ...]

One replica group (4 replicas of N_1 = 500, MNIST 0/1 paper preset, float32) on one thread: the
first layer's forward product W Lᵀ and backward product D L (``LowerTrapezoid``: r × r BLAS trmm
plus the dense (P − r) × r block), erf and its derivative on the [4, N_1, P] activations, and the
Gaussian noise of one step, each timed alone (best of 5), per chain-step; beside them the papers'
single-chain loop (``bench_sampling.paper_loop_steps_per_second``) on the same thread (erf and σ'
as the sampler computes them: in place and into a reused buffer), and the ratio
of first-layer flops 2·2·N_1(P r − r²/2) to the papers' 2·2·N_1 P N_0. Then the whole gradient
(``BatchedMLP.potential_and_grad`` of the group, what a step costs but the noise and the update)
per chain-step for the exact reduction (r) and for truncated ones at the ranks k given after P.
"""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_sampling  # noqa: E402

import finwidth  # noqa: E402
from finwidth.inputs import InputReduction  # noqa: E402
from finwidth.simulate.models import build_model  # noqa: E402
from finwidth.simulate.trapezoid import LowerTrapezoid  # noqa: E402


def _best(f, n=5):
    f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main() -> None:
    torch.set_num_threads(1)
    P = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    N, Rg = 500, 4
    ds = finwidth.data.load("mnist", classes=(0, 1), n_train=P, n_test=0, preset="paper")
    X = ds.X_train
    L = torch.tensor(InputReduction.from_inputs(X).train_lower, dtype=torch.float32)
    r = L.shape[1]
    tz = LowerTrapezoid(L)
    W = torch.randn(Rg, N, r)
    H = tz.right_mul_t(W)
    t_fwd = _best(lambda: tz.right_mul_t(W))
    t_bwd = _best(lambda: tz.right_mul(H.clone()))
    act, Hc, D = finwidth.Network([N], "erf").activation, H.clone(), torch.empty_like(H)
    t_act = _best(lambda: act.torch_pair_into(Hc.copy_(H), D)) - _best(lambda: Hc.copy_(H))  # as the sampler does
    t_noise = _best(lambda: torch.randn(Rg, N, r))
    paper = bench_sampling.paper_loop_steps_per_second(X, ds.y_train, N, 1e-3, 1e-3, 10)
    flop_ours = 2 * 2 * N * (P * r - r * r / 2)
    flop_paper = 2 * 2 * N * P * X.shape[1]
    grad = {}
    for k in [r] + [int(a) for a in sys.argv[2:]]:
        red = InputReduction.from_inputs(X, rank=k)
        net = finwidth.Network([N], "erf")
        model = build_model(net, X.shape[1], 1e-3, first_layer_inputs=red.rank)
        A0 = model.prepare_inputs(red.train_lower)
        model.use_lower_inputs(A0)
        params = model.init_params(Rg, torch.Generator().manual_seed(0), "prior")
        yt = torch.tensor(ds.y_train, dtype=torch.float32)
        grad[k] = _best(lambda: model.potential_and_grad(params, A0, yt, need_energy=False)) / Rg
    print(f"P={P} r={r} N0={X.shape[1]}, load average {os.getloadavg()[0]:.1f}; per chain-step (ms): first-layer "
          f"forward {1e3 * t_fwd / Rg:.1f}, backward {1e3 * t_bwd / Rg:.1f}, erf+derivative {1e3 * t_act / Rg:.1f}, "
          f"noise {1e3 * t_noise / Rg:.2f}; papers' loop {1e3 / paper:.1f} ms/step; first-layer flops "
          f"ours/papers = {flop_ours / flop_paper:.2f}")
    print("whole gradient per chain-step (ms): " + ", ".join(
        f"{'exact r' if k == r else 'truncated k'} = {k}: {1e3 * t:.1f} (papers' loop / this = {1 / (paper * t):.2f})"
        for k, t in grad.items()))


if __name__ == "__main__":
    main()
