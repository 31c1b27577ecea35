"""finwidth's CNN theory against deepbays 0.1.11 ``CONV_1HL`` (the authors' package), stored as fixtures.

Fixtures: ``tests/fixtures/deepbays/conv_cases.json`` and ``conv_data.npz``, made by
``make_conv_fixtures.py`` in the side environment (recipe in the README there); deepbays is never
imported here. Each deepbays Q was certified in the generator by ``independent_conv.py`` (a dense numpy
action with every one of the Ñ² blocks stored in full, written from the equations, finite differences):
only answers whose Newton step is below 1e-7 of max |Q| are references, so a 1e-6 comparison of Q and
of ε_g (total, bias, variance) is meaningful. finwidth's own answers are certified here with the same
independent action.

deepbays cuts 2-D images into disjoint mask×mask windows, window rows then columns, each flattened row
by row: that is ``ConvNetwork(side², mask, C, image_shape=(side, side))`` exactly; the same network on
contiguous blocks sees the columns permuted by ``patch_index`` (checked below). Pooled readout:
deepbays' ``setPooling`` only predicts with the infinite-width kernel of the average-pooled network
(Q = 11ᵀ and an extra 1/Ñ), which is finwidth's ``NNGP`` of ``readout="pooled"``; it has no
finite-width pooled theory to compare with.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import sys

import numpy as np
import pytest

from finwidth import NNGP, RKGP, ConvNetwork

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "deepbays"
META = json.loads((FIXTURES / "conv_cases.json").read_text())
LOCAL = [c for c in META["cases"] if c.get("kind") != "pooled_nngp"]
REFERENCE = [c for c in LOCAL if c["status"] == "reference"]
BROKEN = [c for c in LOCAL if c["status"] == "broken"]
POOLED = [c for c in META["cases"] if c.get("kind") == "pooled_nngp"]
RTOL = 1e-6
CERTIFY = 1e-7


def _load(name):
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # independent_conv imports independent by name
    spec.loader.exec_module(module)
    return module


_load("independent")
IND = _load("independent_conv")


@pytest.fixture(scope="module")
def data():
    with np.load(FIXTURES / "conv_data.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    return {name: {k: arrays[f"{name}__{k}"] for k in ("X", "y", "X_test", "y_test")} for name in META["datasets"]}


def _network(case, channels=None):
    side = case["image_shape"][0]
    return ConvNetwork(side * side, case["mask"], channels or case.get("channels", 1), case["activation"],
                       priors=case["priors"], image_shape=(side, side), readout=case["readout"])


def _ids(cases):
    return [c["case"] for c in cases]


def test_fixture_inventory():
    assert {(c["activation"], c["temperature"]) for c in REFERENCE} == {(a, t) for a in ("erf", "relu") for t in (0.01, 1.0)}
    assert {c["channels"] for c in REFERENCE} == {10, 100, 1000}
    assert {c["mask"] for c in REFERENCE} >= {2, 3, 4}
    assert all(c["certificate"]["max_rel_newton_step"] < META["keep_rel_newton_step"] <= 1e-7 for c in REFERENCE)
    assert all(p != 1.0 for c in META["cases"] for p in c["priors"])
    # deepbays' predictor agrees with the dense formulas at its own Q (its averageLoss broadcasts a
    # P_t×P_t variance matrix, whose mean is nevertheless the right one)
    for c in REFERENCE:
        for part, value in c["independent_eps_g_at_deepbays_q"].items():
            assert math.isclose(value, c["eps_g"][part], rel_tol=1e-9), (c["case"], part)
    assert len(REFERENCE) >= 0.8 * len(LOCAL) and len(REFERENCE) + len(BROKEN) == len(LOCAL)


@pytest.mark.parametrize("case", REFERENCE, ids=_ids(REFERENCE))
def test_agrees_with_deepbays_conv_1hl(case, data):
    ds = data[case["dataset"]]
    model = RKGP(_network(case), case["temperature"], mean_correction=case["finwidth"]["mean_correction"])
    model.fit(ds["X"], ds["y"])
    Q = np.asarray(case["q"])
    Q = 0.5 * (Q + Q.T)
    np.testing.assert_allclose(model.qbar_, Q, rtol=0, atol=RTOL * np.max(np.abs(Q)), err_msg=case["case"])
    err = model.generalization_error(ds["X_test"], ds["y_test"])
    for part in ("total", "bias", "variance"):
        np.testing.assert_allclose(getattr(err, part), case["eps_g"][part], rtol=RTOL, err_msg=f"{case['case']}: {part}")


@pytest.mark.parametrize("case", BROKEN, ids=_ids(BROKEN))
def test_where_deepbays_fails_ours_is_the_certified_minimum(case, data):
    # what deepbays returned: not converged, a non-symmetric Q that is not a stationary point of the action
    assert case["deepbays_converged_flag"] is False
    assert case["certificate"]["max_rel_newton_step"] > 1e-4 and case["q_asymmetry"] > 1e-3
    ref = case["independent_reference"]
    assert ref["certificate"]["max_rel_newton_step"] < CERTIFY and ref["certificate"]["min_hessian_eigenvalue"] > 0
    ds = data[case["dataset"]]
    model = RKGP(_network(case), case["temperature"], mean_correction=case["finwidth"]["mean_correction"])
    model.fit(ds["X"], ds["y"])
    Q = np.asarray(ref["q"])
    np.testing.assert_allclose(model.qbar_, Q, rtol=0, atol=RTOL * np.max(np.abs(Q)), err_msg=case["case"])
    err = model.generalization_error(ds["X_test"], ds["y_test"])
    for part in ("total", "bias", "variance"):
        np.testing.assert_allclose(getattr(err, part), ref["eps_g"][part], rtol=RTOL, err_msg=part)
    # deepbays' answer is off in the test error by more than the agreement level
    assert abs(case["eps_g"]["total"] - ref["eps_g"]["total"]) > 1e-4 * ref["eps_g"]["total"]


@pytest.mark.slow
def test_our_answers_are_stationary_for_the_independent_action(data):
    """Certify finwidth's Q with the dense action, on one case per data set and activation."""
    seen = set()
    for case in REFERENCE:
        key = (case["dataset"], case["activation"])
        if key in seen or case["channels"] != 100:
            continue
        seen.add(key)
        ds = data[case["dataset"]]
        model = RKGP(_network(case), case["temperature"], mean_correction=case["finwidth"]["mean_correction"])
        model.fit(ds["X"], ds["y"])
        side, mask = case["image_shape"][0], case["mask"]
        Z = IND.image_patches(ds["X"], side, mask)
        blocks = IND.all_blocks(case["activation"], Z, Z, case["priors"][0])
        cert = IND.certify(blocks, ds["y"], model.qbar_, case["channels"], case["temperature"], case["priors"][1])
        assert cert["max_rel_newton_step"] < CERTIFY, case["case"]
        assert cert["min_hessian_eigenvalue"] > 0, case["case"]
    assert len(seen) == 4


def test_contiguous_blocks_see_permuted_columns(data):
    case = REFERENCE[0]
    ds = data[case["dataset"]]
    img = _network(case)
    flat = ConvNetwork(img.input_size, img.patch_features, img.channels, img.activation, img.priors)
    perm = img.patch_index.ravel()
    a = RKGP(img, case["temperature"]).fit(ds["X"], ds["y"])
    b = RKGP(flat, case["temperature"]).fit(ds["X"][:, perm], ds["y"])
    np.testing.assert_allclose(a.qbar_, b.qbar_, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", POOLED, ids=_ids(POOLED))
def test_pooled_prediction_is_the_average_pooled_nngp(case, data):
    ds = data[case["dataset"]]
    err = NNGP(_network(case), case["temperature"]).fit(ds["X"], ds["y"]).generalization_error(ds["X_test"], ds["y_test"])
    for part in ("total", "bias", "variance"):
        np.testing.assert_allclose(getattr(err, part), case["eps_g"][part], rtol=RTOL, err_msg=part)
        assert math.isclose(case["independent_eps_g_pooled_nngp"][part], case["eps_g"][part], rel_tol=1e-9)
