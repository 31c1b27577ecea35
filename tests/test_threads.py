"""finwidth.threads / finwidth.set_num_threads, checked with threadpoolctl's own report and torch's."""

from __future__ import annotations

import os

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import finwidth
from finwidth.errors import ConfigError


def _blas_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info()}


def test_context_caps_and_restores():
    import scipy.linalg  # noqa: F401 - the libraries are loaded before the "before" snapshot
    import torch
    before, torch_before = [lib["num_threads"] for lib in threadpool_info()], torch.get_num_threads()
    with finwidth.threads(2) as t:
        assert _blas_threads() == {2} and torch.get_num_threads() == 2 and repr(t) == "finwidth.threads(2)"
        # a theory fit runs under the cap
        X = np.random.default_rng(0).normal(size=(30, 4))
        finwidth.NNGP(finwidth.Network([10]), 0.1).fit(X, X[:, 0])
    assert [lib["num_threads"] for lib in threadpool_info()] == before and torch.get_num_threads() == torch_before


def test_set_num_threads_is_process_wide(monkeypatch):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, os.environ.get(var, "1"))  # restored by monkeypatch afterwards
    keep = finwidth.threads(1)  # the current limits, to restore after the test
    try:
        finwidth.set_num_threads(2)
        assert _blas_threads() == {2} and os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        keep.restore()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_bad_counts(bad):
    with pytest.raises(ConfigError, match="positive integer"):
        finwidth.threads(bad)
