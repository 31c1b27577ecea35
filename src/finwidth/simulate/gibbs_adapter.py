"""``sampler="gibbs"`` for :func:`finwidth.sample_posterior`: wraps the exact block-Gibbs sampler of
:mod:`finwidth.simulate.gibbs` and measures its records with the same estimators as the
Langevin samplers (so every number and error bar is computed one way)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from finwidth.errors import ConfigError

__all__ = ["run_gibbs"]


def run_gibbs(network, data: dict, cfg: dict):
    from finwidth.simulate import api
    from finwidth.simulate.gibbs import gibbs_deep_linear

    if cfg["dtype"] != "float64" and cfg["dtype"] != "float32":
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {cfg['dtype']!r}")
    if cfg["device"] not in ("cpu",):
        raise ConfigError("sampler='gibbs' runs in numpy on the CPU; use device='cpu'")
    X, y, Xt, yt = data["X"], data["y"], data["X_test"], data["y_test"]
    R, every, n_steps = cfg["replicas"], cfg["record_every"], cfg["n_steps"]
    t0 = time.perf_counter()
    g = gibbs_deep_linear(network, X, y, temperature=cfg["temperature"], n_sweeps=n_steps, burn_in=0,
                          replicas=R, seed=cfg["seed"], X_test=Xt, record_every=every)
    wall = time.perf_counter() - t0
    n_rec = g.readout_norm.shape[0]
    T, L = cfg["temperature"], network.depth
    resid = y[None, None, :] - g.train_pred
    loss = 0.5 * (resid ** 2).sum(-1)
    prior = 0.5 * T * (g.layer_norms * np.asarray(network.priors)[None, None, :]).sum(-1)
    traces = {"energy": loss + prior, "loss": loss, "train_mse_raw": (resid ** 2).mean(-1),
              "readout_norm_raw": g.readout_norm.copy(), "layer_norms": g.layer_norms.copy()}
    if yt is not None:
        traces["test_mse_raw"] = ((yt[None, None, :] - g.test_pred) ** 2).mean(-1)
    rec0 = 0 if cfg["burn_in"] is None else -(-cfg["burn_in"] // every)
    n_post = n_rec - rec0
    chunk_len = max(1, -(-n_post // api._N_CHUNKS))
    n_chunks = -(-n_post // chunk_len)
    acc, counts = {}, np.zeros(n_chunks)
    if Xt is not None:
        acc = {"f_sum": np.zeros((n_chunks, R, Xt.shape[0])), "f_sq": np.zeros((n_chunks, R, Xt.shape[0]))}
        for c in range(n_chunks):
            sl = slice(rec0 + c * chunk_len, min(rec0 + (c + 1) * chunk_len, n_rec))
            acc["f_sum"][c] = g.test_pred[sl].sum(0)
            acc["f_sq"][c] = (g.test_pred[sl] ** 2).sum(0)
            counts[c] = sl.stop - sl.start
    run = SimpleNamespace(cfg=cfg, traces=traces, n_chunks=n_chunks, chunk_len=chunk_len, rec0=rec0, n_rec=n_rec,
                          has_test=Xt is not None, has_ytest=yt is not None, rb=False, acc=acc, chunk_count=counts,
                          network=network, data=data, L=L, wall=wall)
    return api._estimate(run)
