"""Experiment specifications: validated task configs, TOML sweeps, grid expansion and hashing.

A *sweep* is a TOML file (or dict) whose leaves may be lists; the grid of tasks is the Cartesian
product of those lists, except for groups of keys declared in ``[sweep] zip``, which vary together.
Each grid point is validated into a :class:`TaskConfig` (pydantic v2, unknown keys rejected) and
keyed by :func:`task_key`, a hash of its canonical JSON (:func:`canonical_json`).

Which lists are sweeps? A list is a sweep axis, except for the keys that hold a list by nature
(``data.classes``, ``network.widths``, ``network.priors``, ``network.bias``, ``theory.models``),
for which a *list of lists* is the sweep axis. ``network.width = [50, 100]`` therefore sweeps the
hidden width, and ``network.widths = [[50, 50], [100, 100]]`` sweeps two-layer networks.

Example (``examples/demo.toml``)::

    temperature = 1e-3

    [sweep]
    name = "demo"

    [data]
    name = "mnist"
    classes = [0, 1]
    n_train = 100
    n_test = 1000

    [network]
    activation = "erf"
    width = [50, 100, 200, 500, 1000]
    prior = 1.0

    [theory]
    models = ["nngp", "rkgp"]

    [simulation]
    step_size = 0.3
    n_steps = 3000
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from finwidth.errors import ConfigError
from finwidth.inputs import float_sequence

__all__ = [
    "ConvConfig",
    "DataConfig",
    "NetworkConfig",
    "SimulationConfig",
    "SweepSpec",
    "Task",
    "TaskConfig",
    "TheoryConfig",
    "canonical_json",
    "expand",
    "format_validation_error",
    "load_spec",
    "parse_spec",
    "task_key",
]

# Keys whose value is a list by nature: only a list of lists sweeps them.
LIST_VALUED = frozenset(
    {"data.classes", "network.widths", "network.priors", "network.bias", "theory.models",
     "network.conv.patch_size", "network.conv.image_shape", "network.conv.stride"}
)
THEORY_MODELS = ("nngp", "rkgp", "rkgp_product", "rkgp_nested", "adaptive")
#: the options of finwidth.theory.adaptive.AdaptiveKernel a spec may set ([theory.adaptive])
ADAPTIVE_OPTIONS = ("scaling", "anneal_start", "anneal_ratio", "tol")

# numbers are strict: a string (or a bool) where a number belongs fails at load, naming the key
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
Number = Annotated[float, Strict()]
Scalar = StrictBool | int | float | str


def _checked(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with its ConfigError turned into the ValueError that pydantic reports
    under the key being validated."""
    try:
        return fn(*args, **kwargs)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Model):
    """Which data set, how many points, which preprocessing.

    Exactly one of ``name`` (a data set read by :func:`finwidth.data.load`: ``"mnist"``,
    ``"cifar10"``) and ``teacher`` (a synthetic task built by :func:`finwidth.data.teacher`) is given.
    The data root is *not* part of the config (it depends on the machine): it comes from
    ``$FINWIDTH_DATA`` or the library's search path.
    """

    name: str | None = None
    teacher: str | None = None
    classes: tuple[int, ...] | None = None
    preset: str = "paper"
    labels: str = "01"
    n_train: PositiveInt
    n_test: PositiveInt
    seed: NonNegativeInt = 0
    n_features: PositiveInt | None = None
    options: dict[str, Scalar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.name is None) == (self.teacher is None):
            raise ValueError("give exactly one of data.name (a data set) and data.teacher (a synthetic teacher)")
        if self.teacher is not None:
            if self.n_features is None:
                raise ValueError("data.n_features is required with data.teacher")
            if self.classes is not None:
                raise ValueError("data.classes applies to data sets (data.name), not to teachers")
        elif self.n_features is not None or self.options:
            raise ValueError("data.n_features and data.options apply to teachers (data.teacher) only")
        from finwidth.data import LABEL_ENCODINGS, PRESETS, TEACHERS
        from finwidth.data.presets import CLASS_NAMES, _parse_classes

        if self.name is not None:
            if self.name not in CLASS_NAMES:
                raise ValueError(f"name: unknown data set {self.name!r}; available: {', '.join(sorted(CLASS_NAMES))} "
                                 f"(synthetic data: data.teacher)")
            if self.preset not in PRESETS:
                raise ValueError(f"preset: unknown preset {self.preset!r}; available: {', '.join(PRESETS)}")
            _checked(_parse_classes, self.name, self.classes)
        elif self.teacher not in TEACHERS:
            raise ValueError(f"teacher: unknown teacher {self.teacher!r}; available: {', '.join(TEACHERS)}")
        if self.labels not in LABEL_ENCODINGS:
            raise ValueError(f"labels: unknown label encoding {self.labels!r}; available: {', '.join(LABEL_ENCODINGS)}")
        return self


IntOrPair = PositiveInt | tuple[PositiveInt, PositiveInt]


class ConvConfig(_Model):
    """The ``[network.conv]`` table: the network is a two-layer :class:`finwidth.convnet.ConvNetwork`
    whose C channels are ``network.width`` (one hidden layer, no biases, priors (λ_0, λ_1)). The input
    size is the data's N_0, so the patch geometry is checked at load when it is known there
    (``image_shape``, or a teacher's ``data.n_features``) and when the data are loaded otherwise."""

    patch_size: IntOrPair
    image_shape: tuple[PositiveInt, PositiveInt] | None = None
    stride: IntOrPair | None = None
    readout: Literal["local", "pooled"] = "local"

    @model_validator(mode="after")
    def _geometry(self) -> ConvConfig:
        if self.image_shape is not None:  # the geometry is known: every rule of ConvNetwork on it
            from finwidth.convnet import ConvNetwork

            _checked(ConvNetwork, self.image_shape[0] * self.image_shape[1], self.patch_size, 1,
                     image_shape=self.image_shape, stride=self.stride, readout=self.readout)
        return self


class NetworkConfig(_Model):
    """The network: activation, hidden widths N_1..N_L, prior precisions λ_0..λ_L, bias variances;
    with a ``conv`` table, the two-layer CNN of :class:`ConvConfig` (``width`` = channels C).

    Shorthands accepted on input (and turned into ``widths``/``priors``, so that equal networks hash
    equally): ``width`` (every hidden layer) with ``depth`` (L, default 1); ``prior`` (every layer,
    default 1), ``input_prior`` (λ_0) and ``readout_prior`` (λ_L) overriding it.
    """

    activation: str = "erf"
    widths: tuple[PositiveInt, ...]
    priors: tuple[Number, ...]
    bias: tuple[Number, ...] | None = None
    conv: ConvConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            return raw
        data = dict(raw)
        width, depth = data.pop("width", None), data.pop("depth", None)
        if width is not None:
            if "widths" in data:
                raise ValueError("give network.width (all layers) or network.widths (per layer), not both")
            if isinstance(depth, bool) or not isinstance(depth, int | None) or (depth is not None and depth < 1):
                raise ValueError(f"network.depth must be a positive integer, got {depth!r}")
            data["widths"] = [width] * (1 if depth is None else depth)
        elif "widths" in data:
            if depth is not None and (not isinstance(data["widths"], list | tuple) or len(data["widths"]) != depth):
                raise ValueError(f"network.depth = {depth!r} disagrees with network.widths = {data['widths']!r}")
        else:
            data.setdefault("priors", [1.0, 1.0])  # report only the missing widths (and any misspelt key)
            return data
        prior, lam0, lamL = data.pop("prior", None), data.pop("input_prior", None), data.pop("readout_prior", None)
        if "priors" in data:
            if prior is not None or lam0 is not None or lamL is not None:
                raise ValueError("give network.priors (one per layer) or network.prior/input_prior/readout_prior, not both")
        else:
            n_layers = len(data["widths"]) + 1 if isinstance(data["widths"], list | tuple) else 2
            priors = [1.0 if prior is None else prior] * n_layers
            if lam0 is not None:
                priors[0] = lam0
            if lamL is not None:
                priors[-1] = lamL
            data["priors"] = priors
        bias = data.get("bias")
        if bias is not None and not isinstance(bias, list | tuple) and isinstance(data["widths"], list | tuple):
            data["bias"] = [bias] * (len(data["widths"]) + 1)
        return data

    @field_validator("priors")
    @classmethod
    def _positive_priors(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        return _checked(float_sequence, v, len(v), "priors", allow_zero=False, label=lambda i: f"priors[{i}] (λ_{i})",
                        noun="precision")

    @field_validator("bias")
    @classmethod
    def _bias(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is None:
            return None
        v = _checked(float_sequence, v, len(v), "bias", allow_zero=True, noun="variance")
        return v if any(b > 0 for b in v) else None

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, v: str) -> str:
        from finwidth.activations import get_activation

        return _checked(get_activation, v).name  # the registry's own name: aliases hash alike

    @model_validator(mode="after")
    def _lengths(self) -> NetworkConfig:
        n = len(self.widths)
        if n == 0:
            raise ValueError("network.widths needs at least one hidden layer")
        if len(self.priors) != n + 1:
            raise ValueError(f"network.priors needs L+1 = {n + 1} entries (λ_0..λ_L), got {len(self.priors)}")
        if self.bias is not None and len(self.bias) != n + 1:
            raise ValueError(f"network.bias needs L+1 = {n + 1} entries, got {len(self.bias)}")
        if self.conv is not None:
            if n != 1:
                raise ValueError(f"network.conv: a ConvNetwork has one hidden layer (network.width = channels), "
                                 f"got network.widths = {list(self.widths)}")
            if self.bias is not None:
                raise ValueError("network.bias: a ConvNetwork has no biases")
            if self.conv.image_shape is not None:  # the rest of ConvNetwork's rules (priors, activation)
                _checked(self.build, self.conv.image_shape[0] * self.conv.image_shape[1])
            return self
        _checked(self.build)  # every rule of finwidth.Network, the one validator of network specs
        return self

    @property
    def depth(self) -> int:
        return len(self.widths)

    def build(self, input_size: int | None = None):  # noqa: ANN201 - finwidth.Network or ConvNetwork (lazy)
        """The :class:`finwidth.network.Network` this config describes, or with a ``conv`` table the
        :class:`finwidth.convnet.ConvNetwork` on inputs of ``input_size`` features (N_0, required then)."""
        if self.conv is not None:
            from finwidth.convnet import ConvNetwork

            if input_size is None:
                raise ConfigError("a ConvNetwork needs the input size N_0 (the data's number of features)")
            c = self.conv
            return ConvNetwork(int(input_size), c.patch_size, self.widths[0], self.activation, list(self.priors),
                               image_shape=c.image_shape, stride=c.stride, readout=c.readout)
        from finwidth.network import Network

        return Network(list(self.widths), self.activation, list(self.priors), None if self.bias is None else list(self.bias))


class TheoryConfig(_Model):
    """Which theories to evaluate: ``nngp`` (infinite width), ``rkgp`` (renormalised kernel, the
    library's default form; for a CNN the local kernel renormalisation), ``rkgp_product`` /
    ``rkgp_nested`` (deep forms, explicit), ``adaptive`` (:class:`finwidth.theory.adaptive.AdaptiveKernel`,
    two-layer networks, with the options of the ``[theory.adaptive]`` table: ``scaling``,
    ``anneal_start``, ``anneal_ratio``, ``tol``)."""

    models: tuple[Literal["nngp", "rkgp", "rkgp_product", "rkgp_nested", "adaptive"], ...] = ("nngp", "rkgp")
    adaptive: dict[str, Scalar] | None = None

    @field_validator("models")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"theory.models lists a model twice: {list(v)}")
        return v

    @model_validator(mode="after")
    def _adaptive_options(self) -> TheoryConfig:
        if self.adaptive is None:
            return self
        if "adaptive" not in self.models:
            raise ValueError("theory.adaptive: options given but 'adaptive' is not in theory.models")
        unknown = sorted(set(self.adaptive) - set(ADAPTIVE_OPTIONS))
        if unknown:
            raise ValueError(f"theory.adaptive.{unknown[0]}: unknown option (the options are {', '.join(ADAPTIVE_OPTIONS)})")
        return self


class SimulationConfig(_Model):
    """Posterior sampling of finite-width networks (arguments of :func:`finwidth.sample_posterior`).

    ``step_size`` is in the units of the Langevin time of the potential
    U = ½ Σ (y − f)² + (T/2) Σ λ_l ‖W‖²; ``n_steps`` counts sampler steps per replica (burn-in included);
    ``options`` passes further keywords of :func:`finwidth.sample_posterior` through unchanged
    (``friction``, ``init``, ``input_reduction``, ``rao_blackwell``, ``checkpoint_every``, ``scaling``).
    Everything is validated when the spec is loaded, by the same rules as ``sample_posterior``
    (:func:`finwidth.simulate.config.check_options`): unknown or ill-typed options,
    ``record_every > n_steps`` and the like fail before any task runs.
    """

    sampler: Literal["baoab", "euler", "mala", "gibbs"] = "baoab"
    step_size: Number | None = Field(default=None, gt=0)
    n_steps: PositiveInt
    burn_in: NonNegativeInt | None = None
    replicas: PositiveInt = 8
    record_every: PositiveInt | None = None
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    seed: NonNegativeInt = 0
    options: dict[str, Scalar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _burn_in(self) -> SimulationConfig:
        if self.step_size is None and self.sampler != "gibbs":
            raise ValueError(f"simulation.step_size is required for sampler {self.sampler!r} (only gibbs needs none)")
        if self.burn_in is not None and self.burn_in >= self.n_steps:
            raise ValueError(f"simulation.burn_in ({self.burn_in}) must be smaller than simulation.n_steps ({self.n_steps})")
        from finwidth.simulate.config import OPTION_KEYS, check_options

        unknown = sorted(set(self.options) - set(OPTION_KEYS))
        if unknown:
            raise ValueError(f"simulation.options.{unknown[0]}: unknown option (the options are {', '.join(OPTION_KEYS)})")
        try:
            check_options(sampler=self.sampler, step_size=self.step_size, n_steps=self.n_steps, burn_in=self.burn_in,
                          replicas=self.replicas, record_every=self.record_every, seed=self.seed, dtype=self.dtype,
                          **self.options)
        except ConfigError as exc:  # the message starts with the argument's name: say where it is in the spec
            name = re.split(r"[ =]", str(exc), maxsplit=1)[0]
            raise ValueError(f"{'options.' if name in OPTION_KEYS else ''}{exc}") from None
        return self


class TaskConfig(_Model):
    """One task: one data set, one network, one temperature; theories and/or one simulation.

    ``temperature`` is T in p(θ|D) ∝ exp[−(1/2T) Σ (y − f)² − Σ λ_l ‖W^(l)‖²/2] (T = 0 is legal for theory).
    """

    temperature: Number = Field(ge=0)
    data: DataConfig
    network: NetworkConfig
    theory: TheoryConfig = Field(default_factory=TheoryConfig)
    simulation: SimulationConfig | None = None

    @model_validator(mode="after")
    def _something_to_do(self) -> TaskConfig:
        if not self.theory.models and self.simulation is None:
            raise ValueError("nothing to compute: theory.models is empty and there is no [simulation] table")
        if self.simulation is not None and self.temperature == 0:
            raise ValueError("simulation needs temperature > 0 (T = 0 is legal for the theory only)")
        if self.simulation is not None and self.simulation.options.get("scaling") == "mean_field" and (
                self.network.depth != 1 or self.network.bias is not None):
            raise ValueError("simulation.options.scaling = 'mean_field' needs one hidden layer without biases")
        conv = self.network.conv
        if conv is not None:
            deep = [m for m in self.theory.models if m in ("rkgp_product", "rkgp_nested")]
            if deep:
                raise ValueError(f"theory.models: {deep[0]!r} is a form of the deep fully connected theory; a "
                                 f"ConvNetwork takes 'nngp', 'rkgp' (local kernel renormalisation) and 'adaptive'")
            if self.simulation is not None and self.simulation.options.get("scaling") == "mean_field" \
                    and conv.readout == "pooled":
                raise ValueError("simulation.options.scaling: the pooled readout is defined in standard scaling only")
            if self.data.n_features is not None:  # a teacher: N_0 is known at load
                if conv.image_shape is not None and conv.image_shape[0] * conv.image_shape[1] != self.data.n_features:
                    raise ValueError(f"network.conv.image_shape {list(conv.image_shape)} has "
                                     f"{conv.image_shape[0] * conv.image_shape[1]} pixels but data.n_features is "
                                     f"{self.data.n_features}")
                try:
                    self.network.build(self.data.n_features)
                except ConfigError as exc:
                    raise ValueError(f"network.conv: {exc}") from None
        if "adaptive" in self.theory.models:
            self._check_adaptive()
        return self

    def _check_adaptive(self) -> None:
        """The AdaptiveKernel options, checked by the estimator's own validation on this network."""
        from finwidth.theory.adaptive import AdaptiveKernel

        net = self.network
        if net.conv is None:
            network = net.build()
        else:  # the options do not depend on the patch geometry: any input size the patches tile will do
            c = net.conv
            size = (c.image_shape[0] * c.image_shape[1] if c.image_shape is not None
                    else self.data.n_features if self.data.n_features is not None
                    else (c.patch_size if isinstance(c.patch_size, int) else None))
            if size is None:
                return  # 2-D windows on a data set without image_shape: checked when the data are loaded
            try:
                network = net.build(size)
            except ConfigError:
                return  # reported with the data's N_0 at run time
        try:
            AdaptiveKernel(network, self.temperature, **(self.theory.adaptive or {}))._check_params()
        except (ConfigError, TypeError) as exc:
            raise ValueError(f"theory.adaptive: {exc}") from None


def canonical_json(config: TaskConfig) -> str:
    """The canonical JSON text of a task config, the input of :func:`task_key`.

    Algorithm (stable across processes, machines and Python versions ≥ 3.10): dump the validated
    model with ``model_dump(mode="json")`` (tuples become lists, every default filled in, numbers in
    the type of their field, so ``1`` and ``1.0`` agree for a float field), then ``json.dumps`` with
    sorted keys, separators ``(",", ":")``, ASCII only and NaN forbidden. Floats are written with
    Python's shortest round-trip ``repr``.
    """
    dumped = config.model_dump(mode="json")
    # keys added after sweeps were stored are left out at their default, so that existing task keys stay
    if dumped["network"].get("conv") is None:
        dumped["network"].pop("conv", None)
    if dumped["theory"].get("adaptive") is None:
        dumped["theory"].pop("adaptive", None)
    return json.dumps(dumped, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def task_key(config: TaskConfig) -> str:
    """The task's key: the first 16 hex digits of the SHA-256 of :func:`canonical_json` (UTF-8)."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()[:16]


class Task(BaseModel):
    """A grid point: its key, its validated config and the swept values that produced it."""

    model_config = ConfigDict(frozen=True)

    key: str
    config: TaskConfig
    swept: dict[str, Any]


class SweepSpec(BaseModel):
    """A validated sweep: options of the ``[sweep]`` table and the (unexpanded) template."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "sweep"
    description: str = ""
    zip: tuple[tuple[str, ...], ...] = ()
    template: dict[str, Any]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\\0") or v in {".", ".."}:
            raise ValueError(f"sweep.name must be a plain name usable as a folder, got {v!r}")
        return v

    def tasks(self) -> list[Task]:
        """The grid, expanded and validated (see :func:`expand`)."""
        return expand(self)

    def to_dict(self) -> dict[str, Any]:
        """The spec as the dict it was parsed from (``[sweep]`` table included)."""
        out = copy.deepcopy(self.template)
        out["sweep"] = {"name": self.name, "description": self.description, "zip": [list(g) for g in self.zip]}
        return out


def format_validation_error(exc: ValidationError, where: str = "") -> str:
    """One line per problem, each naming the dotted key, e.g. ``network.width: must be > 0 (got -5)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/experiments.md for the keys)"
        elif err["type"] == "missing":
            msg = "required key is missing"
            if loc == "network.widths":
                msg += " (give network.width, with network.depth, or network.widths)"
        elif "input" in err and err["type"] not in {"value_error"} and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
        lines.append(f"  {loc or '<spec>'}: {msg}")
    head = f"invalid experiment spec{(' ' + where) if where else ''}:"
    return "\n".join([head, *lines])


def parse_spec(raw: Mapping[str, Any], *, source: str = "spec") -> SweepSpec:
    """Validate a sweep given as a dict (the parsed TOML). Raises :class:`ConfigError` naming bad keys."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a sweep spec must be a table (dict), got {type(raw).__name__}")
    template = copy.deepcopy(dict(raw))
    options = template.pop("sweep", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"{source}: [sweep] must be a table")
    try:
        spec = SweepSpec(template=template, **options)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"in {source} [sweep]").replace("  template.", "  ")) from None
    expand(spec, source=source)  # validates every grid point now, not halfway through a run
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a TOML sweep spec. Raises :class:`ConfigError` (bad TOML, bad keys)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the spec {path}: {exc.strerror or exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_spec(raw, source=str(path))


def _is_axis(path: str, value: Any) -> bool:
    if not isinstance(value, list):
        return False
    if path in LIST_VALUED:
        return len(value) > 0 and all(isinstance(v, list) or v is None for v in value)
    return True


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _leaves(v, path + ".")
        else:
            yield path, v


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = tree
    for p in parents:
        node = node[p]
    node[last] = value


def expand(spec: SweepSpec, *, source: str = "spec") -> list[Task]:
    """Expand a sweep into validated tasks, in a deterministic order.

    Axes vary in the order they appear in the spec, the last fastest (like nested loops written in
    file order); a zip group counts as one axis at the position of its first key. Grid points with
    identical canonical configs are returned once.

    Raises
    ------
    ConfigError
        An empty axis, a zip key that is not a swept list, zipped lists of unequal lengths, or a grid
        point that fails validation (the message names the key and the swept values).
    """
    axes = [(p, v) for p, v in _leaves(spec.template) if _is_axis(p, v)]
    axis_values = dict(axes)
    for path, values in axes:
        if not values:
            raise ConfigError(f"{source}: {path} is an empty list; a swept key needs at least one value")
    grouped: dict[str, tuple[str, ...]] = {}
    for group in spec.zip:
        if len(group) < 2:
            raise ConfigError(f"{source}: sweep.zip group {list(group)} needs at least two keys")
        for path in group:
            if path not in axis_values:
                raise ConfigError(
                    f"{source}: sweep.zip names {path!r}, which is not a swept list in the spec"
                    f" (swept keys: {', '.join(axis_values) or 'none'})"
                )
            if path in grouped:
                raise ConfigError(f"{source}: {path!r} appears in two sweep.zip groups")
            grouped[path] = group
        lengths = {p: len(axis_values[p]) for p in group}
        if len(set(lengths.values())) != 1:
            raise ConfigError(f"{source}: zipped keys need lists of equal length, got {lengths}")
    # one factor per free axis or zip group, each a list of {path: value} assignments
    factors: list[list[dict[str, Any]]] = []
    seen_groups: set[tuple[str, ...]] = set()
    for path, values in axes:
        group = grouped.get(path)
        if group is None:
            factors.append([{path: v} for v in values])
        elif group not in seen_groups:
            seen_groups.add(group)
            factors.append([dict(zip(group, combo, strict=True)) for combo in zip(*(axis_values[p] for p in group), strict=True)])
    tasks: list[Task] = []
    keys: set[str] = set()
    for combo in itertools.product(*factors):
        assignment: dict[str, Any] = {}
        for part in combo:
            assignment.update(part)
        point = copy.deepcopy(spec.template)
        for path, value in assignment.items():
            _set(point, path, value)
        try:
            config = TaskConfig.model_validate(point)
        except ValidationError as exc:
            where = f"in {source}" + (f" at {assignment}" if assignment else "")
            raise ConfigError(format_validation_error(exc, where)) from None
        key = task_key(config)
        if key not in keys:
            keys.add(key)
            tasks.append(Task(key=key, config=config, swept=assignment))
    return tasks
