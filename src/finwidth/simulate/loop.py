"""The one sampling loop: a model, a sampler's step, the recorder, divergence checks and checkpoints.

:class:`Run` advances the sampler to the next event (energy check, record, checkpoint), checks the
energies, records and checkpoints; it is restartable from :meth:`Run.state` bit for bit. It serves
:func:`finwidth.sample_posterior` (every sampler, Gibbs included), :func:`finwidth.simulate.resume`,
the weight sampling of the adaptive-kernel checks and :func:`finwidth.simulate.gibbs.gibbs_deep_linear`.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from finwidth.errors import ConfigError, DivergenceError
from finwidth.inputs import InputReduction
from finwidth.simulate.checkpoint import save_checkpoint
from finwidth.simulate.config import RunConfig, _device
from finwidth.simulate.models import build_model, network_kind
from finwidth.simulate.networks import as_torch_dtype
from finwidth.simulate.observables import sample_readout_conditional
from finwidth.simulate.recorder import Recorder
from finwidth.simulate.samplers import NoiseStreams, make_sampler
from finwidth.simulate.sharded import ShardedSampler

__all__ = ["ProgressInfo", "Run", "build_run", "check_progress"]


@dataclass(frozen=True)
class ProgressInfo:
    """What a progress callback receives (``sample_posterior(..., progress=callback)``), after each
    record and at the end.

    ``test_error`` / ``train_error``: the replica-averaged test and train MSE at the latest record
    (Rao–Blackwellised when the run is; a single record, not an estimate; None without test labels).
    ``eta_s``: seconds left at this session's pace."""

    step: int
    n_steps: int
    elapsed_s: float
    eta_s: float
    test_error: float | None
    train_error: float | None


def check_progress(progress):
    """``progress`` is True, False, "auto" (a bar only when stderr is a terminal) or a callable."""
    if not (isinstance(progress, bool) or progress == "auto" or callable(progress)):
        raise ConfigError(f"progress must be True, False, 'auto' or a callable, got {progress!r}")
    return progress

_BLOWUP = 1e4  # energy above this multiple of its reference scale counts as divergence


def build_run(network, data: dict, cfg: RunConfig, *, observables=(), observers=None) -> Run:
    """A :class:`Run` of the model of ``network`` (:func:`finwidth.simulate.models.build_model`)."""
    X = data["X"]
    red = InputReduction.from_inputs(X, cfg.input_basis, rank=cfg.input_rank) if cfg.input_reduction else None
    dtype = torch.float64 if cfg.sampler == "gibbs" else as_torch_dtype(cfg.dtype)
    y = data["y"]
    model = build_model(network, X.shape[1], cfg.temperature, cfg.scaling,
                        first_layer_inputs=None if red is None else red.rank, device=_device(cfg.device),
                        dtype=dtype, n_outputs=1 if y.ndim == 1 else y.shape[1])
    return Run(model, data, cfg, network=network, reduction=red, observables=observables, observers=observers)


class Run:
    """One sampling run (see the module docstring).

    Parameters
    ----------
    model : a model of :mod:`finwidth.simulate.models`
    data : dict
        ``X``, ``y`` and optionally ``X_test``, ``y_test`` (float64 numpy, validated).
    cfg : RunConfig
    network : the network spec (saved in checkpoints); default ``model.network``.
    reduction : InputReduction, optional
        The input basis when ``cfg.input_reduction`` (built from X otherwise).
    observables : extra :class:`~finwidth.simulate.recorder.Observable` s.
    observers : dict of user observers (:class:`~finwidth.simulate.recorder.Recorder`).
    """

    def __init__(self, model, data: dict, cfg: RunConfig, *, network=None, reduction=None, observables=(),
                 observers=None):
        self.model, self.data, self.cfg = model, data, cfg
        self.network = model.network if network is None else network
        self.device = model.device
        X, y, Xt, yt = data["X"], data["y"], data.get("X_test"), data.get("y_test")
        red = reduction
        if cfg.input_reduction and red is None:
            red = InputReduction.from_inputs(X, cfg.input_basis, rank=cfg.input_rank)
        self.red = red
        if red is None:
            A0 = X
        elif red.train_lower is not None:
            A0 = red.train_lower  # exact zeros above the diagonal
        else:
            A0 = red.reduce(X)
        self.A0 = model.prepare_inputs(A0)
        if red is not None and red.train_lower is not None:
            model.use_lower_inputs(self.A0)
        f64 = dict(dtype=torch.float64, device=self.device)
        self.y64 = torch.as_tensor(y, **f64)
        self.y = self.y64.to(model.dtype)
        self.gen = torch.Generator(device=self.device)
        gen_obs = torch.Generator(device=self.device)
        ss = np.random.SeedSequence(cfg.seed).generate_state(2, dtype=np.uint64)
        self.gen.manual_seed(int(ss[0]) >> 1)
        gen_obs.manual_seed(int(ss[1]) >> 1)
        A0t = perp = None
        if Xt is not None:
            A0t = model.prepare_inputs(red.reduce(Xt) if red else Xt)
            F = red.perp_factor(Xt) if red else None
            perp = None if F is None or F.shape[1] == 0 else torch.as_tensor(F, dtype=model.dtype, device=self.device)
        self.recorder = Recorder(
            model, cfg, A0=self.A0, y=self.y64, A0t=A0t, yt=None if yt is None else torch.as_tensor(yt, **f64),
            perp=perp, perp_norm=model.perp_norm(red.rank) if red else 0.0, generator=gen_obs,
            observables=observables, observers=observers)
        self.noise = None
        if cfg.noise_streams == "replica":
            seeds = [int(c.generate_state(1, dtype=np.uint64)[0]) >> 1
                     for c in np.random.SeedSequence(cfg.seed).spawn(cfg.replicas)]
            self.noise = NoiseStreams.per_replica(seeds, self.device)
        if cfg.sampler == "gibbs":
            from finwidth.simulate.gibbs import GibbsSampler

            self.sampler = GibbsSampler(model, self.A0, self.y64, cfg.seed)
        elif self.noise is not None:
            groups = torch.get_num_threads() if self.device.type == "cpu" else 1
            self.sampler = ShardedSampler(cfg.sampler, model, self.A0, self.y, cfg.step_size, self.noise,
                                          groups=groups, friction=cfg.friction)
        else:
            self.sampler = make_sampler(cfg.sampler, model, self.A0, self.y, cfg.step_size, self.gen,
                                        friction=cfg.friction)
        self.step = 0
        self.wall = 0.0

    def close(self) -> None:
        """Stop the replica-group threads (a run object is not used after its result)."""
        if isinstance(self.sampler, ShardedSampler):
            self.sampler.close()

    # ---------------------------------------------------------------- init / state
    def initialize(self) -> None:
        """Draw the initial parameters (``cfg.init``) and start the sampler."""
        cfg, model = self.cfg, self.model
        params = model.init_params(cfg.replicas, self.gen, "normal" if cfg.init == "normal" else "prior")
        if cfg.init == "readout_conditional":
            # hidden layers from the prior, then the readout from its exact conditional posterior
            _, Phi = model.readout_features(params, self.A0)
            a, b = sample_readout_conditional(Phi, self.y64, model.readout.standard_precision, cfg.temperature,
                                              self.gen, model.readout_bias_var)
            model.set_readout(params, a, b)
        self.sampler.start(params)
        U0 = float(self.sampler.energy.max())
        ref = 0.5 * float((self.y64 ** 2).sum()) + cfg.temperature * sum(p[0].numel() for p in self.sampler.params)
        self.U_max = _BLOWUP * max(U0, ref) if math.isfinite(U0) else math.inf

    def state(self) -> dict:
        return {"step": self.step, "sampler": self.sampler.state(), "gen": self.gen.get_state(),
                "noise": None if self.noise is None else self.noise.get_state(), "recorder": self.recorder.state(),
                "U_max": self.U_max, "wall": self.wall}

    def load_state(self, st: dict) -> None:
        self.step = int(st["step"])
        self.gen.set_state(st["gen"])
        st = {"noise": None, **st}
        if self.noise is not None:
            self.noise.set_state(st["noise"])  # a single-stream run keeps its state in ``gen``
        s = {k: ([p.to(self.device) for p in v] if isinstance(v, list) else v) for k, v in st["sampler"].items()}
        self.sampler.load_state(s)
        self.recorder.load_state(st["recorder"])
        self.U_max, self.wall = float(st["U_max"]), float(st["wall"])

    def checkpoint_payload(self) -> dict:
        return {"network": self.network.to_dict(), "network_kind": network_kind(self.network),
                "cfg": self.cfg.to_dict(), "run": self.state(),
                "data": {k: (None if v is None else np.asarray(v)) for k, v in self.data.items()}}

    # ---------------------------------------------------------------- the loop
    def _divergence(self, where: str):
        from finwidth.simulate.guidance import divergence_hint

        cfg = self.cfg
        U = self.sampler.energy.cpu().numpy()
        bad = np.where(~np.isfinite(U) | (U > self.U_max))[0]
        step = "" if cfg.step_size is None else f" with step_size={cfg.step_size:.3g}"
        raise DivergenceError(
            f"sampler {cfg.sampler!r} diverged {where} (replicas {bad.tolist()}: U = {U[bad].tolist()}, "
            f"blow-up threshold {self.U_max:.3g}){step} at T={cfg.temperature:.3g} "
            f"and label scale |y|²/P={float((self.y64 ** 2).mean()):.3g}; {divergence_hint(self.model, self.A0, cfg)}. "
            f"The time step is in units of the Euler η on U = ½Σ(y−f)² + (T/2)Σλ‖W‖²; larger labels or inputs "
            f"need smaller steps."
        )

    def _latest(self, k: int) -> tuple[float | None, float | None]:
        """Replica-averaged (test, train) MSE of record k."""
        tr, rb = self.recorder.traces, self.recorder.rb
        test = tr.get("test_mse_rb" if rb else "test_mse_raw")
        train = tr["train_mse_rb" if rb else "train_mse_raw"]
        return (None if test is None else float(np.mean(test[k]))), float(np.mean(train[k]))

    def run(self, progress="auto") -> None:
        """Advance to ``cfg.n_steps``, recording, checking and checkpointing on the way.

        ``progress``: True shows a bar (steps, ETA, the latest record's ε_g) on stderr, "auto" only
        when stderr is a terminal (quiet in logs and CI), False never; a callable is called with a
        :class:`ProgressInfo` after each record and at the end.
        """
        cfg, rec = self.cfg, self.recorder
        n_steps, every, first = cfg.n_steps, cfg.record_every, cfg.first_record
        ck_every = cfg.checkpoint_every if cfg.checkpoint else None
        # energy checks between records; exact Gibbs sweeps check their own weights
        check_every = n_steps if cfg.sampler == "gibbs" else max(1, min(every, 50))
        check_progress(progress)
        callback = progress if callable(progress) else None
        bar = None
        if progress is True or (progress == "auto" and sys.stderr.isatty()):
            from tqdm.auto import tqdm

            bar = tqdm(total=n_steps, initial=self.step, desc=f"{cfg.sampler} sampling", unit="step")

        def is_record(s):
            return s >= first and (s - first) % every == 0

        def next_after(s, period, offset=0):  # the next multiple of period (shifted by offset) after s
            return s + period - (s - offset) % period

        t0 = time.perf_counter()
        wall0, step0 = self.wall, self.step

        def report(k):
            test, train = self._latest(k)
            if bar is not None:
                bar.set_postfix_str(f"{'eps_g' if test is not None else 'train mse'} {test if test is not None else train:.4g}",
                                    refresh=False)
            if callback is not None:
                elapsed = time.perf_counter() - t0
                done = self.step - step0
                eta = elapsed / done * (n_steps - self.step) if done else math.inf
                callback(ProgressInfo(self.step, n_steps, wall0 + elapsed, eta, test, train))

        k = None
        try:
            while self.step < n_steps:
                nxt = [next_after(self.step, check_every), n_steps]
                nxt.append(first if self.step < first else next_after(self.step, every, first))
                if ck_every:
                    nxt.append(next_after(self.step, ck_every))
                nxt = min(nxt)
                self.sampler.advance(nxt - self.step)
                if bar is not None:
                    bar.update(nxt - self.step)
                self.step = nxt
                record = is_record(self.step)
                if self.step % check_every == 0 or record:
                    U = self.sampler.energy
                    if not bool(torch.isfinite(U).all()) or float(U.max()) > self.U_max:
                        self._divergence(f"at step {self.step}")
                if record:
                    k = (self.step - first) // every
                    with torch.no_grad():
                        rec.record(self.sampler.params, k)
                    report(k)
                if ck_every and (self.step % ck_every == 0 or self.step == n_steps):
                    self.wall = wall0 + time.perf_counter() - t0
                    save_checkpoint(cfg.checkpoint, self.checkpoint_payload())
        finally:
            if bar is not None:
                bar.close()
        self.wall = wall0 + time.perf_counter() - t0
        if callback is not None and k is None and rec.n_rec:  # a finished run that was resumed: report once
            report(rec.n_rec - 1)

    def result(self):
        """The :class:`~finwidth.simulate.results.PosteriorSamples` of the records."""
        from finwidth.simulate.estimates import estimate

        ro = self.model.readout
        return estimate(self.recorder, self.cfg, qbar_factor=ro.prior / ro.size,
                        acceptance=self.sampler.acceptance(), wall=self.wall)
