"""``finwidth.data.load``: class selection, label encodings and preprocessing presets.

Presets (exact formulas in ``docs/data.md``):

``"paper"``
    The NMI paper's pipeline (torchvision ``Resize(28)`` → ``ToTensor`` → ``Grayscale`` →
    ``Normalize((0.1307,), (0.3081,))``): the first ``n_train`` / ``n_test`` images of the selected
    classes in file order; CIFAR-10 resized 32→28 by Pillow's bilinear filter on the uint8 RGB
    image (:func:`finwidth.data.resize.pil_resize_bilinear`, bit-exact), then ``/255``, then grey
    ``0.2989 r + 0.587 g + 0.114 b`` (torchvision's tensor weights); ``(x - 0.1307)/0.3081`` for both
    datasets; N_0 = 784.
``"standardized"``
    A random subset: ``RandomState(seed).permutation`` of the filtered split, first ``n`` (a fresh
    ``RandomState(seed)`` for train and for test); ``/255`` (CIFAR: resize + grey as above); then
    ``(x - m)/s`` with ``m``, ``s`` the mean and (population) standard deviation of *all pixels of
    all training images* (the deepbays convention), applied to train and test.
``"raw"``
    The first images in file order, ``/255`` only; CIFAR-10 keeps colour: N_0 = 3072 in the file's
    order (1024 red, 1024 green, 1024 blue, each row-major).
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass

import numpy as np

from finwidth.data import formats
from finwidth.data.dataset import Dataset
from finwidth.data.locate import Source, locate
from finwidth.data.resize import pil_resize_bilinear
from finwidth.errors import ConfigError, DataError

PRESETS = ("paper", "standardized", "raw")
LABEL_ENCODINGS = ("01", "pm1", "regression", "raw", "onehot", "onehot_centered")
#: encodings with one output per class: targets of shape (n, D), D = len(classes)
MULTI_OUTPUT_ENCODINGS = ("onehot", "onehot_centered")
# torchvision transforms.Normalize((0.1307,), (0.3081,)): MNIST's pixel mean and std after /255
PAPER_MEAN = 0.1307
PAPER_STD = 0.3081
# torchvision rgb_to_grayscale on float tensors (ITU-R 601-2 luma, as in TensorFlow)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


@dataclass(frozen=True)
class _Split:
    """One split of a dataset as decoded uint8 batches (cached, read-only)."""

    batches: tuple[tuple[np.ndarray, np.ndarray], ...]  # (images, labels) in file order
    positions: np.ndarray | None = None  # an embedded subset: each image's position in the original split

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([lab for _, lab in self.batches]) if self.batches else np.zeros(0, np.uint8)

    def take(self, index: np.ndarray) -> np.ndarray:
        """Images at global positions ``index`` (in the given order), as a fresh uint8 array."""
        sizes = np.array([len(lab) for _, lab in self.batches])
        starts = np.concatenate([[0], np.cumsum(sizes)])
        which = np.searchsorted(starts, index, side="right") - 1
        out = np.empty((len(index),) + self.batches[0][0].shape[1:], dtype=np.uint8)
        for b, (images, _) in enumerate(self.batches):
            sel = which == b
            if sel.any():
                out[sel] = images[index[sel] - starts[b]]
        return out


def _read_splits(source: Source) -> tuple[_Split, _Split]:
    fmt = source.format
    if fmt == "idx":
        train = formats.read_mnist_idx(source.file("train_images"), source.file("train_labels"))
        test = formats.read_mnist_idx(source.file("test_images"), source.file("test_labels"))
        return _Split((train,)), _Split((test,))
    if fmt == "npz":
        d = formats.read_mnist_npz(source.file("archive"))
        return _Split(((d["x_train"], d["y_train"]),)), _Split(((d["x_test"], d["y_test"]),))
    if fmt == "embedded":
        d = formats.read_mnist_npz(source.file("archive"))
        with np.load(source.file("archive"), allow_pickle=False) as z:
            pos = {split: np.asarray(z[f"{split}_index"], dtype=np.int64) for split in ("train", "test")}
        return (_Split(((d["x_train"], d["y_train"]),), pos["train"]),
                _Split(((d["x_test"], d["y_test"]),), pos["test"]))
    if fmt in ("cifar-bin", "cifar-py"):
        reader = formats.read_cifar10_bin if fmt == "cifar-bin" else formats.read_cifar10_pickle
        batches = {name: reader(path) for name, path in source.files}
    elif fmt in ("cifar-bin-tar", "cifar-py-tar"):
        batches = formats.read_cifar10_tar(source.file("archive"))
    else:  # pragma: no cover - Source is built only by locate()
        raise DataError(f"unknown source format {fmt!r}")
    train = tuple(batches[b] for b in formats.CIFAR10_TRAIN_BATCHES)
    test = tuple(batches[b] for b in formats.CIFAR10_TEST_BATCHES)
    return _Split(train), _Split(test)


def _parse_classes(name: str, classes) -> tuple[int, ...]:
    names = CLASS_NAMES[name]
    if classes is None:
        return tuple(range(len(names)))
    if isinstance(classes, (str, numbers.Integral)) and not isinstance(classes, bool):
        classes = (classes,)
    try:
        items = list(classes)
    except TypeError as exc:
        raise ConfigError(f"classes must be None or a sequence of class labels, got {classes!r}") from exc
    out = []
    for c in items:
        if isinstance(c, str) and c in names and name == "cifar10":
            out.append(names.index(c))
        elif isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= int(c) < len(names):
            out.append(int(c))
        else:
            extra = f" or names {names}" if name == "cifar10" else ""
            raise ConfigError(f"unknown class {c!r} for {name}: use integers 0..{len(names) - 1}{extra}")
    if not out:
        raise ConfigError("classes must not be empty (use None for all classes)")
    if len(set(out)) != len(out):
        raise ConfigError(f"classes contains duplicates: {tuple(items)}")
    return tuple(out)


def _check_count(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{what} must be at least {minimum}, got {value}")
    return int(value)


def encode_labels(raw: np.ndarray, classes: tuple[int, ...], labels: str) -> np.ndarray:
    """Map original class values to targets.

    Parameters
    ----------
    raw : ndarray of int
        Original class values (each in ``classes``).
    classes : tuple of int
        Selected classes, in order.
    labels : {"01", "pm1", "regression", "raw", "onehot", "onehot_centered"}
        ``"01"``: the index of the class within ``classes`` (0, 1, ... — 0/1 for two classes, as in the
        papers' code); ``"pm1"``: ``-1`` for ``classes[0]``, ``+1`` for ``classes[1]`` (exactly two
        classes); ``"regression"`` (alias ``"raw"``): the original class value itself; ``"onehot"``: one
        output per class, row e_c (1 in the column of the example's class, 0 elsewhere, columns in the
        order of ``classes``); ``"onehot_centered"``: e_c − 1/D (rows sum to 0, D = len(classes)), the
        one-hot targets with their mean over classes removed.

    Returns
    -------
    ndarray of float64, shape (n,), or (n, D) for the one-hot encodings
    """
    raw = np.asarray(raw, dtype=np.int64)
    if labels in ("regression", "raw"):
        return raw.astype(np.float64)
    lookup = np.full(max(max(classes), int(raw.max(initial=0))) + 1, -1, dtype=np.int64)
    lookup[list(classes)] = np.arange(len(classes))
    index = lookup[raw]
    if (index < 0).any():
        raise ConfigError(f"labels {sorted(set(raw[index < 0].tolist()))} are not among classes {classes}")
    if labels == "01":
        return index.astype(np.float64)
    if labels in MULTI_OUTPUT_ENCODINGS:
        D = len(classes)
        onehot = np.zeros((index.size, D))
        onehot[np.arange(index.size), index] = 1.0
        return onehot - 1.0 / D if labels == "onehot_centered" else onehot
    if labels == "pm1":
        if len(classes) != 2:
            raise ConfigError(f"labels='pm1' needs exactly two classes, got classes={classes}")
        return 2.0 * index - 1.0
    raise ConfigError(f"unknown label encoding {labels!r}; use one of {LABEL_ENCODINGS}")


def cifar_to_gray28(images: np.ndarray) -> np.ndarray:
    """The paper's CIFAR-10 pixels: Pillow bilinear 32→28 on uint8 RGB, /255, torchvision grey.

    Parameters
    ----------
    images : ndarray of uint8, shape (n, 3, 32, 32)

    Returns
    -------
    ndarray of float64, shape (n, 784), values in [0, 1]
    """
    small = pil_resize_bilinear(images, (28, 28)).astype(np.float64) / 255.0
    wr, wg, wb = GRAY_WEIGHTS
    gray = wr * small[:, 0] + wg * small[:, 1] + wb * small[:, 2]
    return gray.reshape(len(images), 28 * 28)


def _features(name: str, preset: str, images: np.ndarray) -> np.ndarray:
    n = len(images)
    if name == "cifar10" and preset != "raw":
        return cifar_to_gray28(images)
    return images.reshape(n, -1).astype(np.float64) / 255.0


def load(
    name: str,
    *,
    classes=None,
    n_train: int,
    n_test: int,
    preset: str = "paper",
    seed: int = 0,
    root: str | os.PathLike | None = None,
    labels: str = "01",
    center_features: bool = False,
    normalize_rows: bool | float = False,
) -> Dataset:
    """Load MNIST or CIFAR-10 from local files, select classes, preprocess.

    Parameters
    ----------
    name : {"mnist", "cifar10"}
    classes : sequence of int (or CIFAR-10 class names), optional
        Original labels to keep, e.g. ``(0, 1)`` (MNIST zeros and ones; CIFAR-10 airplane and
        automobile). Their order defines the ``"01"``/``"pm1"`` encodings. None: all ten classes.
    n_train, n_test : int
        Number of training examples P (≥ 1) and test examples P_test (≥ 0).
    preset : {"paper", "standardized", "raw"}
        Preprocessing; see the module notes and ``docs/data.md``.
    seed : int
        Seed of the random subset for ``"standardized"`` (``numpy.random.RandomState(seed)``);
        ignored by the deterministic presets (recorded as None).
    root : path-like, optional
        Directory searched first; then ``$FINWIDTH_DATA``, then the keras/torch/finwidth caches
        (:func:`finwidth.data.search_paths`); MNIST last falls back on the subset embedded in the
        package (the first 100 training and 1000 test images of 0 and 1, presets "paper" and
        "raw"), which ``source_format == "embedded"`` records.
    labels : {"01", "pm1", "regression", "raw", "onehot", "onehot_centered"}
        Target encoding, see :func:`encode_labels`. The one-hot encodings give targets of shape
        (n, D) with D = len(classes), one output per class (``finwidth.RKGP`` then solves the D×D theory); every
        selected class must then occur in the training set (DataError otherwise).
    center_features : bool
        After the preset, subtract the per-feature (per-pixel) mean of the training inputs from the
        training and test inputs.
    normalize_rows : bool or float
        After centring, rescale every input row to Euclidean norm 1 (True) or to the given positive
        norm r (e.g. ``sqrt(N_0)`` so that ``C_μμ = x·x/N_0 = 1``).

    Returns
    -------
    Dataset
        float64 inputs of shape (n, N_0) with N_0 = 784 (3072 for CIFAR-10 ``"raw"``) and float64 targets.

    Raises
    ------
    ConfigError
        Unknown name/preset/class/encoding, counts that are not positive integers, or more examples
        requested than the files hold (the message gives the number available).
    DataError
        Files missing (the message lists every place searched and how to get the files) or corrupt.
    """
    if name not in CLASS_NAMES:
        raise ConfigError(f"unknown dataset {name!r}; available: {sorted(CLASS_NAMES)} "
                          "(synthetic data: finwidth.data.teacher)")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; available: {PRESETS}")
    if labels not in LABEL_ENCODINGS:
        raise ConfigError(f"unknown label encoding {labels!r}; use one of {LABEL_ENCODINGS}")
    class_tuple = _parse_classes(name, classes)
    if labels == "pm1" and len(class_tuple) != 2:
        raise ConfigError(f"labels='pm1' needs exactly two classes, got classes={class_tuple}")
    n_train = _check_count(n_train, "n_train", 1)
    n_test = _check_count(n_test, "n_test", 0)
    seed = _check_count(seed, "seed", 0)
    if seed >= 2**32:
        raise ConfigError(f"seed must be below 2**32 (numpy RandomState), got {seed}")
    if not isinstance(center_features, bool):
        raise ConfigError(f"center_features must be True or False, got {center_features!r}")
    row_norm = _parse_row_norm(normalize_rows)

    source = locate(name, root)
    train_split, test_split = _read_splits(source)
    if source.format == "embedded":
        _check_embedded(name, root, preset, class_tuple, n_train, n_test, train_split, test_split)

    picked = {}
    for split_name, split, n in (("train", train_split, n_train), ("test", test_split, n_test)):
        raw_labels = split.labels
        pool = np.flatnonzero(np.isin(raw_labels, class_tuple))
        if n > len(pool):
            raise ConfigError(f"n_{split_name}={n} but the {name} {split_name} split holds only {len(pool)} images "
                              f"of classes {class_tuple} (files: {', '.join(source.paths)})")
        if preset == "standardized":
            index = pool[np.random.RandomState(seed).permutation(len(pool))[:n]]
        else:
            index = pool[:n]
        X = _features(name, preset, split.take(index)) if n else np.zeros((0, 3072 if (name == "cifar10" and preset == "raw") else 784))
        position = index if split.positions is None else split.positions[index]
        picked[split_name] = (X, encode_labels(raw_labels[index], class_tuple, labels), position.astype(np.int64), len(pool))

    X_train, y_train, train_index, avail_train = picked["train"]
    if labels in MULTI_OUTPUT_ENCODINGS:
        counts = np.bincount(np.argmax(y_train, axis=1), minlength=len(class_tuple))
        empty = [c for c, k in zip(class_tuple, counts) if k == 0]
        if empty:
            names = [CLASS_NAMES[name][c] for c in empty]
            how = ("a random subset (preset='standardized')" if preset != "standardized" else "another seed")
            raise DataError(
                f"labels={labels!r}: class{'es' if len(empty) > 1 else ''} {empty} ({', '.join(names)}) "
                f"{'have' if len(empty) > 1 else 'has'} no example among the n_train={n_train} training images "
                f"selected; a one-hot output with no example cannot be learned. Use a larger n_train, {how}, "
                "or drop the class from classes"
            )
    X_test, y_test, test_index, avail_test = picked["test"]
    info: dict = {"n_available_train": avail_train, "n_available_test": avail_test}
    if preset == "paper":
        X_train = (X_train - PAPER_MEAN) / PAPER_STD
        X_test = (X_test - PAPER_MEAN) / PAPER_STD
        info.update(shift=PAPER_MEAN, scale=PAPER_STD)
    elif preset == "standardized":
        mean, std = float(X_train.mean()), float(X_train.std())
        if not std > 0:
            raise DataError(f"{name}: the selected training images are constant; cannot standardise (std = {std})")
        X_train = (X_train - mean) / std
        X_test = (X_test - mean) / std
        info.update(shift=mean, scale=std)
    if name == "cifar10" and preset != "raw":
        info.update(resize="pillow-bilinear 32->28 on uint8 RGB", gray_weights=GRAY_WEIGHTS)
    X_train, X_test = _post_process(X_train, X_test, center_features, row_norm, info)

    return Dataset(
        X_train=np.ascontiguousarray(X_train, dtype=np.float64),
        y_train=y_train,
        X_test=np.ascontiguousarray(X_test, dtype=np.float64),
        y_test=y_test,
        name=name,
        classes=class_tuple,
        class_names=tuple(CLASS_NAMES[name][c] for c in class_tuple),
        preset=preset,
        labels="regression" if labels == "raw" else labels,
        seed=seed if preset == "standardized" else None,
        source_format=source.format,
        source_files=source.paths,
        train_index=train_index,
        test_index=test_index,
        info=info,
    )


def _check_embedded(name: str, root, preset: str, classes: tuple[int, ...], n_train: int, n_test: int,  # noqa: ANN001
                    train: _Split, test: _Split) -> None:
    """The embedded subset answers only what the full files would answer identically: the first images
    in file order (presets "paper" and "raw") of classes it holds, as many as it has."""
    held = sorted(set(train.labels.tolist()))
    counts = {split: int(np.isin(s.labels, classes).sum()) for split, s in (("train", train), ("test", test))}
    problem = None
    if preset == "standardized":
        problem = "preset='standardized' draws a random subset of the whole split"
    elif not set(classes) <= set(held):
        problem = f"classes={classes}: it holds only the digits {held}"
    elif n_train > counts["train"] or n_test > counts["test"]:
        problem = (f"n_train={n_train}, n_test={n_test}: it holds the first {counts['train']} training and "
                   f"{counts['test']} test images of classes {classes}")
    if problem is None:
        return
    try:
        locate(name, root, embedded=False)
        missing = f"{name}: the files appeared while loading; run again"  # pragma: no cover - a race
    except DataError as exc:
        missing = str(exc)
    raise DataError(f"{missing}\nThe MNIST subset embedded in finwidth (used when no files are found) cannot "
                    f"answer this request: {problem}.")


def _parse_row_norm(normalize_rows) -> float | None:
    if normalize_rows is False or normalize_rows is None:
        return None
    if normalize_rows is True:
        return 1.0
    if isinstance(normalize_rows, numbers.Real) and np.isfinite(normalize_rows) and normalize_rows > 0:
        return float(normalize_rows)
    raise ConfigError(f"normalize_rows must be True, False or a positive finite norm, got {normalize_rows!r}")


def _post_process(X_train: np.ndarray, X_test: np.ndarray, center: bool, row_norm: float | None,
                  info: dict) -> tuple[np.ndarray, np.ndarray]:
    """Optional per-feature centring (training mean) then rescaling of every row to norm ``row_norm``."""
    if center:
        mu = X_train.mean(axis=0)
        X_train = X_train - mu
        X_test = X_test - mu
        info["feature_mean"] = mu
    if row_norm is not None:
        for split, X in (("train", X_train), ("test", X_test)):
            norms = np.linalg.norm(X, axis=1)
            if X.shape[0] and not (norms > 0).all():
                bad = int(np.flatnonzero(~(norms > 0))[0])
                raise DataError(f"cannot normalise rows: {split} row {bad} is zero"
                                + (" after centring" if center else ""))
        X_train = X_train * (row_norm / np.linalg.norm(X_train, axis=1))[:, None]
        X_test = X_test * (row_norm / np.linalg.norm(X_test, axis=1))[:, None] if len(X_test) else X_test
        info["row_norm"] = row_norm
    return X_train, X_test
