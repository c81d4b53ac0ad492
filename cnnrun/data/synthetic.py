"""``synthetic``: generated images of simple shapes, one shape per class, no files.

Any image size (default 28x28), channel count (default 1), number of classes (2 to
``len(SHAPES)``, default 10) and number of samples; the images and the split by class both
come from the run's ``seed``, so a seed gives the same data set every time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cnnrun.errors import DataError

from .checks import check_int, parse_image_size
from .registry import Request, Splits, register

# Each shape is a distance-like function d(u, v) of the pixel's offset from the shape's centre
# in units of its half-size: d <= 0 inside, d grows by about 1 per half-size outside.
_T = 0.3  # half the width of strokes (bars, cross, diagonals) in half-sizes


def _box(u, v):
    return np.maximum(np.abs(u), np.abs(v)) - 1.0


def _diagonal(u, v):
    return np.maximum(np.abs(u - v) * np.float32(0.7071) - _T, _box(u, v))


def _anti_diagonal(u, v):
    return np.maximum(np.abs(u + v) * np.float32(0.7071) - _T, _box(u, v))


def _hbar(u, v):
    return np.maximum(np.abs(v) - _T, np.abs(u) - 1.0)


def _vbar(u, v):
    return np.maximum(np.abs(u) - _T, np.abs(v) - 1.0)


SHAPE_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "square": _box,
    "disc": lambda u, v: np.sqrt(u * u + v * v) - 1.0,
    "triangle": lambda u, v: np.maximum(v - 1.0, (2.0 * np.abs(u) - v - 1.0) * np.float32(0.45)),
    "cross": lambda u, v: np.minimum(_hbar(u, v), _vbar(u, v)),
    "horizontal_bar": _hbar,
    "vertical_bar": _vbar,
    "ring": lambda u, v: np.abs(np.sqrt(u * u + v * v) - 0.75) - 0.25,
    "diagonal": _diagonal,
    "anti_diagonal": _anti_diagonal,
    "x": lambda u, v: np.minimum(_diagonal(u, v), _anti_diagonal(u, v)),
    "frame": lambda u, v: np.maximum(_box(u, v), 0.55 - np.maximum(np.abs(u), np.abs(v))),
    "diamond": lambda u, v: (np.abs(u) + np.abs(v) - 1.0) * np.float32(0.7071),
}
SHAPES = tuple(SHAPE_FUNCTIONS)


@register("synthetic", order=30)
def load_synthetic(request: Request) -> Splits:
    """``num_samples`` images from :func:`make_synthetic` (no test files: load_data holds
    the test split out)."""
    channels, num_classes, num_samples = _counts(request)
    size = request.image_size or (28, 28)
    x, y = make_synthetic(num_samples, size, channels, num_classes, request.rng)
    return Splits(x, y, classes=SHAPES[:num_classes])


def _counts(request: Request) -> tuple[int, int, int]:
    """``channels``, ``num_classes`` and ``num_samples``, checked, with the defaults 1 and 10."""
    channels = 1 if request.channels is None else check_int(request.channels, "channels", 1)
    num_classes = request.num_classes
    num_classes = 10 if num_classes is None else check_int(num_classes, "num_classes", 2)
    if num_classes > len(SHAPES):
        raise DataError(
            f"invalid num_classes {num_classes} for synthetic: it draws {len(SHAPES)} "
            f"shapes, so expected 2 to {len(SHAPES)}"
        )
    num_samples = check_int(request.num_samples, "num_samples", 1)
    if num_samples < 2 * num_classes:
        raise DataError(
            f"invalid num_samples {num_samples} for synthetic with {num_classes} classes: "
            f"expected at least {2 * num_classes} (two per class)"
        )
    return channels, num_classes, num_samples


def make_synthetic(
    num_samples: int,
    image_size: int | tuple[int, int],
    channels: int,
    num_classes: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Images of simple shapes: ``x`` ``(N, C, H, W)`` float32 in [0, 1], ``y`` ``(N,)`` int64.

    Class ``k`` is ``SHAPES[k]``; classes are balanced (counts differ by at most one). Each
    image draws its shape's half-size (22-40 % of min(H, W)), centre (shape kept inside),
    colour (per channel), background level and Gaussian pixel noise (std 0.05) from ``rng``.
    Edges are anti-aliased over about one pixel, so shapes stay recognisable down to 8x8.
    """
    h, w = parse_image_size(image_size)
    n = num_samples
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    f32 = np.float32
    half = rng.uniform(0.22, 0.40, n).astype(f32) * min(h, w)  # (N,) half-size in pixels
    cx = rng.uniform(half, w - half).astype(f32)  # centre, pixel units
    cy = rng.uniform(half, h - half).astype(f32)
    cols = np.arange(w, dtype=f32) + 0.5  # pixel centres
    rows = np.arange(h, dtype=f32) + 0.5

    coverage = np.empty((n, h, w), dtype=f32)
    for k in range(num_classes):
        idx = np.flatnonzero(y == k)
        s = half[idx, None, None]  # (n_k, 1, 1)
        u = (cols[None, None, :] - cx[idx, None, None]) / s  # (n_k, 1, W)
        v = (rows[None, :, None] - cy[idx, None, None]) / s  # (n_k, H, 1)
        d = SHAPE_FUNCTIONS[SHAPES[k]](u, v)  # (n_k, H, W)
        coverage[idx] = np.clip(0.5 - d * s, 0.0, 1.0)  # about one pixel of soft edge

    colour = rng.uniform(0.5, 1.0, (n, channels, 1, 1)).astype(f32)
    background = rng.uniform(0.0, 0.2, (n, 1, 1, 1)).astype(f32)
    x = background + (colour - background) * coverage[:, None]  # (N, C, H, W)
    x += 0.05 * rng.standard_normal(x.shape, dtype=f32)
    np.clip(x, 0.0, 1.0, out=x)
    return x, y
