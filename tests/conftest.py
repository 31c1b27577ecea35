"""Shared pytest fixtures.

Data fixtures: the real MNIST / CIFAR-10 files live in ``../shared/data`` beside the checkout (CI clones
the repository with ``shared/`` next to it) or in the directories of ``FINWIDTH_DATA``. Tests that need
them use ``mnist_root`` / ``cifar10_root`` and are marked ``realdata``; they skip, with the reason,
when the files are absent.
"""

from __future__ import annotations

import os

# The suite is dominated by small dense linear algebra, where multithreaded BLAS on a shared 2-core
# machine is ~10x slower than one thread. Set before numpy/scipy load their BLAS (an explicit
# environment setting wins).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_data_dirs() -> list[Path]:
    """Candidate data directories for tests and benchmarks: ``<repo>/../shared/data``, then ``FINWIDTH_DATA``."""
    dirs = [REPO.parent / "shared" / "data"]
    dirs += [Path(p) for p in os.environ.get("FINWIDTH_DATA", "").split(os.pathsep) if p.strip()]
    return dirs


def _real_data_root(name: str) -> Path:
    from finwidth.data import locate
    from finwidth.errors import DataError

    for d in shared_data_dirs():
        if not d.is_dir():
            continue
        try:
            source = locate(name, root=d)
        except DataError:
            continue
        if all(Path(p).resolve().is_relative_to(d.resolve()) for p in source.paths):
            return d
    pytest.skip(f"real {name} files not found in {[str(d) for d in shared_data_dirs()]}")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """Directory holding the real MNIST files (skips the test when there is none)."""
    return _real_data_root("mnist")


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """Directory holding the real CIFAR-10 files (skips the test when there is none)."""
    return _real_data_root("cifar10")
