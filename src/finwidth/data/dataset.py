"""The one container every loader and teacher returns."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from finwidth.errors import ConfigError, DataError


@dataclass(frozen=True, eq=False)
class Dataset:
    """A training set and a test set with their provenance.

    Attributes
    ----------
    X_train : ndarray of float64, shape (P, N_0)
        Training inputs, one row per example.
    y_train : ndarray of float64, shape (P,) or (P, D)
        Training targets (encoding in ``labels``); D columns for the one-hot encodings (one output
        per class).
    X_test : ndarray of float64, shape (P_test, N_0)
    y_test : ndarray of float64, shape (P_test,) or (P_test, D)
    name : str
        ``"mnist"``, ``"cifar10"`` or ``"teacher:<kind>"``.
    classes : tuple of int or None
        Original class values kept, in the order that defines the ``"01"`` label encoding.
    class_names : tuple of str or None
    preset : str or None
        Preprocessing preset (``"paper"``, ``"standardized"``, ``"raw"``); None for teachers.
    labels : str
        Label encoding: ``"01"``, ``"pm1"``, ``"regression"`` (see :func:`finwidth.data.load`) or the
        teacher's output kind.
    seed : int or None
        Seed used (None when the result does not depend on one).
    source_format : str or None
        On-disk format read (``"idx"``, ``"npz"``, ``"cifar-bin"``, ...); None for teachers.
    source_files : tuple of str
        Files read.
    train_index, test_index : ndarray of int64 or None
        Position of each example in the original split (file order), for reproducibility.
    info : mapping
        Everything else: normalisation constants, teacher weights, available counts, ...

    Notes
    -----
    Arrays are owned by this object (never shared with the in-process file cache), so modifying
    them cannot corrupt another load. The dataclass itself is frozen.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str
    classes: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None
    preset: str | None = None
    labels: str = "01"
    seed: int | None = None
    source_format: str | None = None
    source_files: tuple[str, ...] = ()
    train_index: np.ndarray | None = None
    test_index: np.ndarray | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            X = getattr(self, f"X_{split}")
            y = getattr(self, f"y_{split}")
            if not isinstance(X, np.ndarray) or X.dtype != np.float64 or X.ndim != 2:
                raise ConfigError(f"Dataset.X_{split} must be a float64 array of shape (n, N_0), got "
                                  f"{getattr(X, 'dtype', type(X).__name__)} {getattr(X, 'shape', '')}")
            ok = isinstance(y, np.ndarray) and y.dtype == np.float64 and y.shape[:1] == (X.shape[0],)
            if not ok or y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] < 1):
                raise ConfigError(f"Dataset.y_{split} must be a float64 array of shape ({X.shape[0]},) or "
                                  f"({X.shape[0]}, D), got {getattr(y, 'dtype', type(y).__name__)} "
                                  f"{getattr(y, 'shape', '')}")
            if not (np.isfinite(X).all() and np.isfinite(y).all()):
                raise DataError(f"Dataset {self.name!r}: non-finite values in the {split} split")
        if self.X_train.shape[1] != self.X_test.shape[1]:
            raise ConfigError(f"train and test have different numbers of features: "
                              f"{self.X_train.shape[1]} vs {self.X_test.shape[1]}")
        if self.y_train.shape[1:] != self.y_test.shape[1:]:
            raise ConfigError(f"train and test targets have different numbers of outputs: "
                              f"{self.y_train.shape[1:]} vs {self.y_test.shape[1:]}")
        if self.seed is not None and not isinstance(self.seed, numbers.Integral):
            raise ConfigError(f"seed must be an int or None, got {self.seed!r}")
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))

    @property
    def n_train(self) -> int:
        """Number of training examples P."""
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test examples P_test."""
        return int(self.X_test.shape[0])

    @property
    def n_outputs(self) -> int:
        """Number of outputs D (1 for targets of shape (P,))."""
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])

    @property
    def n_features(self) -> int:
        """Input dimension N_0."""
        return int(self.X_train.shape[1])

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}", f"n_train={self.n_train}", f"n_test={self.n_test}",
                 f"n_features={self.n_features}"]
        if self.classes is not None:
            parts.append(f"classes={self.classes}")
        if self.preset is not None:
            parts.append(f"preset={self.preset!r}")
        parts.append(f"labels={self.labels!r}")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return f"Dataset({', '.join(parts)})"
