"""Search order and layouts of finwidth.data.locate; the error for a missing dataset."""

from __future__ import annotations

import os

import pytest
import synth_formats as sf

from finwidth.data import default_roots, locate, search_paths
from finwidth.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real caches or FINWIDTH_DATA leak into these tests."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("FINWIDTH_DATA", "KERAS_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    return home


def test_default_roots(isolated, tmp_path, monkeypatch):
    assert default_roots() == [isolated / ".keras" / "datasets", isolated / ".cache" / "torch" / "datasets",
                               isolated / ".cache" / "finwidth"]
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("FINWIDTH_DATA", f"{a}{os.pathsep}{b}")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "k"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "t"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_roots() == [a, b, tmp_path / "k" / "datasets", tmp_path / "t" / "datasets", tmp_path / "x" / "finwidth"]
    root = tmp_path / "r"
    root.mkdir()
    assert search_paths(root)[0] == root
    with pytest.raises(ConfigError, match="is not an existing directory"):
        search_paths(tmp_path / "nope")


def test_order_root_then_env_then_cache(isolated, tmp_path, monkeypatch):
    arrays = sf.fake_mnist(3, 2)
    keras = isolated / ".keras" / "datasets"
    sf.write_mnist_npz(keras / "mnist.npz", arrays)
    assert locate("mnist").format == "npz"
    env = tmp_path / "env"
    sf.write_mnist_idx(env / "mnist", arrays)
    monkeypatch.setenv("FINWIDTH_DATA", str(env))
    assert locate("mnist").paths[0].startswith(str(env))
    root = tmp_path / "root"
    sf.write_mnist_idx(root / "MNIST" / "raw", arrays, gz=False)
    src = locate("mnist", root)
    assert src.format == "idx" and src.file("train_images") == root / "MNIST" / "raw" / "train-images-idx3-ubyte"


def test_mnist_layouts(tmp_path):
    arrays = sf.fake_mnist(3, 2)
    sf.write_mnist_idx(tmp_path / "flat", arrays)
    assert locate("mnist", tmp_path / "flat").file("test_labels").name == "t10k-labels-idx1-ubyte.gz"
    dotted = tmp_path / "dotted"
    paths = sf.write_mnist_idx(dotted, arrays, gz=False)
    for p in paths.values():  # the variant spelling of some mirrors: train-images.idx3-ubyte
        p.rename(p.with_name(p.name.replace("-idx", ".idx")))
    assert locate("mnist", dotted).file("train_images").name == "train-images.idx3-ubyte"


def test_cifar_layouts_preference(tmp_path):
    batches = sf.fake_cifar(2)
    d = tmp_path / "d"
    sf.write_cifar_tar(d / "cifar-10-python.tar.gz", batches, fmt="py")
    assert locate("cifar10", d).format == "cifar-py-tar"
    sf.write_cifar_dir(d / "cifar-10-batches-py", batches, fmt="py")
    assert locate("cifar10", d).format == "cifar-py"
    sf.write_cifar_tar(d / "cifar-10-binary.tar.gz", batches, fmt="bin")
    assert locate("cifar10", d).format == "cifar-bin-tar"
    sf.write_cifar_dir(d / "cifar-10-batches-bin", batches, fmt="bin")
    assert locate("cifar10", d).format == "cifar-bin"
    sf.write_cifar_dir(d / "cifar10" / "cifar-10-batches-bin", batches, fmt="bin")
    assert locate("cifar10", d).file("test_batch") == d / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin"


def test_missing_lists_every_place_and_how_to_get(isolated, tmp_path, monkeypatch):
    env = tmp_path / "env"
    env.mkdir()
    monkeypatch.setenv("FINWIDTH_DATA", str(env))
    root = tmp_path / "root"
    partial = root / "cifar-10-batches-bin"
    sf.write_cifar_dir(partial, sf.fake_cifar(2), fmt="bin")
    (partial / "test_batch.bin").unlink()
    with pytest.raises(DataError) as info:
        locate("cifar10", root)
    msg = str(info.value)
    for place in (root, env, isolated / ".keras" / "datasets", isolated / ".cache" / "torch" / "datasets",
                  isolated / ".cache" / "finwidth"):
        assert str(place) in msg
    assert f"{partial}: incomplete CIFAR-10, missing ['test_batch.bin']" in msg
    assert "cifar-10-binary.tar.gz" in msg and "https://www.cs.toronto.edu/~kriz/cifar.html" in msg
    assert "Nothing is downloaded" in msg and "finwidth data fetch cifar10" in msg
    with pytest.raises(DataError, match=r"(?s)mnist not found.*finwidth data fetch mnist.*t10k-images-idx3-ubyte\.gz"):
        locate("mnist", root, embedded=False)
    # MNIST falls back on the subset shipped in the package, last
    src = locate("mnist", root)
    assert src.format == "embedded" and src.file("archive").name == "mnist01.npz"
    with pytest.raises(ConfigError, match="unknown dataset 'svhn'"):
        locate("svhn")
