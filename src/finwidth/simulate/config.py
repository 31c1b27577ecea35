"""The configuration of a sampling run: one frozen dataclass, validated once, saved in checkpoints.

:func:`run_config` checks the user's arguments of :func:`finwidth.sample_posterior` and returns a
:class:`RunConfig` (every default resolved) with the validated arrays; the loop, the recorder and the
estimates read only the config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from finwidth.errors import ConfigError
from finwidth.inputs import (
    InputReduction,
    as_inputs,
    positive_float,
    positive_int,
    validate_targets,
    validate_temperature,
)
from finwidth.network import check_scaling

__all__ = ["INITS", "SAMPLERS", "RunConfig", "default_record_every", "run_config"]

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
    choose implementations that sample the same law.
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


def default_record_every(n_steps: int, n_test: int) -> int:
    """``record_every`` when not given: n_steps // 1000, at least 1."""
    return max(1, n_steps // 1000)


def is_two_layer(network, scaling: str) -> bool:
    """True when the run uses the two-layer models (mean-field FCN or CNN) instead of BatchedMLP."""
    from finwidth.convnet import ConvNetwork

    return isinstance(network, ConvNetwork) or scaling == "mean_field"


def run_config(network, X, y, *, temperature, sampler="baoab", step_size=None, n_steps, burn_in=None, replicas=8,
               record_every=None, X_test=None, y_test=None, seed=0, device="cpu", dtype="float32",
               checkpoint=None, checkpoint_every=None, friction=None, init="normal", input_reduction="auto",
               rao_blackwell=True, scaling="standard") -> tuple[RunConfig, dict[str, np.ndarray | None]]:
    """Validate the arguments of :func:`finwidth.sample_posterior` (same names and meanings) and
    resolve their defaults. Returns the config and the data ``{"X", "y", "X_test", "y_test"}``
    (float64). Raises :class:`ConfigError` naming the bad argument."""
    from finwidth.convnet import ConvNetwork
    from finwidth.network import Network
    from finwidth.simulate.guidance import default_friction
    from finwidth.simulate.networks import as_torch_dtype

    if not isinstance(network, (Network, ConvNetwork)):
        raise ConfigError(f"network must be a finwidth.Network or finwidth.convnet.ConvNetwork, "
                          f"got {type(network).__name__}")
    scaling = check_scaling(scaling)
    two_layer = is_two_layer(network, scaling)
    X = as_inputs(X, "X")
    P, N0 = X.shape
    if isinstance(network, ConvNetwork) and N0 != network.input_size:
        raise ConfigError(f"X has {N0} features but the ConvNetwork's input_size is {network.input_size}")
    y = validate_targets(y, P, "y", multi_output=network.n_outputs > 1)
    Xt = None if X_test is None else as_inputs(X_test, "X_test")
    if Xt is not None and Xt.shape[1] != N0:
        raise ConfigError(f"X_test has {Xt.shape[1]} columns (features), expected {N0}")
    if y_test is not None and Xt is None:
        raise ConfigError("y_test was given without X_test")
    yt = None if y_test is None else validate_targets(y_test, Xt.shape[0], "y_test", multi_output=y.ndim == 2)
    temperature = validate_temperature(temperature, allow_zero=False)
    n_steps = positive_int(n_steps, "n_steps")
    replicas = positive_int(replicas, "replicas")
    if record_every is None:
        record_every = default_record_every(n_steps, 0 if Xt is None else Xt.shape[0])
    record_every = positive_int(record_every, "record_every")
    if record_every > n_steps:
        raise ConfigError(f"record_every={record_every} exceeds n_steps={n_steps}: nothing would be recorded")
    if burn_in is not None:
        burn_in = positive_int(burn_in, "burn_in", allow_zero=True)
        if burn_in >= n_steps - record_every + 1:
            raise ConfigError(f"burn_in={burn_in} leaves no recorded sample out of n_steps={n_steps}")
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be 'euler', 'baoab', 'mala' or 'gibbs', got {sampler!r}")
    if sampler != "gibbs":
        if step_size is None:
            raise ConfigError(f"sampler {sampler!r} needs a step_size (see finwidth.simulate.suggest_step_size)")
        step_size = positive_float(step_size, "step_size")
    if friction is not None:
        if sampler != "baoab":
            raise ConfigError(f"friction applies to sampler='baoab' only, not {sampler!r}")
        friction = positive_float(friction, "friction")
    elif sampler == "baoab":
        friction = default_friction(network, temperature)
    if init not in INITS:
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
        if network.n_outputs > 1 or y.ndim == 2:
            raise ConfigError(f"{what} has one output; y must be a vector")
    elif input_reduction == "auto":
        input_reduction = bool(InputReduction.from_inputs(X).rank < N0)
    if sampler == "gibbs":
        if not network.activation.identity or network.bias is not None:
            raise ConfigError("sampler='gibbs' is exact only for linear networks without biases, got activation "
                              f"{network.activation.name!r}{' with biases' if network.bias is not None else ''}")
        if _device(device).type != "cpu":
            raise ConfigError("sampler='gibbs' runs in numpy on the CPU; use device='cpu'")
    seed = positive_int(seed, "seed", allow_zero=True)
    dtype = str(dtype).replace("torch.", "")
    as_torch_dtype(dtype)
    dev = _device(device)
    if checkpoint_every is not None:
        checkpoint_every = positive_int(checkpoint_every, "checkpoint_every")
    elif checkpoint is not None:
        checkpoint_every = max(1, n_steps // 20)
    cfg = RunConfig(temperature=temperature, sampler=sampler, step_size=step_size, n_steps=n_steps, burn_in=burn_in,
                    replicas=replicas, record_every=record_every, seed=seed, device=str(device), dtype=dtype,
                    checkpoint=None if checkpoint is None else str(checkpoint), checkpoint_every=checkpoint_every,
                    friction=friction, init=init, input_reduction=bool(input_reduction),
                    rao_blackwell=bool(rao_blackwell), scaling=scaling, input_basis="lower",
                    noise_streams="replica" if dev.type == "cpu" and sampler != "gibbs" else "single")
    return cfg, {"X": X, "y": y, "X_test": Xt, "y_test": yt}
