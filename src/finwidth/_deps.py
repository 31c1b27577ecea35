"""Optional dependencies: import them, or fail with a message that says how to install them.

A plain ``pip install finwidth`` gives the whole theory, the data loaders and the experiments without
sampling. Posterior sampling needs torch, which comes with the ``sampling`` extra (docs/install.md).
"""

from __future__ import annotations

from types import ModuleType

from finwidth.errors import MissingDependencyError

TORCH_HELP = (
    "Install it with the sampling extra: pip install 'finwidth[sampling]' (or 'finwidth[all]'; from a "
    "checkout: pip install -e '.[sampling]', or bash scripts/setup.sh sampling). On a machine without a "
    "GPU, get the small CPU-only torch build first: pip install torch --index-url URL, with URL the "
    "CPU-only wheel index given on PyTorch's installation page (scripts/setup.sh takes the same URL from "
    "FINWIDTH_TORCH_INDEX); see docs/install.md."
)


def require_torch(feature: str) -> ModuleType:
    """``import torch``, or raise :class:`~finwidth.errors.MissingDependencyError` naming ``feature``
    and how to install torch."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(f"{feature} needs PyTorch, which is not installed. {TORCH_HELP}",
                                     name="torch") from exc
    return torch
