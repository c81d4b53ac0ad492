"""Numba pooling kernels: one (image, channel) plane per work item (:func:`.common.parallel`).

**2x2 windows every 2** (LeNet's and VGG's pools) run loops of their own, with the four taps
written out, so that LLVM vectorises them over the output columns; the general loops, whose
taps are loops, are not vectorised. Measured on (64, 16, 32, 32) float32, 2 threads: max
forward 1.14 -> 0.42 ms, max backward 0.49 -> 0.28 ms, average forward 0.37 -> 0.17 ms,
average backward 0.37 -> 0.27 ms. They add in the general loops' order, so the bits are the
same. The maximum's test is written ``not (v <= best) and best == best`` (v wins if it is
larger, or NaN where best is not): the same truth table as ``v > best or (isnan(v) and not
isnan(best))``, but in compares LLVM turns into vector masks (1.0 against 0.42 ms).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .common import Pair, out_hw, parallel


def maxpool2d_forward(
    x_pad: np.ndarray, kernel_size: Pair, stride: Pair
) -> tuple[np.ndarray, np.ndarray]:
    """y = max over each window; ctx = flat index (p * kw + q) of the window's first maximum,
    in the smallest integer type that holds it (uint8 for windows of up to 256 pixels: the
    index array is written and read once more for each output, 1 byte against 8 for intp)."""
    x_pad = np.ascontiguousarray(x_pad)
    n, c = x_pad.shape[:2]
    ho, wo = out_hw(x_pad.shape[2:], kernel_size, stride, (1, 1))
    index = np.uint8 if kernel_size[0] * kernel_size[1] <= 256 else np.int32
    y, arg = np.empty((n, c, ho, wo), x_pad.dtype), np.empty((n, c, ho, wo), index)
    if _two_by_two(kernel_size, stride):
        parallel(_maxpool_forward_2x2, n * c, y, arg, x_pad)
    else:
        parallel(_maxpool_forward, n * c, y, arg, x_pad, *kernel_size, *stride)
    return y, arg


def maxpool2d_backward(
    dy: np.ndarray, ctx: np.ndarray, kernel_size: Pair, stride: Pair, padded_hw: Pair
) -> np.ndarray:
    """Each dy goes to the one input pixel that was the (first) maximum of its window. Windows
    that tile the image exactly (2x2 every 2) write each pixel once, its dy or 0; others add
    into zeros."""
    dy = np.ascontiguousarray(dy)
    (kh, kw), (sh, sw) = kernel_size, stride
    tiled = _tiled(kernel_size, stride, dy.shape[2:], padded_hw)
    make = np.empty if tiled else np.zeros
    dx = make((*dy.shape[:2], *padded_hw), dy.dtype)
    arg = np.ascontiguousarray(ctx)
    if tiled and _two_by_two(kernel_size, stride):
        parallel(_maxpool_backward_2x2, dy.shape[0] * dy.shape[1], dx, dy, arg)
    else:
        parallel(_maxpool_backward, dy.shape[0] * dy.shape[1], dx, dy, arg, kh, kw, sh, sw, tiled)
    return dx


def avgpool2d_forward(
    x_pad: np.ndarray, kernel_size: Pair, stride: Pair
) -> tuple[np.ndarray, None]:
    """Mean over each window; padding counts as zeros (PyTorch's ``count_include_pad=True``)."""
    x_pad = np.ascontiguousarray(x_pad)
    ho, wo = out_hw(x_pad.shape[2:], kernel_size, stride, (1, 1))
    y = np.empty((*x_pad.shape[:2], ho, wo), x_pad.dtype)
    planes = x_pad.shape[0] * x_pad.shape[1]
    if _two_by_two(kernel_size, stride):
        parallel(_avgpool_forward_2x2, planes, y, x_pad)
    else:
        parallel(_avgpool_forward, planes, y, x_pad, *kernel_size, *stride)
    return y, None


def avgpool2d_backward(
    dy: np.ndarray, ctx: None, kernel_size: Pair, stride: Pair, padded_hw: Pair
) -> np.ndarray:
    """Each dy is shared equally by the ``kh * kw`` pixels of its window."""
    dy = np.ascontiguousarray(dy)
    dx = np.empty((*dy.shape[:2], *padded_hw), dy.dtype)
    planes = dy.shape[0] * dy.shape[1]
    if _two_by_two(kernel_size, stride) and _tiled(kernel_size, stride, dy.shape[2:], padded_hw):
        parallel(_avgpool_backward_2x2, planes, dx, dy)
    else:
        parallel(_avgpool_backward, planes, dx, dy, *kernel_size, *stride)
    return dx


def _tiled(kernel_size: Pair, stride: Pair, out_hw: Pair, padded_hw: Pair) -> bool:
    """Whether the windows tile the padded image exactly: every pixel in one window."""
    (kh, kw), (ho, wo) = kernel_size, out_hw
    return tuple(stride) == (kh, kw) and (ho * kh, wo * kw) == tuple(padded_hw)


def _two_by_two(kernel_size: Pair, stride: Pair) -> bool:
    """Whether the windows are 2x2, every 2 (the loops of their own: see the module's notes)."""
    return tuple(kernel_size) == (2, 2) and tuple(stride) == (2, 2)


# -- the jitted loops -------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _maxpool_forward(y, arg, x_pad, kh, kw, sh, sw, lo, hi):
    c, ho, wo = x_pad.shape[1], y.shape[2], y.shape[3]
    for bc in range(lo, hi):
        img = x_pad[bc // c, bc % c]
        for i in range(ho):
            for j in range(wo):
                best = img[i * sh, j * sw]
                at = 0
                for p in range(kh):
                    for q in range(kw):
                        v = img[i * sh + p, j * sw + q]
                        # the first maximum wins ties; a NaN wins, as in np.argmax. Selects,
                        # not a branch: on random data a branch mispredicts half the time
                        # (2.4 -> 1.1 ms for a 2x2 pool of 64x16x32x32)
                        wins = (not (v <= best)) & (best == best)
                        best = v if wins else best
                        at = p * kw + q if wins else at
                y[bc // c, bc % c, i, j] = best
                arg[bc // c, bc % c, i, j] = at


@njit(nogil=True, cache=True)
def _maxpool_backward(dx, dy, arg, kh, kw, sh, sw, tiled, lo, hi):
    c, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    zero = dy.dtype.type(0)
    for bc in range(lo, hi):
        b, ch = bc // c, bc % c
        for i in range(ho):
            for j in range(wo):
                at, g = arg[b, ch, i, j], dy[b, ch, i, j]
                if tiled:  # every pixel of the window once: g at the maximum, 0 elsewhere
                    for p in range(kh):
                        for q in range(kw):
                            dx[b, ch, i * kh + p, j * kw + q] = g if p * kw + q == at else zero
                else:
                    dx[b, ch, i * sh + at // kw, j * sw + at % kw] += g


@njit(nogil=True, cache=True)
def _avgpool_forward(y, x_pad, kh, kw, sh, sw, lo, hi):
    """Sum the kh rows of each window row first (contiguous, vectorised), then kw columns."""
    c, wp = x_pad.shape[1], x_pad.shape[3]
    ho, wo = y.shape[2], y.shape[3]
    count = x_pad.dtype.type(kh * kw)
    for bc in range(lo, hi):
        img = x_pad[bc // c, bc % c]  # (Hp, Wp)
        out = y[bc // c, bc % c]  # (Ho, Wo)
        rows = np.empty(wp, x_pad.dtype)
        for i in range(ho):
            first = img[i * sh]
            for k in range(wp):  # a loop, not rows[:] = ...: no shape check to compile
                rows[k] = first[k]
            for p in range(1, kh):
                r = img[i * sh + p]
                for k in range(wp):
                    rows[k] += r[k]
            for j in range(wo):
                s = rows[j * sw]
                for q in range(1, kw):
                    s += rows[j * sw + q]
                out[i, j] = s / count


@njit(nogil=True, cache=True)
def _avgpool_backward(dx, dy, kh, kw, sh, sw, lo, hi):
    """Spread each share over a row of window columns once, then add that row to kh rows.
    Windows that tile the image exactly (LeNet's 2x2 every 2) write every pixel once instead."""
    c, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    hp, wp = dx.shape[2], dx.shape[3]
    tiled = sh == kh and sw == kw and ho * kh == hp and wo * kw == wp
    count = dy.dtype.type(kh * kw)
    for bc in range(lo, hi):
        img = dx[bc // c, bc % c]  # (Hp, Wp)
        g = dy[bc // c, bc % c]  # (Ho, Wo)
        rows = np.empty(wp, dy.dtype)
        if not tiled:
            img[:, :] = 0
        for i in range(ho):
            if tiled:
                for j in range(wo):
                    share = g[i, j] / count
                    for q in range(kw):
                        rows[j * kw + q] = share
                for p in range(kh):
                    r = img[i * kh + p]
                    for k in range(wp):
                        r[k] = rows[k]
                continue
            rows[:] = 0
            for j in range(wo):
                share = g[i, j] / count
                for q in range(kw):
                    rows[j * sw + q] += share
            for p in range(kh):
                r = img[i * sh + p]
                for k in range(wp):
                    r[k] += rows[k]


# The 2x2 loops: one row pair of a plane at a time, the planes' indices split once per plane


@njit(nogil=True, cache=True)
def _maxpool_forward_2x2(y, arg, x_pad, lo, hi):
    c, ho, wo = x_pad.shape[1], y.shape[2], y.shape[3]
    for bc in range(lo, hi):
        b = bc // c
        ch = bc - b * c
        for i in range(ho):
            r0, r1 = x_pad[b, ch, 2 * i], x_pad[b, ch, 2 * i + 1]
            best_row, at_row = y[b, ch, i], arg[b, ch, i]
            for j in range(wo):
                best, at = r0[2 * j], 0
                for tap, v in ((1, r0[2 * j + 1]), (2, r1[2 * j]), (3, r1[2 * j + 1])):
                    wins = (not (v <= best)) & (best == best)  # as in _maxpool_forward
                    best = v if wins else best
                    at = tap if wins else at
                best_row[j] = best
                at_row[j] = at


@njit(nogil=True, cache=True)
def _maxpool_backward_2x2(dx, dy, arg, lo, hi):
    """Windows that tile the image: each row of dx written in order, g or 0 at each pixel."""
    c, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    zero = dy.dtype.type(0)
    for bc in range(lo, hi):
        b = bc // c
        ch = bc - b * c
        for i in range(ho):
            d0, d1 = dx[b, ch, 2 * i], dx[b, ch, 2 * i + 1]
            g, at = dy[b, ch, i], arg[b, ch, i]
            for k in range(2 * wo):  # over dx's columns, not dy's: stores in order
                # both loads before the selects: a load inside one is a branch
                q, gj, a = k & 1, g[k >> 1], np.int32(at[k >> 1])
                d0[k] = gj if a == q else zero
                d1[k] = gj if a == q + 2 else zero


@njit(nogil=True, cache=True)
def _avgpool_forward_2x2(y, x_pad, lo, hi):
    c, ho, wo = x_pad.shape[1], y.shape[2], y.shape[3]
    four = x_pad.dtype.type(4)
    for bc in range(lo, hi):
        b = bc // c
        ch = bc - b * c
        for i in range(ho):
            r0, r1, out = x_pad[b, ch, 2 * i], x_pad[b, ch, 2 * i + 1], y[b, ch, i]
            for j in range(wo):  # the rows first, as _avgpool_forward adds
                out[j] = ((r0[2 * j] + r1[2 * j]) + (r0[2 * j + 1] + r1[2 * j + 1])) / four


@njit(nogil=True, cache=True)
def _avgpool_backward_2x2(dx, dy, lo, hi):
    """Windows that tile the image: every pixel its window's share, row by row in order."""
    c, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    four = dy.dtype.type(4)
    for bc in range(lo, hi):
        b = bc // c
        ch = bc - b * c
        for i in range(ho):
            d0, d1, g = dx[b, ch, 2 * i], dx[b, ch, 2 * i + 1], dy[b, ch, i]
            for k in range(2 * wo):
                d0[k] = d1[k] = g[k >> 1] / four
