"""Seeded synthetic teachers: exact relations, reproducibility, and noise statistics within 5 standard errors."""

from __future__ import annotations

import numpy as np
import pytest

from finwidth.data import teacher
from finwidth.errors import ConfigError


def test_inputs_are_standard_gaussian():
    d = teacher("linear", n_features=8, n_train=20000, n_test=10, seed=1)
    X = d.X_train
    n = X.size
    assert abs(X.mean()) < 5 / np.sqrt(n)
    assert abs(X.var() - 1) < 5 * np.sqrt(2 / n)  # Var of the sample variance of N(0,1): 2/n
    assert d.X_train.dtype == np.float64 and d.y_train.shape == (20000,)
    assert d.name == "teacher:linear" and d.labels == "regression" and d.seed == 1 and d.preset is None


def test_linear_sign_relu_are_exact_functions_of_the_weights():
    for kind, fn in (("linear", lambda z: z), ("sign", np.sign), ("relu", lambda z: np.maximum(z, 0))):
        d = teacher(kind, n_features=13, n_train=50, n_test=20, seed=7)
        w = d.info["w"]
        # same seed -> same teacher weights for every kind
        np.testing.assert_array_equal(w, teacher("linear", n_features=13, n_train=1, n_test=0, seed=7).info["w"])
        for X, y in ((d.X_train, d.y_train), (d.X_test, d.y_test)):
            np.testing.assert_allclose(y, fn(X @ w / np.sqrt(13)), rtol=1e-14, atol=1e-14)
    assert teacher("sign", n_features=3, n_train=5, n_test=1, seed=0).labels == "pm1"


def test_label_noise_statistics():
    sigma, n = 0.3, 20000
    d = teacher("linear", n_features=4, n_train=n, n_test=n, seed=3, noise=sigma)
    for X, y in ((d.X_train, d.y_train), (d.X_test, d.y_test)):
        resid = y - X @ d.info["w"] / 2.0
        assert abs(resid.mean()) < 5 * sigma / np.sqrt(n)
        assert abs(resid.var() - sigma**2) < 5 * sigma**2 * np.sqrt(2 / n)
    p = 0.2
    s = teacher("sign", n_features=4, n_train=n, n_test=0, seed=3, flip=p)
    flipped = np.mean(s.y_train != np.sign(s.X_train @ s.info["w"]))
    assert abs(flipped - p) < 5 * np.sqrt(p * (1 - p) / n)


def test_random_labels():
    n = 20000
    d = teacher("random", n_features=3, n_train=n, n_test=5, seed=5)
    assert set(np.unique(d.y_train)) == {-1.0, 1.0} and d.labels == "pm1"
    assert abs(d.y_train.mean()) < 5 / np.sqrt(n)
    corr = d.X_train.T @ d.y_train / n  # independent of the inputs: each ~ N(0, 1/n)
    assert np.all(np.abs(corr) < 5 / np.sqrt(n))
    b = teacher("random", n_features=3, n_train=n, n_test=5, seed=5, targets="01")
    assert set(np.unique(b.y_train)) == {0.0, 1.0} and abs(b.y_train.mean() - 0.5) < 5 * 0.5 / np.sqrt(n)
    g = teacher("random", n_features=3, n_train=n, n_test=5, seed=5, targets="gaussian")
    assert abs(g.y_train.var() - 1) < 5 * np.sqrt(2 / n) and g.labels == "regression"


@pytest.mark.parametrize("act,fn", [("tanh", np.tanh), ("relu", lambda z: np.maximum(z, 0)), ("linear", lambda z: z)])
def test_network_teacher(act, fn):
    d = teacher("network", n_features=6, n_train=40, n_test=10, seed=2, width=17, activation=act)
    W, a = d.info["W"], d.info["a"]
    assert W.shape == (17, 6) and a.shape == (17,) and d.info["activation"] == act
    expected = fn(d.X_train @ W.T / np.sqrt(6)) @ a / np.sqrt(17)
    np.testing.assert_allclose(d.y_train, expected, rtol=1e-13, atol=1e-13)


def test_network_teacher_output_variance_matches_nngp_for_linear():
    # linear σ: f = a·W x /sqrt(N_0 width); over the teacher draw E f(x)^2 = |x|^2/N_0 exactly
    n_seeds = 400
    x_norm2 = []
    f2 = []
    for seed in range(n_seeds):
        d = teacher("network", n_features=5, n_train=1, n_test=0, seed=seed, width=3, activation="linear")
        x_norm2.append(d.X_train[0] @ d.X_train[0] / 5)
        f2.append(d.y_train[0] ** 2)
    # E[f^2 | x] = |x|^2/N_0; fluctuations of f^2 - |x|^2/N_0 have variance E[2 (|x|^2/N_0)^2] · (1 + 2/width)
    diff = np.array(f2) - np.array(x_norm2)
    assert abs(diff.mean()) < 5 * diff.std(ddof=1) / np.sqrt(n_seeds)


def test_reproducible_and_nested():
    a = teacher("relu", n_features=7, n_train=30, n_test=11, seed=9, noise=0.1)
    b = teacher("relu", n_features=7, n_train=30, n_test=11, seed=9, noise=0.1)
    for field in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    big = teacher("relu", n_features=7, n_train=100, n_test=11, seed=9, noise=0.1)
    np.testing.assert_array_equal(big.X_train[:30], a.X_train)  # larger P extends the smaller set
    np.testing.assert_array_equal(big.y_train[:30], a.y_train)
    np.testing.assert_array_equal(big.X_test, a.X_test)  # same test set whatever P is
    np.testing.assert_array_equal(big.y_test, a.y_test)
    other = teacher("relu", n_features=7, n_train=30, n_test=11, seed=10, noise=0.1)
    assert not np.array_equal(other.X_train, a.X_train)
    assert teacher("linear", n_features=2, n_train=1, n_test=0, seed=0).X_test.shape == (0, 2)


def test_teacher_validation():
    base = dict(n_features=3, n_train=4, n_test=2, seed=0)
    cases = [
        ("quadratic", {}, "unknown teacher 'quadratic'"),
        ("sign", dict(noise=0.1), "use flip= for sign"),
        ("linear", dict(flip=0.1), "flip= applies to the sign teacher only"),
        ("network", dict(width=3), "needs width= and activation="),
        ("linear", dict(width=3), "apply to the network teacher only"),
        ("linear", dict(targets="01"), "targets= applies to the random teacher only"),
        ("random", dict(targets="bits"), "targets must be one of"),
        ("linear", dict(n_features=0), "n_features must be at least 1"),
        ("linear", dict(seed=-1), "seed must be at least 0"),
        ("linear", dict(noise=float("nan")), "noise must be a finite non-negative number"),
        ("sign", dict(flip=1.5), "flip must be at most 1.0"),
        ("network", dict(width=0, activation="erf"), "width must be at least 1"),
        ("network", dict(width=2, activation="nope"), "nope"),
    ]
    for kind, kwargs, msg in cases:
        args = {**base, **kwargs}
        with pytest.raises(ConfigError, match=msg):
            teacher(kind, **args)
