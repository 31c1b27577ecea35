"""Bit-exact numpy reimplementation of Pillow's ``Image.resize(size, Image.BILINEAR)`` on uint8 images.

torchvision's ``Resize`` on a PIL image calls Pillow, so the NMI paper's CIFAR-10 pipeline
(32×32 → 28×28) depends on Pillow's exact integer arithmetic. Pillow (``libImaging/Resample.c``)
resamples in two separable passes, horizontal then vertical, each rounding back to uint8:

1. Filter coefficients, per output pixel ``j`` of an axis of length ``n_in → n_out``:
   ``scale = n_in / n_out``, ``fs = max(scale, 1)``, ``support = fs`` (triangle of half-width 1,
   stretched by ``fs`` when downsampling: antialiasing), ``center = (j + 0.5) * scale``,
   ``xmin = trunc(center - support + 0.5)`` clipped to ≥ 0, ``xmax = trunc(center + support + 0.5)``
   clipped to ≤ n_in; weights ``w_x = tri((x - center + 0.5) / fs)`` for ``xmin ≤ x < xmax``,
   normalised to sum 1 in double precision.
2. Fixed point: ``k_x = trunc(0.5 + w_x · 2^22)`` (``PRECISION_BITS = 32 - 8 - 2 = 22``).
3. Each output value is ``clip((2^21 + Σ_x in_x · k_x) >> 22, 0, 255)`` (arithmetic shift).
4. Pass order: classic Pillow always resamples horizontally first. Recent Pillow (13.0 at least)
   runs the vertical pass first when the height shrinks by more than twice as many pixels as the
   width, ``H - h > 0 and H - h > 2 (W - w)``. The two orders differ by ±1 grey level on some
   pixels; they coincide whenever neither rule fires, in particular for 32×32 → 28×28.

Verified bit-exact against Pillow 13.0.0 (``tests/fixtures/pil_resize``).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from finwidth.errors import ConfigError

PRECISION_BITS = 32 - 8 - 2


def _triangle(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


@functools.lru_cache(maxsize=64)
def pil_bilinear_coefficients(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's fixed-point bilinear coefficients for resampling one axis.

    Parameters
    ----------
    n_in, n_out : int
        Input and output lengths of the axis (pixels), both ≥ 1.

    Returns
    -------
    index : ndarray of int64, shape (n_out, ksize)
        Input pixel read by each tap (taps beyond Pillow's window point at pixel 0 with weight 0).
    weight : ndarray of int64, shape (n_out, ksize)
        Integer weights in units of 2^-22 (Pillow's ``normalize_coeffs_8bpc``).
    """
    if n_in < 1 or n_out < 1:
        raise ConfigError(f"resize lengths must be positive, got {n_in} -> {n_out}")
    # Plain Python floats are IEEE doubles: the same operations in the same order as Resample.c.
    scale = float(n_in) / n_out
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    inv = 1.0 / filterscale
    index = np.zeros((n_out, ksize), dtype=np.int64)
    weight = np.zeros((n_out, ksize), dtype=np.int64)
    for j in range(n_out):
        center = 0.0 + (j + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # int() truncates toward zero, like the C cast
        xmax = min(int(center + support + 0.5), n_in) - xmin
        w = [_triangle((x + xmin - center + 0.5) * inv) for x in range(xmax)]
        total = 0.0
        for value in w:
            total += value
        for x, value in enumerate(w):
            if total != 0.0:
                value /= total
            fixed = int(-0.5 + value * (1 << PRECISION_BITS)) if value < 0 else int(0.5 + value * (1 << PRECISION_BITS))
            index[j, x] = xmin + x
            weight[j, x] = fixed
    index.setflags(write=False)
    weight.setflags(write=False)
    return index, weight


def _pass(images: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    index, weight = pil_bilinear_coefficients(images.shape[axis], n_out)
    moved = np.moveaxis(images, axis, -1).astype(np.int64)
    acc = (moved[..., index] * weight).sum(axis=-1) + (1 << (PRECISION_BITS - 1))
    out = np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(out, -1, axis)


def pil_resize_bilinear(images: np.ndarray, size: tuple[int, int], *, pass_order: str = "pillow13") -> np.ndarray:
    """Resize uint8 images exactly as Pillow's ``Image.resize((w, h), Image.BILINEAR)``.

    Parameters
    ----------
    images : ndarray of uint8, shape (..., H, W)
        Images, any leading batch/channel axes; each channel is resampled independently
        (as Pillow does for the bands of an RGB image).
    size : (int, int)
        Output ``(height, width)`` in pixels (note: numpy order, not Pillow's ``(width, height)``).
    pass_order : {"pillow13", "horizontal_first"}
        ``"pillow13"`` (default) follows Pillow 13's choice of the first pass (see module notes);
        ``"horizontal_first"`` follows older Pillow releases. Identical for equal shrinkage of both axes.

    Returns
    -------
    ndarray of uint8, shape (..., height, width)
        Bit-identical to Pillow's output. An axis whose length is unchanged is not resampled,
        as in Pillow.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ConfigError(f"pil_resize_bilinear expects uint8 images, got dtype {images.dtype}")
    if images.ndim < 2:
        raise ConfigError(f"pil_resize_bilinear expects shape (..., H, W), got {images.shape}")
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ConfigError(f"output size must be positive, got {size}")
    if pass_order not in ("pillow13", "horizontal_first"):
        raise ConfigError(f"pass_order must be 'pillow13' or 'horizontal_first', got {pass_order!r}")
    h_in, w_in = images.shape[-2:]
    vertical_first = pass_order == "pillow13" and (h_in - height) > 0 and (h_in - height) > 2 * (w_in - width)
    out = images
    for axis in ((-2, -1) if vertical_first else (-1, -2)):  # each pass rounds to uint8
        n_out = height if axis == -2 else width
        if n_out != out.shape[axis]:
            out = _pass(out, axis, n_out)
    return np.array(out, dtype=np.uint8, copy=True) if out is images else out
