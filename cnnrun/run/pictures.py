"""Arrays as pictures for TensorBoard's Images tab: filters, activation maps, saliency, a
confusion matrix. Every function returns an (H, W, 3) uint8 image.

Signed quantities (weights, their gradients, pre-activation maps) use one symmetric diverging
scale per picture: 0 is white, the largest magnitude in the picture is full red (positive) or
full blue (negative), so sign and size compare across every tile of it. Tiles are enlarged to
about ``TILE_PX`` pixels and separated by dark lines, which no value of the scale can take.
"""

from __future__ import annotations

import numpy as np

TILE_PX = 48  # kernels and images are enlarged by an integer factor to about this size
MAP_PX = 32  # activation maps, many to a picture, to about this size
GAP = 2  # separator width, in pixels
SEPARATOR = np.array([40, 40, 40], np.uint8)  # darker than any colour of the scales below
# ColorBrewer's RdBu anchors, from -1 (blue) through 0 (white) to +1 (red)
_DIVERGING = np.array(
    [[33, 102, 172], [103, 169, 207], [209, 229, 240], [247, 247, 247],
     [253, 219, 199], [239, 138, 98], [178, 24, 43]], np.float64,
)  # fmt: skip
# white to dark blue, for magnitudes and frequencies in [0, 1]
_SEQUENTIAL = np.array([[247, 251, 255], [198, 219, 239], [107, 174, 214], [8, 81, 156]], float)


LEVELS = 1024  # colours per scale: finer than the eye, and a lookup instead of arithmetic


def _lut(anchors: np.ndarray) -> np.ndarray:
    """``LEVELS`` colours interpolated linearly between ``anchors`` (evenly spaced)."""
    pos = np.linspace(0.0, len(anchors) - 1, LEVELS)
    lo = np.minimum(pos.astype(int), len(anchors) - 2)
    frac = (pos - lo)[:, None]
    return ((1 - frac) * anchors[lo] + frac * anchors[lo + 1]).round().astype(np.uint8)


def _ramp(t: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """The colours of ``t`` in [0, 1] (clipped) from a lookup table."""
    index = (np.clip(t, 0.0, 1.0) * (LEVELS - 1) + 0.5).astype(np.intp)
    return np.take(lut, index, axis=0)  # the same as lut[index], 7 times faster


_DIVERGING_LUT, _SEQUENTIAL_LUT = _lut(_DIVERGING), _lut(_SEQUENTIAL)


def diverging(values: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Signed values as colours; ``scale`` (default: their largest magnitude) is full colour."""
    v = np.nan_to_num(np.asarray(values, np.float64))
    s = float(np.abs(v).max()) if scale is None else float(scale)
    return _ramp((v / (s if s > 0 else 1.0) + 1) / 2, _DIVERGING_LUT)


def sequential(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as white-to-blue colours."""
    return _ramp(np.nan_to_num(np.asarray(values, np.float64)), _SEQUENTIAL_LUT)


def factor_for(h: int, w: int, target: int = TILE_PX) -> int:
    """The integer enlargement that brings an (h, w) tile to about ``target`` pixels."""
    return max(1, round(target / max(h, w, 1)))


def grid(tiles: list[list[np.ndarray]] | np.ndarray, factor: int = 1) -> np.ndarray:
    """Rows of equally sized (h, w, 3) tiles (or a (rows, cols, h, w, 3) array of them),
    enlarged ``factor`` times, in one picture with separators around and between them (a
    short last row is filled with the separator).

    Each tile is copied once, enlarged on the way, into its place in the picture, a line of
    pixels at a time: stacking, repeating and transposing whole copies made LeNet's conv2 maps
    (8 x 16 tiles) take 3.0 ms instead of 1.2, and its picture sets 16 ms instead of 11."""
    rows = [np.stack(r) for r in tiles] if isinstance(tiles, list) else list(tiles)
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    h, w, _ = rows[0][0].shape
    th, tw = h * factor, w * factor
    out = np.empty((n_rows * (th + GAP) + GAP, n_cols * (tw + GAP) + GAP, 3), np.uint8)
    out[...] = SEPARATOR
    # out's pixels as (row, y within the cell, column, x within the cell, colour): views only
    cells = _split(_split(out[GAP:, GAP:], 1, n_cols), 0, n_rows)
    inside = _split(cells[:, :th, :, :tw], 1, h)  # (R, h, f, C, tw, 3)
    for r, row in enumerate(rows):  # row: (cols, h, w, 3), widened first: a tile's line of
        wide = row.repeat(factor, axis=2)  # pixels is then one run of bytes to copy f times
        inside[r, :, :, : len(row)] = wide.transpose(1, 0, 2, 3)[:, None]
    return out


def _split(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    """A view of ``a`` with ``axis`` cut into (n, rest): what is written into it lands in
    ``a`` (a split axis keeps its stride, so no copy is ever needed)."""
    rest = a.shape[axis] // n
    shape = (*a.shape[:axis], n, rest, *a.shape[axis + 1 :])
    strides = (*a.strides[:axis], a.strides[axis] * rest, a.strides[axis], *a.strides[axis + 1 :])
    return np.lib.stride_tricks.as_strided(a, shape, strides, writeable=True)


def side_by_side(*pictures: np.ndarray) -> np.ndarray:
    """Pictures next to each other, top-aligned, a separator between them."""
    height = max(p.shape[0] for p in pictures)
    parts = []
    for p in pictures:
        padded = np.empty((height, p.shape[1], 3), np.uint8)
        padded[...] = SEPARATOR
        padded[: p.shape[0]] = p
        parts += [padded, np.broadcast_to(SEPARATOR, (height, 3 * GAP, 3))]
    return np.concatenate(parts[:-1], axis=1)


def _wrap(tiles: list[np.ndarray]) -> list[list[np.ndarray]]:
    """A flat list of tiles as near-square rows."""
    cols = int(np.ceil(np.sqrt(len(tiles))))
    return [tiles[i : i + cols] for i in range(0, len(tiles), cols)]


def filters(weight: np.ndarray) -> np.ndarray:
    """A conv weight (F, C, kh, kw): one tile per filter and input channel (a row per filter;
    near-square rows of filters when C == 1), all on the scale of the layer's largest
    magnitude."""
    f, c, kh, kw = weight.shape
    coloured = diverging(weight)  # (F, C, kh, kw, 3), one scale for the whole layer
    if c == 1:
        rows = _wrap([coloured[i, 0] for i in range(f)])
    else:
        rows = [[coloured[i, j] for j in range(c)] for i in range(f)]
    return grid(rows, factor_for(kh, kw))


def weight_and_gradient(weight: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """W (left) beside dW (right), each on its own symmetric scale."""
    return side_by_side(filters(weight), filters(grad))


def activation_maps(maps: np.ndarray, max_channels: int = 16) -> np.ndarray:
    """A conv layer's output (N, C, H, W) for N probe images: a row per image, a tile per
    channel (the first ``max_channels``), on one scale for the whole picture."""
    n, c, h, w = maps.shape
    shown = maps[:, :max_channels]
    return grid(diverging(shown), factor_for(h, w, MAP_PX))  # (N, C, h, w, 3): a tile each


def _as_image(x: np.ndarray) -> np.ndarray:
    """An input image (C, H, W), normalised data, as (H, W, 3) in its own min-max range."""
    x = np.asarray(x, np.float64)
    x = (x - x.min()) / (np.ptp(x) or 1.0)
    rgb = x if x.shape[0] == 3 else np.repeat(x.mean(axis=0, keepdims=True), 3, axis=0)
    return (rgb.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def saliency(images: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """A row per probe image: the image, then ``max_c |dL/dx|`` (Simonyan et al., 2014) on a
    white-to-blue scale, each row to its own largest value (a well-classified image has a
    much smaller gradient than a wrong one, and would show blank on a shared scale)."""
    magnitude = np.abs(grads).max(axis=1)  # (N, H, W)
    rows = [[_as_image(x), sequential(m / (m.max() or 1.0))] for x, m in zip(images, magnitude)]
    return grid(rows, factor_for(*images.shape[2:]))


def confusion(counts: np.ndarray, cell_px: int | None = None) -> np.ndarray:
    """A (K, K) confusion matrix, rows the true class (0 at the top) and columns the
    predicted one (0 at the left), each row as fractions of its class (white 0, dark blue 1);
    cells of ``cell_px`` pixels (by default about 240 pixels in all)."""
    cell_px = cell_px or max(8, 240 // len(counts))
    totals = counts.sum(axis=1, keepdims=True)
    frac = counts / np.where(totals > 0, totals, 1)
    return grid([[sequential(frac)]], cell_px)
