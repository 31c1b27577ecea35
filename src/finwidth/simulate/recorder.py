"""The one recorder of the sampling loop: what is measured at each record, for every sampler and model.

At a record the recorder evaluates the model on the training set (energy, loss, train MSE, weight
norms, readout norm) and on the test set (predictions and test MSE), both from the sampled network
("raw") and, with Rao–Blackwellisation, from the exact conditional posterior of the readout given
the last hidden features (:class:`~finwidth.simulate.observables.ReadoutConditional`). Scalars are
kept per record and replica (``traces``); test-point quantities are summed over time chunks (1/64
of the post-burn-in records, ``acc``) so that the estimates can choose the burn-in and the error-bar
blocks afterwards. Extra :class:`Observable` s (weight covariances, hidden kernels, raw predictions)
are recorded the same way. Targets may carry a trailing output axis (``[P, D]``): errors are then
summed over the outputs and averaged over the points (the theory's convention), and two D × D traces
are kept per record: the readout's second moment a aᵀ (``readout_outer_*``, the estimator of Q_L) and
the test-averaged output second moment (1/P_t) Σ_x f(x) f(x)ᵀ (``test_outer_*``, for the output–output
covariance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from finwidth.errors import ConfigError

from finwidth.simulate.networks import gibbs_energy
from finwidth.simulate.observables import ReadoutConditional

__all__ = ["N_CHUNKS", "OBSERVER_GROUPS", "Observable", "Recorder", "RecordState"]

N_CHUNKS = 64  # time chunks of the per-test-point accumulators (burn-in granularity)
OBSERVER_GROUPS = 8  # time groups of the user observers' sums (their burn-in granularity; memory 8·R·size)


@dataclass(frozen=True)
class RecordState:
    """What a user observer (``sample_posterior(..., observers=...)``) receives at each record.

    Attributes
    ----------
    params : list of torch.Tensor
        The model's parameters, each with the replica axis first (``[R, ...]``), in the model's own
        units (under input reduction the first layer acts on the reduced inputs).
    features : torch.Tensor
        Last hidden features Φ = σ(h^(L)) on the training inputs, ``[R, P, N_L]`` (the readout is
        f = Φ a / sqrt(N_L) in standard form).
    test_features : torch.Tensor or None
        The same at the test inputs, ``[R, P_t, N_L]``, with the fresh orthogonal-input term of this
        record (the one the test predictions use); None without test inputs.
    record : int
        Record index (0-based).
    """

    params: list
    features: torch.Tensor
    test_features: torch.Tensor | None
    record: int


@dataclass(frozen=True)
class Observable:
    """An extra quantity measured at every record: ``fn(params) -> tensor [R, ...]``.

    ``kind="trace"`` keeps every record (``Recorder.traces[name]``, ``[n_records, R, ...]``);
    ``kind="mean"`` sums the records after the burn-in per replica (``Recorder.mean(name)``, ``[R, ...]``).
    With ``source="f_train"`` or ``"f_test"`` the value is the sampled network's output on the training
    or test points, which the recorder computes anyway.
    """

    name: str
    fn: Callable | None = None
    kind: str = "trace"
    source: str | None = None  # "f_train" or "f_test": the outputs the recorder computes anyway (no fn)


def _mean_error(y: torch.Tensor, f: torch.Tensor, var: torch.Tensor | None = None) -> np.ndarray:
    """Mean over points of |y − f|² [+ var] (summed over the outputs, if any), per replica (float64 numpy ``[R]``)."""
    sq = (y - f) ** 2
    if var is not None:
        sq = sq + (var.unsqueeze(-1) if sq.dim() > var.dim() else var)
    if sq.dim() == 3:
        return sq.sum(-1).mean(-1).cpu().numpy()
    return sq.flatten(1).mean(-1).cpu().numpy()


def _outer_mean(f: torch.Tensor, var: torch.Tensor | None = None) -> np.ndarray:
    """(1/n) Σ_x f(x) f(x)ᵀ [+ mean var · 1] per replica, ``[R, D, D]`` float64, from f ``[R, n, D]``."""
    out = f.transpose(-1, -2) @ f / f.shape[-2]
    if var is not None:
        out = out + var.mean(-1)[:, None, None] * torch.eye(f.shape[-1], dtype=out.dtype, device=out.device)
    return out.cpu().numpy()


class Recorder:
    """Records a run of ``cfg.n_records`` records of R replicas (see the module docstring).

    Parameters
    ----------
    model : a model of :mod:`finwidth.simulate.models`
    cfg : RunConfig
    A0, y : the model's training inputs and the targets (float64 tensor).
    A0t, yt : test inputs (model form) and targets (float64), optional.
    perp : torch.Tensor, optional
        Under input reduction, the factor F of the test points' orthogonal parts: a fresh
        W_perp x_perp term is drawn at each record (``model.perp_preactivation``).
    perp_norm : float
        The exact prior expectation of ‖W_perp‖², added to the first layer's norm.
    generator : torch.Generator
        Draws the W_perp terms (its state is part of :meth:`state`).
    observables : sequence of Observable
    observers : dict[str, callable], optional
        User observers ``fn(RecordState) -> array [R, ...]``, summed per replica and per time group
        (:data:`OBSERVER_GROUPS` groups of the post-burn-in records) for a jackknife estimate.
    """

    def __init__(self, model, cfg, *, A0, y, A0t=None, yt=None, perp=None, perp_norm=0.0, generator=None,
                 observables=(), observers=None):
        self.model, self.cfg = model, cfg
        self.A0, self.y64, self.A0t, self.yt64 = A0, y, A0t, yt
        self.y = y.to(model.dtype)
        self.perp, self.perp_norm, self.gen = perp, float(perp_norm), generator
        self.rb = bool(cfg.rao_blackwell)
        self.has_test, self.has_ytest = A0t is not None, yt is not None
        self.observables = list(observables)
        R, L = cfg.replicas, model.n_layers
        self.n_rec = cfg.n_records
        self.rec0 = cfg.burn_in_records()
        n_post = max(self.n_rec - self.rec0, 0)
        self.chunk_len = max(1, -(-n_post // N_CHUNKS))
        self.n_chunks = -(-n_post // self.chunk_len) if n_post else 0
        names = ["energy", "loss", "train_mse_raw", "readout_norm_raw"]
        if self.rb:
            names += ["train_mse_rb", "readout_norm_rb"]
        if self.has_ytest:
            names += ["test_mse_raw"] + (["test_mse_rb"] if self.rb else [])
        self.traces = {k: np.full((self.n_rec, R), np.nan) for k in names}
        self.traces["layer_norms"] = np.full((self.n_rec, R, L), np.nan)
        self.n_outputs = 1 if y.dim() == 1 else int(y.shape[-1])
        if self.n_outputs > 1:
            D = self.n_outputs
            outer = ["readout_outer_raw"] + (["readout_outer_rb"] if self.rb else [])
            if self.has_test:
                outer += ["test_outer_raw"] + (["test_outer_rb"] if self.rb else [])
            self.traces.update({k: np.full((self.n_rec, R, D, D), np.nan) for k in outer})
        self.acc: dict[str, np.ndarray] = {}  # allocated at the first test record (shape of f)
        self.chunk_count = np.zeros(self.n_chunks)
        self.sums: dict[str, np.ndarray] = {}
        self.n_summed = 0
        self.observers = dict(observers or {})
        self.n_groups = min(OBSERVER_GROUPS, self.n_chunks)
        self.obs_sums: dict[str, np.ndarray] = {}
        self.obs_count = np.zeros(self.n_groups)

    # ---------------------------------------------------------------- records
    def _perp_term(self):
        if self.perp is None:
            return None
        return self.model.perp_preactivation(self.perp, self.gen, self.cfg.replicas)

    @torch.no_grad()
    def record(self, params, k: int) -> None:
        """Measure ``params`` as record number ``k`` (0-based)."""
        model, tr = self.model, self.traces
        f, Phi = model.readout_features(params, self.A0)
        f64 = f.double()
        U, loss = gibbs_energy(f - self.y, params, model.precisions, model.temperature)
        tr["energy"][k] = U.cpu().numpy()
        tr["loss"][k] = loss.cpu().numpy()
        tr["train_mse_raw"][k] = _mean_error(self.y64, f64)
        norms = torch.stack([p.double().flatten(1).pow(2).sum(-1) for p in params[: model.n_layers]], dim=-1)
        norms[:, 0] += self.perp_norm
        tr["layer_norms"][k] = norms.cpu().numpy()
        tr["readout_norm_raw"][k] = tr["layer_norms"][k][:, -1]
        multi = self.n_outputs > 1
        if multi:
            a = params[model.n_layers - 1].double()  # the readout [R, D, M]
            tr["readout_outer_raw"][k] = (a @ a.transpose(-1, -2)).cpu().numpy()
        rc = None
        if self.rb:
            ro = model.readout
            rc = ReadoutConditional(Phi, self.y64, ro.standard_precision, model.temperature, model.readout_bias_var)
            mu, v = rc.predict(Phi)
            tr["train_mse_rb"][k] = _mean_error(self.y64, mu, v)
            # E|a'|² of the standard-form readout, back in the model's own units (a = a'/standard_factor)
            tr["readout_norm_rb"][k] = (rc.norm2 / ro.standard_factor ** 2).cpu().numpy()
            if multi:
                tr["readout_outer_rb"][k] = (rc.second_moment / ro.standard_factor ** 2).cpu().numpy()
        if getattr(model, "readout_groups", None):  # CNN local readout: Σ_c a_c a_cᵀ (the estimator of Q)
            self._trace("patch_outer_raw", k, model.readout_outer(params))
            if rc is not None:
                self._trace("patch_outer_rb", k, model.readout_outer_conditional(rc))
        post = k >= self.rec0
        measured = {"f_train": f64}
        Phit = None
        if self.has_test:
            measured["f_test"], Phit = self._record_test(params, rc, k, post)
        for ob in self.observables:
            self._observe(ob, params, k, post, measured)
        if post:
            self.n_summed += 1
        if self.observers and post and self.n_groups:
            self._observe_state(RecordState(list(params), Phi, Phit, k), k)

    def _trace(self, name: str, k: int, value: torch.Tensor) -> None:
        value = value.double().cpu().numpy()
        if name not in self.traces:
            self.traces[name] = np.full((self.n_rec, *value.shape), np.nan)
        self.traces[name][k] = value

    def _record_test(self, params, rc, k: int, post: bool):
        """Test-set part of a record; returns the test outputs and the test features (None when not computed)."""
        model, tr = self.model, self.traces
        perp = self._perp_term()
        Phit = None
        if rc is None and not self.observers:
            ft = model.forward(params, self.A0t, perp)
        else:
            ft, Phit = model.readout_features(params, self.A0t, perp)
            if rc is not None:
                mut, vt = rc.predict(Phit)
        ft = ft.double()
        if self.has_ytest:
            tr["test_mse_raw"][k] = _mean_error(self.yt64, ft)
            if rc is not None:
                tr["test_mse_rb"][k] = _mean_error(self.yt64, mut, vt)
        if self.n_outputs > 1:
            tr["test_outer_raw"][k] = _outer_mean(ft)
            if rc is not None:
                tr["test_outer_rb"][k] = _outer_mean(mut, vt)
        if not post:
            return ft, Phit
        c = (k - self.rec0) // self.chunk_len
        self.chunk_count[c] += 1
        fn = ft.cpu().numpy()
        parts = {"f_sum": fn, "f_sq": fn * fn}
        if rc is not None:
            m, vv = mut.cpu().numpy(), vt.cpu().numpy()
            parts.update(mu_sum=m, mu_sq=m * m, v_sum=vv)
        for name, value in parts.items():
            if name not in self.acc:
                self.acc[name] = np.zeros((self.n_chunks, *value.shape))
            self.acc[name][c] += value
        return ft, Phit

    def _observe_state(self, state: RecordState, k: int) -> None:
        g = ((k - self.rec0) // self.chunk_len) * self.n_groups // self.n_chunks
        for name, fn in self.observers.items():
            value = fn(state)
            value = (value.double().cpu().numpy() if isinstance(value, torch.Tensor)
                     else np.asarray(value, dtype=np.float64))
            if value.ndim == 0 or value.shape[0] != self.cfg.replicas:
                raise ConfigError(f"observer {name!r} must return an array with the replica axis first "
                                  f"([R, ...], R = {self.cfg.replicas}), got shape {value.shape}")
            if name not in self.obs_sums:
                self.obs_sums[name] = np.zeros((self.n_groups, *value.shape))
            self.obs_sums[name][g] += value
        self.obs_count[g] += 1

    def group_chunks(self, g: int) -> range:
        """The time chunks of observer group ``g``."""
        return range(-(-g * self.n_chunks // self.n_groups), -(-(g + 1) * self.n_chunks // self.n_groups))

    def _observe(self, ob: Observable, params, k: int, post: bool, measured: dict) -> None:
        value = measured[ob.source] if ob.source else ob.fn(params)
        value = (value.double().cpu().numpy() if isinstance(value, torch.Tensor)
                 else np.asarray(value, dtype=np.float64))
        if ob.kind == "trace":
            if ob.name not in self.traces:
                self.traces[ob.name] = np.full((self.n_rec, *value.shape), np.nan)
            self.traces[ob.name][k] = value
        elif post:
            self.sums[ob.name] = self.sums.get(ob.name, 0.0) + value

    def mean(self, name: str) -> np.ndarray:
        """Per-replica mean of a ``kind="mean"`` observable over the records after the burn-in."""
        return self.sums[name] / max(self.n_summed, 1)

    def chunk_records(self, c: int) -> np.ndarray:
        """The record indices of time chunk ``c`` (after the user's burn-in)."""
        start = self.rec0 + c * self.chunk_len
        return np.arange(start, min(start + self.chunk_len, self.n_rec))

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        return {"traces": self.traces, "acc": self.acc, "chunk_count": self.chunk_count, "sums": self.sums,
                "n_summed": self.n_summed, "gen": None if self.gen is None else self.gen.get_state(),
                "obs_sums": self.obs_sums, "obs_count": self.obs_count}

    def load_state(self, st: dict) -> None:
        self.traces = {k: np.array(v) for k, v in st["traces"].items()}
        self.acc = {k: np.array(v) for k, v in st["acc"].items()}
        self.chunk_count = np.array(st["chunk_count"])
        self.sums = {k: np.array(v) for k, v in st["sums"].items()}
        self.n_summed = int(st["n_summed"])
        self.obs_sums = {k: np.array(v) for k, v in st.get("obs_sums", {}).items()}
        self.obs_count = np.array(st.get("obs_count", np.zeros(self.n_groups)))
        if set(self.obs_sums) - set(self.observers):
            raise ConfigError(f"the checkpoint has observers {sorted(self.obs_sums)}; resume it with the same "
                              f"observers= (given: {sorted(self.observers)})")
        if self.gen is not None:
            self.gen.set_state(st["gen"])
