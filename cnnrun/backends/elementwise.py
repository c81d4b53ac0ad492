"""NumPy element-wise kernels: the activations (and :func:`select`), any shape, any layout.

Element-wise NumPy operations keep their input's layout, so these pass the layout they are
handed on (batch-last from the NumPy backend's kernels, C order from Numba's) and every array
keeps its input's dtype. Each forward returns ``(y, ctx)``; ``ctx`` is what its backward needs
(a mask, a slope or y itself), private to these kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Element-wise backward passes run in blocks of about this many elements, so that their passes
# over one block stay in cache (about 1.5x faster than whole-array temporaries).
BLOCK = 1 << 16


def select(mask: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``a`` where ``mask``, else 0, as ``np.where(mask, a, 0)``. A product with the mask gives
    that about 8 times faster (a select on a random mask stalls on branches), and the same
    numbers wherever ``a`` is finite; where it is not (inf * 0 is NaN), the select runs after
    all."""
    with np.errstate(invalid="ignore"):
        out = a * mask
    if not np.isfinite(out.sum()):
        out = np.where(mask, a, 0).astype(a.dtype, copy=False)
    return out


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b``, laid out as NumPy lays out the sum (as its operands, where they agree)."""
    return np.add(a, b)


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y = max(x, 0)`` (NaN stays NaN, as in PyTorch); ctx is the mask ``x > 0``."""
    return np.maximum(x, 0), x > 0


def relu_backward(dy: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """``dx = dy * [x > 0]``: dy where x > 0, else 0."""
    return select(ctx, dy)


def leaky_relu_forward(x: np.ndarray, negative_slope: float) -> tuple[np.ndarray, np.ndarray]:
    """``y = x`` for ``x > 0``, else ``negative_slope * x``; ctx is dy/dx, 1 or the slope."""
    a = negative_slope
    # x * a lies below x for x > 0 exactly when a <= 1: then the larger of the two is y
    y = np.maximum(x, x * a) if a <= 1 else np.minimum(x, x * a)
    # dy/dx: 1 or a, exactly: with f = [x > 0] as 0.0 or 1.0, f + (1 - f) * a is 1 + 0 or
    # 0 + a, with no rounding anywhere (a select would be 4 times slower)
    f = (x > 0).astype(x.dtype)
    slope = 1 - f
    slope *= x.dtype.type(a)
    slope += f
    return y, slope


def leaky_relu_backward(dy: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """``dx = dy * slope``."""
    return dy * ctx


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y = tanh(x)``; ctx is y."""
    y = np.tanh(x)
    return y, y


def tanh_backward(dy: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """``dx = dy * (1 - y^2)``, in cache-sized blocks."""
    return _backward_in_blocks(dy, ctx, _tanh_dx)


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y = 1 / (1 + exp(-x))``, computed as ``(1 + tanh(x / 2)) / 2`` (no overflow); ctx is y."""
    y = 0.5 * (1 + np.tanh(0.5 * x))
    return y, y


def sigmoid_backward(dy: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """``dx = dy * y * (1 - y)``, in cache-sized blocks."""
    return _backward_in_blocks(dy, ctx, _sigmoid_dx)


def _tanh_dx(dy: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    np.multiply(y, y, out=out)
    np.subtract(1, out, out=out)
    np.multiply(dy, out, out=out)


def _sigmoid_dx(dy: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    np.multiply(dy, y, out=out)
    out *= 1 - y


def flat_views(*arrays: np.ndarray) -> list[np.ndarray] | None:
    """The arrays as 1-D views in memory order, if they share one shape and dtype and lie
    densely in memory the same way (C order, batch-last, ...); None otherwise."""
    first = arrays[0]
    if not all(
        isinstance(a, np.ndarray)
        and a.shape == first.shape
        and a.dtype == first.dtype
        and a.strides == first.strides
        for a in arrays
    ):
        return None
    flat = [a.ravel(order="K") for a in arrays]  # any shape -> (size,), a view where dense
    if not all(np.may_share_memory(f, a) for f, a in zip(flat, arrays)) and first.size > 1:
        return None
    return flat


def _flat_blocks(*arrays: np.ndarray) -> list[tuple[np.ndarray, ...]] | None:
    """The arrays cut into matching blocks of about ``BLOCK`` elements, in memory order, if
    :func:`flat_views` has them; None otherwise."""
    flat = flat_views(*arrays)
    if flat is None:
        return None
    return [tuple(f[i : i + BLOCK] for f in flat) for i in range(0, flat[0].size, BLOCK)]


def _backward_in_blocks(
    dy: np.ndarray, y: np.ndarray, into: Callable[[np.ndarray, np.ndarray, np.ndarray], None]
) -> np.ndarray:
    """``dx`` from ``into(dy, y, out)``, which writes one element-wise formula into ``out``:
    block by block where dy and y lie alike in memory (see :func:`_flat_blocks`), over whole
    arrays otherwise (dy of another layout, or one that broadcasts). dy is never written."""
    dx = np.empty_like(y)  # y's shape, dtype and layout
    blocks = _flat_blocks(dy, y, dx)
    if blocks is None:
        dx = np.empty(np.broadcast_shapes(np.shape(dy), y.shape), np.result_type(dy, y))
        blocks = [(dy, y, dx)]
    for dy_b, y_b, out in blocks:
        into(dy_b, y_b, out)
    return dx
