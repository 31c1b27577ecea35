"""File-format readers on small generated files in each exact format, including corrupt ones."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import synth_formats as sf

from finwidth.data import formats
from finwidth.errors import DataError


@pytest.fixture(autouse=True)
def _fresh_cache():
    formats.clear_cache()
    yield
    formats.clear_cache()


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz):
    arrays = sf.fake_mnist(17, 5, seed=1)
    paths = sf.write_mnist_idx(tmp_path, arrays, gz=gz)
    images, labels = formats.read_mnist_idx(paths["train_images"], paths["train_labels"])
    np.testing.assert_array_equal(images, arrays["train_images"])
    np.testing.assert_array_equal(labels, arrays["train_labels"])
    assert images.dtype == np.uint8 and images.shape == (17, 28, 28)
    assert not images.flags.writeable  # cached arrays are protected


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    arrays = sf.fake_mnist(4, 2)
    path = tmp_path / "train-labels-idx1-ubyte"  # gzip data without .gz suffix
    path.write_bytes(gzip.compress(sf.idx_bytes(arrays["train_labels"])))
    np.testing.assert_array_equal(formats.read_idx(path, magic=2049), arrays["train_labels"])


def test_idx_wrong_magic(tmp_path):
    arrays = sf.fake_mnist(4, 2)
    labels = tmp_path / "labels"
    labels.write_bytes(sf.idx_bytes(arrays["train_labels"]))
    with pytest.raises(DataError, match=r"labels.*wrong magic number 2049.*expected 2051"):
        formats.read_idx(labels, magic=2051)  # a label file where images are expected
    junk = tmp_path / "junk"
    junk.write_bytes(b"<html>not found</html>" + bytes(100))
    with pytest.raises(DataError, match="junk.*wrong magic number"):
        formats.read_idx(junk)


def test_idx_truncated_and_trailing(tmp_path):
    data = sf.idx_bytes(sf.fake_mnist(4, 2)["train_images"])
    short = tmp_path / "short"
    short.write_bytes(data[:-1])
    with pytest.raises(DataError, match=r"short: wrong size: truncated; 3151 bytes .* implies 3152"):
        formats.read_idx(short)
    long = tmp_path / "long"
    long.write_bytes(data + b"\0")
    with pytest.raises(DataError, match="long: wrong size: has trailing bytes"):
        formats.read_idx(long)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(bytes([0, 0, 8, 3, 0]))
    with pytest.raises(DataError, match="tiny: truncated IDX header"):
        formats.read_idx(tiny)


def test_idx_bad_gzip(tmp_path):
    comp = gzip.compress(sf.idx_bytes(sf.fake_mnist(30, 2)["train_images"]))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(comp[: len(comp) // 2])
    with pytest.raises(DataError, match=r"cut\.gz: bad gzip data"):
        formats.read_idx(cut)
    flipped = bytearray(comp)
    flipped[len(flipped) // 2] ^= 0xFF
    bad = tmp_path / "bad.gz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match=r"bad\.gz: bad gzip data"):
        formats.read_idx(bad)
    html = tmp_path / "page.gz"
    html.write_bytes(b"<!DOCTYPE html><html>error</html>")
    with pytest.raises(DataError, match=r"page\.gz: named \.gz but is not gzip"):
        formats.read_idx(html)


def test_mnist_split_consistency(tmp_path):
    arrays = sf.fake_mnist(6, 2)
    paths = sf.write_mnist_idx(tmp_path, arrays)
    other = sf.write_mnist_idx(tmp_path / "b", sf.fake_mnist(7, 2))
    with pytest.raises(DataError, match="6 images but 7 labels"):
        formats.read_mnist_idx(paths["train_images"], other["train_labels"])
    bad_labels = arrays["train_labels"].copy()
    bad_labels[3] = 12
    (tmp_path / "bl").write_bytes(sf.idx_bytes(bad_labels))
    with pytest.raises(DataError, match="label 12 outside 0..9"):
        formats.read_mnist_idx(paths["train_images"], tmp_path / "bl")


def test_cache_invalidated_when_file_changes(tmp_path):
    a = sf.fake_mnist(5, 1, seed=1)["train_labels"]
    b = sf.fake_mnist(6, 1, seed=2)["train_labels"]
    path = tmp_path / "labels"
    path.write_bytes(sf.idx_bytes(a))
    np.testing.assert_array_equal(formats.read_idx(path), a)
    path.write_bytes(sf.idx_bytes(b))
    os.utime(path, ns=(0, 10**18))  # force a different mtime even on coarse file systems
    np.testing.assert_array_equal(formats.read_idx(path), b)


# ---------------------------------------------------------------- keras mnist.npz


def test_mnist_npz(tmp_path):
    arrays = sf.fake_mnist(9, 4)
    path = sf.write_mnist_npz(tmp_path / "mnist.npz", arrays)
    d = formats.read_mnist_npz(path)
    np.testing.assert_array_equal(d["x_train"], arrays["train_images"])
    np.testing.assert_array_equal(d["y_test"], arrays["test_labels"])


def test_mnist_npz_corrupt(tmp_path):
    arrays = sf.fake_mnist(9, 4)
    missing = tmp_path / "missing.npz"
    np.savez(missing, x_train=arrays["train_images"], y_train=arrays["train_labels"])
    with pytest.raises(DataError, match=r"missing\.npz: not a keras mnist\.npz: missing arrays \['x_test', 'y_test'\]"):
        formats.read_mnist_npz(missing)
    good = sf.write_mnist_npz(tmp_path / "good.npz", arrays).read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut\.npz: cannot read as \.npz"):
        formats.read_mnist_npz(cut)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x_train=arrays["train_images"].astype(np.float32), y_train=arrays["train_labels"],
             x_test=arrays["test_images"], y_test=arrays["test_labels"])
    with pytest.raises(DataError, match=r"wrong\.npz \[train\]: MNIST images must be uint8"):
        formats.read_mnist_npz(wrong)


# ---------------------------------------------------------------- CIFAR-10 binary


def test_cifar_bin_roundtrip_any_whole_number_of_records(tmp_path):
    images, labels = sf.fake_cifar(7)["data_batch_1"]
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(sf.cifar_bin_bytes(images, labels))
    got_images, got_labels = formats.read_cifar10_bin(path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    # record layout: label byte, then R, G, B planes, each row-major
    raw = path.read_bytes()
    assert raw[0] == labels[0] and raw[1 + 1024 + 32 * 2 + 5] == images[0, 1, 2, 5]


def test_cifar_bin_partial_record(tmp_path):
    images, labels = sf.fake_cifar(3)["test_batch"]
    path = tmp_path / "test_batch.bin"
    path.write_bytes(sf.cifar_bin_bytes(images, labels)[:-100])
    with pytest.raises(DataError, match=r"test_batch\.bin: wrong size: 9119 bytes is not a whole number of 3073-byte "
                                        r"CIFAR-10 records \(2 records and a partial one of 2973 bytes\)"):
        formats.read_cifar10_bin(path)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        formats.read_cifar10_bin(empty)


def test_cifar_bin_bad_label(tmp_path):
    images, labels = sf.fake_cifar(3)["test_batch"]
    labels = labels.copy()
    labels[1] = 42
    path = tmp_path / "x.bin"
    path.write_bytes(sf.cifar_bin_bytes(images, labels))
    with pytest.raises(DataError, match="record 1 has label 42 outside 0..9"):
        formats.read_cifar10_bin(path)


# ---------------------------------------------------------------- CIFAR-10 python (restricted unpickler)


def test_cifar_pickle_python2_style(tmp_path):
    images, labels = sf.fake_cifar(5)["data_batch_2"]
    data = sf.cifar_py_bytes(images, labels)
    assert b"cnumpy.core.multiarray\n_reconstruct" in data  # the official files' global
    path = tmp_path / "data_batch_2"
    path.write_bytes(data)
    got_images, got_labels = formats.read_cifar10_pickle(path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_cifar_pickle_python3_protocols(tmp_path):
    images, labels = sf.fake_cifar(4)["data_batch_3"]
    for protocol in (2, 4, 5):
        obj = {"data": images.reshape(4, 3072), "labels": labels.tolist(), "batch_label": "x"}
        got_images, got_labels = formats.parse_cifar10_pickle(pickle.dumps(obj, protocol=protocol))
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_pickle_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images, labels = sf.fake_cifar(2)["data_batch_1"]
    payload = pickle.dumps({"data": images.reshape(2, 3072), "labels": labels.tolist(), "x": _Evil()}, protocol=2)
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=r"data_batch_1: not a valid CIFAR-10 python batch: refused global (posix|nt)\.system"):
        formats.read_cifar10_pickle(path)
    assert not (tmp_path / "pwned").exists()
    for evil in (pickle.dumps(_Evil()), b"cbuiltins\neval\n(S'1+1'\ntR."):
        with pytest.raises(DataError, match="refused global"):
            formats.parse_cifar10_pickle(evil)


def test_cifar_pickle_wrong_structure():
    images, labels = sf.fake_cifar(2)["data_batch_1"]
    with pytest.raises(DataError, match="lacks 'data' or 'labels'.*CIFAR-100"):
        formats.parse_cifar10_pickle(pickle.dumps({"data": images.reshape(2, 3072), "fine_labels": [1, 2]}))
    with pytest.raises(DataError, match=r"'data' must be a uint8 array of shape \(n, 3072\), got float64"):
        formats.parse_cifar10_pickle(pickle.dumps({"data": np.zeros((2, 3072)), "labels": [1, 2]}))
    with pytest.raises(DataError, match="'labels' must be a list of 2 ints"):
        formats.parse_cifar10_pickle(pickle.dumps({"data": images.reshape(2, 3072), "labels": [1]}))
    with pytest.raises(DataError, match="labels outside 0..9"):
        formats.parse_cifar10_pickle(pickle.dumps({"data": images.reshape(2, 3072), "labels": [1, 10]}))
    with pytest.raises(DataError, match="is a dict, got list"):
        formats.parse_cifar10_pickle(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match="truncated"):
        formats.parse_cifar10_pickle(sf.cifar_py_bytes(images, labels)[:500])


# ---------------------------------------------------------------- official archives


@pytest.mark.parametrize("fmt,name", [("bin", "cifar-10-binary.tar.gz"), ("py", "cifar-10-python.tar.gz")])
def test_cifar_tar(tmp_path, fmt, name):
    batches = sf.fake_cifar(4)
    path = sf.write_cifar_tar(tmp_path / name, batches, fmt=fmt)
    got = formats.read_cifar10_tar(path)
    assert sorted(got) == sorted(sf.CIFAR_BATCHES)
    for b, (images, labels) in batches.items():
        np.testing.assert_array_equal(got[b][0], images)
        np.testing.assert_array_equal(got[b][1], labels)


def test_cifar_tar_corrupt(tmp_path):
    batches = sf.fake_cifar(4)
    path = sf.write_cifar_tar(tmp_path / "cifar-10-binary.tar.gz", batches, fmt="bin", drop="test_batch")
    with pytest.raises(DataError, match=r"missing members \['cifar-10-batches-bin/test_batch\.bin'\]"):
        formats.read_cifar10_tar(path)
    good = sf.write_cifar_tar(tmp_path / "g" / "cifar-10-python.tar.gz", batches, fmt="py").read_bytes()
    cut = tmp_path / "c" / "cifar-10-python.tar.gz"
    cut.parent.mkdir()
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz: cannot read the archive"):
        formats.read_cifar10_tar(cut)
    # a partial record inside the archive is reported with the member name
    bad = tmp_path / "b" / "cifar-10-binary.tar.gz"
    bad.parent.mkdir()
    with tarfile.open(bad, "w:gz") as tar:
        for b in sf.CIFAR_BATCHES:
            data = sf.cifar_bin_bytes(*batches[b])[: (-7 if b == "data_batch_3" else None)]
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{b}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=r"cifar-10-binary\.tar\.gz:cifar-10-batches-bin/data_batch_3\.bin: wrong size"):
        formats.read_cifar10_tar(bad)
    with pytest.raises(DataError, match="unknown CIFAR-10 archive name"):
        formats.read_cifar10_tar(tmp_path / "other.tar.gz")
