"""Numba element-wise kernels: ReLU as compiled single passes that keep y as their context,
the tanh and sigmoid backward passes and a residual block's sum compiled too, NumPy's tanh
and sigmoid forward on the threads; leaky ReLU is NumPy's, re-exported as it is.

**ReLU.** These passes are bound by memory traffic, not arithmetic, so what counts is the bytes
moved. NumPy's kernels write y and a mask ``x > 0`` in two passes (13 bytes an element in
float32), and the backward multiplies dy by the mask, then sums the product to check it is
finite (``inf * 0`` is NaN where a select gives 0): 13 bytes more. Here the context is y itself
(``y > 0`` exactly where ``x > 0``: NaN compares false in both), the forward writes only y
(8 bytes an element) and the backward is one branch-free select of dy on ``y > 0`` (12 bytes).
Each work item is a block of :data:`BLOCK` elements in memory order, so any dense layout runs
as it lies (C order here, batch-last from a NumPy layer); others go through NumPy.

**Tanh and sigmoid backward** are one compiled pass each, ``dy * (1 - y * y)`` and
``dy * y * (1 - y)``, on the threads: NumPy's take three passes over cache-sized blocks on one
thread (LeNet's four tanh layers at batch 64: 0.37 -> 0.12 ms). The operations and their order
are NumPy's, each product rounded alone (no fastmath: no fused multiply-add), so the bits are
the same. Their forward passes stay NumPy's ``tanh``, which is vectorised (Numba's calls the
scalar libm function per element: several times slower than NumPy's on one thread), run on
the threads over ranges of blocks (NumPy releases the GIL inside a ufunc's loop): the same
element-wise operations, so the same bits (LeNet's four tanh layers at batch 256: 0.62 ->
0.44 ms).

**The sum** of a residual block (:func:`add`) is one compiled pass on the threads, where the
operands lie densely alike (ResNet-20's first stage, (64, 16, 32, 32) float32: 0.44 -> 0.25
ms by NumPy's add alone); ``a + b`` otherwise.

**Leaky ReLU** is one or two passes that NumPy's ufuncs already run vectorised.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..elementwise import (  # noqa: F401 (re-exported by the package)
    flat_views,
    leaky_relu_backward,
    leaky_relu_forward,
    select,
)
from ..elementwise import relu_forward as _numpy_relu_forward
from ..elementwise import sigmoid_backward as _numpy_sigmoid_backward
from ..elementwise import sigmoid_forward as _numpy_sigmoid_forward
from ..elementwise import tanh_backward as _numpy_tanh_backward
from ..elementwise import tanh_forward as _numpy_tanh_forward
from .common import parallel

BLOCK = 1 << 15  # elements per work item
# NumPy's forward passes, and the sum, run on the threads from this many elements: below it,
# the hand-over costs more than the second thread saves (tanh of 102,400 float32: 0.027 ms
# alone, 0.032 on two threads; of 301,056: 0.086 alone, 0.057 on two)
THREADED_NUMPY = 1 << 17


def _flat(*arrays: np.ndarray) -> list[np.ndarray] | None:
    """:func:`~cnnrun.backends.elementwise.flat_views` of float32 or float64 arrays; None for
    other dtypes too (NumPy's kernels then: the compiled loops know no float16, say)."""
    if not all(getattr(a, "dtype", None) in (np.float32, np.float64) for a in arrays):
        return None
    return flat_views(*arrays)


def _blocks(kernel, *inputs: np.ndarray) -> np.ndarray | None:
    """``kernel(*inputs, out, lo, hi)`` over the blocks of :data:`BLOCK` elements, on the
    threads, into an ``out`` laid out as the first input; None where the inputs do not lie
    densely alike in one float dtype (see :func:`_flat`)."""
    out = np.empty_like(inputs[0])
    flat = _flat(*inputs, out)
    if flat is None:
        return None
    parallel(kernel, -(-out.size // BLOCK), *flat)
    return out


def _threaded(kernel, *inputs: np.ndarray) -> np.ndarray | None:
    """:func:`_blocks` for passes that NumPy runs as well on one thread below
    :data:`THREADED_NUMPY` elements: None there too."""
    first = inputs[0]
    if not isinstance(first, np.ndarray) or first.size < THREADED_NUMPY:
        return None
    return _blocks(kernel, *inputs)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b``, laid out as a where a and b lie densely alike; NumPy's sum otherwise."""
    out = _threaded(_add, a, b)
    return np.add(a, b) if out is None else out


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y = x`` where ``x > 0``, else 0 (NaN stays NaN); ctx is y, laid out as x."""
    y = _blocks(_relu_forward, x)
    if y is None:
        y = _numpy_relu_forward(x)[0]
    return y, y


def relu_backward(dy: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """``dx = dy`` where ``y > 0`` (that is, ``x > 0``), else 0: a select, so dy's inf and NaN
    there give 0. dx is laid out as y. A dY of another layout than a C-order y's (a conv
    layer's dX, cropped out of its padded dX, say) is copied to C order first: a copy and a
    pass take 0.55 ms on (64, 16, 32, 32) float32, NumPy's kernels 0.86 ms, and a compiled
    loop over its rows where they lie 2.3 ms (strided rows are not vectorised)."""
    dx = _backward(_relu_backward, dy, ctx)
    return select(ctx > 0, dy) if dx is None else dx


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y = tanh(x)``, NumPy's, on the threads; ctx is y, laid out as x."""
    y = _threaded(_tanh_range, x)
    return _numpy_tanh_forward(x) if y is None else (y, y)


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y = (1 + tanh(x / 2)) / 2``, NumPy's, on the threads; ctx is y, laid out as x."""
    y = _threaded(_sigmoid_range, x)
    return _numpy_sigmoid_forward(x) if y is None else (y, y)


# NumPy's ufuncs over ranges of blocks, on the threads (NumPy releases the GIL in their loops)


def _tanh_range(x: np.ndarray, y: np.ndarray, lo: int, hi: int) -> None:
    np.tanh(x[lo * BLOCK : hi * BLOCK], out=y[lo * BLOCK : hi * BLOCK])


def _sigmoid_range(x: np.ndarray, y: np.ndarray, lo: int, hi: int) -> None:
    y[lo * BLOCK : hi * BLOCK] = _numpy_sigmoid_forward(x[lo * BLOCK : hi * BLOCK])[0]


def tanh_backward(dy: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """``dx = dy * (1 - y^2)``, with ctx = y; NumPy's kernel where the pass does not run."""
    dx = _backward(_tanh_backward, dy, ctx)
    return _numpy_tanh_backward(dy, ctx) if dx is None else dx


def sigmoid_backward(dy: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """``dx = dy * y * (1 - y)``, with ctx = y; NumPy's kernel where the pass does not run."""
    dx = _backward(_sigmoid_backward, dy, ctx)
    return _numpy_sigmoid_backward(dy, ctx) if dx is None else dx


def _backward(kernel, dy: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """``kernel`` over dy and y into a dx laid out as y, block by block on the threads; None
    where the arrays are not dense alike (a dy that broadcasts, say) or of another dtype than
    y's (NumPy's kernel then gives NumPy's result dtype). A dy of another layout than a C-order
    y's (a conv layer's dX, cropped out of its padded dX, say) is copied to C order first."""
    if getattr(dy, "dtype", None) != y.dtype:
        return None
    if isinstance(dy, np.ndarray) and dy.shape == y.shape and y.flags.c_contiguous:
        dy = np.ascontiguousarray(dy)
    return _blocks(kernel, dy, y)  # dense alike: dx laid out as dy is laid out as y


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


@njit(nogil=True, cache=True)
def _tanh_backward(dy, y, dx, lo, hi):
    one = dy.dtype.type(1)
    start, stop = lo * BLOCK, min(dy.size, hi * BLOCK)
    ds, ys, out = dy[start:stop], y[start:stop], dx[start:stop]
    for k in range(stop - start):
        out[k] = ds[k] * (one - ys[k] * ys[k])


@njit(nogil=True, cache=True)
def _sigmoid_backward(dy, y, dx, lo, hi):
    one = dy.dtype.type(1)
    start, stop = lo * BLOCK, min(dy.size, hi * BLOCK)
    ds, ys, out = dy[start:stop], y[start:stop], dx[start:stop]
    for k in range(stop - start):
        out[k] = (ds[k] * ys[k]) * (one - ys[k])


@njit(nogil=True, cache=True)
def _add(a, b, out, lo, hi):
    start, stop = lo * BLOCK, min(a.size, hi * BLOCK)
    xs, ys, zs = a[start:stop], b[start:stop], out[start:stop]
    for k in range(stop - start):
        zs[k] = xs[k] + ys[k]
