"""Issue 14.6: a sampled two-layer CNN against the local-kernel theory (ConvRKGP) on MNIST 0/1.

erf CNN on 28×28 images, 7×7 windows at stride 7 (Ñ = 16 patches, S = 49), local readout, priors 1,
P = 100, 200 test images, T = 0.05, C = 8, 16, 32 channels. Per C: the theory (ε_g, Q) and BAOAB
(step size: the ``baoab`` suggestion of suggest_step_size; 8 replicas; Rao–Blackwellised), each run
checkpointed. Results: docs/data/reproductions/cnn/mnist_C{C}.json (written atomically).

    nice -n 10 python examples/reproductions/cnn_mnist.py [C ...] [--steps N] [--step-factor F] [--dataset cifar10]

(``--dataset cifar10``: CIFAR-10 airplane/automobile, the paper preset (28×28 grey), cifar10_C{C}.json).

(the step-size bias check: ``cnn_mnist.py 8 --steps 20000 --step-factor 0.5``).

Reported in docs/reproductions.md ("CNN: sampled vs local kernel theory") only where R̂ ≤ 1.05 and ESS ≥ 100.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from finwidth import data
from finwidth.convnet import ConvNetwork
from finwidth.errors import NotConvergedWarning
from finwidth.simulate import sample_posterior, suggest_step_size
from finwidth.theory.conv import ConvRKGP

OUT = Path(__file__).resolve().parents[2] / "docs" / "data" / "reproductions" / "cnn"
T, P, P_TEST = 0.05, 100, 200


def run(C: int, n_steps: int, ckpt_dir: Path, step_factor: float = 1.0, dataset: str = "mnist") -> dict:
    d = data.load(dataset, classes=[0, 1], n_train=P, n_test=P_TEST, preset="paper")
    net = ConvNetwork(784, (7, 7), C, "erf", image_shape=(28, 28), stride=7)
    t0 = time.perf_counter()
    th = ConvRKGP(net, T).fit(d.X_train, d.y_train)
    eg_th = th.generalization_error(d.X_test, d.y_test)
    eg_nngp = ConvRKGP(net.with_channels(10 ** 9), T).fit(d.X_train, d.y_train).generalization_error(d.X_test, d.y_test)
    t_theory = time.perf_counter() - t0
    h = step_factor * suggest_step_size(net, d.X_train, d.y_train, temperature=T)["baoab"]
    res, sim = sample(net, d, h, n_steps, ckpt_dir / f"{dataset}_C{C}_n{n_steps}_h{h:.4g}.ckpt", seed=C)
    return {
        "C": C, "T": T, "P": P, "P_test": P_TEST, "n_patches": net.n_patches, "step_size": h, "n_steps": n_steps,
        "theory": {"eg": eg_th.total, "bias": eg_th.bias, "variance": eg_th.variance, "Q": th.qbar_.tolist(),
                   "wall_s": t_theory},
        "nngp": {"eg": eg_nngp.total},
        "sim": {**sim, "Q": res.qbar_patches.tolist(), "Q_stderr": res.qbar_patches_stderr.tolist()},
    }


def sample(net, d, h: float, n_steps: int, ck: Path, seed: int):  # noqa: ANN001, ANN201
    """BAOAB, 8 replicas from the readout's conditional, checkpointed in ``ck`` (resumed if there):
    the result and its summary (ε_g, Q̄ with standard errors, R̂, ESS, warnings, wall time)."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NotConvergedWarning)
        res = sample_posterior(net, d.X_train, d.y_train, temperature=T, step_size=h, n_steps=n_steps, replicas=8,
                               X_test=d.X_test, y_test=d.y_test, init="readout_conditional", seed=seed,
                               checkpoint=ck, resume=True, progress=False)
    dg = res.diagnostics
    return res, {"eg": float(res.generalization_error.total), "eg_stderr": res.generalization_error.total.stderr,
                 "qbar": float(res.qbar_readout), "qbar_stderr": res.qbar_readout.stderr,
                 "max_rhat": dg.max_rhat, "min_ess": dg.min_ess, "rhat": dg.rhat, "ess": dg.ess,
                 "problems": dg.problems, "warnings": [str(w.message) for w in caught],
                 "wall_s": time.perf_counter() - t0}


def summary_line(label: str, out: dict) -> str:
    """One progress line for a finished run: ε_g of the sampled networks, the theory and the NNGP, R̂, ESS."""
    s = out["sim"]
    return (f"{label}: eg sim {s['eg']:.5f} ± {s['eg_stderr']:.5f}, theory {out['theory']['eg']:.5f}, "
            f"nngp {out['nngp']['eg']:.5f}; max R̂ {s['max_rhat']:.3f}, min ESS {s['min_ess']:.0f}, {s['wall_s']:.0f} s")


def write_json(out: dict, path: Path) -> None:
    """``out`` as JSON at ``path``, atomically."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(out, f, indent=1)
    os.replace(f.name, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("channels", nargs="*", type=int, default=[8, 16, 32])
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--step-factor", type=float, default=1.0, help="times the suggested BAOAB step (bias check)")
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10"])
    ap.add_argument("--checkpoints", default=os.environ.get("TMPDIR", "/tmp"))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for C in args.channels:
        out = run(C, args.steps, Path(args.checkpoints), args.step_factor, args.dataset)
        path = OUT / (f"{args.dataset}_C{C}.json" if args.step_factor == 1.0 else f"{args.dataset}_C{C}_h{args.step_factor:g}.json")
        write_json(out, path)
        print(summary_line(f"C={C}", out), flush=True)


if __name__ == "__main__":
    main()
