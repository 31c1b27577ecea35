"""Sweeps of CNNs and of the adaptive-kernel theory (issue 16.6): the ``[network.conv]`` and
``[theory.adaptive]`` tables, validated when the spec is loaded, run by the default task function."""

import warnings

import numpy as np
import pytest

from finwidth.convnet import ConvNetwork
from finwidth.data import teacher
from finwidth.errors import ConfigError, NotConvergedWarning
from finwidth.experiments import parse_spec
from finwidth.experiments.spec import TaskConfig
from finwidth.experiments.tasks import run_task
from finwidth.theory.adaptive import AdaptiveKernel
from finwidth.theory.conv import ConvRKGP
from finwidth.theory.nngp import NNGP

DATA = {"teacher": "linear", "n_features": 16, "n_train": 14, "n_test": 9, "seed": 2}


def spec(**over):
    raw = {"temperature": 0.05, "data": dict(DATA),
           "network": {"activation": "erf", "width": [6, 12],
                       "conv": {"patch_size": [2, 2], "image_shape": [4, 4], "stride": 2}},
           "theory": {"models": ["nngp", "rkgp", "adaptive"], "adaptive": {"scaling": "standard"}}}
    for key, value in over.items():
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return raw


def test_conv_sweep_over_channels_runs_the_estimators_and_the_sampler():
    tasks = parse_spec(spec()).tasks()
    assert [t.config.network.widths for t in tasks] == [(6,), (12,)]
    assert tasks[0].config.network.conv.patch_size == (2, 2)  # a pair, not a sweep axis
    config = TaskConfig.model_validate({**tasks[0].config.model_dump(), "simulation": {
        "step_size": 0.05, "n_steps": 400, "burn_in": 100, "replicas": 2, "dtype": "float64"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)  # a short chain: the wiring is tested, not the numbers
        out = run_task(config).values
    d = teacher("linear", n_features=16, n_train=14, n_test=9, seed=2)
    net = ConvNetwork(16, (2, 2), 6, "erf", image_shape=(4, 4), stride=2)
    for name, est in (("nngp", NNGP(net, 0.05)), ("rkgp", ConvRKGP(net, 0.05)),
                      ("adaptive", AdaptiveKernel(net, 0.05, scaling="standard"))):
        err = est.fit(d.X_train, d.y_train).generalization_error(d.X_test, d.y_test)
        assert out[name]["total"] == pytest.approx(err.total, rel=1e-10), name
    Q = np.asarray(out["rkgp"]["qbar"])
    assert Q.shape == (4, 4) and out["rkgp"]["qbar_L"] == pytest.approx(np.trace(Q) / 4)
    assert out["adaptive"]["adaptation"] > 0
    sim = out["sim"]
    assert np.asarray(sim["qbar_patches"]).shape == (4, 4)
    assert np.trace(sim["qbar_patches"]) / 4 == pytest.approx(sim["qbar_readout"], rel=1e-10)
    assert np.isfinite(sim["total"])


def test_fully_connected_task_keys_do_not_change():
    """The new tables are left out of the canonical JSON when absent (stored sweeps keep their keys)."""
    raw = {"temperature": 1e-3, "data": {"name": "mnist", "classes": [0, 1], "n_train": 100, "n_test": 1000},
           "network": {"width": 100, "activation": "erf"}}
    (task,) = parse_spec(raw).tasks()
    assert task.key == "69d5c6ecdf523037"


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("network.conv.image_shape", [4, 6], "image_shape [4, 6] has 24 pixels but data.n_features is 16"),
    ("network.conv.stride", 3, "network.conv: patches of size 2 at stride 3 do not tile"),
    ("network.conv.readout", "max", "network.conv.readout"),
    ("network.conv.patch_size", 0, "network.conv.patch_size"),
    ("network.conv.padding", 1, "network.conv.padding: unknown key"),
    ("network.depth", 2, "a ConvNetwork has one hidden layer"),
    ("network.bias", 0.1, "a ConvNetwork has no biases"),
    ("theory", {"models": ["rkgp_nested"]}, "theory.models: 'rkgp_nested'"),
    ("theory.adaptive", {"scalng": "standard"}, "theory.adaptive.scalng: unknown option"),
    ("theory.adaptive", {"anneal_ratio": 0.5}, "theory.adaptive: anneal_ratio must be > 1"),
    ("theory.adaptive", {"scaling": "nfl"}, "theory.adaptive: scaling must be"),
])
def test_conv_and_adaptive_specs_fail_at_load_with_the_key_named(key, value, fragment):
    with pytest.raises(ConfigError) as info:
        parse_spec(spec(**{key: value}))
    assert fragment in str(info.value)


def test_more_load_time_rules():
    raw = spec(**{"theory.models": ["nngp"]})
    with pytest.raises(ConfigError, match="'adaptive' is not in theory.models"):
        parse_spec(raw)
    raw = spec(**{"network.conv.readout": "pooled"})
    raw["simulation"] = {"step_size": 0.1, "n_steps": 100, "options": {"scaling": "mean_field"}}
    with pytest.raises(ConfigError, match="pooled readout is defined in standard scaling"):
        parse_spec(raw)
    raw = spec(**{"theory.models": ["adaptive"]})  # AdaptiveKernel needs a local readout
    raw["network"]["conv"]["readout"] = "pooled"
    with pytest.raises(ConfigError, match="theory.adaptive: AdaptiveKernel models the CNN with a local readout"):
        parse_spec(raw)
    raw = spec()
    raw["network"] = {"activation": "erf", "widths": [5, 5]}  # adaptive on a deep FCN
    with pytest.raises(ConfigError, match="theory.adaptive: AdaptiveKernel covers two-layer networks"):
        parse_spec(raw)
