"""The Network specification: normalisation of arguments and validation errors."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from finwidth.activations import get_activation
from finwidth.errors import ConfigError
from finwidth.network import Network


def test_defaults_and_scalars_broadcast():
    net = Network([500], "erf")
    assert net.widths == (500,) and net.depth == 1
    assert net.priors == (1.0, 1.0) and net.bias is None
    assert net.activation is get_activation("erf")
    net = Network(100, "relu", priors=2.0, bias=0.5)
    assert net.widths == (100,) and net.priors == (2.0, 2.0) and net.bias == (0.5, 0.5)
    assert Network([10, 20, 30], "relu").priors == (1.0,) * 4


def test_accessors():
    net = Network([10, 40], "relu", priors=[1.0, 2.0, 4.0], bias=[0.1, 0.0, 0.2])
    assert net.readout_prior == 4.0
    assert net.bias_variances() == (0.1, 0.0, 0.2)
    assert Network([10], "erf").bias_variances() == (0.0, 0.0)
    assert net.loads(200) == (20.0, 5.0)
    assert net.with_widths([5, 6]).widths == (5, 6)
    assert net.with_widths([5, 6]).priors == net.priors


def test_all_zero_bias_means_no_bias():
    assert Network([3], "erf", bias=0.0).bias is None
    assert Network([3], "erf", bias=[0.0, 0.0]).bias is None


def test_to_dict_is_json_and_roundtrips():
    net = Network([10, 40], "relu", priors=[1.0, 2.0, 4.0], bias=[0.1, 0.0, 0.2])
    d = json.loads(json.dumps(net.to_dict()))
    assert d == {"widths": [10, 40], "activation": "relu", "priors": [1.0, 2.0, 4.0], "bias": [0.1, 0.0, 0.2]}
    assert Network(**d) == net
    assert "relu" in repr(net) and "bias" in repr(net)


def test_frozen_hashable_and_picklable():
    net = Network([10], "erf", priors=[1.0, 2.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.widths = (3,)  # type: ignore[misc]
    assert hash(net) == hash(Network([10], "erf", priors=[1.0, 2.0]))
    clone = pickle.loads(pickle.dumps(net))
    assert clone == net and clone.activation is net.activation


@pytest.mark.parametrize(
    "widths,match",
    [
        ([], "at least one hidden layer"),
        ([0], "positive integer"),
        ([-3], "positive integer"),
        ([10.5], "positive integer"),
        ([True], "positive integer"),
        (["10"], "positive integer"),
        (None, "positive integer or a list"),
    ],
)
def test_bad_widths(widths, match):
    with pytest.raises(ConfigError, match=match):
        Network(widths, "erf")  # type: ignore[arg-type]


def test_integral_floats_are_accepted_as_widths():
    assert Network([10.0, 20], "erf").widths == (10, 20)


@pytest.mark.parametrize(
    "priors,match",
    [
        ([1.0], r"length 2"),
        ([1.0, 1.0, 1.0], r"length 2"),
        ([1.0, 0.0], r"priors\[1\] must be positive"),
        ([-1.0, 1.0], r"priors\[0\] must be positive"),
        ([float("nan"), 1.0], r"priors\[0\] must be finite"),
        ([float("inf"), 1.0], r"finite"),
        ("abc", "number or a sequence"),
        (0.0, "positive"),
    ],
)
def test_bad_priors(priors, match):
    with pytest.raises(ConfigError, match=match):
        Network([10], "erf", priors=priors)


@pytest.mark.parametrize(
    "bias,match",
    [([0.1], "length 2"), ([-0.1, 0.0], "non-negative"), ([float("nan"), 0.0], "finite")],
)
def test_bad_bias(bias, match):
    with pytest.raises(ConfigError, match=match):
        Network([10], "erf", bias=bias)


def test_bad_activation_names_the_options():
    with pytest.raises(ConfigError, match="available"):
        Network([10], "softsign-typo")


def test_loads_and_with_widths_validation():
    net = Network([10, 10], "erf")
    with pytest.raises(ConfigError, match="positive"):
        net.loads(0)
    with pytest.raises(ConfigError, match="keeps the depth 2"):
        net.with_widths([10])


@pytest.mark.parametrize("widths", [[float("nan")], [float("inf")], float("nan"), [10, "a"]])
def test_non_numeric_or_non_finite_widths_name_widths(widths):
    with pytest.raises(ConfigError, match=r"widths"):
        Network(widths, "erf")


def test_readout_convention_lives_on_the_spec():
    """f = s_out Σ a φ with M = N_L weights a ~ N(0, 1/λ_L); the standard form a' = a s_out sqrt(M) has
    precision λ_L/(M s_out²): λ_L in standard scaling, λ_L N in mean-field scaling."""
    net = Network([4, 25], "erf", priors=[1.0, 2.0, 0.5])
    std, mf = net.readout_spec(), net.readout_spec("mean_field")
    assert (std.size, std.prior, std.outputs) == (25, 0.5, 1)
    assert std.scale == pytest.approx(0.2) and std.standard_precision == pytest.approx(0.5)
    assert mf.scale == pytest.approx(1 / 25) and mf.standard_precision == pytest.approx(0.5 * 25)
    with pytest.raises(ConfigError, match="scaling"):
        net.readout_spec("ntk")
