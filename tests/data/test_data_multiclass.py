"""Multi-class targets: one-hot and centred one-hot encodings, any CIFAR-10 classes, all ten MNIST digits.

Classes other than airplane/automobile are tested on small files written in the official CIFAR-10 binary
format (``synth_formats``); the real MNIST test uses ``../shared/data`` when present.
"""

from __future__ import annotations

import numpy as np
import pytest
import synth_formats as sf

from finwidth.data import Dataset, encode_labels, load
from finwidth.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("FINWIDTH_DATA", "KERAS_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)


def _cifar(tmp_path, labels_per_batch):
    """Official-format binary batches whose labels cycle through ``labels_per_batch``."""
    rng = np.random.default_rng(7)
    batches = {}
    for b in sf.CIFAR_BATCHES:
        lab = np.array(labels_per_batch, dtype=np.uint8)
        batches[b] = (rng.integers(0, 256, size=(lab.size, 3, 32, 32), dtype=np.uint8), lab)
    sf.write_cifar_dir(tmp_path / "c" / "cifar-10-batches-bin", batches, fmt="bin")
    return tmp_path / "c", batches


def test_encode_labels_one_hot():
    raw = np.array([7, 3, 9, 3])
    np.testing.assert_array_equal(encode_labels(raw, (3, 7, 9), "onehot"),
                                  [[0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 0, 0]])
    c = encode_labels(raw, (3, 7, 9), "onehot_centered")
    np.testing.assert_allclose(c, np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 0, 0]]) - 1 / 3)
    np.testing.assert_allclose(c.sum(axis=1), 0, atol=1e-15)
    with pytest.raises(ConfigError, match="not among classes"):
        encode_labels(raw, (3, 7), "onehot")


def test_cifar_any_classes_one_hot(tmp_path):
    root, batches = _cifar(tmp_path, [2, 5, 9, 0, 5, 2, 9, 1])
    d = load("cifar10", classes=("bird", 9, "dog"), n_train=12, n_test=5, root=root, labels="onehot", preset="raw")
    assert d.classes == (2, 9, 5) and d.class_names == ("bird", "truck", "dog")
    assert d.y_train.shape == (12, 3) and d.y_test.shape == (5, 3) and d.n_outputs == 3
    raw = np.concatenate([batches[b][1] for b in sf.CIFAR_BATCHES[:5]])
    keep = np.flatnonzero(np.isin(raw, (2, 9, 5)))[:12]
    np.testing.assert_array_equal(d.train_index, keep)
    expected = np.stack([raw[keep] == c for c in (2, 9, 5)], axis=1).astype(float)
    np.testing.assert_array_equal(d.y_train, expected)
    images = np.concatenate([batches[b][0] for b in sf.CIFAR_BATCHES[:5]])[keep]
    np.testing.assert_allclose(d.X_train, images.reshape(12, 3072) / 255.0)
    dc = load("cifar10", classes=("bird", 9, "dog"), n_train=12, n_test=5, root=root, labels="onehot_centered")
    np.testing.assert_allclose(dc.y_train, expected - 1 / 3)
    assert dc.labels == "onehot_centered" and dc.X_train.shape == (12, 784)


def test_all_ten_cifar_classes(tmp_path):
    root, _ = _cifar(tmp_path, list(range(10)))
    d = load("cifar10", classes=range(10), n_train=30, n_test=10, root=root, labels="onehot")
    assert d.y_train.shape == (30, 10)
    np.testing.assert_array_equal(d.y_train.sum(axis=0), 3 * np.ones(10))
    np.testing.assert_array_equal(np.argmax(d.y_test, axis=1), np.arange(10))


def test_empty_class_is_a_clear_error(tmp_path):
    root, _ = _cifar(tmp_path, [2, 2, 2, 5])
    with pytest.raises(DataError, match=r"class \[5\] \(dog\) has no example among the n_train=3"):
        load("cifar10", classes=(2, 5), n_train=3, n_test=1, root=root, labels="onehot")
    # the scalar encodings are not affected, and a larger n_train reaches the class
    load("cifar10", classes=(2, 5), n_train=3, n_test=1, root=root, labels="01")
    load("cifar10", classes=(2, 5), n_train=4, n_test=1, root=root, labels="onehot")


def test_dataset_shapes():
    X = np.zeros((4, 3))
    Dataset(X_train=X, y_train=np.zeros((4, 2)), X_test=X[:2], y_test=np.zeros((2, 2)), name="t")
    with pytest.raises(ConfigError, match="different numbers of outputs"):
        Dataset(X_train=X, y_train=np.zeros((4, 2)), X_test=X[:2], y_test=np.zeros((2, 3)), name="t")
    with pytest.raises(ConfigError, match=r"shape \(4,\) or \(4, D\)"):
        Dataset(X_train=X, y_train=np.zeros((4, 0)), X_test=X[:2], y_test=np.zeros((2, 0)), name="t")


@pytest.mark.realdata
def test_mnist_ten_digits_one_hot(mnist_root):
    d = load("mnist", classes=range(10), n_train=200, n_test=100, root=mnist_root, labels="onehot")
    assert d.y_train.shape == (200, 10) and d.classes == tuple(range(10))
    np.testing.assert_array_equal(d.y_train.sum(axis=1), 1.0)
    assert (d.y_train.sum(axis=0) > 0).all()
    digits = load("mnist", classes=range(10), n_train=200, n_test=100, root=mnist_root, labels="01")
    np.testing.assert_array_equal(np.argmax(d.y_train, axis=1), digits.y_train)
