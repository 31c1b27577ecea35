"""``sample_posterior``: posterior sampling of finite-width networks with measurements and diagnostics.

See docs/sampling.md for which sampler to use, step sizes, the diagnostics and the exact cost cuts.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from finwidth.errors import ConfigError, DivergenceError
from finwidth.simulate import diagnostics as diag
from finwidth.simulate.checkpoint import load_checkpoint, save_checkpoint
from finwidth.simulate.guidance import default_friction, step_size_guidance, stiffness
from finwidth.simulate.networks import BatchedMLP, InputReduction, as_torch_dtype, gibbs_energy
from finwidth.simulate.observables import ReadoutConditional, sample_readout_conditional
from finwidth.simulate.samplers import NoiseStreams, ShardedSampler, make_sampler

__all__ = ["Diagnostics", "ErrorEstimate", "Estimate", "PosteriorSamples", "resume", "sample_posterior"]

_N_CHUNKS = 64          # time chunks of the per-test-point accumulators (burn-in granularity)
_BLOCK_TAU = 10.0       # error-bar blocks are at least this many autocorrelation times long
_BLOWUP = 1e4           # energy above this multiple of its reference scale counts as divergence
_SCALINGS = ("standard", "mean_field")


class Estimate(float):
    """A float with a standard error: ``float(e)``, ``e.value`` and ``e.stderr``."""

    def __new__(cls, value: float, stderr: float = float("nan")):
        obj = super().__new__(cls, float(value))
        obj.stderr = float(stderr)
        return obj

    @property
    def value(self) -> float:
        return float(self)

    def __repr__(self) -> str:
        return f"{float(self):.6g} ± {self.stderr:.2g}"

    def __reduce__(self):
        return (Estimate, (float(self), self.stderr))


@dataclass(frozen=True)
class ErrorEstimate:
    """ε_g = bias + variance, each an :class:`Estimate` (mean over the test set; noise T not added).

    ``bias`` = mean_test (y − ⟨f⟩)², with the jackknife correction of the finite-sample term
    Var(⟨f⟩_estimate); ``variance`` = total − bias = mean_test Var f.
    """

    total: Estimate
    bias: Estimate
    variance: Estimate

    @property
    def stderr(self) -> float:
        return self.total.stderr


@dataclass
class Diagnostics:
    """Convergence diagnostics over replicas (post burn-in records).

    Attributes
    ----------
    rhat, ess : dict[str, float]
        Split-R̂ and effective sample size of each traced observable.
    acceptance : float or None
        Mean MALA acceptance rate (None for the other samplers).
    acceptance_per_replica : np.ndarray or None
    burn_in_steps : int
        Steps discarded; ``burn_in_rule`` says how they were chosen.
    tau_records : float
        Largest integrated autocorrelation time (in records) over the key observables.
    n_blocks : int
        Blocks (replica × time batch) used for the jackknife error bars.
    steps_per_second : float
        Chain steps per second of wall time (all replicas together count once).
    """

    rhat: dict[str, float]
    ess: dict[str, float]
    acceptance: float | None
    acceptance_per_replica: np.ndarray | None
    burn_in_steps: int
    burn_in_rule: str
    tau_records: float
    n_blocks: int
    steps_per_second: float
    wall_time: float

    @property
    def max_rhat(self) -> float:
        vals = [v for v in self.rhat.values() if np.isfinite(v)]
        return max(vals) if vals else float("nan")

    @property
    def min_ess(self) -> float:
        vals = [v for v in self.ess.values() if np.isfinite(v)]
        return min(vals) if vals else float("nan")


@dataclass
class PosteriorSamples:
    """Result of :func:`sample_posterior`.

    Attributes
    ----------
    generalization_error : ErrorEstimate or None
        Posterior-averaged test MSE and its bias/variance split (Rao–Blackwellised readout when
        ``rao_blackwell=True``), None without ``y_test``.
    generalization_error_raw : ErrorEstimate or None
        The same from the sampled networks' own outputs.
    variance_reduction : float or None
        (stderr_raw / stderr_RB)² of ε_g: how many times fewer samples the RB estimate needs.
    train_error, train_error_raw : Estimate
        Posterior mean of the training MSE (1/P) Σ_μ (y − f)².
    qbar_readout, qbar_readout_raw : Estimate
        λ_L ⟨|a|²⟩ / M with M the number of readout weights (N_L; C·Ñ for a ``ConvNetwork``): the
        readout-norm estimate of Q̄_L (BPKR §A.9) for standard and mean-field FCNs (in mean field it
        is Q̄_1 of the equivalent standard network with readout precision λ_1 N); for the CNN the
        posterior-to-prior ratio of the readout norm, averaged over channels and patches.
    layer_norms : list[Estimate]
        ⟨‖W^(l)‖²⟩ for l = 0..L (under input reduction, layer 0 adds the exact prior
        expectation N_1 (N_0 − r)/λ_0 of the orthogonal part).
    prediction_mean, prediction_var, prediction_mean_stderr : np.ndarray or None
        Posterior mean and variance of f at the test points and the standard error of the mean.
    diagnostics : Diagnostics
    traces : dict[str, np.ndarray]
        Per-record, per-replica scalar traces (shape ``[n_records, R]``; ``layer_norms``:
        ``[n_records, R, L+1]``), including the burn-in.
    record_steps : np.ndarray
        Step number (1-based) of each record.
    config : dict
        The options of the run.
    """

    generalization_error: ErrorEstimate | None
    generalization_error_raw: ErrorEstimate | None
    variance_reduction: float | None
    train_error: Estimate
    train_error_raw: Estimate
    qbar_readout: Estimate
    qbar_readout_raw: Estimate
    layer_norms: list[Estimate]
    prediction_mean: np.ndarray | None
    prediction_var: np.ndarray | None
    prediction_mean_stderr: np.ndarray | None
    diagnostics: Diagnostics
    traces: dict[str, np.ndarray]
    record_steps: np.ndarray
    config: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------ validation
def _array(a, name, ndim, n_rows=None, n_cols=None) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a numeric array ({exc})") from exc
    if ndim == 1 and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != ndim:
        raise ConfigError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ConfigError(f"{name} is empty")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ConfigError(f"{name} has {arr.shape[0]} rows, expected {n_rows}")
    if n_cols is not None and arr.shape[1] != n_cols:
        raise ConfigError(f"{name} has {arr.shape[1]} columns (features), expected {n_cols}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} contains NaN or inf")
    return arr


def _positive(v, name, *, integer=False, allow_zero=False):
    ok_type = isinstance(v, (int, np.integer)) if integer else isinstance(v, (int, float, np.integer, np.floating))
    if isinstance(v, bool) or not ok_type or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        kind = "integer" if integer else "number"
        raise ConfigError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite {kind}, got {v!r}")
    return int(v) if integer else float(v)


def _resolve_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device ({exc})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' requested but torch.cuda.is_available() is False; use device='cpu'")
    return dev


def _two_layer(network, scaling: str) -> bool:
    """True when the run uses the two-layer models (mean-field FCN or CNN) instead of BatchedMLP."""
    from finwidth.convnet import ConvNetwork

    return isinstance(network, ConvNetwork) or scaling == "mean_field"


def _readout_count(network) -> int:
    """Number of readout weights M per replica: N_L, or C·Ñ for a ConvNetwork (one per channel and patch)."""
    from finwidth.convnet import ConvNetwork

    return network.channels * network.n_patches if isinstance(network, ConvNetwork) else network.widths[-1]


def _build_model(network, n_inputs: int, temperature: float, scaling: str, *, first_layer_inputs=None,
                 device="cpu", dtype=torch.float32):
    """The sampler model of a network spec: ``BatchedMLP`` (standard scaling, any depth),
    ``TwoLayerFCN`` (``scaling="mean_field"``) or ``TwoLayerCNN`` (a ``ConvNetwork``, either scaling)."""
    from finwidth.convnet import ConvNetwork

    if isinstance(network, ConvNetwork):
        from finwidth.simulate.cnn import TwoLayerCNN

        return TwoLayerCNN(network, temperature, scaling=scaling, device=device, dtype=dtype)
    if scaling == "mean_field":
        from finwidth.simulate.meanfield import TwoLayerFCN

        if network.depth != 1 or network.bias is not None:
            raise ConfigError(f"scaling='mean_field' is implemented for one hidden layer without biases, got depth "
                              f"{network.depth}{' with biases' if network.bias is not None else ''}")
        return TwoLayerFCN(network, n_inputs, temperature, scaling="mean_field", device=device, dtype=dtype)
    return BatchedMLP(network, n_inputs, temperature, device=device, dtype=dtype, first_layer_inputs=first_layer_inputs)


# ------------------------------------------------------------------------------------ the run
class _Run:
    """One sampling run: model, sampler, recording, checkpoints. Restartable from ``state()``."""

    def __init__(self, network, data: dict, cfg: dict):
        self.network, self.data, self.cfg = network, data, cfg
        self.device = _resolve_device(cfg["device"])
        self.dtype = as_torch_dtype(cfg["dtype"])
        X, y = data["X"], data["y"]
        self.P, self.N0 = X.shape
        scaling = cfg.get("scaling", "standard")  # absent in checkpoints of finwidth before the two-layer models
        self.two_layer = _two_layer(network, scaling)
        L = 1 if self.two_layer else network.depth
        self.L = L
        # checkpoints of finwidth <= 0.1.0.dev0 lack these keys: SVD basis, one noise stream
        self.red = InputReduction.from_inputs(X, cfg.get("input_basis", "svd")) if cfg["input_reduction"] else None
        if self.red is None:
            A0 = X
        elif self.red.train_lower is not None:
            A0 = self.red.train_lower  # exact zeros above the diagonal
        else:
            A0 = self.red.reduce(X)
        self.model = _build_model(network, self.N0, cfg["temperature"], scaling, first_layer_inputs=A0.shape[1],
                                  device=self.device, dtype=self.dtype)
        t = dict(device=self.device, dtype=self.dtype)
        prep = self.model.prepare_inputs if self.two_layer else (lambda Z: torch.as_tensor(Z, **t))
        self.A0 = prep(A0)
        if self.red is not None and self.red.train_lower is not None:
            self.model.use_lower_inputs(self.A0)
        self.y = torch.as_tensor(y, **t)
        self.y64 = torch.as_tensor(y, dtype=torch.float64, device=self.device)
        Xt = data.get("X_test")
        self.has_test = Xt is not None
        self.has_ytest = data.get("y_test") is not None
        if self.has_test:
            self.A0t = prep(self.red.reduce(Xt) if self.red else Xt)
            F = self.red.perp_factor(Xt) if self.red else None
            self.perp = None if F is None or F.shape[1] == 0 else torch.as_tensor(F, **t)
            self.Pt = Xt.shape[0]
            if self.has_ytest:
                self.yt64 = torch.as_tensor(data["y_test"], dtype=torch.float64, device=self.device)
        self.rb = bool(cfg["rao_blackwell"])
        self.bias_var_out = self.model.readout_bias_var
        R = cfg["replicas"]
        n_rec = cfg["n_steps"] // cfg["record_every"]
        self.n_rec = n_rec
        self.rec0 = -(-cfg["burn_in"] // cfg["record_every"]) if cfg["burn_in"] is not None else 0
        self.rec0 = min(self.rec0, n_rec)
        n_post = max(n_rec - self.rec0, 0)
        self.chunk_len = max(1, -(-n_post // _N_CHUNKS))
        self.n_chunks = -(-n_post // self.chunk_len) if n_post else 0
        self.perp_norm = (network.widths[0] * (self.N0 - self.red.rank) / network.priors[0]) if self.red else 0.0

        # state that evolves (and is checkpointed)
        self.step = 0
        names = ["energy", "loss", "train_mse_raw", "readout_norm_raw"]
        if self.rb:
            names += ["train_mse_rb", "readout_norm_rb"]
        if self.has_ytest:
            names += ["test_mse_raw"] + (["test_mse_rb"] if self.rb else [])
        self.traces = {k: np.full((n_rec, R), np.nan) for k in names}
        self.traces["layer_norms"] = np.full((n_rec, R, L + 1), np.nan)
        self.acc = {}
        if self.has_test:
            keys = ["f_sum", "f_sq"] + (["mu_sum", "mu_sq", "v_sum"] if self.rb else [])
            self.acc = {k: np.zeros((self.n_chunks, R, self.Pt)) for k in keys}
        self.chunk_count = np.zeros(self.n_chunks)
        self.gen = torch.Generator(device=self.device)
        self.gen_obs = torch.Generator(device=self.device)
        ss = np.random.SeedSequence(cfg["seed"]).generate_state(2, dtype=np.uint64)
        self.gen.manual_seed(int(ss[0]) >> 1)
        self.gen_obs.manual_seed(int(ss[1]) >> 1)
        self.noise = None
        if cfg.get("noise_streams", "single") == "replica":
            seeds = [int(c.generate_state(1, dtype=np.uint64)[0]) >> 1
                     for c in np.random.SeedSequence(cfg["seed"]).spawn(R)]
            self.noise = NoiseStreams.per_replica(seeds, self.device)
        self.sampler = None
        if cfg["sampler"] != "gibbs":
            friction = cfg["friction"]
            if cfg["sampler"] == "baoab" and friction is None:
                friction = default_friction(network, cfg["temperature"])
            self.friction = friction
            if self.noise is not None:
                groups = torch.get_num_threads() if self.device.type == "cpu" else 1
                self.sampler = ShardedSampler(cfg["sampler"], self.model, self.A0, self.y, cfg["step_size"],
                                              self.noise, groups=groups, friction=friction)
            else:
                self.sampler = make_sampler(cfg["sampler"], self.model, self.A0, self.y, cfg["step_size"],
                                            self.gen, friction=friction)
        self.wall = 0.0

    def close(self):
        """Stop the replica-group threads (a run object is not used after its result)."""
        if isinstance(self.sampler, ShardedSampler):
            self.sampler.close()

    # ---------------------------------------------------------------- init / state
    def initialize(self):
        mode = "normal" if self.cfg["init"] == "normal" else "prior"
        params = self.model.init_params(self.cfg["replicas"], self.gen, mode)
        if self.cfg["init"] == "readout_conditional":
            # hidden layers from the prior, then the readout from its exact conditional posterior
            _, Phi = self.model.readout_features(params, self.A0)
            a, b = sample_readout_conditional(Phi, self.y64, self.model.readout_precision,
                                              self.cfg["temperature"], self.gen, self.bias_var_out)
            self.model.set_readout(params, a)
            if b is not None:
                params[-1] = b.to(self.dtype)
        self.sampler.start(params)
        self._set_blowup()

    def _set_blowup(self):
        U0 = float(self.sampler.energy.max())
        ref = 0.5 * float((self.y64 ** 2).sum()) + self.cfg["temperature"] * sum(p[0].numel() for p in self.sampler.params)
        self.U_max = _BLOWUP * max(U0, ref) if math.isfinite(U0) else math.inf
        self.U_init = U0

    def state(self) -> dict:
        return {
            "step": self.step, "sampler": self.sampler.state(), "gen": self.gen.get_state(),
            "gen_obs": self.gen_obs.get_state(), "traces": self.traces, "acc": self.acc,
            "noise": None if self.noise is None else self.noise.get_state(),
            "chunk_count": self.chunk_count, "U_max": self.U_max, "U_init": self.U_init, "wall": self.wall,
        }

    def load_state(self, st: dict):
        self.step = int(st["step"])
        self.gen.set_state(st["gen"])
        self.gen_obs.set_state(st["gen_obs"])
        if self.noise is not None:
            self.noise.set_state(st["noise"])
        s = st["sampler"]
        s = {k: ([p.to(self.device) for p in v] if isinstance(v, list) else v) for k, v in s.items()}
        self.sampler.load_state(s)
        self.traces = {k: np.array(v) for k, v in st["traces"].items()}
        self.acc = {k: np.array(v) for k, v in st["acc"].items()}
        self.chunk_count = np.array(st["chunk_count"])
        self.U_max, self.U_init, self.wall = float(st["U_max"]), float(st["U_init"]), float(st["wall"])

    def checkpoint_payload(self) -> dict:
        d = self.data
        kind = "conv" if type(self.network).__name__ == "ConvNetwork" else "fcn"
        return {"network": self.network.to_dict(), "network_kind": kind, "cfg": self.cfg,
                "data": {k: (None if v is None else np.asarray(v)) for k, v in d.items()}, "run": self.state()}

    # ---------------------------------------------------------------- recording
    def _perp_term(self):
        if not (self.has_test and self.red is not None and self.perp is not None):
            return None
        R, N1 = self.cfg["replicas"], self.network.widths[0]
        G = torch.randn((R, N1, self.perp.shape[1]), generator=self.gen_obs, device=self.device, dtype=self.dtype)
        G.mul_(1.0 / math.sqrt(self.network.priors[0] * self.N0))
        return torch.matmul(self.perp, G.transpose(-1, -2))  # [R, Pt, N1]

    @torch.no_grad()
    def record(self, k: int):
        params = self.sampler.params
        tr = self.traces
        f, Phi = self.model.readout_features(params, self.A0)
        f64 = f.double()
        U, loss = gibbs_energy(f - self.y, params, self.model.precisions, self.model.temperature)
        tr["energy"][k] = U.cpu().numpy()
        tr["loss"][k] = loss.cpu().numpy()
        tr["train_mse_raw"][k] = ((self.y64 - f64) ** 2).mean(-1).cpu().numpy()
        norms = torch.stack([p.double().flatten(1).pow(2).sum(-1) for p in params[: self.L + 1]], dim=-1)
        norms[:, 0] += self.perp_norm
        tr["layer_norms"][k] = norms.cpu().numpy()
        tr["readout_norm_raw"][k] = tr["layer_norms"][k][:, self.L]
        rc = None
        if self.rb:
            rc = ReadoutConditional(Phi, self.y64, self.model.readout_precision, self.cfg["temperature"],
                                    self.bias_var_out)
            mu, v = rc.predict(Phi)
            tr["train_mse_rb"][k] = ((self.y64 - mu) ** 2 + v).mean(-1).cpu().numpy()
            # E|a'|² of the standard-form readout, back in the model's own units (a = a'/readout_scale)
            tr["readout_norm_rb"][k] = (rc.norm2 / self.model.readout_scale ** 2).cpu().numpy()
        if not self.has_test:
            return
        perp = self._perp_term()
        if rc is None:
            ft = self.model.forward(params, self.A0t) if perp is None else self.model.forward(params, self.A0t, perp)
        else:
            ft, Phit = self.model.readout_features(params, self.A0t, perp)
        ft = ft.double()
        if rc is not None:
            mut, vt = rc.predict(Phit)
        if self.has_ytest:
            tr["test_mse_raw"][k] = ((self.yt64 - ft) ** 2).mean(-1).cpu().numpy()
            if rc is not None:
                tr["test_mse_rb"][k] = ((self.yt64 - mut) ** 2 + vt).mean(-1).cpu().numpy()
        if k >= self.rec0:
            c = (k - self.rec0) // self.chunk_len
            self.chunk_count[c] += 1
            a = self.acc
            fn = ft.cpu().numpy()
            a["f_sum"][c] += fn
            a["f_sq"][c] += fn * fn
            if rc is not None:
                m, vv = mut.cpu().numpy(), vt.cpu().numpy()
                a["mu_sum"][c] += m
                a["mu_sq"][c] += m * m
                a["v_sum"][c] += vv

    # ---------------------------------------------------------------- loop
    def _divergence(self, where: str):
        cfg = self.cfg
        try:
            gen = torch.Generator(device=self.device).manual_seed(0)
            prm = self.model.init_params(min(cfg["replicas"], 4), gen, "prior")
            kappa = stiffness(self.model, prm, self.A0, n_iter=20, generator=gen)
            g = step_size_guidance(kappa)
            limit = g["baoab_stability_limit" if cfg["sampler"] == "baoab" else "euler_stability_limit"]
            hint = (f"the potential's stiffness at a prior draw is about {kappa:.3g} (Gauss–Newton), so try "
                    f"step_size <= {g[cfg['sampler']]:.3g} for {cfg['sampler']!r} (stability limit ~{limit:.3g})")
        except Exception as exc:  # the hint must not hide the divergence itself
            hint = f"try a step_size at least 4x smaller than {cfg['step_size']:.3g} (stiffness estimate failed: {exc})"
        U = self.sampler.energy.cpu().numpy()
        bad = np.where(~np.isfinite(U) | (U > self.U_max))[0]
        raise DivergenceError(
            f"sampler {cfg['sampler']!r} diverged {where} (replicas {bad.tolist()}: U = {U[bad].tolist()}, "
            f"blow-up threshold {self.U_max:.3g}) with step_size={cfg['step_size']:.3g} at T={cfg['temperature']:.3g} "
            f"and label scale |y|²/P={float((self.y64 ** 2).mean()):.3g}; {hint}. The time step is in units of "
            f"the Euler η on U = ½Σ(y−f)² + (T/2)Σλ‖W‖²; larger labels or inputs need smaller steps."
        )

    def run(self, progress=False):
        cfg = self.cfg
        n_steps, rec_every = cfg["n_steps"], cfg["record_every"]
        ck_every = cfg["checkpoint_every"]
        check_every = max(1, min(rec_every, 50))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_steps, initial=self.step, desc=f"{cfg['sampler']} sampling", unit="step")
        t0 = time.perf_counter()
        wall0 = self.wall
        try:
            while self.step < n_steps:
                # advance to the next step that checks, records or checkpoints
                events = (check_every, rec_every, ck_every or n_steps)
                nxt = min(n_steps, *(self.step + e - self.step % e for e in events))
                self.sampler.advance(nxt - self.step)
                if bar is not None:
                    bar.update(nxt - self.step)
                self.step = nxt
                if self.step % check_every == 0 or self.step % rec_every == 0:
                    U = self.sampler.energy
                    if not bool(torch.isfinite(U).all()) or float(U.max()) > self.U_max:
                        self._divergence(f"at step {self.step}")
                if self.step % rec_every == 0 and self.step // rec_every <= self.n_rec:
                    self.record(self.step // rec_every - 1)
                if ck_every and cfg["checkpoint"] and (self.step % ck_every == 0 or self.step == n_steps):
                    self.wall = wall0 + time.perf_counter() - t0
                    save_checkpoint(cfg["checkpoint"], self.checkpoint_payload())
        finally:
            if bar is not None:
                bar.close()
        self.wall = wall0 + time.perf_counter() - t0

    # ---------------------------------------------------------------- estimates
    def result(self) -> PosteriorSamples:
        acc = None
        if self.sampler is not None and self.sampler.acceptance() is not None:
            acc = self.sampler.acceptance()
        return _estimate(self, acceptance=acc)


def _block_layout(run, n_post_chunks_first: int, tau: float):
    """Groups of chunks (time batches) used as jackknife blocks within each replica."""
    chunks = np.arange(n_post_chunks_first, run.n_chunks)
    n_post = int(run.chunk_count[chunks].sum()) if run.has_test else None
    n_rec_post = sum(_chunk_records(run, c).size for c in chunks)
    g = int(n_rec_post // max(_BLOCK_TAU * tau, 1.0))
    g = max(1, min(g, chunks.size, max(1, math.isqrt(max(n_rec_post, 1)))))
    del n_post
    return [grp for grp in np.array_split(chunks, g) if grp.size]


def _chunk_records(run, c: int) -> np.ndarray:
    start = run.rec0 + c * run.chunk_len
    return np.arange(start, min(start + run.chunk_len, run.n_rec))


def _estimate(run, acceptance=None) -> PosteriorSamples:
    cfg, tr = run.cfg, run.traces
    R = cfg["replicas"]
    if run.n_chunks == 0:
        raise ConfigError(f"no records after burn-in: n_steps={cfg['n_steps']}, record_every={cfg['record_every']}, "
                          f"burn_in={cfg['burn_in']}; record more often or run longer")
    test_key = ("test_mse_rb" if run.rb else "test_mse_raw") if run.has_ytest else None
    norm_key = "readout_norm_rb" if run.rb else "readout_norm_raw"
    train_key = "train_mse_rb" if run.rb else "train_mse_raw"
    key_obs = [k for k in ("energy", train_key, test_key, norm_key) if k]

    # burn-in
    if cfg["burn_in"] is not None:
        d = 0
        rule = "user"
    else:
        cm = [np.nanmean(tr[k][_chunk_records(run, c)], axis=0).mean() for c in range(run.n_chunks)
              for k in [key_obs[0]]]
        d = diag.mser_truncation(cm)
        for k in key_obs[1:]:
            cm = [np.nanmean(tr[k][_chunk_records(run, c)], axis=0).mean() for c in range(run.n_chunks)]
            d = max(d, diag.mser_truncation(cm))
        rule = "MSER on replica-averaged chunk means of " + ", ".join(key_obs)
    first = run.rec0 + d * run.chunk_len
    post = slice(first, run.n_rec)
    burn_steps = first * cfg["record_every"] if cfg["burn_in"] is None else cfg["burn_in"]

    def chains(k):
        return tr[k][post].T  # [R, n]

    rhat = {k: diag.split_rhat(chains(k)) for k in tr if k != "layer_norms"}
    ess = {k: diag.effective_sample_size(chains(k)) for k in tr if k != "layer_norms"}
    taus = [diag.integrated_time(chains(k)) for k in key_obs if chains(k).shape[1] >= 4]
    tau = max(taus) if taus else 1.0
    groups = _block_layout(run, d, tau)
    n_blocks = R * len(groups)
    if n_blocks < 2:
        warnings.warn("only one error-bar block (one replica, short run): standard errors are NaN; "
                      "use replicas >= 2", RuntimeWarning, stacklevel=3)

    def block_scalar(x):  # x: [n_rec, R] -> sums [J], counts [J]
        sums, counts = [], []
        for r in range(R):
            for grp in groups:
                idx = np.concatenate([_chunk_records(run, c) for c in grp])
                sums.append(x[idx, r].sum())
                counts.append(idx.size)
        return np.array(sums), np.array(counts, dtype=float)

    def block_vec(name):
        out = []
        for r in range(R):
            for grp in groups:
                out.append(run.acc[name][grp, r].sum(axis=0))
        return np.array(out)

    def scalar_estimate(x, scale=1.0):
        s, n = block_scalar(x)
        est, se, _ = diag.jackknife(lambda S, m: S / m, s, n)
        return Estimate(scale * float(est), scale * float(se))

    train = scalar_estimate(tr[train_key])
    train_raw = scalar_estimate(tr["train_mse_raw"])
    lamN = run.network.priors[-1] / _readout_count(run.network)
    qbar = scalar_estimate(tr[norm_key], lamN)
    qbar_raw = scalar_estimate(tr["readout_norm_raw"], lamN)
    layer_norms = [scalar_estimate(tr["layer_norms"][:, :, l]) for l in range(run.L + 1)]

    def error_estimate(mse_key, mean_name):
        s_tot, n = block_scalar(tr[mse_key])
        s_mu = block_vec(mean_name)
        ytest = run.data["y_test"]

        def stat(S, m):
            tot = S[0] / m
            bias = np.mean((ytest - S[1:] / m) ** 2)
            return np.array([tot, bias, tot - bias])

        est, se, corr = diag.jackknife(stat, np.concatenate([s_tot[:, None], s_mu], axis=1), n)
        bias = corr[1] if np.isfinite(corr[1]) else est[1]
        return ErrorEstimate(Estimate(est[0], se[0]), Estimate(bias, se[1]), Estimate(est[0] - bias, se[2]))

    gen_err = gen_raw = vr = None
    pm = pv = pse = None
    if run.has_test:
        counts = np.array([sum(run.chunk_count[grp]) for _ in range(R) for grp in groups])
        mname, sqname = ("mu_sum", "mu_sq") if run.rb else ("f_sum", "f_sq")
        s_mu = block_vec(mname)
        pm, pse, _ = diag.jackknife(lambda S, m: S / m, s_mu, counts)
        n_tot = counts.sum()
        second = block_vec(sqname).sum(0) / n_tot
        pv = second - pm ** 2
        if run.rb:
            pv = pv + block_vec("v_sum").sum(0) / n_tot
        pv = np.maximum(pv, 0.0)
        if run.has_ytest:
            gen_raw = error_estimate("test_mse_raw", "f_sum")
            gen_err = error_estimate("test_mse_rb", "mu_sum") if run.rb else gen_raw
            if run.rb and gen_err.total.stderr > 0:
                vr = float((gen_raw.total.stderr / gen_err.total.stderr) ** 2)

    diagnostics = Diagnostics(
        rhat=rhat, ess=ess,
        acceptance=None if acceptance is None else float(np.mean(acceptance)),
        acceptance_per_replica=acceptance, burn_in_steps=int(burn_steps), burn_in_rule=rule,
        tau_records=float(tau), n_blocks=n_blocks,
        steps_per_second=cfg["n_steps"] / run.wall if run.wall > 0 else float("nan"), wall_time=run.wall,
    )
    return PosteriorSamples(
        generalization_error=gen_err, generalization_error_raw=gen_raw, variance_reduction=vr,
        train_error=train, train_error_raw=train_raw, qbar_readout=qbar, qbar_readout_raw=qbar_raw,
        layer_norms=layer_norms, prediction_mean=pm, prediction_var=pv, prediction_mean_stderr=pse,
        diagnostics=diagnostics, traces=tr,
        record_steps=(np.arange(run.n_rec) + 1) * cfg["record_every"], config=dict(cfg),
    )


# ------------------------------------------------------------------------------------ public API
def sample_posterior(network, X, y, *, temperature, sampler="baoab", step_size=None, n_steps, burn_in=None,
                     replicas=8, record_every=None, X_test=None, y_test=None, seed=0, device="cpu",
                     dtype="float32", checkpoint=None, checkpoint_every=None, friction=None, init="normal",
                     input_reduction="auto", rao_blackwell=True, progress=False,
                     scaling="standard") -> PosteriorSamples:
    """Sample the Bayesian posterior of a finite-width network and measure ε_g, Q̄_L and more.

    Target: p(θ|D) ∝ exp[−(1/2T) Σ_μ (y^μ − f(x^μ))² − Σ_l λ_l ‖W^(l)‖²/2] (DESIGN.md §2), full batch,
    with R independent replicas run as one batch.

    Parameters
    ----------
    network : finwidth.Network or finwidth.convnet.ConvNetwork
        Widths, activation, priors λ_0..λ_L (precisions) and optional bias variances; or the
        two-layer CNN with non-overlapping patches (simulated by
        :class:`finwidth.simulate.cnn.TwoLayerCNN`).
    X : array (P, N_0), y : array (P,)
        Training data (float64 is converted to ``dtype`` on ``device``).
    temperature : float
        T > 0: the likelihood variance, and the temperature of the Langevin dynamics on U.
    sampler : {"baoab", "euler", "mala", "gibbs"}
        ``"euler"`` reproduces the papers' update θ ← θ − η∇U + sqrt(2ηT)ξ (O(η) bias);
        ``"baoab"`` underdamped Langevin (O(h²) bias, much larger stable steps); ``"mala"``
        Metropolis-adjusted, exact; ``"gibbs"`` exact block Gibbs, linear activation only (numpy,
        float64; ``n_steps`` counts sweeps).
    step_size : float
        Time step of the dynamics on U at temperature T, in the units of the papers' Euler η
        (BAOAB: unit mass). Ignored (may be None) for ``"gibbs"``. See
        :func:`finwidth.simulate.suggest_step_size`.
    n_steps : int
        Total steps (sweeps for Gibbs), burn-in included.
    burn_in : int, optional
        Steps discarded before averaging. Default None: the MSER rule on the replica-averaged
        traces (energy, train error, test error, readout norm), at the granularity of 1/64 of the
        run, searched over the first half.
    replicas : int
        Independent chains R (≥ 2 for error bars).
    record_every : int, optional
        Steps between recorded samples (default n_steps // 1000, at least 1).
    X_test, y_test : arrays, optional
        Test inputs (P_t, N_0) and labels (P_t,): predictions and ε_g.
    seed : int
        Seeds every random draw; a run is reproducible (and resumable bit-for-bit on the same
        machine and thread count).
    device : str
        ``"cpu"`` or ``"cuda"``.
    dtype : {"float32", "float64"}
        Parameter precision (energies and the Rao–Blackwell linear algebra are float64 anyway).
    checkpoint : path, optional
        File written atomically every ``checkpoint_every`` steps (default n_steps // 20) and at the
        end; :func:`resume` continues a killed run from it.
    friction : float, optional
        BAOAB friction γ (1/time). Default 2 sqrt(T min λ_l): critical damping of the
        prior-dominated directions, the slowest ones of a wide network.
    init : {"normal", "prior", "readout_conditional"}
        ``"normal"``: all weights N(0, 1) as in the papers' code; ``"prior"``: from the prior;
        ``"readout_conditional"``: hidden layers from the prior and the readout drawn exactly from
        its conditional posterior (starts near the data fit, shortens burn-in). The same for every
        model (N(0, 1) for all weights also in mean-field scaling).
    input_reduction : bool or "auto"
        Simulate only the first-layer weights in the span of the training inputs (exact; see
        docs/sampling.md). ``"auto"`` uses it when the inputs' rank r is below N_0.
    rao_blackwell : bool
        Use the readout's exact conditional posterior for test/train errors, predictions and
        Q̄_L (exact, lower variance). Raw estimates are always reported too. For the two-layer models
        the readout is written in the standard form f = Φ a'/sqrt(M), a' ~ N(0, 1/λ') (λ' = λ_1 N for
        the mean-field FCN, λ_1 C for the mean-field CNN), so the same conditional applies.
    progress : bool
        Show a tqdm progress bar.
    scaling : {"standard", "mean_field"}
        Output scale of the readout. ``"standard"``: f = a·σ(h)/sqrt(N) (DESIGN.md §2).
        ``"mean_field"``: f = a·σ(h)/N for a ``Network`` with one hidden layer and no biases
        (:class:`finwidth.simulate.meanfield.TwoLayerFCN`), f = Σ_{c,i} a_ci σ(h_ci)/(C sqrt(Ñ)) for
        a ``ConvNetwork`` (standard: 1/sqrt(C Ñ)). The prior a ~ N(0, 1/λ_L) is the same in both:
        a mean-field FCN is the standard one with readout precision λ_1 N in function space, but its
        Langevin dynamics (hence step sizes) differ. The two-layer models have no input reduction
        (``input_reduction=True`` is an error) and no ``sampler="gibbs"``.

    Returns
    -------
    PosteriorSamples
        ``qbar_readout`` is λ_L ⟨|a|²⟩/M with M the number of readout weights (N_L; C·Ñ for the
        CNN): the posterior readout norm over its prior value, 1 in the prior and at infinite width.
        For the standard FCN it is Q̄_L (BPKR §A.9); for the mean-field FCN it equals Q̄_1 of the
        equivalent standard network (readout precision λ_1 N).

    Raises
    ------
    ConfigError
        Invalid shapes, values or options.
    DivergenceError
        NaN/inf or energy blow-up during the run; the message suggests a step size.
    """
    from finwidth.convnet import ConvNetwork
    from finwidth.network import Network

    if not isinstance(network, (Network, ConvNetwork)):
        raise ConfigError(f"network must be a finwidth.Network or finwidth.convnet.ConvNetwork, "
                          f"got {type(network).__name__}")
    if scaling not in _SCALINGS:
        raise ConfigError(f"scaling must be 'standard' or 'mean_field', got {scaling!r}")
    two_layer = _two_layer(network, scaling)
    X = _array(X, "X", 2)
    P, N0 = X.shape
    if isinstance(network, ConvNetwork) and N0 != network.input_size:
        raise ConfigError(f"X has {N0} features but the ConvNetwork's input_size is {network.input_size}")
    y = _array(y, "y", 1, n_rows=P)
    Xt = None if X_test is None else _array(X_test, "X_test", 2, n_cols=N0)
    if y_test is not None and Xt is None:
        raise ConfigError("y_test was given without X_test")
    yt = None if y_test is None else _array(y_test, "y_test", 1, n_rows=Xt.shape[0])
    temperature = _positive(temperature, "temperature")
    n_steps = _positive(n_steps, "n_steps", integer=True)
    replicas = _positive(replicas, "replicas", integer=True)
    record_every = max(1, n_steps // 1000) if record_every is None else _positive(record_every, "record_every", integer=True)
    if record_every > n_steps:
        raise ConfigError(f"record_every={record_every} exceeds n_steps={n_steps}: nothing would be recorded")
    if burn_in is not None:
        burn_in = _positive(burn_in, "burn_in", integer=True, allow_zero=True)
        if burn_in >= n_steps - record_every + 1:
            raise ConfigError(f"burn_in={burn_in} leaves no recorded sample out of n_steps={n_steps}")
    if sampler not in ("euler", "baoab", "mala", "gibbs"):
        raise ConfigError(f"sampler must be 'euler', 'baoab', 'mala' or 'gibbs', got {sampler!r}")
    if sampler != "gibbs":
        if step_size is None:
            raise ConfigError(f"sampler {sampler!r} needs a step_size (see finwidth.simulate.suggest_step_size)")
        step_size = _positive(step_size, "step_size")
    if friction is not None:
        if sampler != "baoab":
            raise ConfigError(f"friction applies to sampler='baoab' only, not {sampler!r}")
        friction = _positive(friction, "friction")
    if init not in ("normal", "prior", "readout_conditional"):
        raise ConfigError(f"init must be 'normal', 'prior' or 'readout_conditional', got {init!r}")
    if input_reduction not in (True, False, "auto"):
        raise ConfigError(f"input_reduction must be True, False or 'auto', got {input_reduction!r}")
    what = "the CNN" if isinstance(network, ConvNetwork) else "scaling='mean_field'"
    if two_layer:
        if input_reduction is True:
            raise ConfigError(f"input_reduction=True is not available for {what} (the two-layer models simulate "
                              f"the full first layer); use input_reduction='auto' or False")
        input_reduction = False
        if sampler == "gibbs":
            raise ConfigError(f"sampler='gibbs' is not available for {what}; for a linear mean-field FCN, sample "
                              f"the equivalent standard network (readout prior λ_1·N) with Gibbs")
    elif input_reduction == "auto":
        input_reduction = bool(InputReduction.from_inputs(X).rank < N0)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    as_torch_dtype(dtype)
    _resolve_device(device)
    if checkpoint is not None and sampler == "gibbs":
        raise ConfigError("checkpointing is not available for sampler='gibbs' (exact sweeps are cheap: rerun with the same seed)")
    if checkpoint_every is not None:
        checkpoint_every = _positive(checkpoint_every, "checkpoint_every", integer=True)
    elif checkpoint is not None:
        checkpoint_every = max(1, n_steps // 20)
    cfg = dict(temperature=temperature, sampler=sampler, step_size=step_size, n_steps=n_steps, burn_in=burn_in,
               replicas=replicas, record_every=record_every, seed=int(seed), device=str(device),
               dtype=str(dtype).replace("torch.", ""), checkpoint=None if checkpoint is None else str(checkpoint),
               checkpoint_every=checkpoint_every, friction=friction, init=init,
               input_reduction=bool(input_reduction), rao_blackwell=bool(rao_blackwell), scaling=scaling,
               input_basis="lower", noise_streams="replica" if _resolve_device(device).type == "cpu" else "single")
    data = {"X": X, "y": y, "X_test": Xt, "y_test": yt}
    if sampler == "gibbs":
        from finwidth.simulate.gibbs_adapter import run_gibbs

        return run_gibbs(network, data, cfg)
    run = _Run(network, data, cfg)
    try:
        run.initialize()
        run.run(progress)
        return run.result()
    finally:
        run.close()


def resume(checkpoint_path, *, progress=False) -> PosteriorSamples:
    """Continue a run from its checkpoint (written by ``sample_posterior(..., checkpoint=path)``).

    The run continues with the saved random-generator states, so the result equals that of the
    uninterrupted run (bit-identical on the same machine; equal to rounding on another thread
    count), with no record lost or duplicated. A finished run just returns its result.
    """
    from finwidth.convnet import ConvNetwork
    from finwidth.network import Network

    state = load_checkpoint(checkpoint_path)
    try:
        kind = state.get("network_kind", "fcn")  # older checkpoints: always a Network
        if kind not in ("fcn", "conv"):
            raise ValueError(f"unknown network kind {kind!r}")
        net = (ConvNetwork if kind == "conv" else Network)(**state["network"])
        cfg, data = state["cfg"], state["data"]
        cfg["checkpoint"] = str(checkpoint_path)
        run = _Run(net, data, cfg)
        run.load_state(state["run"])
    except (KeyError, TypeError, ValueError) as exc:
        from finwidth.errors import DataError

        raise DataError(f"checkpoint {str(checkpoint_path)!r} is incomplete or inconsistent ({exc})") from exc
    try:
        run.run(progress)
        return run.result()
    finally:
        run.close()


def suggest_step_size(network, X, y, *, temperature, replicas=4, seed=0, input_reduction="auto",
                      scaling="standard") -> dict[str, Any]:
    """Estimate the stiffness κ_max of U at prior draws and suggest step sizes for each sampler.

    Returns a dict with ``stiffness`` and the suggestions of
    :func:`finwidth.simulate.guidance.step_size_guidance` (``euler``, ``mala``, ``baoab`` and the
    stability limits) plus the default BAOAB ``friction``. A guide, not a guarantee: check
    ε_g against a run at half the step (or MALA's acceptance). ``network`` and ``scaling`` as in
    :func:`sample_posterior`.
    """
    X = _array(X, "X", 2)
    y = _array(y, "y", 1, n_rows=X.shape[0])
    temperature = _positive(temperature, "temperature")
    if scaling not in _SCALINGS:
        raise ConfigError(f"scaling must be 'standard' or 'mean_field', got {scaling!r}")
    two_layer = _two_layer(network, scaling)
    red = InputReduction.from_inputs(X) if input_reduction and not two_layer else None
    if input_reduction == "auto" and red is not None and red.rank >= X.shape[1]:
        red = None
    A0 = red.reduce(X) if red else X
    model = _build_model(network, X.shape[1], temperature, scaling, first_layer_inputs=A0.shape[1],
                         dtype=torch.float64)
    A0 = model.prepare_inputs(A0) if two_layer else torch.as_tensor(A0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(int(seed))
    params = model.init_params(replicas, gen, "prior")
    kappa = stiffness(model, params, A0, generator=gen)
    out: dict[str, Any] = {"stiffness": kappa}
    out.update(step_size_guidance(kappa))
    out["friction"] = default_friction(network, temperature)
    return out
