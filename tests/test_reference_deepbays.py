"""finwidth.RKGP against deepbays 0.1.11 (the authors' package), stored as fixtures.

Fixtures: ``tests/fixtures/deepbays/`` (generator ``make_fixtures.py``, recipe and versions in
its README); deepbays is never imported here. Each deepbays answer was certified in the generator
with an independent dense numpy evaluation of the action (``independent.py``): only answers whose
Newton step H⁻¹∇S is below 1e-7 relative are ``"reference"`` cases, so a 1e-6 relative comparison
of Q̄ and of ε_g (total, bias, variance) is meaningful.

Where deepbays is wrong (``"broken"`` cases) the tests document *how* it is wrong, from the
recorded outcome, and check that finwidth agrees with an independent reference (a root of the
finite-difference gradient of the dense action) and is itself a stationary point of that
independently coded action:

* nested deep relu (PyPI ``FC_deep``): NaN autograd gradient at the kernel diagonal, fsolve returns
  its initial guess Q̄ = 1, i.e. silent infinite-width predictions;
* non-odd 1HL relu (PyPI ``FC_1HL_nonodd``): a scalar in place of the rank-one mean term in the
  action (wrong saddle), then a crash in ``predict`` (or an AssertionError in ``optimize``);
* ``kernels.mean_relu`` returns sqrt(c π/2) instead of sqrt(c/(2π)).
"""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest

import finwidth

# These tests check the saddle-point equations, predictors and corrections themselves, also at small
# widths where the validity diagnostic warns that sampled networks deviate (docs/validity.md).
pytestmark = pytest.mark.filterwarnings("ignore::finwidth.errors.ValidityWarning")

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "deepbays"
META = json.loads((FIXTURES / "cases.json").read_text())
CASES = META["cases"]
REFERENCE = [c for c in CASES if c["status"] == "reference"]
BROKEN_NESTED_RELU = [c for c in CASES if c["status"] == "broken" and c["deepbays_class"] == "FC_deep"]
BROKEN_NONODD = [c for c in CASES if c["status"] == "broken" and c["deepbays_class"] == "FC_1HL_nonodd"]
RTOL = 1e-6  # the brief's agreement level; deepbays' answers are certified to <= 1e-7 (README)
CERTIFY = 1e-7  # largest relative Newton step accepted for finwidth's own answers


def _load_independent():
    spec = importlib.util.spec_from_file_location("deepbays_fixture_independent", FIXTURES / "independent.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


IND = _load_independent()


@pytest.fixture(scope="module")
def data():
    with np.load(FIXTURES / "data.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    return {
        name: {k: arrays[f"{name}__{k}"] for k in ("X", "y", "X_test", "y_test")} for name in META["datasets"]
    }


def _fit(case, data):
    ds = data[case["dataset"]]
    net = finwidth.Network([case["N1"]] * case["depth"], case["activation"], priors=case["priors"])
    opts = case["finwidth"]
    model = finwidth.RKGP(
        net, case["temperature"], renormalization=opts["renormalization"], mean_correction=opts["mean_correction"]
    )
    model.fit(ds["X"], ds["y"])
    return model, model.generalization_error(ds["X_test"], ds["y_test"]), ds


def _assert_eps(err, expected, rtol, what):
    for part in ("total", "bias", "variance"):
        np.testing.assert_allclose(getattr(err, part), expected[part], rtol=rtol, err_msg=f"{what}: eps_g {part}")


def _ids(cases):
    return [c["case"] for c in cases]


def test_fixture_inventory():
    """The fixtures cover the brief: FC_1HL erf/relu and nested erf L = 1..3, T in {0.01, 1}, N1 in {10, 100, 1000}."""
    kinds = {(c["deepbays_class"], c["activation"]) for c in REFERENCE}
    assert kinds == {("FC_1HL", "erf"), ("FC_1HL", "relu"), ("FC_deep", "erf")}
    assert {c["temperature"] for c in REFERENCE} == {0.01, 1.0}
    assert {c["N1"] for c in REFERENCE} == {10, 100, 1000}
    assert {c["depth"] for c in REFERENCE if c["deepbays_class"] == "FC_deep"} == {1, 2, 3}
    assert all(all(p != 1.0 for p in c["priors"]) for c in CASES)
    assert all(c["certificate"]["max_rel_newton_step"] < META["keep_rel_newton_step"] <= 1e-7 for c in REFERENCE)
    # deepbays' predictor agrees with the independent dense GP formulas at its own Q̄
    for c in REFERENCE + BROKEN_NESTED_RELU:
        for part, value in c["independent_eps_g_at_deepbays_qbar"].items():
            assert math.isclose(value, c["eps_g"][part], rel_tol=1e-12), (c["case"], part)
    assert len(BROKEN_NESTED_RELU) == 16 and len(BROKEN_NONODD) == 8


@pytest.mark.parametrize("case", REFERENCE, ids=_ids(REFERENCE))
def test_agrees_with_deepbays(case, data):
    model, err, _ = _fit(case, data)
    np.testing.assert_allclose(model.qbar_, case["qbar"], rtol=RTOL, err_msg=f"{case['case']}: Qbar")
    _assert_eps(err, case["eps_g"], RTOL, case["case"])


@pytest.mark.parametrize("case", BROKEN_NESTED_RELU, ids=_ids(BROKEN_NESTED_RELU))
def test_deepbays_nested_relu_is_infinite_width_and_ours_is_the_saddle(case, data):
    # what deepbays did: Qbar = 1 exactly, its own gradient NaN, converged flag False ...
    assert case["qbar"] == [1.0] * case["depth"]
    assert "nan" in case["deepbays_grad_at_answer"] and case["deepbays_converged_flag"] is False
    # ... and Qbar = 1 is not stationary: the independent gradient there is O(0.01-10)
    assert max(abs(g) for g in case["certificate"]["grad"]) > 1e-2
    ref = case["independent_reference"]
    assert ref["certificate"]["max_rel_newton_step"] < 1e-9
    ds = data[case["dataset"]]
    for form in ("nested", "product"):  # identical for relu (homogeneity)
        net = finwidth.Network([case["N1"]] * case["depth"], "relu", priors=case["priors"])
        model = finwidth.RKGP(net, case["temperature"], renormalization=form, mean_correction=False)
        model.fit(ds["X"], ds["y"])
        np.testing.assert_allclose(model.qbar_, ref["qbar"], rtol=RTOL, err_msg=f"{case['case']} ({form})")
        err = model.generalization_error(ds["X_test"], ds["y_test"])
        _assert_eps(err, ref["eps_g"], RTOL, f"{case['case']} ({form})")
        # ours is stationary for the independently coded nested action
        _, step = IND.newton_distance(
            lambda q: IND.deep_action(
                "relu", ds["X"], ds["y"], case["priors"], q, case["N1"], case["temperature"], "nested"
            ),
            model.qbar_,
        )
        assert np.max(np.abs(step) / model.qbar_) < CERTIFY
    # deepbays' silent infinite-width answer is off by more than 2 % in eps_g in every case
    assert abs(case["eps_g"]["total"] - ref["eps_g"]["total"]) > 0.02 * ref["eps_g"]["total"]


@pytest.mark.parametrize("case", BROKEN_NONODD, ids=_ids(BROKEN_NONODD))
def test_deepbays_nonodd_crashes_and_ours_is_the_mean_corrected_saddle(case, data):
    outcome = case["deepbays_outcome"]
    assert outcome["raised"] in ("ValueError", "AssertionError")
    if outcome["stage"] == "predict":
        # its optimiser did return, but at a stationary point of the wrong (scalar-mean) action
        assert outcome["raised"] == "ValueError" and "broadcast" in outcome["message"]
        assert max(abs(g) for g in outcome["independent_grad_at_optimize_answer"]) > 1e-2
    else:
        assert outcome["stage"] == "optimize" and outcome["raised"] == "AssertionError"
    ref = case["independent_reference"]
    assert ref["certificate"]["max_rel_newton_step"] < 1e-9
    h = ref["hessian_eigenvalues"]
    assert min(h) < 0 < max(h)  # a genuine saddle in (Qbar, Q): minimising S would be wrong
    model, err, ds = _fit(case, data)
    assert model.kind_ == "nonodd"
    np.testing.assert_allclose(model.qbar_, ref["qbar"], rtol=RTOL, err_msg=case["case"])
    np.testing.assert_allclose(model.q_, [ref["q"]], rtol=RTOL, atol=1e-9, err_msg=case["case"])
    _assert_eps(err, ref["eps_g"], RTOL, case["case"])
    _, step = IND.newton_distance(
        lambda z: IND.nonodd_action(ds["X"], ds["y"], case["priors"], z[0], z[1], case["N1"], case["temperature"]),
        np.array([model.qbar_[0], model.q_[0]]),
    )
    assert np.max(np.abs(step) / np.maximum(np.abs([model.qbar_[0], model.q_[0]]), 1e-3)) < CERTIFY


def test_deepbays_relu_mean_is_wrong_by_a_factor_pi():
    """deepbays 0.1.11 ``kernels.mean_relu(c) = sqrt(c/2*pi)`` = sqrt(c pi/2); E relu(z) = sqrt(c/(2 pi))."""
    assert math.isclose(META["deepbays_mean_relu_at_c_1"], math.sqrt(math.pi / 2), rel_tol=1e-15)
    ours = float(finwidth.activations.get_activation("relu").mean(np.array(1.0)))
    assert math.isclose(ours, 1 / math.sqrt(2 * math.pi), rel_tol=1e-14)
