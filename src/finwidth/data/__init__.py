"""Data sets: MNIST and CIFAR-10 from local files, preprocessing presets, synthetic teachers.

Entry points
------------
``load(name, *, classes=None, n_train, n_test, preset="paper", seed=0, root=None, labels="01")``
    MNIST or CIFAR-10 from the standard on-disk formats (never downloaded; an MNIST 0/1 subset ships
    with the package).
``fetch(name, root=None)``
    Download the original files from the canonical mirrors, checked against pinned SHA-256.
``teacher(kind, *, n_features, n_train, n_test, seed, ...)``
    Seeded Gaussian-input data sets labelled by a teacher.

Both return a :class:`Dataset`. User guide: ``docs/data.md``.
"""

from __future__ import annotations

from finwidth.data.dataset import Dataset
from finwidth.data.formats import (
    clear_cache,
    read_cifar10_bin,
    read_cifar10_pickle,
    read_cifar10_tar,
    read_idx,
    read_mnist_idx,
    read_mnist_npz,
)
from finwidth.data.download import default_fetch_root, fetch
from finwidth.data.locate import ENV_VAR, Source, default_roots, finwidth_cache, locate, search_paths
from finwidth.data.presets import LABEL_ENCODINGS, PRESETS, encode_labels, load
from finwidth.data.resize import pil_resize_bilinear
from finwidth.data.teachers import TEACHERS, teacher

__all__ = [
    "Dataset",
    "ENV_VAR",
    "LABEL_ENCODINGS",
    "PRESETS",
    "Source",
    "TEACHERS",
    "clear_cache",
    "default_fetch_root",
    "default_roots",
    "encode_labels",
    "fetch",
    "finwidth_cache",
    "load",
    "locate",
    "pil_resize_bilinear",
    "read_cifar10_bin",
    "read_cifar10_pickle",
    "read_cifar10_tar",
    "read_idx",
    "read_mnist_idx",
    "read_mnist_npz",
    "search_paths",
    "teacher",
]
