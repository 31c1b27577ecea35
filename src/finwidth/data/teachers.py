"""Seeded synthetic data sets: Gaussian inputs labelled by a teacher.

Inputs are always ``x ~ N(0, I_{N_0})``. With ``z(x) = w·x / sqrt(N_0)``, ``w ~ N(0, I_{N_0})``
(so ``z ~ N(0, |w|²/N_0) ≈ N(0, 1)``), the kinds are

======== ==============================================================================
kind     target
======== ==============================================================================
random   independent of x: ±1 with probability 1/2 (``targets="pm1"``), 0/1 (``"01"``), or N(0, 1) (``"gaussian"``)
linear   ``z(x) + noise·ξ``
sign     ``sign(z(x))`` ∈ {−1, +1}, each flipped independently with probability ``flip``
relu     ``max(z(x), 0) + noise·ξ``
network  ``Σ_i a_i σ(W_i·x / sqrt(N_0)) / sqrt(width) + noise·ξ``, ``W_ij, a_i ~ N(0, 1)``,
         σ from :func:`finwidth.activations.get_activation` (the library's own network convention
         with all priors λ_l = 1)
======== ==============================================================================

with ``ξ ~ N(0, 1)`` independent per example. Random streams come from
``numpy.random.SeedSequence(seed).spawn(5)``: (teacher weights, train inputs, test inputs, train
noise, test noise). Hence, for a fixed seed, the teacher and the test set do not depend on
``n_train``, and a larger ``n_train`` extends the smaller training set (learning curves on nested
training sets with one test set).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from finwidth.data.dataset import Dataset
from finwidth.errors import ConfigError

TEACHERS = ("random", "linear", "sign", "relu", "network")
_RANDOM_TARGETS = ("pm1", "01", "gaussian")


def _count(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{what} must be at least {minimum}, got {value}")
    return int(value)


def _prob_or_std(value, what: str, *, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} must be a finite non-negative number, got {value!r}")
    if upper is not None and value > upper:
        raise ConfigError(f"{what} must be at most {upper}, got {value}")
    return float(value)


def teacher(
    kind: str,
    *,
    n_features: int,
    n_train: int,
    n_test: int,
    seed: int,
    noise: float = 0.0,
    flip: float = 0.0,
    width: int | None = None,
    activation=None,
    targets: str = "pm1",
) -> Dataset:
    """Generate a seeded synthetic data set.

    Parameters
    ----------
    kind : {"random", "linear", "sign", "relu", "network"}
        Teacher; formulas in the module notes and ``docs/data.md``.
    n_features : int
        Input dimension N_0 ≥ 1.
    n_train, n_test : int
        Numbers of training (≥ 1) and test (≥ 0) examples.
    seed : int
        Non-negative seed; everything random derives from it.
    noise : float
        Standard deviation of additive Gaussian label noise (``linear``, ``relu``, ``network``);
        applied to training *and* test targets.
    flip : float in [0, 1]
        Probability of flipping each label of the ``sign`` teacher (train and test).
    width : int
        Hidden width of the ``network`` teacher (required for it, rejected otherwise).
    activation : str or Activation
        Activation of the ``network`` teacher (required for it, rejected otherwise).
    targets : {"pm1", "01", "gaussian"}
        Distribution of the ``random`` labels (only for ``kind="random"``).

    Returns
    -------
    Dataset
        ``name = "teacher:<kind>"``; ``info`` holds the teacher's parameters (``w`` or ``W``, ``a``)
        and the options.

    Raises
    ------
    ConfigError
        Unknown kind, invalid counts/seed/noise, or an option that the chosen kind does not use
        (it would otherwise be silently ignored).
    """
    if kind not in TEACHERS:
        raise ConfigError(f"unknown teacher {kind!r}; available: {TEACHERS}")
    n_features = _count(n_features, "n_features", 1)
    n_train = _count(n_train, "n_train", 1)
    n_test = _count(n_test, "n_test", 0)
    seed = _count(seed, "seed", 0)
    noise = _prob_or_std(noise, "noise")
    flip = _prob_or_std(flip, "flip", upper=1.0)
    if noise and kind not in ("linear", "relu", "network"):
        raise ConfigError(f"noise= applies to the linear, relu and network teachers, not {kind!r}"
                          + (" (use flip= for sign)" if kind == "sign" else ""))
    if flip and kind != "sign":
        raise ConfigError(f"flip= applies to the sign teacher only, not {kind!r}")
    if kind == "network":
        if width is None or activation is None:
            raise ConfigError("the network teacher needs width= and activation=")
        width = _count(width, "width", 1)
    elif width is not None or activation is not None:
        raise ConfigError(f"width= and activation= apply to the network teacher only, not {kind!r}")
    if targets not in _RANDOM_TARGETS:
        raise ConfigError(f"targets must be one of {_RANDOM_TARGETS}, got {targets!r}")
    if targets != "pm1" and kind != "random":
        raise ConfigError(f"targets= applies to the random teacher only, not {kind!r}")

    s_teacher, s_xtr, s_xte, s_ntr, s_nte = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))
    info: dict = {"kind": kind}
    if kind == "network":
        from finwidth.activations import get_activation

        act = get_activation(activation)
        W = s_teacher.standard_normal((width, n_features))
        a = s_teacher.standard_normal(width)
        info.update(W=W, a=a, width=width, activation=act.name)

        def f(X: np.ndarray) -> np.ndarray:
            return act.numpy(X @ W.T / math.sqrt(n_features)) @ a / math.sqrt(width)
    elif kind != "random":
        w = s_teacher.standard_normal(n_features)
        info["w"] = w

        def f(X: np.ndarray) -> np.ndarray:
            z = X @ w / math.sqrt(n_features)
            if kind == "sign":
                return np.where(z >= 0, 1.0, -1.0)
            if kind == "relu":
                return np.maximum(z, 0.0)
            return z

    X_train = s_xtr.standard_normal((n_train, n_features))
    X_test = s_xte.standard_normal((n_test, n_features))
    ys = []
    for X, rng in ((X_train, s_ntr), (X_test, s_nte)):
        n = X.shape[0]
        if kind == "random":
            if targets == "gaussian":
                y = rng.standard_normal(n)
            else:
                bits = rng.integers(0, 2, size=n).astype(np.float64)
                y = 2.0 * bits - 1.0 if targets == "pm1" else bits
        else:
            y = np.asarray(f(X), dtype=np.float64)
            if kind == "sign":
                y = np.where(rng.random(n) < flip, -y, y)
            elif noise:
                y = y + noise * rng.standard_normal(n)
        ys.append(y)
    if kind in ("linear", "relu", "network"):
        info["noise"] = noise
    if kind == "sign":
        info["flip"] = flip
    labels = {"random": targets if targets != "gaussian" else "regression", "sign": "pm1"}.get(kind, "regression")
    return Dataset(X_train=X_train, y_train=ys[0], X_test=X_test, y_test=ys[1], name=f"teacher:{kind}",
                   labels=labels, seed=seed, info=info)
