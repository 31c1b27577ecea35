"""Readers for the standard on-disk formats of MNIST and CIFAR-10. Pure numpy, no downloads.

Every reader validates what it reads and raises :class:`finwidth.errors.DataError` naming the file
and the problem (wrong magic number, wrong size, bad gzip, partial record, refused pickle, ...).
Decoded arrays are cached in-process, keyed on the resolved path, size and modification time, and
returned read-only: copy before modifying.

Formats
-------
IDX (MNIST, LeCun et al.)
    Big-endian header: two zero bytes, a type byte (0x08 = uint8), the number of dimensions ``d``,
    then ``d`` int32 sizes, then the data in C order. Images: magic 2051 = 0x00000803, shape
    (n, 28, 28); labels: magic 2049 = 0x00000801, shape (n,). Gzip-compressed or not.
keras ``mnist.npz``
    A numpy ``.npz`` with uint8 arrays ``x_train`` (n, 28, 28), ``y_train`` (n,), ``x_test``, ``y_test``.
CIFAR-10 binary (``cifar-10-batches-bin/*.bin``)
    Headerless runs of 3073-byte records: 1 label byte (0..9), then the 1024 red, 1024 green and
    1024 blue bytes of a 32×32 image, each plane row-major. Any whole number of records is accepted.
CIFAR-10 python (``cifar-10-batches-py/*``)
    A pickled dict with ``data`` (uint8 ndarray (n, 3072), same byte layout as a binary record
    without the label) and ``labels`` (list of n ints). Read with a restricted unpickler that admits
    only numpy's array-reconstruction functions, so a malicious pickle cannot execute code.
``cifar-10-binary.tar.gz`` / ``cifar-10-python.tar.gz``
    The official archives, read member by member without extracting them to disk.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import pickle
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from finwidth.errors import DataError

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCHES = ("test_batch",)

# IDX type byte -> numpy dtype (big-endian for multi-byte types)
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    resolved = Path(path).resolve()
    try:
        st = resolved.stat()
    except OSError as exc:
        raise DataError(f"cannot read {resolved}: {exc.strerror or exc}") from exc
    return str(resolved), st.st_size, st.st_mtime_ns


def _frozen(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    is_gzip = raw[:2] == b"\x1f\x8b"
    if path.suffix == ".gz" and not is_gzip:
        raise DataError(f"{path}: named .gz but is not gzip data (first bytes {raw[:4]!r}); the file is corrupt "
                        "or was saved by a browser as an error page")
    if not is_gzip:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: bad gzip data ({exc}); the file is truncated or corrupt, "
                        "obtain it again") from exc


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode an (uncompressed) IDX byte string.

    Parameters
    ----------
    data : bytes
        The whole file content.
    source : str
        Name used in error messages.

    Returns
    -------
    ndarray
        Native-endian array with the shape stored in the header.
    """
    if len(data) < 4:
        raise DataError(f"{source}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(f"{source}: wrong magic number 0x{magic:08x}; not an IDX file "
                        "(expected 0x00000803 for images or 0x00000801 for labels)")
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{source}: wrong size: {what}; {len(data)} bytes but the header (shape {shape}) "
                        f"implies {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


@functools.lru_cache(maxsize=16)
def _read_idx_cached(key: tuple[str, int, int], magic: int | None) -> np.ndarray:
    path = Path(key[0])
    data = _read_maybe_gzip(path)
    if magic is not None and len(data) >= 4 and int.from_bytes(data[:4], "big") != magic:
        found = int.from_bytes(data[:4], "big")
        raise DataError(f"{path}: wrong magic number {found} (0x{found:08x}), expected {magic} (0x{magic:08x})")
    array = parse_idx(data, source=str(path))
    _frozen(array)
    return array


def read_idx(path: str | os.PathLike, *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzipped), cached.

    Parameters
    ----------
    path : path-like
        The file; gzip is detected from its first two bytes.
    magic : int, optional
        Required magic number, e.g. :data:`IDX_IMAGES_MAGIC` (2051) or :data:`IDX_LABELS_MAGIC` (2049).

    Returns
    -------
    ndarray (read-only)
    """
    return _read_idx_cached(_file_key(path), magic)


def read_mnist_idx(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one MNIST split from its IDX image and label files.

    Returns
    -------
    images : ndarray of uint8, shape (n, 28, 28) (read-only)
    labels : ndarray of uint8, shape (n,) (read-only), values 0..9
    """
    images = read_idx(images_path, magic=IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, magic=IDX_LABELS_MAGIC)
    _check_mnist_split(images, labels, f"{images_path} / {labels_path}")
    return images, labels


def _check_mnist_split(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{source}: MNIST images must be uint8 of shape (n, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{source}: MNIST labels must be uint8 of shape (n,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{source}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{source}: label {int(labels.max())} outside 0..9")


@functools.lru_cache(maxsize=4)
def _read_mnist_npz_cached(key: tuple[str, int, int]) -> dict[str, np.ndarray]:
    path = Path(key[0])
    out = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in npz.files]
            if missing:
                raise DataError(f"{path}: not a keras mnist.npz: missing arrays {missing} (has {npz.files})")
            for k in ("x_train", "y_train", "x_test", "y_test"):
                out[k] = np.ascontiguousarray(npz[k])
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc}); the file is truncated or corrupt") from exc
    for split in ("train", "test"):
        _check_mnist_split(out[f"x_{split}"], out[f"y_{split}"], f"{path} [{split}]")
    _frozen(*out.values())
    return out


def read_mnist_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read keras' ``mnist.npz``.

    Returns
    -------
    dict
        ``x_train`` (n, 28, 28) uint8, ``y_train`` (n,) uint8, ``x_test``, ``y_test`` (read-only).
    """
    return _read_mnist_npz_cached(_file_key(path))


def parse_cifar10_bin(data: bytes, *, source: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Decode CIFAR-10 binary records.

    Returns
    -------
    images : ndarray of uint8, shape (n, 3, 32, 32) — channel (R, G, B), row, column
    labels : ndarray of uint8, shape (n,)
    """
    if len(data) == 0:
        raise DataError(f"{source}: empty file, no CIFAR-10 records")
    if len(data) % CIFAR_RECORD_BYTES:
        n, rest = divmod(len(data), CIFAR_RECORD_BYTES)
        raise DataError(f"{source}: wrong size: {len(data)} bytes is not a whole number of {CIFAR_RECORD_BYTES}-byte "
                        f"CIFAR-10 records ({n} records and a partial one of {rest} bytes); the file is truncated "
                        "or not CIFAR-10 (CIFAR-100 records are 3074 bytes)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD_BYTES)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(f"{source}: record {bad} has label {int(labels[bad])} outside 0..9; not a CIFAR-10 binary batch")
    images = records[:, 1:].reshape(-1, 3, 32, 32).copy()
    return images, labels


def _read_cifar10_batch(key: tuple[str, int, int], parse) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Read one CIFAR-10 batch file and parse it with ``parse(bytes, source=...)``; arrays read-only."""
    path = Path(key[0])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    images, labels = parse(data, source=str(path))
    _frozen(images, labels)
    return images, labels


@functools.lru_cache(maxsize=16)
def _read_cifar10_bin_cached(key: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    return _read_cifar10_batch(key, parse_cifar10_bin)


def read_cifar10_bin(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch (``data_batch_k.bin`` / ``test_batch.bin``), cached.

    Returns
    -------
    images : ndarray of uint8, shape (n, 3, 32, 32) (read-only)
    labels : ndarray of uint8, shape (n,) (read-only)
    """
    return _read_cifar10_bin_cached(_file_key(path))


def _numpy_reconstruct():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray._reconstruct


def _numpy_frombuffer():
    try:
        from numpy._core import numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import numeric
    return numeric._frombuffer


def _latin1_encode(text, encoding="utf-8"):
    # Python 3 writes bytes at protocol 2 as _codecs.encode(str, "latin1"); admit exactly that
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Admit only what a CIFAR batch contains: dicts, lists, str/bytes, ints and numpy arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: _latin1_encode,
    }

    def find_class(self, module: str, name: str):
        factory = self._ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: a CIFAR-10 batch holds only numpy arrays, "
                                         "lists, strings and numbers")
        return factory()

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id: not a CIFAR-10 batch")


def parse_cifar10_pickle(data: bytes, *, source: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Decode one CIFAR-10 python batch with a restricted unpickler.

    The official batches were written by Python 2's cPickle; they are decoded with
    ``encoding="latin1"`` (numpy's recommendation for Python 2 pickles holding arrays).

    Returns
    -------
    images : ndarray of uint8, shape (n, 3, 32, 32)
    labels : ndarray of uint8, shape (n,)
    """
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{source}: not a valid CIFAR-10 python batch: {exc}") from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError, OverflowError) as exc:
        raise DataError(f"{source}: corrupt or truncated pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{source}: a CIFAR-10 python batch is a dict, got {type(obj).__name__}")
    batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{source}: CIFAR-10 python batch lacks 'data' or 'labels' (keys {sorted(map(str, batch))}); "
                        "CIFAR-100 batches use 'fine_labels' and are not CIFAR-10")
    images, labels = batch["data"], batch["labels"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        desc = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"{source}: 'data' must be a uint8 array of shape (n, 3072), got {desc}")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(images):
        raise DataError(f"{source}: 'labels' must be a list of {len(images)} ints")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: 'labels' must be integers ({exc})") from exc
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"{source}: labels outside 0..9")
    return images.reshape(-1, 3, 32, 32).copy(), labels.astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _read_cifar10_pickle_cached(key: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    return _read_cifar10_batch(key, parse_cifar10_pickle)


def read_cifar10_pickle(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch (``cifar-10-batches-py/data_batch_k``), cached.

    Returns
    -------
    images : ndarray of uint8, shape (n, 3, 32, 32) (read-only)
    labels : ndarray of uint8, shape (n,) (read-only)
    """
    return _read_cifar10_pickle_cached(_file_key(path))


# archive name -> (folder inside the archive, member suffix, parser)
CIFAR10_ARCHIVES = {
    "cifar-10-binary.tar.gz": ("cifar-10-batches-bin", ".bin", parse_cifar10_bin),
    "cifar-10-python.tar.gz": ("cifar-10-batches-py", "", parse_cifar10_pickle),
}


@functools.lru_cache(maxsize=2)
def _read_cifar10_tar_cached(key: tuple[str, int, int], kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    path = Path(key[0])
    folder, suffix, parser = CIFAR10_ARCHIVES[kind]
    wanted = {f"{folder}/{b}{suffix}": b for b in CIFAR10_TRAIN_BATCHES + CIFAR10_TEST_BATCHES}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:  # one sequential pass: the gzip stream is read once
                name = member.name.lstrip("./")
                if name not in wanted:
                    continue
                if not member.isfile():
                    raise DataError(f"{path}: member {member.name} is not a regular file")
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if len(data) != member.size:
                    raise DataError(f"{path}: member {member.name} is truncated ({len(data)} of {member.size} bytes)")
                images, labels = parser(data, source=f"{path}:{member.name}")
                _frozen(images, labels)
                out[wanted[name]] = (images, labels)
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read the archive ({type(exc).__name__}: {exc}); it is truncated or corrupt, "
                        "obtain it again") from exc
    missing = [m for m, b in wanted.items() if b not in out]
    if missing:
        raise DataError(f"{path}: not a complete {kind} archive: missing members {missing}")
    return out


def read_cifar10_tar(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read every batch of an official CIFAR-10 archive without extracting it, cached.

    Parameters
    ----------
    path : path-like
        ``cifar-10-binary.tar.gz`` or ``cifar-10-python.tar.gz`` (the kind is taken from the file name).

    Returns
    -------
    dict
        batch name (``"data_batch_1"``, ..., ``"test_batch"``) -> (images (n, 3, 32, 32), labels (n,)),
        uint8, read-only.
    """
    name = Path(path).name
    if name not in CIFAR10_ARCHIVES:
        raise DataError(f"{path}: unknown CIFAR-10 archive name; expected one of {sorted(CIFAR10_ARCHIVES)}")
    return _read_cifar10_tar_cached(_file_key(path), name)


def clear_cache() -> None:
    """Forget every decoded file (e.g. to free memory)."""
    for f in (_read_idx_cached, _read_mnist_npz_cached, _read_cifar10_bin_cached, _read_cifar10_pickle_cached,
              _read_cifar10_tar_cached):
        f.cache_clear()
