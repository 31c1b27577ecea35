"""The real MNIST / CIFAR-10 files (../shared/data or FINWIDTH_DATA), checked against a minimal
independent decoder written here (gzip + numpy offsets), and against the published class counts."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from finwidth.data import load, pil_resize_bilinear
from finwidth.errors import ConfigError

pytestmark = pytest.mark.realdata


def _mnist_raw(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Independent decode: header 16 bytes (images) / 8 bytes (labels)."""
    folder = root / "mnist"
    images = np.frombuffer(gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    labels = np.frombuffer(gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    return images.reshape(-1, 28, 28), labels


def _cifar_raw(root: Path, batches: list[str]) -> tuple[np.ndarray, np.ndarray]:
    rec = np.concatenate([np.fromfile(root / "cifar10" / "cifar-10-batches-bin" / f"{b}.bin", np.uint8).reshape(-1, 3073)
                          for b in batches])
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0]


def test_mnist_counts(mnist_root):
    d = load("mnist", classes=(0, 1), n_train=12665, n_test=2115, root=mnist_root)
    assert (d.y_train == 0).sum() == 5923 and (d.y_train == 1).sum() == 6742
    assert (d.y_test == 0).sum() == 980 and (d.y_test == 1).sum() == 1135
    assert d.info["n_available_train"] == 12665 and d.info["n_available_test"] == 2115
    with pytest.raises(ConfigError, match="holds only 12665 images"):
        load("mnist", classes=(0, 1), n_train=12666, n_test=1, root=mnist_root)
    per_class = [load("mnist", classes=(k,), n_train=1, n_test=1, root=mnist_root).info for k in range(10)]
    assert [i["n_available_train"] for i in per_class] == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert [i["n_available_test"] for i in per_class] == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_paper_preset_is_first_images_in_file_order(mnist_root):
    images, labels = _mnist_raw(mnist_root, "train")
    t_images, t_labels = _mnist_raw(mnist_root, "t10k")
    d = load("mnist", classes=(0, 1), n_train=100, n_test=50, root=mnist_root)
    first = np.flatnonzero(labels <= 1)[:100]
    np.testing.assert_array_equal(d.train_index, first)
    np.testing.assert_array_equal(d.y_train, labels[first].astype(float))
    np.testing.assert_allclose(d.X_train, (images[first].reshape(100, 784) / 255 - 0.1307) / 0.3081, atol=1e-12)
    tfirst = np.flatnonzero(t_labels <= 1)[:50]
    np.testing.assert_allclose(d.X_test, (t_images[tfirst].reshape(50, 784) / 255 - 0.1307) / 0.3081, atol=1e-12)
    # first image's statistics from the independent decode (reported in docs/data.md)
    x0 = (images[first[0]].astype(float) / 255 - 0.1307) / 0.3081
    assert d.X_train[0].mean() == pytest.approx(x0.mean(), abs=1e-12)
    assert d.X_train[0].std() == pytest.approx(x0.std(), abs=1e-12)


def test_cifar_counts(cifar10_root):
    d = load("cifar10", classes=(0, 1), n_train=10000, n_test=2000, root=cifar10_root, preset="raw")
    assert (d.y_train == 0).sum() == 5000 and (d.y_train == 1).sum() == 5000
    assert (d.y_test == 0).sum() == 1000 and (d.y_test == 1).sum() == 1000
    assert d.class_names == ("airplane", "automobile")


def test_cifar_paper_preset(cifar10_root):
    images, labels = _cifar_raw(cifar10_root, ["data_batch_1"])
    d = load("cifar10", classes=(0, 1), n_train=300, n_test=20, root=cifar10_root)
    first = np.flatnonzero(labels <= 1)[:300]
    np.testing.assert_array_equal(d.train_index, first)
    np.testing.assert_array_equal(d.y_train, labels[first].astype(float))
    small = pil_resize_bilinear(images[first], (28, 28)).astype(float) / 255  # Pillow-exact (test_data_resize)
    gray = 0.2989 * small[:, 0] + 0.587 * small[:, 1] + 0.114 * small[:, 2]
    np.testing.assert_allclose(d.X_train, ((gray - 0.1307) / 0.3081).reshape(300, 784), atol=1e-12)
    t_images, t_labels = _cifar_raw(cifar10_root, ["test_batch"])
    tfirst = np.flatnonzero(t_labels <= 1)[:20]
    np.testing.assert_array_equal(d.y_test, t_labels[tfirst].astype(float))


def test_cifar_standardized_preset(cifar10_root):
    d = load("cifar10", classes=(0, 1), n_train=200, n_test=100, preset="standardized", seed=4, root=cifar10_root)
    _, labels = _cifar_raw(cifar10_root, [f"data_batch_{i}" for i in range(1, 6)])
    pool = np.flatnonzero(labels <= 1)
    np.testing.assert_array_equal(d.train_index, pool[np.random.RandomState(4).permutation(len(pool))[:200]])
    assert abs(d.X_train.mean()) < 1e-12 and abs(d.X_train.std() - 1) < 1e-12
