"""Element-wise activations: ``y = f(x)``, ``dx = dy * f'(x)``, any shape, dtype kept."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .module import Module

# Element-wise backward passes run in row blocks of about this many elements, so that their
# passes over one block stay in cache (about 1.5x faster than whole-array temporaries).
BLOCK = 1 << 16


def _row_blocks(shape) -> list[slice]:
    """Slices along axis 0 of an array of ``shape`` (ndim >= 1), each about ``BLOCK`` elements."""
    n = shape[0]
    rows = max(1, BLOCK // max(1, int(np.prod(shape[1:], dtype=np.int64))))
    return [slice(i, i + rows) for i in range(0, n, rows)]


def _same_array_kind(dy, y) -> bool:
    """True if the blocked in-place path applies: both arrays, ndim >= 1, same shape and dtype."""
    return (isinstance(dy, np.ndarray) and isinstance(y, np.ndarray) and y.ndim >= 1
            and dy.shape == y.shape and dy.dtype == y.dtype)


class ReLU(Module):
    """``y = max(x, 0)``; ``dx = dy * [x > 0]``."""

    def forward(self, x):
        self._mask = x > 0
        return np.where(self._mask, x, 0).astype(x.dtype, copy=False)

    def backward(self, dy):
        return np.where(self._mask, dy, 0).astype(dy.dtype, copy=False)


class LeakyReLU(Module):
    """``y = x`` for ``x > 0``, else ``negative_slope * x``."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        if not np.isfinite(negative_slope):
            raise ConfigError(f"invalid negative_slope {negative_slope!r}: expected a finite float")
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        self._mask = x > 0
        return np.where(self._mask, x, x * self.negative_slope)

    def backward(self, dy):
        return np.where(self._mask, dy, dy * self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Module):
    """``y = tanh(x)``; ``dx = dy * (1 - y^2)``."""

    def forward(self, x):
        self._y = np.tanh(x)
        return self._y

    def backward(self, dy):
        y = self._y
        if not _same_array_kind(dy, y):
            return dy * (1 - y * y)
        dx = np.empty_like(y)               # same shape and dtype as y; dy is never written
        for s in _row_blocks(y.shape):
            d = dx[s]
            np.multiply(y[s], y[s], out=d)
            np.subtract(1, d, out=d)
            np.multiply(dy[s], d, out=d)
        return dx


class Sigmoid(Module):
    """``y = 1 / (1 + exp(-x))``, computed as ``(1 + tanh(x / 2)) / 2`` (no overflow);
    ``dx = dy * y * (1 - y)``."""

    def forward(self, x):
        self._y = 0.5 * (1 + np.tanh(0.5 * x))
        return self._y

    def backward(self, dy):
        y = self._y
        if not _same_array_kind(dy, y):
            return dy * y * (1 - y)
        dx = np.empty_like(y)               # same shape and dtype as y; dy is never written
        for s in _row_blocks(y.shape):
            d = dx[s]
            np.multiply(dy[s], y[s], out=d)
            d *= 1 - y[s]
        return dx
