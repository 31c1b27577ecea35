"""finwidth's NNGP recursion against neural-tangents 0.6.5 (float64), stored as fixtures.

The fixtures were made in a separate environment by
``tests/fixtures/neural_tangents/make_fixtures.py`` (recipe and versions in the README there);
neural-tangents is never imported here.

Tolerance: neural-tangents ran with ``jax_enable_x64``; its kernels agree with a plain numpy
recursion of the closed forms to <= 7e-16 relative (recorded per case in ``nngp.json``). Both
sides are float64 closed forms, so 1e-10 relative per entry leaves a wide margin for round-off
amplified through three layers of arcsin/arccos. Entries whose magnitude is far below the
kernel's scale (erf correlations crossing zero) are compared with an absolute floor of
1e-13 x max|K|, i.e. still round-off level.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import finwidth
from finwidth.kernels import nngp

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "neural_tangents"
META = json.loads((FIXTURES / "nngp.json").read_text())
CASES = META["cases"]
RTOL = 1e-10
ATOL_SCALE = 1e-13


@pytest.fixture(scope="module")
def arrays():
    with np.load(FIXTURES / "nngp.npz") as data:
        return {key: data[key] for key in data.files}


def _close(actual, expected, what):
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.float64, f"{what}: dtype {actual.dtype}, expected float64"
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL_SCALE * np.max(np.abs(expected)), err_msg=what)


def test_fixture_inventory_covers_the_brief():
    """Both activations, depths 1..3, with and without biases, on both input sets."""
    keys = {(c["inputs"], c["activation"], c["depth"], c["bias"] is not None) for c in CASES}
    assert len(keys) == len(CASES) == 24
    assert all(len(c["priors"]) == c["depth"] + 1 and len(set(c["priors"])) == len(c["priors"]) for c in CASES)
    assert META["jax_enable_x64"] is True
    # the generator's own closed-form checks of the convention mapping (linear net, 1HL erf/relu)
    assert max(META["self_checks_max_relative_error"].values()) < 1e-12


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_nngp_matches_neural_tangents(case, arrays):
    x = arrays[f"{case['inputs']}__X"]
    x_test = arrays[f"{case['inputs']}__X_test"]
    widths = [64] * case["depth"]  # the NNGP does not depend on the widths
    net = finwidth.Network(widths, case["activation"], priors=case["priors"], bias=case["bias"])
    blocks = nngp(net, x, x_test)
    name = case["case"]
    _close(blocks.train, arrays[f"{name}__train"], f"{name}: train x train")
    _close(blocks.test_train, arrays[f"{name}__test_train"], f"{name}: test x train")
    _close(blocks.test_diag, arrays[f"{name}__test_diag"], f"{name}: test diagonal")


@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_nngp_without_test_points_matches(activation, arrays):
    """X_test=None returns the same train block and no test blocks."""
    case = next(c for c in CASES if c["activation"] == activation and c["depth"] == 2 and c["bias"] is not None)
    x = arrays[f"{case['inputs']}__X"]
    net = finwidth.Network([64, 64], activation, priors=case["priors"], bias=case["bias"])
    blocks = nngp(net, x)
    _close(blocks.train, arrays[f"{case['case']}__train"], case["case"])
    assert blocks.test_train is None and blocks.test_diag is None
