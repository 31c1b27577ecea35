"""Sweep specs: validation with clear messages, grid and zip expansion, canonical JSON and hashing."""

import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from finwidth.errors import ConfigError
from finwidth.experiments.spec import TaskConfig, canonical_json, load_spec, parse_spec, task_key

ROOT = Path(__file__).resolve().parents[1]


def base(**over):
    raw = {
        "temperature": 1e-3,
        "data": {"teacher": "linear", "n_features": 8, "n_train": 12, "n_test": 10},
        "network": {"activation": "erf", "width": 20},
    }
    raw.update(over)
    return raw


def test_grid_is_cartesian_product_in_file_order():
    raw = base(temperature=[1e-3, 1e-2])
    raw["network"]["width"] = [10, 20, 40]
    tasks = parse_spec(raw).tasks()
    assert len(tasks) == 6
    # the first axis in the file (temperature) varies slowest
    assert [t.swept for t in tasks[:3]] == [{"temperature": 1e-3, "network.width": n} for n in (10, 20, 40)]
    assert [t.config.network.widths for t in tasks] == [(10,), (20,), (40,)] * 2
    assert len({t.key for t in tasks}) == 6


def test_zip_varies_keys_together():
    raw = base(sweep={"zip": [["data.n_train", "network.width"]]})
    raw["data"]["n_train"] = [12, 24, 48]
    raw["network"]["width"] = [10, 20, 40]
    raw["network"]["readout_prior"] = [1.0, 2.0]
    tasks = parse_spec(raw).tasks()
    assert len(tasks) == 6
    pairs = {(t.config.data.n_train, t.config.network.widths[0]) for t in tasks}
    assert pairs == {(12, 10), (24, 20), (48, 40)}
    assert {t.config.network.priors for t in tasks} == {(1.0, 1.0), (1.0, 2.0)}


def test_list_valued_keys_sweep_only_as_lists_of_lists():
    raw = base()
    raw["network"] = {"activation": "relu", "widths": [30, 30], "priors": [1.0, 2.0, 3.0]}
    (task,) = parse_spec(raw).tasks()
    assert task.config.network.widths == (30, 30) and task.config.network.priors == (1.0, 2.0, 3.0)
    raw["network"] = {"activation": "relu", "widths": [[30], [30, 30], [30, 30, 30]]}
    tasks = parse_spec(raw).tasks()
    assert [t.config.network.depth for t in tasks] == [1, 2, 3]
    assert [len(t.config.network.priors) for t in tasks] == [2, 3, 4]


def test_shorthands_and_explicit_forms_hash_equally():
    a = base()
    a["network"] = {"activation": "erf", "width": 50, "depth": 2, "prior": 2.0, "readout_prior": 0.5}
    b = base()
    b["network"] = {"activation": "erf", "widths": [50, 50], "priors": [2, 2, 0.5]}
    (ta,), (tb,) = parse_spec(a).tasks(), parse_spec(b).tasks()
    assert ta.key == tb.key
    assert canonical_json(ta.config) == canonical_json(tb.config)


def test_duplicate_grid_points_are_returned_once():
    raw = base()
    raw["network"]["width"] = [10, 10, 20]
    assert len(parse_spec(raw).tasks()) == 2


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda r: r["network"].update(widht=5), "network.widht: unknown key"),
        (lambda r: r["network"].update(width=-5), "network.widths.0"),
        (lambda r: r["network"].update(activation="softsign"), "unknown activation 'softsign'"),
        (lambda r: r["network"].update(prior=-1.0), "priors[0] (λ_0) must be a positive precision"),
        (lambda r: r["network"].update(prior=float("nan")), "network.priors"),
        (lambda r: r.update(temperature=-1e-3), "temperature"),
        (lambda r: r["data"].update(n_train=0), "data.n_train"),
        (lambda r: r["data"].update(name="mnist"), "exactly one of data.name"),
        (lambda r: r.update(theory={"models": ["nngp", "gp"]}), "theory.models"),
        (lambda r: r.update(simulation={"n_steps": 100}), "simulation.step_size is required"),
        (lambda r: r.update(simulation={"step_size": 0.1, "n_steps": 10, "burn_in": 10}), "burn_in (10) must be smaller"),
        (lambda r: r.update(temperature=0.0, simulation={"step_size": 0.1, "n_steps": 10}), "simulation needs temperature > 0"),
        (lambda r: r.update(sweep={"zip": [["network.width", "data.n_train"]]}), "not a swept list"),
        (lambda r: r.update(sweep={"nmae": "x"}), "sweep"),
        (lambda r: r["network"].update(width=[]), "network.width is an empty list"),
        (lambda r: r.update(bogus=1), "bogus: unknown key"),
    ],
)
def test_invalid_specs_name_the_bad_key(mutate, fragment):
    raw = base()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse_spec(raw)
    assert fragment in str(info.value)


def test_zip_needs_equal_lengths():
    raw = base(sweep={"zip": [["data.n_train", "network.width"]]})
    raw["data"]["n_train"] = [12, 24]
    raw["network"]["width"] = [10, 20, 40]
    with pytest.raises(ConfigError, match="equal length"):
        parse_spec(raw)


def test_bad_point_in_grid_is_named():
    raw = base()
    raw["network"]["width"] = [10, -1]
    with pytest.raises(ConfigError, match=r"at \{'network.width': -1\}"):
        parse_spec(raw)


def test_toml_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("temperature = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_spec(bad)
    with pytest.raises(ConfigError, match="cannot read the spec"):
        load_spec(tmp_path / "missing.toml")


# The canonical JSON algorithm (documented in canonical_json): model_dump(mode="json"), sorted keys,
# separators (",", ":"), ASCII, no NaN. The literal below is that text for this config, written out by
# hand from the documented field order; the hash is its SHA-256 computed here with hashlib.
CANONICAL = (
    '{"data":{"classes":[0,1],"labels":"01","n_features":null,"n_test":1000,"n_train":100,"name":"mnist",'
    '"options":{},"preset":"paper","seed":0,"teacher":null},"network":{"activation":"erf","bias":null,'
    '"priors":[1.0,1.0],"widths":[100]},"simulation":null,"temperature":0.001,"theory":{"models":["nngp","rkgp"]}}'
)
# Regression literal: keys of existing result stores depend on it. Changing TaskConfig changes it
# (and orphans stored results): do it deliberately.
STORED_KEY = "69d5c6ecdf523037"


def _fixed_config() -> TaskConfig:
    return TaskConfig.model_validate(
        {"temperature": 1e-3, "data": {"name": "mnist", "classes": [0, 1], "n_train": 100, "n_test": 1000},
         "network": {"width": 100, "activation": "erf"}}
    )


def test_canonical_json_and_hash_are_the_documented_algorithm():
    config = _fixed_config()
    assert canonical_json(config) == CANONICAL
    assert task_key(config) == hashlib.sha256(CANONICAL.encode()).hexdigest()[:16]
    assert task_key(config) == STORED_KEY
    # ints for float fields and equivalent spellings do not change the key
    same = TaskConfig.model_validate(
        {"temperature": 0.001, "theory": {"models": ["nngp", "rkgp"]},
         "data": {"name": "mnist", "classes": [0, 1], "n_train": 100, "n_test": 1000, "preset": "paper"},
         "network": {"widths": [100], "priors": [1, 1], "activation": "erf"}}
    )
    assert task_key(same) == STORED_KEY


@pytest.mark.slow
def test_hash_is_stable_across_processes():
    code = (
        "from finwidth.experiments.spec import TaskConfig, task_key;"
        "c = TaskConfig.model_validate({'temperature': 1e-3, 'data': {'name': 'mnist', 'classes': [0, 1],"
        " 'n_train': 100, 'n_test': 1000}, 'network': {'width': 100, 'activation': 'erf'}});"
        "print(task_key(c))"
    )
    keys = set()
    for seed in ("0", "12345"):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        keys.add(out.stdout.strip())
    assert keys == {STORED_KEY}


def test_examples_parse_and_demo_example_matches_builtin_demo():
    from finwidth.experiments.demo import DEMO_WIDTHS, demo_spec

    demo = load_spec(ROOT / "examples" / "demo.toml")
    builtin = demo_spec()
    assert [t.key for t in demo.tasks()] == [t.key for t in builtin.tasks()]
    assert [t.config.network.widths[0] for t in demo.tasks()] == DEMO_WIDTHS
    fig = load_spec(ROOT / "examples" / "fig1a.toml")
    tasks = fig.tasks()
    assert len(tasks) == 2 * 3 * 7
    assert {(t.config.data.name, t.config.data.n_train) for t in tasks} == {
        (d, p) for d in ("mnist", "cifar10") for p in (100, 300, 1000)
    }
    assert {t.config.network.widths[0] for t in tasks} == {50, 100, 200, 350, 500, 1000, 2000}
    assert {t.config.temperature for t in tasks} == {1e-3}
    assert {t.config.network.priors for t in tasks} == {(1.0, 1.0)}
    assert {t.config.data.n_test for t in tasks} == {1000}
    # the raw TOML of the demo is what the docs show
    assert tomllib.loads((ROOT / "examples" / "demo.toml").read_text())["sweep"]["name"] == "demo"


def test_network_keys_are_validated_by_the_network_itself():
    """One validator for ``Network`` and sweep specs: an alias the library accepts is accepted (and
    hashes like its canonical name), a value the library rejects is rejected with the key named."""
    a, b = base(), base()
    a["network"]["activation"] = "identity"
    b["network"]["activation"] = "linear"
    (ta,), (tb,) = parse_spec(a).tasks(), parse_spec(b).tasks()
    assert ta.config.network.activation == "linear" and ta.key == tb.key
    assert ta.config.network.build().activation.name == "linear"
    bad = base()
    bad["network"]["bias"] = [0.1, -0.2]
    with pytest.raises(ConfigError) as info:
        parse_spec(bad)
    assert "network.bias" in str(info.value) and "bias[1] must be a non-negative variance" in str(info.value)


@pytest.mark.parametrize(("mutate", "fragment"), [
    (lambda r: r["data"].update(name="mnsit"), "unknown data set 'mnsit'"),
    (lambda r: r["data"].update(preset="papr"), "unknown preset 'papr'"),
    (lambda r: r["data"].update(classes=[0, 12]), "unknown class 12 for mnist"),
    (lambda r: r["data"].update(n_train="100"), "data.n_train: Input should be a valid integer"),
    (lambda r: r.update(temperature="1e-3"), "temperature: Input should be a valid number"),
    (lambda r: r["network"].update(prior="1"), "network.priors.0"),
    (lambda r: r["simulation"].update(step_size="0.1"), "simulation.step_size"),
    (lambda r: r["simulation"].update(record_every=200), "record_every=200 exceeds n_steps=100"),
    (lambda r: r["simulation"].update(options={"frction": 0.1}), "simulation.options.frction: unknown option"),
    (lambda r: r["simulation"].update(options={"friction": "0.1"}), "options.friction must be a positive finite number"),
    (lambda r: r["simulation"].update(sampler="euler", options={"friction": 0.1}), "friction applies to sampler='baoab'"),
    (lambda r: r["simulation"].update(options={"init": "zeros"}), "options.init must be"),
    (lambda r: r["simulation"].update(options={"rao_blackwell": "yes"}), "options.rao_blackwell must be True or False"),
    (lambda r: r["network"].update(depth=2) or r["simulation"].update(options={"scaling": "mean_field"}),
     "needs one hidden layer"),
    (lambda r: r["simulation"].update(options={"input_rank": 0}), "options.input_rank must be"),
    (lambda r: r["simulation"].update(options={"input_tolerance": 1.5}), "options.input_tolerance must be a number"),
    (lambda r: r["simulation"].update(options={"input_rank": 5, "input_tolerance": 0.01}), "at most one of input_rank"),
])
def test_specs_fail_at_load_with_the_key_named(mutate, fragment):
    """What sample_posterior or the data loaders would reject fails when the spec is read, not when a
    task runs (issue 17): unknown data sets, ill-typed or unknown sampler options, strings for numbers."""
    raw = base()
    raw["data"] = {"name": "mnist", "classes": [0, 1], "n_train": 10, "n_test": 10}
    raw["simulation"] = {"step_size": 0.1, "n_steps": 100}
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse_spec(raw)
    assert fragment in str(info.value)
