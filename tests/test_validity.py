"""The validity diagnostic of RKGP (effective load α_eff = df/N_L) and finwidth.ValidityWarning.

df is checked against a dense trace of the renormalised kernel returned by ``renormalized_kernel``
(product, nested and non-odd forms); the warning fires exactly above the threshold. The threshold's
calibration against sampled networks is documented in docs/validity.md (data and script under
examples/reproductions/breakdown_*.py), not re-run here.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import finwidth
from finwidth.network import Network
from finwidth.theory import validity
from finwidth.theory.rkgp import RKGP


def _data(P=40, N0=10, seed=0, offset=0.0):
    """Gaussian inputs; ``offset`` adds a common mean input (structured data: low effective rank)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, N0)) + offset
    return X, np.tanh(X[:, 0] - offset) + 0.1 * rng.normal(size=P)


def _fit(net, T, **kw):
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", finwidth.ValidityWarning)
        return RKGP(net, T, **kw).fit(X, y)


@pytest.mark.parametrize("net,kw", [
    (Network([30], "erf"), {}),
    (Network([30, 20], "erf"), dict(renormalization="nested")),
    (Network([30, 20], "relu"), {}),
    (Network([30], "relu"), {}),  # non-odd: the mean term (rank-one) is in K_R
])
@pytest.mark.parametrize("T", [1e-3, 0.3])
def test_effective_dof_is_the_trace_of_the_hat_matrix(net, kw, T):
    model = _fit(net, T, **kw)
    K = model.renormalized_kernel().train
    ev = np.linalg.eigvalsh(K)
    dof = float(np.sum(ev / (ev + T)))
    assert model.validity_.degrees_of_freedom == pytest.approx(dof, rel=1e-9)
    assert model.validity_.effective_load == pytest.approx(dof / net.widths[-1], rel=1e-9)
    assert model.validity_.width == net.widths[-1]


def test_T0_counts_the_rank():
    model = _fit(Network([30], "erf"), 0.0)
    assert model.validity_.degrees_of_freedom == 40.0


def test_warning_fires_exactly_where_the_rule_says():
    assert issubclass(finwidth.ValidityWarning, UserWarning)
    cases = {}
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for name, (N, offset) in {"structured_narrow": (10, 3.0), "structured_wide": (400, 3.0),
                                  "isotropic_narrow": (10, 0.0)}.items():
            X, y = _data(offset=offset)
            n0 = len(rec)
            cases[name] = (RKGP(Network([N], "erf"), 1e-3).fit(X, y).validity_, len(rec) - n0)
    v, hits = cases["structured_narrow"]
    assert v.effective_load > validity.LOAD_THRESHOLD and v.rank_per_unit < validity.RANK_THRESHOLD
    assert not v.reliable and hits == 1
    v, hits = cases["structured_wide"]
    assert v.effective_load < validity.LOAD_THRESHOLD and v.reliable and hits == 0
    v, hits = cases["isotropic_narrow"]  # loaded, but the kernel has many effective dimensions per unit
    assert v.effective_load > validity.LOAD_THRESHOLD and v.rank_per_unit > validity.RANK_THRESHOLD
    assert v.reliable and hits == 0
    msgs = [w for w in rec if issubclass(w.category, finwidth.ValidityWarning)]
    assert len(msgs) == 1 and "effective load" in str(msgs[0].message) and msgs[0].filename == __file__


def test_participation_ratio():
    assert validity.participation_ratio(np.array([0.0, 0.0, 2.0])) == pytest.approx(1.0)
    assert validity.participation_ratio(np.ones(7)) == pytest.approx(7.0)
    X, _ = _data()
    model = _fit(Network([30], "erf"), 0.1)
    ev = np.linalg.eigvalsh(model.renormalized_kernel().train)
    assert model.validity_.kernel_rank == pytest.approx(ev.sum() ** 2 / (ev ** 2).sum(), rel=1e-9)
    assert model.validity_.rank_per_unit == pytest.approx(model.validity_.kernel_rank / 30)


def test_dof_matches_closed_form_in_simple_cases():
    k = np.array([0.0, 1.0, 3.0])
    assert validity.effective_dof(k, 2.0, 1.0) == pytest.approx(2 / 3 + 6 / 7)
    assert validity.effective_dof(k, 2.0, 0.0) == 2.0


def test_linear_networks_are_reliable_at_any_load():
    """Linear activation: the hidden features are exactly Gaussian, the saddle point is the Laplace
    approximation of an exact one-dimensional integral (tests/test_corrections.py checks it against
    Gibbs sampling), so no warning whatever the load."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", finwidth.ValidityWarning)
        model = RKGP(Network([3], "linear"), 1e-3).fit(*_data(offset=3.0))
    v = model.validity_
    assert v.effective_load > 1 and v.rank_per_unit < validity.RANK_THRESHOLD and v.reliable


def test_not_defined_for_several_outputs_and_refused_with_a_correction():
    X, y = _data()
    Y = np.stack([y, -0.5 * y], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", finwidth.ValidityWarning)  # not calibrated there: no warning either
        m = RKGP(Network([5], "erf"), 1e-3).fit(X, Y)
    assert m.validity_ is None and m.correction_ is None
    with pytest.raises(finwidth.ConfigError, match="one output"):
        RKGP(Network([5], "erf"), 1e-3, correction="kernel_shape").fit(X, Y)
