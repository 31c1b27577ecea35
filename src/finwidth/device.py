"""The theory on a torch device: lazy import, device resolution, and NNGP kernel tiles computed there.

The theory runs on numpy and never imports torch unless a device is asked for (``device="cuda"``,
``"cuda:1"``, ``"cpu"``, a ``torch.device``); torch is the optional extra ``finwidth[sampling]``. On a
device, everything is float64 and gives the numpy answers to rounding (tests check ``"cpu"``).

Kernels on a device: the input product X Xᵀ always runs there; the layer map κ runs there for the
closed forms written below (linear, erf, relu: the same formulas as :mod:`finwidth.activations`), and
on the CPU with numpy for any other activation, with the tile moved to the device afterwards.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from finwidth.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from finwidth.network import Network

__all__ = ["DEVICE_KAPPA", "as_numpy", "kernel_tile", "resolve_device", "torch_module"]

_EXTRA_HELP = ("install it with the sampling extra, pip install 'finwidth[sampling]' (a CPU-only build of torch "
               "is enough for device='cpu')")


def torch_module():
    """``import torch``, or an ImportError naming the extra that provides it."""
    try:
        import torch
    except ImportError as exc:
        try:
            from finwidth.errors import MissingDependencyError  # type: ignore[attr-defined]
        except ImportError:  # pragma: no cover - older layouts
            MissingDependencyError = ImportError  # noqa: N806
        raise MissingDependencyError(f"running the theory on a torch device needs PyTorch, which is not installed: "
                                     f"{_EXTRA_HELP}") from exc
    return torch


def resolve_device(device: Any):
    """None (numpy) or a ``torch.device``; ConfigError for an unknown or unavailable device."""
    if device is None:
        return None
    torch = torch_module()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be None, 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but torch sees no CUDA device; use device=None or 'cpu'")
    return dev


def as_numpy(t) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A torch tensor (any device) as a float64 numpy array."""
    return t.detach().to("cpu").double().numpy()


# ---------------------------------------------------------------------------------------------
# κ on the device for the closed forms (finwidth.activations has the numpy originals)
# ---------------------------------------------------------------------------------------------


def _erf_block(torch, block, d_row, d_col):  # type: ignore[no-untyped-def]
    fr = 1.0 / torch.sqrt(1.0 + 2.0 * d_row)
    fc = 1.0 / torch.sqrt(1.0 + 2.0 * d_col)
    block.mul_((2.0 * fr)[:, None]).mul_(fc[None, :]).clamp_(-1.0, 1.0).asin_().mul_(2.0 / math.pi)
    return block


def _relu_block(torch, block, d_row, d_col):  # type: ignore[no-untyped-def]
    sr, sc = torch.sqrt(d_row), torch.sqrt(d_col)
    ir = torch.where(d_row > 0, 1.0 / torch.where(d_row > 0, sr, 1.0), 0.0)
    ic = torch.where(d_col > 0, 1.0 / torch.where(d_col > 0, sc, 1.0), 0.0)
    u = block.mul_(ir[:, None]).mul_(ic[None, :]).clamp_(-1.0, 1.0)
    t = torch.arccos(u).neg_().add_(math.pi).mul_(u)  # (π − arccos u) u: one temporary the size of the block
    u.mul_(u).neg_().add_(1.0).sqrt_().add_(t)
    del t
    return u.mul_((sr / (2 * math.pi))[:, None]).mul_(sc[None, :])


def _linear_block(torch, block, d_row, d_col):  # type: ignore[no-untyped-def]
    return block


#: activations whose layer map runs on the device
DEVICE_KAPPA = {"erf": _erf_block, "relu": _relu_block, "linear": _linear_block}


def kernel_tile(network: Network, X_rows: np.ndarray, X_cols: np.ndarray, diags_rows: np.ndarray,
                diags_cols: np.ndarray, device):  # type: ignore[no-untyped-def]
    """K_L(X_rows, X_cols) as a float64 tensor on ``device`` (docs/conventions.md).

    ``diags_*`` are the layer diagonals (L+1, n) of :func:`finwidth.kernels.layer_diagonals`.
    """
    torch = torch_module()
    act = network.activation
    bias = network.bias_variances()
    Xr = torch.as_tensor(X_rows, dtype=torch.float64, device=device)
    Xc = torch.as_tensor(X_cols, dtype=torch.float64, device=device)
    K = Xr @ Xc.T
    K.mul_(1.0 / (network.priors[0] * X_rows.shape[1]))
    if bias[0]:
        K.add_(bias[0])
    block_fn = DEVICE_KAPPA.get(act.name)
    if block_fn is not None and DEVICE_KAPPA_OWNER.get(act.name) is act:
        dr = torch.as_tensor(diags_rows, dtype=torch.float64, device=device)
        dc = torch.as_tensor(diags_cols, dtype=torch.float64, device=device)
        for layer in range(1, network.depth + 1):
            K = block_fn(torch, K, dr[layer - 1], dc[layer - 1])
            K.mul_(1.0 / network.priors[layer])
            if bias[layer]:
                K.add_(bias[layer])
        return K
    # any other activation: the numpy recursion on the CPU, then to the device
    from finwidth import kernels

    if network.depth == 0:  # pragma: no cover - networks have L ≥ 1
        return K
    tile, _ = kernels.nngp_cross(network, X_cols, X_rows, train_diags=diags_cols)
    return torch.as_tensor(tile, dtype=torch.float64, device=device)


def _owners() -> dict:
    from finwidth.activations import get_activation

    return {name: get_activation(name) for name in DEVICE_KAPPA}


#: the registered activation objects the device formulas belong to (a user-registered activation that
#: reuses a name would not match and takes the CPU path)
DEVICE_KAPPA_OWNER = _owners()
