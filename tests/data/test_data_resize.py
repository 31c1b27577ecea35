"""Pillow-exact bilinear resize, checked against outputs of real Pillow stored as a fixture
(tests/fixtures/pil_resize/make_fixture.py made them with Pillow 13.0.0), and the paper's CIFAR
pipeline against torchvision's float32 tensor operations re-done in torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from finwidth.data import pil_resize_bilinear
from finwidth.data.presets import cifar_to_gray28
from finwidth.errors import ConfigError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pil_resize" / "pil_bilinear.npz"


@pytest.fixture(scope="module")
def pillow():
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def test_bit_exact_against_pillow_cifar(pillow):
    out = pil_resize_bilinear(pillow["cifar_in"], (28, 28))
    assert out.dtype == np.uint8 and out.shape == (8, 3, 28, 28)
    np.testing.assert_array_equal(out, pillow["cifar_out"])


def test_bit_exact_against_pillow_assorted_shapes(pillow):
    k = 0
    while f"rand{k}_in" in pillow:
        src, ref = pillow[f"rand{k}_in"], pillow[f"rand{k}_out"]
        np.testing.assert_array_equal(pil_resize_bilinear(src, ref.shape[-2:]), ref, err_msg=f"shape case {k}")
        k += 1
    assert k >= 10


def test_legacy_pass_order_differs_only_when_height_shrinks_most(pillow):
    src = pillow["rand8_in"]  # 50x30 -> 10x28: Pillow 13 runs the vertical pass first here
    ref = pillow["rand8_out"]
    legacy = pil_resize_bilinear(src, ref.shape[-2:], pass_order="horizontal_first")
    assert np.abs(legacy.astype(int) - ref).max() <= 1 and (legacy != ref).any()
    same = pil_resize_bilinear(pillow["cifar_in"], (28, 28), pass_order="horizontal_first")
    np.testing.assert_array_equal(same, pillow["cifar_out"])


def test_resize_properties():
    img = np.full((2, 32, 32), 173, dtype=np.uint8)
    np.testing.assert_array_equal(pil_resize_bilinear(img, (28, 28)), 173)  # constants preserved
    rnd = np.random.default_rng(0).integers(0, 256, size=(3, 9, 9), dtype=np.uint8)
    same = pil_resize_bilinear(rnd, (9, 9))
    np.testing.assert_array_equal(same, rnd)
    assert same is not rnd
    with pytest.raises(ConfigError, match="uint8"):
        pil_resize_bilinear(rnd.astype(float), (4, 4))
    with pytest.raises(ConfigError, match="positive"):
        pil_resize_bilinear(rnd, (0, 4))
    with pytest.raises(ConfigError, match="pass_order"):
        pil_resize_bilinear(rnd, (4, 4), pass_order="diagonal")


def test_paper_cifar_pipeline_matches_torchvision_ops(pillow):
    # Resize (Pillow, fixture) -> ToTensor (float32 /255) -> Grayscale (tensor weights) -> Normalize
    t = torch.from_numpy(pillow["cifar_out"].copy()).to(torch.float32).div(255)
    r, g, b = t.unbind(dim=-3)
    gray = (0.2989 * r + 0.587 * g + 0.114 * b).to(torch.float32)
    ref = ((gray - torch.tensor(0.1307)) / torch.tensor(0.3081)).reshape(8, 784).double().numpy()
    ours = (cifar_to_gray28(pillow["cifar_in"]) - 0.1307) / 0.3081
    # float64 here vs float32 in torchvision: |x| < 3.3, float32 rounding ~ 3 ulp
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)
