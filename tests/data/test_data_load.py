"""finwidth.data.load end to end on generated files: presets, classes, label encodings, options, errors."""

from __future__ import annotations

import numpy as np
import pytest
import synth_formats as sf

from finwidth.data import Dataset, load, pil_resize_bilinear
from finwidth.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("FINWIDTH_DATA", "KERAS_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def mnist_dir(tmp_path):
    arrays = sf.fake_mnist(80, 40, seed=3)
    sf.write_mnist_idx(tmp_path / "m" / "mnist", arrays)
    return tmp_path / "m", arrays


@pytest.fixture
def cifar_dir(tmp_path):
    batches = sf.fake_cifar(10, seed=4)
    sf.write_cifar_dir(tmp_path / "c" / "cifar-10-batches-bin", batches, fmt="bin")
    return tmp_path / "c", batches


def test_paper_mnist_formula(mnist_dir):
    root, a = mnist_dir
    d = load("mnist", classes=(3, 5), n_train=7, n_test=4, root=root)
    pool = np.flatnonzero((a["train_labels"] == 3) | (a["train_labels"] == 5))[:7]
    expected = (a["train_images"][pool].reshape(7, 784) / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(d.X_train, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(d.train_index, pool)
    np.testing.assert_array_equal(d.y_train, (a["train_labels"][pool] == 5).astype(float))
    assert d.X_train.dtype == np.float64 and d.X_train.flags.c_contiguous and d.X_train.flags.writeable
    assert (d.n_train, d.n_test, d.n_features) == (7, 4, 784)
    assert d.classes == (3, 5) and d.class_names == ("3", "5") and d.preset == "paper" and d.seed is None
    assert d.source_format == "idx" and len(d.source_files) == 4 and isinstance(d, Dataset)


def test_label_encodings(mnist_dir):
    root, a = mnist_dir
    raw = a["train_labels"][np.isin(a["train_labels"], (8, 2))][:10].astype(float)
    d01 = load("mnist", classes=(8, 2), n_train=10, n_test=0, root=root)
    np.testing.assert_array_equal(d01.y_train, np.where(raw == 8, 0.0, 1.0))  # index within classes
    dpm = load("mnist", classes=(8, 2), n_train=10, n_test=0, root=root, labels="pm1")
    np.testing.assert_array_equal(dpm.y_train, np.where(raw == 8, -1.0, 1.0))
    for enc in ("regression", "raw"):
        dr = load("mnist", classes=(8, 2), n_train=10, n_test=0, root=root, labels=enc)
        np.testing.assert_array_equal(dr.y_train, raw)
        assert dr.labels == "regression"
    dall = load("mnist", n_train=80, n_test=40, root=root)  # classes=None: all ten, "01" = the digit
    np.testing.assert_array_equal(dall.y_train, a["train_labels"].astype(float))
    np.testing.assert_array_equal(dall.train_index, np.arange(80))
    assert dall.n_test == 40


def test_all_mnist_formats_agree(tmp_path):
    arrays = sf.fake_mnist(50, 20, seed=5)
    roots = {"gz": tmp_path / "gz", "raw": tmp_path / "raw", "npz": tmp_path / "npz"}
    sf.write_mnist_idx(roots["gz"] / "mnist", arrays, gz=True)
    sf.write_mnist_idx(roots["raw"] / "MNIST" / "raw", arrays, gz=False)
    sf.write_mnist_npz(roots["npz"] / "mnist.npz", arrays)
    out = {k: load("mnist", classes=(0, 1, 2), n_train=10, n_test=3, root=r) for k, r in roots.items()}
    assert out["npz"].source_format == "npz"
    for k in ("raw", "npz"):
        np.testing.assert_array_equal(out[k].X_train, out["gz"].X_train)
        np.testing.assert_array_equal(out[k].y_test, out["gz"].y_test)


def test_all_cifar_formats_agree(tmp_path):
    batches = sf.fake_cifar(6, seed=6)
    roots = {f: tmp_path / f for f in ("bin", "py", "bintar", "pytar")}
    sf.write_cifar_dir(roots["bin"] / "cifar10" / "cifar-10-batches-bin", batches, fmt="bin")
    sf.write_cifar_dir(roots["py"] / "cifar-10-batches-py", batches, fmt="py")
    sf.write_cifar_tar(roots["bintar"] / "cifar-10-binary.tar.gz", batches, fmt="bin")
    sf.write_cifar_tar(roots["pytar"] / "cifar-10-python.tar.gz", batches, fmt="py")
    out = {k: load("cifar10", classes=(0, 1, 2, 3, 4), n_train=8, n_test=2, root=r, preset="raw")
           for k, r in roots.items()}
    assert {k: d.source_format for k, d in out.items()} == {
        "bin": "cifar-bin", "py": "cifar-py", "bintar": "cifar-bin-tar", "pytar": "cifar-py-tar"}
    for k in ("py", "bintar", "pytar"):
        np.testing.assert_array_equal(out[k].X_train, out["bin"].X_train)
        np.testing.assert_array_equal(out[k].y_train, out["bin"].y_train)


def test_cifar_presets_formulas(cifar_dir):
    root, batches = cifar_dir
    train_images = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    pool = np.flatnonzero(np.isin(train_labels, (0, 1)))
    assert len(pool) >= 6
    # raw: colour kept, file byte order (R plane, G plane, B plane), /255
    raw = load("cifar10", classes=("airplane", "automobile"), n_train=6, n_test=0, root=root, preset="raw")
    np.testing.assert_array_equal(raw.X_train, train_images[pool[:6]].reshape(6, 3072) / 255.0)
    assert raw.classes == (0, 1) and raw.class_names == ("airplane", "automobile")
    # paper: Pillow resize on uint8, /255, torchvision grey weights, MNIST normalisation
    paper = load("cifar10", classes=(0, 1), n_train=6, n_test=0, root=root)
    small = pil_resize_bilinear(train_images[pool[:6]], (28, 28)) / 255.0
    gray = 0.2989 * small[:, 0] + 0.587 * small[:, 1] + 0.114 * small[:, 2]
    np.testing.assert_allclose(paper.X_train, ((gray - 0.1307) / 0.3081).reshape(6, 784), rtol=0, atol=1e-12)
    assert paper.n_features == 784


def test_standardized_preset(mnist_dir):
    root, a = mnist_dir
    seed = 11
    d = load("mnist", classes=(1, 7), n_train=12, n_test=6, preset="standardized", seed=seed, root=root)
    tr_pool = np.flatnonzero(np.isin(a["train_labels"], (1, 7)))
    te_pool = np.flatnonzero(np.isin(a["test_labels"], (1, 7)))
    tr = tr_pool[np.random.RandomState(seed).permutation(len(tr_pool))[:12]]
    te = te_pool[np.random.RandomState(seed).permutation(len(te_pool))[:6]]
    np.testing.assert_array_equal(d.train_index, tr)
    np.testing.assert_array_equal(d.test_index, te)
    Xtr = a["train_images"][tr].reshape(12, -1) / 255.0
    Xte = a["test_images"][te].reshape(6, -1) / 255.0
    m, s = Xtr.mean(), Xtr.std()
    np.testing.assert_allclose(d.X_train, (Xtr - m) / s, atol=1e-12)
    np.testing.assert_allclose(d.X_test, (Xte - m) / s, atol=1e-12)
    assert abs(d.X_train.mean()) < 1e-12 and abs(d.X_train.std() - 1) < 1e-12
    assert d.seed == seed and d.info["shift"] == pytest.approx(m) and d.info["scale"] == pytest.approx(s)
    other = load("mnist", classes=(1, 7), n_train=12, n_test=6, preset="standardized", seed=seed + 1, root=root)
    assert not np.array_equal(other.train_index, d.train_index)


def test_center_and_normalize_rows(mnist_dir):
    root, _ = mnist_dir
    base = load("mnist", classes=(0, 1, 2), n_train=15, n_test=5, root=root)
    c = load("mnist", classes=(0, 1, 2), n_train=15, n_test=5, root=root, center_features=True)
    mu = base.X_train.mean(axis=0)
    np.testing.assert_allclose(c.X_train, base.X_train - mu, atol=1e-12)
    np.testing.assert_allclose(c.X_test, base.X_test - mu, atol=1e-12)
    n1 = load("mnist", classes=(0, 1, 2), n_train=15, n_test=5, root=root, normalize_rows=True)
    np.testing.assert_allclose(np.linalg.norm(n1.X_test, axis=1), 1.0, rtol=1e-13)
    np.testing.assert_allclose(n1.X_train * np.linalg.norm(base.X_train, axis=1)[:, None], base.X_train, atol=1e-12)
    both = load("mnist", classes=(0, 1, 2), n_train=15, n_test=5, root=root, center_features=True,
                normalize_rows=28.0)
    np.testing.assert_allclose(both.X_train, (base.X_train - mu) * (28.0 / np.linalg.norm(base.X_train - mu, axis=1))[:, None],
                               atol=1e-12)
    np.testing.assert_allclose(both.X_train @ both.X_train.T / 784 * np.eye(15), np.eye(15), atol=1e-12)


def test_validation(mnist_dir, cifar_dir):
    root, a = mnist_dir
    n_avail = int(np.isin(a["train_labels"], (0, 1)).sum())
    with pytest.raises(ConfigError, match=rf"n_train=500 but the mnist train split holds only {n_avail} images of classes \(0, 1\)"):
        load("mnist", classes=(0, 1), n_train=500, n_test=1, root=root)
    cases = [
        (dict(name="svhn"), "unknown dataset 'svhn'"),
        (dict(preset="fancy"), "unknown preset 'fancy'"),
        (dict(labels="one_hot"), "unknown label encoding .one_hot."),
        (dict(classes=(0, 10)), "unknown class 10 for mnist"),
        (dict(classes=("airplane",)), "unknown class 'airplane' for mnist"),
        (dict(classes=(1, 1)), "duplicates"),
        (dict(classes=()), "must not be empty"),
        (dict(classes=(0, 1, 2), labels="pm1"), "exactly two classes"),
        (dict(n_train=0), "n_train must be at least 1"),
        (dict(n_train=2.5), "n_train must be an integer"),
        (dict(n_test=True), "n_test must be an integer"),
        (dict(n_test=-1), "n_test must be at least 0"),
        (dict(preset="standardized", seed=-3), "seed must be at least 0"),
        (dict(seed="7"), "seed must be an integer"),
        (dict(normalize_rows=-1.0), "normalize_rows must be"),
        (dict(center_features="yes"), "center_features must be True or False"),
    ]
    for kwargs, msg in cases:
        args = dict(name="mnist", classes=(0, 1), n_train=3, n_test=2, root=root)
        args.update(kwargs)
        with pytest.raises(ConfigError, match=msg):
            load(args.pop("name"), **args)
    croot, _ = cifar_dir
    with pytest.raises(ConfigError, match="unknown class 'plane' for cifar10"):
        load("cifar10", classes=("plane",), n_train=1, n_test=0, root=croot)


def test_constant_rows_are_reported(tmp_path):
    arrays = sf.fake_mnist(10, 4)
    arrays["train_images"][:] = 0
    sf.write_mnist_idx(tmp_path / "mnist", arrays)
    with pytest.raises(DataError, match="constant; cannot standardise"):
        load("mnist", n_train=3, n_test=1, root=tmp_path, preset="standardized")
    with pytest.raises(DataError, match="train row 0 is zero"):
        load("mnist", n_train=3, n_test=1, root=tmp_path, preset="raw", normalize_rows=True)
