"""The MNIST 0/1 subset shipped in the package: found last, identical to the original files where it
answers, a clear DataError where it cannot, small, licensed, and rebuilt bit for bit by its script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finwidth.data import load, locate
from finwidth.data.locate import EMBEDDED
from finwidth.errors import DataError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No data set anywhere: empty home, no FINWIDTH_DATA, no caches."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("FINWIDTH_DATA", "KERAS_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)


def test_small_and_licensed():
    path = EMBEDDED["mnist"]
    assert path.stat().st_size < 200_000
    readme = (path.parent / "README.md").read_text()
    assert "Attribution-Share Alike 3.0" in readme and "LeCun" in readme


@pytest.mark.realdata
@pytest.mark.parametrize("kwargs", [
    dict(classes=(0, 1), n_train=100, n_test=1000, preset="paper"),     # the demo and the README tour
    dict(classes=(1, 0), n_train=60, n_test=500, preset="raw", labels="pm1"),
    dict(classes=(0,), n_train=43, n_test=448, preset="paper", normalize_rows=True),
])
def test_same_as_the_original_files(nowhere, mnist_root, kwargs):
    emb = load("mnist", **kwargs)
    ref = load("mnist", root=mnist_root, **kwargs)
    assert emb.source_format == "embedded" and ref.source_format == "idx"
    for key in ("X_train", "y_train", "X_test", "y_test", "train_index", "test_index"):
        np.testing.assert_array_equal(getattr(emb, key), getattr(ref, key), err_msg=key)


def test_files_anywhere_win(nowhere, tmp_path, monkeypatch):
    import synth_formats as sf

    sf.write_mnist_idx(tmp_path / "home" / ".cache" / "finwidth" / "mnist", sf.fake_mnist(20, 10))
    assert locate("mnist").format == "idx"


@pytest.mark.parametrize(("kwargs", "why"), [
    (dict(classes=(0, 1), n_train=100, n_test=100, preset="standardized"), "random subset of the whole split"),
    (dict(classes=(3, 8), n_train=10, n_test=10), r"holds only the digits \[0, 1\]"),
    (dict(classes=(0, 1), n_train=101, n_test=10), "first 100 training and 1000 test images"),
    (dict(classes=(0,), n_train=10, n_test=449), "first 43 training and 448 test images"),
])
def test_requests_outside_the_subset_are_refused(nowhere, kwargs, why):
    with pytest.raises(DataError, match=rf"(?s)mnist not found.*finwidth data fetch mnist.*embedded.*{why}"):
        load("mnist", **kwargs)


@pytest.mark.slow  # rebuilds the subset from the full MNIST files
@pytest.mark.realdata
def test_script_rebuilds_the_same_bytes(mnist_root, tmp_path):
    out = tmp_path / "mnist01.npz"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_embedded_mnist.py"), str(Path(mnist_root) / "mnist"),
                    str(out)], check=True, capture_output=True)
    assert out.read_bytes() == EMBEDDED["mnist"].read_bytes()
