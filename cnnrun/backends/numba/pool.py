"""Numba pooling kernels: one (image, channel) plane per work item."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import Pair, out_hw


def maxpool2d_forward(
    x_pad: np.ndarray, kernel_size: Pair, stride: Pair
) -> tuple[np.ndarray, np.ndarray]:
    """y = max over each window; ctx = flat index (p * kw + q) of the window's first maximum."""
    x_pad = np.ascontiguousarray(x_pad)
    ho, wo = out_hw(x_pad.shape[2:], kernel_size, stride, (1, 1))
    return _maxpool_forward(x_pad, *kernel_size, *stride, ho, wo)


def maxpool2d_backward(
    dy: np.ndarray, ctx: np.ndarray, kernel_size: Pair, stride: Pair, padded_hw: Pair
) -> np.ndarray:
    """Each dy goes to the one input pixel that was the (first) maximum of its window."""
    dy = np.ascontiguousarray(dy)
    return _maxpool_backward(dy, np.ascontiguousarray(ctx), kernel_size[1], *stride, *padded_hw)


def avgpool2d_forward(
    x_pad: np.ndarray, kernel_size: Pair, stride: Pair
) -> tuple[np.ndarray, None]:
    """Mean over each window; padding counts as zeros (PyTorch's ``count_include_pad=True``)."""
    x_pad = np.ascontiguousarray(x_pad)
    ho, wo = out_hw(x_pad.shape[2:], kernel_size, stride, (1, 1))
    return _avgpool_forward(x_pad, *kernel_size, *stride, ho, wo), None


def avgpool2d_backward(
    dy: np.ndarray, ctx: None, kernel_size: Pair, stride: Pair, padded_hw: Pair
) -> np.ndarray:
    """Each dy is shared equally by the ``kh * kw`` pixels of its window."""
    dy = np.ascontiguousarray(dy)
    return _avgpool_backward(dy, *kernel_size, *stride, *padded_hw)


# -- the jitted loops -------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _maxpool_forward(x_pad, kh, kw, sh, sw, ho, wo):
    n, c = x_pad.shape[0], x_pad.shape[1]
    y = np.empty((n, c, ho, wo), x_pad.dtype)
    arg = np.empty((n, c, ho, wo), np.intp)
    for bc in prange(n * c):
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
                        wins = (v > best) | (np.isnan(v) & (not np.isnan(best)))
                        best = v if wins else best
                        at = p * kw + q if wins else at
                y[bc // c, bc % c, i, j] = best
                arg[bc // c, bc % c, i, j] = at
    return y, arg


@njit(parallel=True, cache=True)
def _maxpool_backward(dy, arg, kw, sh, sw, hp, wp):
    n, c, ho, wo = dy.shape
    dx = np.zeros((n, c, hp, wp), dy.dtype)
    for bc in prange(n * c):
        b, ch = bc // c, bc % c
        for i in range(ho):
            for j in range(wo):
                at = arg[b, ch, i, j]
                dx[b, ch, i * sh + at // kw, j * sw + at % kw] += dy[b, ch, i, j]
    return dx


@njit(parallel=True, cache=True)
def _avgpool_forward(x_pad, kh, kw, sh, sw, ho, wo):
    """Sum the kh rows of each window row first (contiguous, vectorised), then kw columns."""
    n, c, _, wp = x_pad.shape
    y = np.empty((n, c, ho, wo), x_pad.dtype)
    count = x_pad.dtype.type(kh * kw)
    for bc in prange(n * c):
        img = x_pad[bc // c, bc % c]  # (Hp, Wp)
        out = y[bc // c, bc % c]  # (Ho, Wo)
        rows = np.empty(wp, x_pad.dtype)
        for i in range(ho):
            rows[:] = img[i * sh]
            for p in range(1, kh):
                r = img[i * sh + p]
                for k in range(wp):
                    rows[k] += r[k]
            for j in range(wo):
                s = rows[j * sw]
                for q in range(1, kw):
                    s += rows[j * sw + q]
                out[i, j] = s / count
    return y


@njit(parallel=True, cache=True)
def _avgpool_backward(dy, kh, kw, sh, sw, hp, wp):
    """Spread each share over a row of window columns once, then add that row to kh rows.
    Windows that tile the image exactly (LeNet's 2x2 every 2) write every pixel once instead."""
    n, c, ho, wo = dy.shape
    tiled = sh == kh and sw == kw and ho * kh == hp and wo * kw == wp
    dx = np.empty((n, c, hp, wp), dy.dtype)
    count = dy.dtype.type(kh * kw)
    for bc in prange(n * c):
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
                    img[i * kh + p, :] = rows
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
    return dx
