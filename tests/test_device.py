"""The theory on a torch device: the "cpu" device gives the numpy answers (no test needs a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from finwidth import kernels
from finwidth.errors import ConfigError
from finwidth.kernel_operator import KernelOperator
from finwidth.network import Network

torch = pytest.importorskip("torch")

from finwidth.device import as_numpy, kernel_tile, resolve_device  # noqa: E402


def _X(P=90, N0=9, seed=0):
    return np.random.default_rng(seed).normal(size=(P, N0))


@pytest.mark.parametrize("act", ["erf", "relu", "linear", "tanh"])
def test_kernel_tiles_on_the_device_are_the_numpy_kernel(act):
    X = _X()
    net = Network([5, 5], act, priors=[1.3, 0.8, 2.0], bias=[0.1, 0.0, 0.3])
    K = kernels.nngp(net, X).train
    D = kernels.layer_diagonals(net, X)
    tile = as_numpy(kernel_tile(net, X[:40], X[25:], D[:, :40], D[:, 25:], resolve_device("cpu")))
    # closed forms to rounding; tanh (Hermite series, CPU fallback) to its documented 1e-10
    tol = 1e-14 if act != "tanh" else 1e-10
    assert np.max(np.abs(tile - K[:40, 25:])) <= tol * np.max(np.abs(K))


@pytest.mark.parametrize("storage", ["float64", "float32", "recompute"])
def test_kernel_operator_on_the_device(storage):
    X = _X(P=130)
    net = Network([7], "erf")
    V = np.random.default_rng(1).normal(size=(130, 4))
    host = KernelOperator(net, X, storage=storage, tile=40)
    dev = KernelOperator(net, X, storage=storage, tile=40, device="cpu")
    tol = 1e-14 if storage != "float32" else 1e-7
    # float32 tiles multiply in float32: each side is within γ_n = n u₃₂ (n = 40 terms per tile) of the
    # float64 product, entrywise relative to |K||V| (summation order differs between the two)
    bound = tol * np.abs(host @ V).max() if storage != "float32" else \
        2 * (40 + 2) * np.finfo(np.float32).eps / 2 * (np.abs(host.dense()) @ np.abs(V))
    assert np.all(np.abs(dev @ V - host @ V) <= bound)
    assert np.allclose(dev.dense(), host.dense(), rtol=0, atol=tol)


def test_device_errors():
    with pytest.raises(ConfigError, match="device"):
        resolve_device("not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            resolve_device("cuda")
    assert resolve_device(None) is None


# ---------------------------------------------------------------------------------------------
# the estimators with device="cpu" against the numpy path (device=None)
# ---------------------------------------------------------------------------------------------

def _data(P=70, N0=6, seed=3, D=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, N0))
    y = np.tanh(X[:, 0] - 0.5 * X[:, 1]) + 0.1 * rng.normal(size=P)
    if D is not None:
        y = np.stack([y, np.sin(X[:, 2]), X[:, 3] * X[:, 0]][:D], axis=1)
    return X, y, rng.normal(size=(25, N0))


def _same_predictions(a, b, Xt):
    ma, va = a.predict(Xt, return_var=True)
    mb, vb = b.predict(Xt, return_var=True)
    scale = float(np.max(np.abs(ma))) + 1.0
    assert np.max(np.abs(ma - mb)) <= 1e-8 * scale
    assert np.max(np.abs(va - vb)) <= 1e-8 * (float(np.max(va)) + 1e-3)


@pytest.mark.parametrize("case", [
    dict(widths=[90], act="erf", T=0.05),                                    # one hidden layer (product)
    dict(widths=[90, 80], act="erf", T=0.05),                                # deep product form
    dict(widths=[90, 80], act="erf", T=0.05, renormalization="nested"),      # nested L = 2
    dict(widths=[90], act="relu", T=0.05),                                   # non-odd: the mean term
    dict(widths=[90], act="erf", T=0.0),                                     # T = 0 (closed form, eigh path)
])
def test_rkgp_on_the_device_is_the_numpy_fit(case):
    from finwidth import RKGP

    X, y, Xt = _data()
    net = Network(case["widths"], case["act"], priors=[1.0] + [1.2] * len(case["widths"]))
    kw = dict(renormalization=case.get("renormalization", "product"), solver="dense")
    ref = RKGP(net, case["T"], **kw).fit(X, y)
    dev = RKGP(net, case["T"], device="cpu", **kw).fit(X, y)
    assert dev.kind_ == ref.kind_
    assert np.allclose(dev.qbar_, ref.qbar_, rtol=1e-10, atol=0)
    assert np.allclose(dev.q_, ref.q_, rtol=1e-9, atol=1e-12)
    assert abs(dev.action_ - ref.action_) <= 1e-9 * (1 + abs(ref.action_))
    if case.get("renormalization") == "nested":
        assert dev.n_factorizations_ > 0
    _same_predictions(dev, ref, Xt)
    assert dev.get_params()["device"] == "cpu"


def test_nngp_on_the_device_is_the_numpy_fit():
    from finwidth import NNGP

    X, y, Xt = _data()
    net = Network([50, 50], "relu", bias=[0.1, 0.2, 0.0])
    for T in (0.05, 0.0):
        ref, dev = NNGP(net, T).fit(X, y), NNGP(net, T, device="cpu").fit(X, y)
        assert dev.rank_ == ref.rank_
        assert abs(dev.log_evidence_ - ref.log_evidence_) <= 1e-8 * abs(ref.log_evidence_)
        _same_predictions(dev, ref, Xt)
    assert np.allclose(dev.kernel_, ref.kernel_, rtol=0, atol=1e-13)
    _, cov_r = ref.predict(Xt, return_cov=True)
    _, cov_d = dev.predict(Xt, return_cov=True)
    assert np.max(np.abs(cov_d - cov_r)) <= 1e-8
    Y = _data(D=3)[1]
    ref, dev = NNGP(net, 0.05).fit(X, Y), NNGP(net, 0.05, device="cpu").fit(X, Y)
    _same_predictions(dev, ref, Xt)
    # a singular kernel at T = 0 (linear network, P > N_0): the pseudo-inverse of rank N_0, labels in its range
    lin, y_in = Network([50], "linear"), X @ np.arange(1.0, 7.0)
    ref, dev = NNGP(lin, 0.0).fit(X, y_in), NNGP(lin, 0.0, device="cpu").fit(X, y_in)
    assert dev.rank_ == ref.rank_ == 6
    assert abs(dev.log_evidence_ - ref.log_evidence_) <= 1e-8 * abs(ref.log_evidence_)
    _same_predictions(dev, ref, Xt)
    assert NNGP(lin, 0.0, device="cpu").fit(X, y).log_evidence_ == -np.inf  # labels outside the range


def test_eigenbasis_fits_and_krylov_on_the_device():
    from finwidth import RKGP

    X, Y, Xt = _data(D=2)
    net = Network([60], "erf")
    # several outputs, and a correction: the eigenbasis from the device, the sums over modes on the CPU
    for kw, targets in (({}, Y), ({"correction": "kernel_shape"}, Y[:, 0])):
        ref = RKGP(net, 0.05, solver="dense", **kw).fit(X, targets)
        dev = RKGP(net, 0.05, solver="dense", device="cpu", **kw).fit(X, targets)
        assert np.allclose(dev.qbar_, ref.qbar_, rtol=0, atol=1e-10)
        _same_predictions(dev, ref, Xt)
    # the matrix-free path: the same operator products on the device (exact probes: deterministic)
    X, y, Xt = _data(P=120)
    opts = {"probes": "exact", "storage": "float64"}
    ref = RKGP(net, 0.05, solver="krylov", solver_options=opts).fit(X, y)
    dev = RKGP(net, 0.05, solver="krylov", solver_options=opts, device="cpu").fit(X, y)
    assert dev._operator.device is not None
    assert np.allclose(dev.qbar_, ref.qbar_, rtol=1e-9, atol=0)


def test_bad_devices_are_config_errors():
    from finwidth import NNGP, RKGP

    X, y, _ = _data(P=20)
    net = Network([10], "erf")
    for est in (RKGP(net, 0.1, device="warp-drive"), NNGP(net, 0.1, device="warp-drive")):
        with pytest.raises(ConfigError, match="device"):
            est.fit(X, y)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            RKGP(net, 0.1, device="cuda").fit(X, y)
    from finwidth import ConvNetwork

    cnn = ConvNetwork(12, 6, 10, "erf")
    Xc = np.random.default_rng(0).normal(size=(20, 12))
    for est in (RKGP(cnn, 0.1, device="cpu"), NNGP(cnn, 0.1, device="cpu")):
        with pytest.raises(ConfigError, match="device=None"):
            est.fit(Xc, y)
