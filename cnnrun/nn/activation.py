"""Element-wise activations: ``y = f(x)``, ``dx = dy * f'(x)``, any shape, dtype kept."""

from __future__ import annotations

import numpy as np

from ..backends.numpy_backend import select
from ..errors import ConfigError
from .module import Module

# Element-wise backward passes run in blocks of about this many elements, so that their passes
# over one block stay in cache (about 1.5x faster than whole-array temporaries).
BLOCK = 1 << 16


def _flat_blocks(*arrays) -> list[tuple[np.ndarray, ...]] | None:
    """The arrays cut into matching blocks of about ``BLOCK`` elements, in memory order, if they
    share one shape and dtype and lie densely in memory the same way (C order, batch-last, ...);
    None otherwise."""
    first = arrays[0]
    if not all(
        isinstance(a, np.ndarray)
        and a.shape == first.shape
        and a.dtype == first.dtype
        and a.strides == first.strides
        for a in arrays
    ):
        return None
    flat = [a.ravel(order="K") for a in arrays]
    if not all(np.may_share_memory(f, a) for f, a in zip(flat, arrays)) and first.size > 1:
        return None
    return [tuple(f[i : i + BLOCK] for f in flat) for i in range(0, first.size, BLOCK)]


def _backward_in_blocks(dy, y, into):
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


class ReLU(Module):
    """``y = max(x, 0)`` (NaN stays NaN, as in PyTorch); ``dx = dy * [x > 0]``."""

    def forward(self, x):
        self._mask = x > 0
        return np.maximum(x, 0)

    def backward(self, dy):
        return select(self._mask, dy)  # dy where x > 0, else 0


class LeakyReLU(Module):
    """``y = x`` for ``x > 0``, else ``negative_slope * x``."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        if not np.isfinite(negative_slope):
            raise ConfigError(f"invalid negative_slope {negative_slope!r}: expected a finite float")
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        a = self.negative_slope
        # x * a lies below x for x > 0 exactly when a <= 1: then the larger of the two is y
        y = np.maximum(x, x * a) if a <= 1 else np.minimum(x, x * a)
        # dy/dx: 1 or a, exactly: with f = [x > 0] as 0.0 or 1.0, f + (1 - f) * a is 1 + 0 or
        # 0 + a, with no rounding anywhere (a select would be 4 times slower)
        f = (x > 0).astype(x.dtype)
        slope = 1 - f
        slope *= x.dtype.type(a)
        slope += f
        self._slope = slope
        return y

    def backward(self, dy):
        return dy * self._slope

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Module):
    """``y = tanh(x)``; ``dx = dy * (1 - y^2)``."""

    def forward(self, x):
        self._y = np.tanh(x)
        return self._y

    def backward(self, dy):
        return _backward_in_blocks(dy, self._y, self._dx)

    @staticmethod
    def _dx(dy, y, out):
        np.multiply(y, y, out=out)
        np.subtract(1, out, out=out)
        np.multiply(dy, out, out=out)


class Sigmoid(Module):
    """``y = 1 / (1 + exp(-x))``, computed as ``(1 + tanh(x / 2)) / 2`` (no overflow);
    ``dx = dy * y * (1 - y)``."""

    def forward(self, x):
        self._y = 0.5 * (1 + np.tanh(0.5 * x))
        return self._y

    def backward(self, dy):
        return _backward_in_blocks(dy, self._y, self._dx)

    @staticmethod
    def _dx(dy, y, out):
        np.multiply(dy, y, out=out)
        out *= 1 - y
