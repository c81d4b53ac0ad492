"""Stride-1 convolution in wide rows: the jitted loops behind :mod:`.conv`.

Flatten one image of ``x_pad`` (C, Hp, Wp) into a vector. Output pixel (i, j) reads, for kernel
tap (c, p, q), the element ``c*Hp*Wp + (i + p*dh)*Wp + (j + q*dw)`` = ``o + off(c, p, q)`` with
``o = i*Wp + j``. Indexing the output by ``o`` ("wide" rows of Wp columns, of which the last
``Wp - Wo`` are junk and dropped) turns every tap into one contiguous run of
``(Ho - 1)*Wp + Wo`` elements, long enough for the vector units even when Wo is 10:

* forward: ``y_wide[f] = sum_t w[f, t] * x[off_t : off_t + L]``, four filters by four taps per
  pass (:func:`_four_rows`), so that every element of x loaded feeds four multiply-adds;
* dW (:mod:`.wide_grad`): ``dW[f, t] = dot(x[off_t : off_t + L], dy_wide[f])``, four filters by
  four taps per pass;
* dX: the full convolution, as the design defines it: dY zero-padded by the kernel's span on
  every side, correlated with the kernel rotated 180 degrees (in and out channels swapped), by
  the forward kernel.

**Whole groups, whole vectors.** The run length L is rounded up to a multiple of
:data:`LANES` (16 float32, one 512-bit register), read from a copy of the image with that many
zeros after it, so the vectorised loop never ends in a scalar remainder (on 8x8 maps L is 78,
and the 14 leftover elements cost as much as the 64 before them). Filters and taps are padded
with zero weights to whole groups of four (:func:`grouped`): one pass function serves every
layer, where three (for four, two and one filters) used to be compiled, inlined, each time.
Padded taps read offset 0, a real (finite) element, times a zero weight.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from .common import _FAST, CHUNK, chunks, parallel

LANES = 16  # elements per vector block: float32 in a 512-bit register
GROUP = 4  # filters, and taps, per pass


def groups_up(count: int) -> int:
    """``count`` rounded up to whole :data:`GROUP`\\ s."""
    return -(-count // GROUP) * GROUP


def tap_offsets(w_shape, padded_hw, dilation) -> np.ndarray:
    """(K,) offsets of the taps (c, p, q), in weight order, into a flat (C, Hp, Wp) image; K is
    ``C*kh*kw`` rounded up to whole groups, the extra taps at offset 0. Read-only, and made once
    per geometry (building it took 60 us, a ResNet-20 step asks 80 times)."""
    return _tap_offsets(tuple(w_shape[1:]), tuple(padded_hw), tuple(dilation))


@functools.lru_cache(maxsize=256)
def _tap_offsets(kernel_shape, padded_hw, dilation) -> np.ndarray:
    c, kh, kw = kernel_shape
    (hp, wp), (dh, dw) = padded_hw, dilation
    offs = (
        np.arange(c)[:, None, None] * (hp * wp)
        + np.arange(kh)[None, :, None] * (dh * wp)
        + np.arange(kw)[None, None, :] * dw
    ).ravel()
    offs = np.concatenate([offs, np.zeros(groups_up(offs.size) - offs.size, offs.dtype)])
    offs.flags.writeable = False
    return offs


def grouped(w: np.ndarray, dtype) -> np.ndarray:
    """(F, C, kh, kw) -> (F', K') C-contiguous in ``dtype``, filters and taps rounded up to
    whole groups with zero weights."""
    f, k = w.shape[0], w[0].size
    wf = np.zeros((groups_up(f), groups_up(k)), dtype)
    wf[:f, :k] = w.reshape(f, k)
    return wf


def corr_wide(src: np.ndarray, w: np.ndarray, dilation, pad, out_hw) -> np.ndarray:
    """Stride-1 valid cross-correlation of ``src`` (N, C, Hs, Ws), zero-padded by ``pad`` =
    (ph, pw) on every side, with ``w`` (F, C, kh, kw) dilated by ``dilation``: (N, F, Ho, Wo)."""
    src = np.ascontiguousarray(src)
    (ph, pw), hw = pad, src.shape[2:]
    offs = tap_offsets(w.shape, (hw[0] + 2 * ph, hw[1] + 2 * pw), dilation)
    y = np.empty((src.shape[0], w.shape[0], *out_hw), src.dtype)
    parallel(_corr_wide, chunks(src.shape[0]), y, src, grouped(w, src.dtype), offs, ph, pw)
    return y


# -- the jitted loops -----------------------------------------------------------------------------


@njit(cache=True)
def _copy(dst, src, length):
    """``dst[:length] = src[:length]`` for 1-D arrays, as a loop over views: indices from a
    range are never negative, so the copy is vectorised (indexing a 4-D array with computed
    indices inside the loop was not, and cost LeNet's conv1 as much as its multiply-adds)."""
    for k in range(length):
        dst[k] = src[k]


@njit(cache=True)
def _load_padded(xf, img, ph, pw):
    """Copy ``img`` (C, Hs, Ws) into the interior of the flat padded image ``xf``; its borders
    and its tail keep their zeros."""
    c, hs, ws = img.shape
    hp, wp = hs + 2 * ph, ws + 2 * pw
    for ch in range(c):
        for i in range(hs):
            _copy(xf[ch * hp * wp + (i + ph) * wp + pw :], img[ch, i], ws)


@njit(cache=True, fastmath=_FAST)
def _four_rows(r0, r1, r2, r3, xf, offs, w0, w1, w2, w3, span):
    """``r_g = sum_t w_g[t] * xf[offs[t] : offs[t] + span]`` for four filters g at once, four
    taps per pass over the rows: each element of x loaded feeds four multiply-adds."""
    r0[:] = 0
    r1[:] = 0
    r2[:] = 0
    r3[:] = 0
    for t in range(0, offs.shape[0], GROUP):
        x0 = xf[offs[t] : offs[t] + span]
        x1 = xf[offs[t + 1] : offs[t + 1] + span]
        x2 = xf[offs[t + 2] : offs[t + 2] + span]
        x3 = xf[offs[t + 3] : offs[t + 3] + span]
        a0, a1, a2, a3 = w0[t], w0[t + 1], w0[t + 2], w0[t + 3]
        b0, b1, b2, b3 = w1[t], w1[t + 1], w1[t + 2], w1[t + 3]
        c0, c1, c2, c3 = w2[t], w2[t + 1], w2[t + 2], w2[t + 3]
        d0, d1, d2, d3 = w3[t], w3[t + 1], w3[t + 2], w3[t + 3]
        for o in range(span):
            v0, v1, v2, v3 = x0[o], x1[o], x2[o], x3[o]
            r0[o] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
            r1[o] += b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3
            r2[o] += c0 * v0 + c1 * v1 + c2 * v2 + c3 * v3
            r3[o] += d0 * v0 + d1 * v1 + d2 * v2 + d3 * v3


@njit(nogil=True, cache=True)
def _corr_wide(y, src, wf, offs, ph, pw, lo, hi):
    """Images of the chunks [lo, hi): ``y[b]`` from ``src[b]``."""
    n, c, hs, ws = src.shape
    f, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    hp, wp = hs + 2 * ph, ws + 2 * pw
    span = -(-((ho - 1) * wp + wo) // LANES) * LANES  # L, in whole vector blocks
    xf = np.zeros(c * hp * wp + span, src.dtype)  # the padded image; then zeros
    rows = np.empty((GROUP, span), src.dtype)  # y_wide of four filters
    for b in range(lo * CHUNK, min(n, hi * CHUNK)):
        _load_padded(xf, src[b], ph, pw)
        for f0 in range(0, wf.shape[0], GROUP):
            _four_rows(
                *(rows[0], rows[1], rows[2], rows[3], xf, offs),
                *(wf[f0], wf[f0 + 1], wf[f0 + 2], wf[f0 + 3], span),
            )
            for g in range(min(GROUP, f - f0)):  # drop padded filters and junk columns
                for i in range(ho):
                    _copy(y[b, f0 + g, i], rows[g, i * wp :], wo)
