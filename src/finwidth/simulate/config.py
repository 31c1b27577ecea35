"""The configuration of a sampling run: one frozen dataclass, validated once, saved in checkpoints.

:func:`run_config` checks the user's arguments of :func:`finwidth.sample_posterior` and returns a
:class:`RunConfig` (every default resolved) with the validated arrays; the loop, the recorder and the
estimates read only the config.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from finwidth.errors import ConfigError
from finwidth.inputs import (
    InputReduction,
    as_inputs,
    check_truncation,
    positive_float,
    positive_int,
    validate_targets,
    validate_temperature,
)
from finwidth.network import check_scaling

__all__ = ["INITS", "OPTION_KEYS", "SAMPLERS", "RunConfig", "check_options", "default_record_every", "record_cost",
           "run_config"]

SAMPLERS = ("baoab", "euler", "mala", "gibbs")
INITS = ("normal", "prior", "readout_conditional")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a sampling run (the arguments of :func:`finwidth.sample_posterior`
    with their defaults resolved). Read-only; ``config["name"]`` works like ``config.name``.

    Records are taken at steps ``record_start, record_start + record_every, ...`` up to ``n_steps``
    (``record_start`` defaults to ``record_every``); records at steps ≤ ``burn_in`` are discarded
    from the estimates (``burn_in=None``: the MSER rule of :mod:`finwidth.simulate.estimates`).
    ``input_basis`` (``"lower"``: triangular reduced inputs, or ``"svd"``) and ``noise_streams``
    (``"replica"``: one random stream per replica, CPU; ``"single"``: one for all, other devices)
    choose implementations that sample the same law. ``input_rank`` (None: exact) is the number of
    input directions a truncated input reduction keeps, resolved from ``input_rank`` or
    ``input_tolerance`` of :func:`finwidth.sample_posterior` (an approximation, docs/sampling.md).
    """

    temperature: float
    n_steps: int
    record_every: int
    sampler: str = "baoab"
    step_size: float | None = None
    burn_in: int | None = None
    replicas: int = 8
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    checkpoint: str | None = None
    checkpoint_every: int | None = None
    friction: float | None = None
    init: str = "normal"
    input_reduction: bool = False
    rao_blackwell: bool = True
    scaling: str = "standard"
    input_basis: str = "lower"
    noise_streams: str = "replica"
    record_start: int | None = None
    input_rank: int | None = None

    @property
    def first_record(self) -> int:
        """Step (1-based) of the first record."""
        return self.record_every if self.record_start is None else self.record_start

    @property
    def n_records(self) -> int:
        first = self.first_record
        return 0 if first > self.n_steps else (self.n_steps - first) // self.record_every + 1

    def record_steps(self) -> np.ndarray:
        """The step (1-based) of each record."""
        return self.first_record + self.record_every * np.arange(self.n_records)

    def burn_in_records(self) -> int:
        """Number of leading records at steps ≤ ``burn_in`` (0 with ``burn_in=None``)."""
        if self.burn_in is None or self.burn_in < self.first_record:
            return 0
        return min((self.burn_in - self.first_record) // self.record_every + 1, self.n_records)

    def __getitem__(self, key: str) -> Any:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        unknown = set(d) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown run options {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def _device(device: Any):
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device ({exc})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' requested but torch.cuda.is_available() is False; use device='cpu'")
    return dev


TARGET_RECORDS = 200   # records a run aims at when record_every is not given
MIN_RECORDS = 50       # ... and never fewer (the burn-in rule and the error-bar blocks need them)
RECORD_BUDGET = 8      # records are spaced at least this many times their cost in steps


def record_cost(network, n_train: int, n_test: int, n_inputs: int, *, rank: int | None = None,
                scaling: str = "standard", sampler: str = "baoab") -> float:
    """The cost of one record in steps of the sampler, from a multiply-add count per replica.

    A Langevin step is a forward and a backward pass on the P training points, about 3 P F with F the
    multiply-adds of one forward pass per point (the first layer on r inputs under input reduction). A
    record is a forward pass on the training and the P_t test points, (P + P_t) F, plus under input
    reduction the fresh W_perp x_perp term, P_t N_1 (N_0 − r), plus the Rao–Blackwell readout: the
    Gram matrix and its eigendecomposition, P M m + 4 m³ with m = min(P, M), and the test
    predictions, P_t M m, for M readout weights. An exact Gibbs sweep costs about (L + 1) P³: records
    are cheap next to it. At the papers' size (MNIST 0/1, P = 100, P_t = 1000, N_1 = 500, input
    reduction) this gives 30 steps per record; measured: 56 (docs/sampling.md, "Cost of a record").
    """
    from finwidth.convnet import ConvNetwork

    P, Pt = int(n_train), int(n_test)
    if isinstance(network, ConvNetwork):
        F = network.channels * network.n_patches * (network.patch_features + 1)
        perp = 0.0
    else:
        r = n_inputs if rank is None else rank
        widths = list(network.widths)
        F = widths[0] * r + sum(a * b for a, b in zip(widths[1:], widths[:-1])) + widths[-1]
        perp = Pt * widths[0] * (n_inputs - r)
    M = network.readout_spec(scaling).size
    m = min(P, M)
    record = (P + Pt) * F + perp + P * M * m + 4 * m ** 3 + Pt * M * m
    if sampler == "gibbs":
        step = (getattr(network, "depth", 1) + 1) * P ** 3 + 3 * P * F
    else:
        step = 3 * P * F
    return record / step


def default_record_every(n_steps: int, cost: float = 0.0) -> int:
    """``record_every`` when not given: about ``TARGET_RECORDS`` records, spaced at least
    ``RECORD_BUDGET`` × the cost of a record (in steps, :func:`record_cost`) so that records take at
    most ~1/8 of the run by the count of multiply-adds, but never fewer than ``MIN_RECORDS`` records."""
    every = max(math.ceil(n_steps / TARGET_RECORDS), math.ceil(RECORD_BUDGET * cost), 1)
    return max(1, min(every, n_steps // MIN_RECORDS))


def is_two_layer(network, scaling: str) -> bool:
    """True when the run uses the two-layer models (mean-field FCN or CNN) instead of BatchedMLP."""
    from finwidth.convnet import ConvNetwork

    return isinstance(network, ConvNetwork) or scaling == "mean_field"


OPTION_KEYS = ("friction", "init", "input_reduction", "rao_blackwell", "checkpoint_every", "scaling", "input_rank",
               "input_tolerance")
"""Options of :func:`finwidth.sample_posterior` that a sweep spec passes through ``simulation.options``."""


def check_options(*, sampler="baoab", step_size=None, n_steps, burn_in=None, replicas=8, record_every=None, seed=0,
                  dtype="float32", friction=None, init="normal", input_reduction="auto", rao_blackwell=True,
                  scaling="standard", checkpoint_every=None, input_rank=None, input_tolerance=None) -> dict[str, Any]:
    """Validate the options of a run that do not depend on the data (names and meanings as in
    :func:`finwidth.sample_posterior`): types, ranges, and the rules between them. Returns them
    cleaned. Used by :func:`run_config` and by the sweep specs at load time (no torch needed)."""
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be 'euler', 'baoab', 'mala' or 'gibbs', got {sampler!r}")
    n_steps = positive_int(n_steps, "n_steps")
    replicas = positive_int(replicas, "replicas")
    if record_every is not None:
        record_every = positive_int(record_every, "record_every")
        if record_every > n_steps:
            raise ConfigError(f"record_every={record_every} exceeds n_steps={n_steps}: nothing would be recorded")
    if burn_in is not None:
        burn_in = positive_int(burn_in, "burn_in", allow_zero=True)
        if burn_in >= n_steps - (record_every or 1) + 1:
            raise ConfigError(f"burn_in={burn_in} leaves no recorded sample out of n_steps={n_steps}")
    if sampler != "gibbs":
        if step_size is None:
            raise ConfigError(f"sampler {sampler!r} needs a step_size (see finwidth.simulate.suggest_step_size)")
        step_size = positive_float(step_size, "step_size")
    if friction is not None:
        if sampler != "baoab":
            raise ConfigError(f"friction applies to sampler='baoab' only, not {sampler!r}")
        friction = positive_float(friction, "friction")
    if not isinstance(init, str) or init not in INITS:
        raise ConfigError(f"init must be 'normal', 'prior' or 'readout_conditional', got {init!r}")
    if not (isinstance(input_reduction, bool) or input_reduction == "auto"):
        raise ConfigError(f"input_reduction must be True, False or 'auto', got {input_reduction!r}")
    input_rank, input_tolerance = check_truncation(input_rank, input_tolerance)
    if input_reduction is False and (input_rank is not None or input_tolerance is not None):
        raise ConfigError("input_rank/input_tolerance truncate the input reduction; they need "
                          "input_reduction=True or 'auto', not False")
    if not isinstance(rao_blackwell, bool):
        raise ConfigError(f"rao_blackwell must be True or False, got {rao_blackwell!r}")
    scaling = check_scaling(scaling)
    seed = positive_int(seed, "seed", allow_zero=True)
    dtype = str(dtype).replace("torch.", "")
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if checkpoint_every is not None:
        checkpoint_every = positive_int(checkpoint_every, "checkpoint_every")
    return dict(sampler=sampler, step_size=step_size, n_steps=n_steps, burn_in=burn_in, replicas=replicas,
                record_every=record_every, seed=seed, dtype=dtype, friction=friction, init=init,
                input_reduction=input_reduction, rao_blackwell=rao_blackwell, scaling=scaling,
                checkpoint_every=checkpoint_every, input_rank=input_rank, input_tolerance=input_tolerance)


def run_config(network, X, y, *, temperature, sampler="baoab", step_size=None, n_steps, burn_in=None, replicas=8,
               record_every=None, X_test=None, y_test=None, seed=0, device="cpu", dtype="float32",
               checkpoint=None, checkpoint_every=None, friction=None, init="normal", input_reduction="auto",
               rao_blackwell=True, scaling="standard", input_rank=None,
               input_tolerance=None) -> tuple[RunConfig, dict[str, np.ndarray | None]]:
    """Validate the arguments of :func:`finwidth.sample_posterior` (same names and meanings) and
    resolve their defaults. Returns the config and the data ``{"X", "y", "X_test", "y_test"}``
    (float64). Raises :class:`ConfigError` naming the bad argument."""
    from finwidth.convnet import ConvNetwork
    from finwidth.network import Network
    from finwidth.simulate.guidance import default_friction

    if not isinstance(network, (Network, ConvNetwork)):
        raise ConfigError(f"network must be a finwidth.Network or finwidth.convnet.ConvNetwork, "
                          f"got {type(network).__name__}")
    o = check_options(sampler=sampler, step_size=step_size, n_steps=n_steps, burn_in=burn_in, replicas=replicas,
                      record_every=record_every, seed=seed, dtype=dtype, friction=friction, init=init,
                      input_reduction=input_reduction, rao_blackwell=rao_blackwell, scaling=scaling,
                      checkpoint_every=checkpoint_every, input_rank=input_rank, input_tolerance=input_tolerance)
    truncate = o["input_rank"] is not None or o["input_tolerance"] is not None
    sampler, scaling, input_reduction, n_steps = o["sampler"], o["scaling"], o["input_reduction"], o["n_steps"]
    two_layer = is_two_layer(network, scaling)
    X = as_inputs(X, "X")
    P, N0 = X.shape
    if isinstance(network, ConvNetwork) and N0 != network.input_size:
        raise ConfigError(f"X has {N0} features but the ConvNetwork's input_size is {network.input_size}")
    # targets (P, D) mean D outputs (a D × N_L readout), as in the theory's fit(X, Y)
    y = validate_targets(y, P, "y", multi_output=True)
    Xt = None if X_test is None else as_inputs(X_test, "X_test")
    if Xt is not None and Xt.shape[1] != N0:
        raise ConfigError(f"X_test has {Xt.shape[1]} columns (features), expected {N0}")
    if y_test is not None and Xt is None:
        raise ConfigError("y_test was given without X_test")
    yt = None if y_test is None else validate_targets(y_test, Xt.shape[0], "y_test", multi_output=y.ndim == 2)
    if yt is not None and yt.shape[1:] != y.shape[1:]:
        raise ConfigError(f"y_test has {yt.shape[1] if yt.ndim == 2 else 1} outputs per point but y has "
                          f"{y.shape[1] if y.ndim == 2 else 1}")
    temperature = validate_temperature(temperature, allow_zero=False)
    friction = o["friction"]
    if friction is None and sampler == "baoab":
        friction = default_friction(network, temperature)
    what = "the CNN" if isinstance(network, ConvNetwork) else "scaling='mean_field'"
    red = None
    if two_layer:
        if input_reduction is True:
            raise ConfigError(f"input_reduction=True is not available for {what} (the two-layer models simulate "
                              f"the full first layer); use input_reduction='auto' or False")
        if truncate:
            raise ConfigError(f"input_rank/input_tolerance are not available for {what} (no input reduction)")
        input_reduction = False
        if sampler == "gibbs":
            raise ConfigError(f"sampler='gibbs' is not available for {what}; for a linear mean-field FCN, sample "
                              f"the equivalent standard network (readout prior λ_1·N) with Gibbs")
        if y.ndim == 2:
            raise ConfigError(f"{what} has one output; y must be a vector (or one column), got shape {y.shape}")
        network.readout_spec(scaling)  # a readout the network defines in this scaling
    elif input_reduction is not False:
        red = InputReduction.from_inputs(X, rank=o["input_rank"], tolerance=o["input_tolerance"])
        if input_reduction == "auto":
            input_reduction = truncate or bool(red.rank < N0)
    if sampler == "gibbs":
        if not network.activation.identity or network.bias is not None:
            raise ConfigError("sampler='gibbs' is exact only for linear networks without biases, got activation "
                              f"{network.activation.name!r}{' with biases' if network.bias is not None else ''}")
        if _device(device).type != "cpu":
            raise ConfigError("sampler='gibbs' runs in numpy on the CPU; use device='cpu'")
    dev = _device(device)
    record_every = o["record_every"]
    if record_every is None:
        cost = record_cost(network, P, 0 if Xt is None else Xt.shape[0], N0, scaling=scaling, sampler=sampler,
                           rank=red.rank if input_reduction else None)
        record_every = default_record_every(n_steps, cost)
        if o["burn_in"] is not None and o["burn_in"] >= n_steps - record_every + 1:
            raise ConfigError(f"burn_in={o['burn_in']} leaves no recorded sample out of n_steps={n_steps} with "
                              f"record_every={record_every}")
    checkpoint_every = o["checkpoint_every"]
    if checkpoint_every is None and checkpoint is not None:
        checkpoint_every = max(1, n_steps // 20)
    cfg = RunConfig(temperature=temperature, sampler=sampler, step_size=o["step_size"], n_steps=n_steps,
                    burn_in=o["burn_in"], replicas=o["replicas"], record_every=record_every, seed=o["seed"],
                    device=str(device), dtype=o["dtype"], checkpoint=None if checkpoint is None else str(checkpoint),
                    checkpoint_every=checkpoint_every, friction=friction, init=o["init"],
                    input_reduction=bool(input_reduction), rao_blackwell=o["rao_blackwell"], scaling=scaling,
                    input_basis="lower", input_rank=red.rank if truncate else None,
                    noise_streams="replica" if dev.type == "cpu" and sampler != "gibbs" else "single")
    return cfg, {"X": X, "y": y, "X_test": Xt, "y_test": yt}
