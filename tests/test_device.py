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
