"""Numba activations: ReLU as compiled single passes that keep y as their context; the others
are NumPy's element-wise kernels, re-exported as they are.

**ReLU.** These passes are bound by memory traffic, not arithmetic, so what counts is the bytes
moved. NumPy's kernels write y and a mask ``x > 0`` in two passes (13 bytes an element in
float32), and the backward multiplies dy by the mask, then sums the product to check it is
finite (``inf * 0`` is NaN where a select gives 0): 13 bytes more. Here the context is y itself
(``y > 0`` exactly where ``x > 0``: NaN compares false in both), the forward writes only y
(8 bytes an element) and the backward is one branch-free select of dy on ``y > 0`` (12 bytes).
Each work item is a block of :data:`BLOCK` elements in memory order, so any dense layout runs
as it lies (C order here, batch-last from a NumPy layer); others go through NumPy.

**The others** (leaky ReLU, tanh, sigmoid) are one or two passes that NumPy's ufuncs already
run vectorised (backward in cache-sized blocks); LeNet's tanh layers are small.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..elementwise import (  # noqa: F401 (re-exported by the package)
    flat_views,
    leaky_relu_backward,
    leaky_relu_forward,
    select,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
from ..elementwise import relu_forward as _numpy_relu_forward
from .common import parallel

BLOCK = 1 << 15  # elements per work item


def _flat(*arrays: np.ndarray) -> list[np.ndarray] | None:
    """:func:`~cnnrun.backends.elementwise.flat_views` of float32 or float64 arrays; None for
    other dtypes too (NumPy's kernels then: the compiled loops know no float16, say)."""
    if not all(getattr(a, "dtype", None) in (np.float32, np.float64) for a in arrays):
        return None
    return flat_views(*arrays)


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y = x`` where ``x > 0``, else 0 (NaN stays NaN); ctx is y, laid out as x."""
    y = np.empty_like(x)
    flat = _flat(x, y)
    if flat is None:
        y = _numpy_relu_forward(x)[0]
    else:
        parallel(_relu_forward, -(-x.size // BLOCK), *flat)
    return y, y


def relu_backward(dy: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """``dx = dy`` where ``y > 0`` (that is, ``x > 0``), else 0: a select, so dy's inf and NaN
    there give 0. dx is laid out as y. A dY of another layout than a C-order y's (a conv
    layer's dX, cropped out of its padded dX, say) is copied to C order first: a copy and a
    pass take 0.55 ms on (64, 16, 32, 32) float32, NumPy's kernels 0.86 ms, and a compiled
    loop over its rows where they lie 2.3 ms (strided rows are not vectorised)."""
    dx = np.empty_like(ctx)
    if isinstance(dy, np.ndarray) and dy.shape == ctx.shape and ctx.flags.c_contiguous:
        dy = np.ascontiguousarray(dy, dtype=ctx.dtype)
    flat = _flat(dy, ctx, dx)
    if flat is None:
        return select(ctx > 0, dy)
    parallel(_relu_backward, -(-dx.size // BLOCK), *flat)
    return dx


# The loops run over views from 0, so that no index can be negative: with indices offset by lo,
# Numba wrapped each one around and LLVM gathered every element


@njit(nogil=True, cache=True)
def _relu_forward(x, y, lo, hi):
    zero = x.dtype.type(0)
    start, stop = lo * BLOCK, min(x.size, hi * BLOCK)
    xs, ys = x[start:stop], y[start:stop]
    for k in range(stop - start):
        v = xs[k]
        ys[k] = zero if v <= 0 else v


@njit(nogil=True, cache=True)
def _relu_backward(dy, y, dx, lo, hi):
    zero = dy.dtype.type(0)
    start, stop = lo * BLOCK, min(dy.size, hi * BLOCK)
    ds, ys, out = dy[start:stop], y[start:stop], dx[start:stop]
    for k in range(stop - start):
        out[k] = ds[k] if ys[k] > 0 else zero
