"""Writers for small files in the exact on-disk formats, written from the format specifications
(independently of finwidth's readers), used to test those readers."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """uint8 IDX: 0, 0, 0x08, ndim, big-endian int32 sizes, data."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", s) for s in array.shape)
    return header + array.tobytes()


def fake_mnist(n_train: int = 60, n_test: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test).astype(np.uint8),
    }


def write_mnist_idx(folder: Path, arrays: dict[str, np.ndarray], *, gz: bool = True) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for role, name in MNIST_NAMES.items():
        data = idx_bytes(arrays[role])
        path = folder / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        out[role] = path
    return out


def write_mnist_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=arrays["train_images"], y_train=arrays["train_labels"],
             x_test=arrays["test_images"], y_test=arrays["test_labels"])
    return path


CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def fake_cifar(n_per_batch: int = 12, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """batch name -> (images (n, 3, 32, 32) uint8, labels (n,) uint8)."""
    rng = np.random.default_rng(seed)
    return {b: (rng.integers(0, 256, size=(n_per_batch, 3, 32, 32), dtype=np.uint8),
                rng.integers(0, 10, size=n_per_batch).astype(np.uint8)) for b in CIFAR_BATCHES}


def cifar_bin_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    return b"".join(bytes([int(lab)]) + img.tobytes() for img, lab in zip(images, labels))


class _Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes (SHORT_BINSTRING/BINSTRING), as cPickle did for the
    official CIFAR-10 python batches."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def cifar_py_bytes(images: np.ndarray, labels: np.ndarray, *, batch_label: str = "fake batch") -> bytes:
    obj = {
        b"batch_label": batch_label.encode(),
        b"labels": [int(v) for v in labels],
        b"data": images.reshape(len(images), 3072),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(obj)
    # the official files name numpy's reconstructor with the numpy 1.x module path
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def write_cifar_dir(folder: Path, batches, *, fmt: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in batches.items():
        if fmt == "bin":
            (folder / f"{name}.bin").write_bytes(cifar_bin_bytes(images, labels))
        else:
            (folder / name).write_bytes(cifar_py_bytes(images, labels))
    return folder


def write_cifar_tar(path: Path, batches, *, fmt: str, drop: str | None = None) -> Path:
    folder = "cifar-10-batches-bin" if fmt == "bin" else "cifar-10-batches-py"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        extra = {"readme.html": b"<html></html>"}
        members = {}
        for name, (images, labels) in batches.items():
            if name == drop:
                continue
            key = f"{name}.bin" if fmt == "bin" else name
            members[key] = cifar_bin_bytes(images, labels) if fmt == "bin" else cifar_py_bytes(images, labels)
        for key, data in {**extra, **members}.items():
            info = tarfile.TarInfo(f"{folder}/{key}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
