"""Issue 14.6: the fully connected net on the data of the CNN reproduction (cnn_mnist.py), side by side.

One-hidden-layer erf network 784 → N → 1 on MNIST 0/1 (paper preset, P = 100, the first 200 test
images, T = 0.05, priors 1), N = 8, 16, 32 (the CNN's channel counts). Per N: NNGP and RKGP theory,
and BAOAB (the ``baoab`` step of suggest_step_size, 8 replicas, 10 000 steps, init
``readout_conditional``, Rao–Blackwellised), checkpointed. Results: docs/data/reproductions/cnn/fc_N{N}.json.

    nice -n 10 python examples/reproductions/fc_mnist.py [N ...] [--steps N] [--dataset cifar10]

(``--dataset cifar10``: CIFAR-10 airplane/automobile, paper preset, fc_cifar10_N{N}.json).

Reported in docs/reproductions.md ("CNN ... against the fully connected net") only where R̂ ≤ 1.05 and ESS ≥ 100.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from cnn_mnist import P, P_TEST, T, sample, summary_line, write_json  # the CNN runs' data, sampler and output
from finwidth import Network, data
from finwidth.simulate import suggest_step_size
from finwidth.theory.nngp import NNGP
from finwidth.theory.rkgp import RKGP

OUT = Path(__file__).resolve().parents[2] / "docs" / "data" / "reproductions" / "cnn"


def run(N: int, n_steps: int, ckpt_dir: Path, dataset: str = "mnist") -> dict:
    d = data.load(dataset, classes=[0, 1], n_train=P, n_test=P_TEST, preset="paper")
    net = Network(N, "erf")  # hidden width N; N_0 = 784 from the data
    t0 = time.perf_counter()
    th = RKGP(net, T).fit(d.X_train, d.y_train)
    eg_th = th.generalization_error(d.X_test, d.y_test)
    eg_nngp = NNGP(net, T).fit(d.X_train, d.y_train).generalization_error(d.X_test, d.y_test)
    t_theory = time.perf_counter() - t0
    h = suggest_step_size(net, d.X_train, d.y_train, temperature=T)["baoab"]
    _, sim = sample(net, d, h, n_steps, ckpt_dir / f"fc_{dataset}_N{N}_n{n_steps}_h{h:.4g}.ckpt", seed=N)
    return {
        "N": N, "T": T, "P": P, "P_test": P_TEST, "step_size": h, "n_steps": n_steps,
        "theory": {"eg": eg_th.total, "bias": eg_th.bias, "variance": eg_th.variance,
                   "qbar": float(th.qbar_[-1]), "wall_s": t_theory},
        "nngp": {"eg": eg_nngp.total},
        "sim": sim,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("widths", nargs="*", type=int, default=[8, 16, 32])
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10"])
    ap.add_argument("--checkpoints", default=os.environ.get("TMPDIR", "/tmp"))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for N in args.widths:
        out = run(N, args.steps, Path(args.checkpoints), args.dataset)
        write_json(out, OUT / (f"fc_N{N}.json" if args.dataset == "mnist" else f"fc_{args.dataset}_N{N}.json"))
        print(summary_line(f"N={N}", out), flush=True)


if __name__ == "__main__":
    main()
