"""Stride-1 convolution in wide rows: the jitted loops behind :mod:`.conv`.

Flatten one image of ``x_pad`` (C, Hp, Wp) into a vector. Output pixel (i, j) reads, for kernel
tap (c, p, q), the element ``c*Hp*Wp + (i + p*dh)*Wp + (j + q*dw)`` = ``o + off(c, p, q)`` with
``o = i*Wp + j``. Indexing the output by ``o`` ("wide" rows of Wp columns, of which the last
``Wp - Wo`` are junk and dropped) turns every tap into one contiguous run of
``L = (Ho - 1)*Wp + Wo`` elements, long enough for the vector units even when Wo is 10:

* forward: ``y_wide[f] = sum_t w[f, t] * x[off_t : off_t + L]``, four filters by four taps per
  pass, so that every element of x loaded feeds four multiply-adds;
* dW: ``dW[f, t] = dot(x[off_t : off_t + L], dy_wide[f])``, the valid correlation of x_pad with
  dY, with dY copied into wide rows whose junk columns are zero; four filters by four taps;
* dX: the full convolution, as the design defines it: dY zero-padded by the kernel's span on
  every side, correlated with the kernel rotated 180 degrees (in and out channels swapped), by
  the forward kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import _FAST, CHUNK


@njit(cache=True)
def _tap_offsets(c, kh, kw, hp, wp, dh, dw):
    """(C*kh*kw,) offsets of the taps (c, p, q), in weight order, into a flat (C, Hp, Wp)."""
    offs = np.empty(c * kh * kw, np.int64)
    t = 0
    for ch in range(c):
        for p in range(kh):
            for q in range(kw):
                offs[t] = ch * hp * wp + p * dh * wp + q * dw
                t += 1
    return offs


@njit(cache=True, fastmath=_FAST, inline="always")
def _four_rows(r0, r1, r2, r3, xf, offs, w0, w1, w2, w3, span):
    """``r_g = sum_t w_g[t] * xf[offs[t] : offs[t] + span]`` for four filters g at once:
    each element of x loaded feeds four multiply-adds, four taps per pass over the rows."""
    k = offs.shape[0]
    r0[:] = 0
    r1[:] = 0
    r2[:] = 0
    r3[:] = 0
    t = 0
    while t + 4 <= k:
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
        t += 4
    while t < k:
        x0 = xf[offs[t] : offs[t] + span]
        a0, b0, c0, d0 = w0[t], w1[t], w2[t], w3[t]
        for o in range(span):
            v0 = x0[o]
            r0[o] += a0 * v0
            r1[o] += b0 * v0
            r2[o] += c0 * v0
            r3[o] += d0 * v0
        t += 1


@njit(cache=True, fastmath=_FAST, inline="always")
def _two_rows(r0, r1, xf, offs, w0, w1, span):
    """:func:`_four_rows` for two filters."""
    k = offs.shape[0]
    r0[:] = 0
    r1[:] = 0
    t = 0
    while t + 4 <= k:
        x0 = xf[offs[t] : offs[t] + span]
        x1 = xf[offs[t + 1] : offs[t + 1] + span]
        x2 = xf[offs[t + 2] : offs[t + 2] + span]
        x3 = xf[offs[t + 3] : offs[t + 3] + span]
        a0, a1, a2, a3 = w0[t], w0[t + 1], w0[t + 2], w0[t + 3]
        b0, b1, b2, b3 = w1[t], w1[t + 1], w1[t + 2], w1[t + 3]
        for o in range(span):
            v0, v1, v2, v3 = x0[o], x1[o], x2[o], x3[o]
            r0[o] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
            r1[o] += b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3
        t += 4
    while t < k:
        x0 = xf[offs[t] : offs[t] + span]
        a0, b0 = w0[t], w1[t]
        for o in range(span):
            v0 = x0[o]
            r0[o] += a0 * v0
            r1[o] += b0 * v0
        t += 1


@njit(cache=True, fastmath=_FAST, inline="always")
def _one_row(r0, xf, offs, w0, span):
    """``r0 = sum_t w0[t] * xf[offs[t] : offs[t] + span]``, four taps per pass."""
    k = offs.shape[0]
    r0[:] = 0
    t = 0
    while t + 4 <= k:
        x0 = xf[offs[t] : offs[t] + span]
        x1 = xf[offs[t + 1] : offs[t + 1] + span]
        x2 = xf[offs[t + 2] : offs[t + 2] + span]
        x3 = xf[offs[t + 3] : offs[t + 3] + span]
        a0, a1, a2, a3 = w0[t], w0[t + 1], w0[t + 2], w0[t + 3]
        for o in range(span):
            r0[o] += a0 * x0[o] + a1 * x1[o] + a2 * x2[o] + a3 * x3[o]
        t += 4
    while t < k:
        x0 = xf[offs[t] : offs[t] + span]
        a0 = w0[t]
        for o in range(span):
            r0[o] += a0 * x0[o]
        t += 1


@njit(parallel=True, cache=True, fastmath=_FAST)
def _corr_wide(src, w, dh, dw, ph, pw, ho, wo):
    """Stride-1 valid cross-correlation of ``src`` (N, C, Hs, Ws), zero-padded by (ph, pw) on
    every side, with ``w`` (F, C, kh, kw) dilated by (dh, dw): (N, F, Ho, Wo)."""
    n, c, hs, ws = src.shape
    f, _, kh, kw = w.shape
    hp, wp = hs + 2 * ph, ws + 2 * pw
    span = (ho - 1) * wp + wo  # L: one wide output, junk tail cut
    offs = _tap_offsets(c, kh, kw, hp, wp, dh, dw)
    wf = w.reshape(f, c * kh * kw)  # (F, C, kh, kw) -> (F, C*kh*kw)
    y = np.empty((n, f, ho, wo), src.dtype)
    padded = ph > 0 or pw > 0
    for chunk in prange((n + CHUNK - 1) // CHUNK):
        buf = np.zeros((c, hp, wp), src.dtype)  # the padded image; borders stay 0
        rows = np.empty((4, span), src.dtype)  # y_wide of four filters
        for b in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):
            if padded:
                buf[:, ph : ph + hs, pw : pw + ws] = src[b]
                xf = buf.reshape(c * hp * wp)  # (C, Hp, Wp) -> (C*Hp*Wp,), a view
            else:
                xf = src[b].reshape(c * hp * wp)  # one image: (C, Hp, Wp) -> (C*Hp*Wp,)
            o_f = 0
            while o_f < f:
                if o_f + 4 <= f:
                    _four_rows(
                        rows[0],
                        rows[1],
                        rows[2],
                        rows[3],
                        xf,
                        offs,
                        wf[o_f],
                        wf[o_f + 1],
                        wf[o_f + 2],
                        wf[o_f + 3],
                        span,
                    )
                    g_end = 4
                elif o_f + 2 <= f:
                    _two_rows(rows[0], rows[1], xf, offs, wf[o_f], wf[o_f + 1], span)
                    g_end = 2
                else:
                    _one_row(rows[0], xf, offs, wf[o_f], span)
                    g_end = 1
                for g in range(g_end):  # drop the junk columns
                    for i in range(ho):
                        for j in range(wo):
                            y[b, o_f + g, i, j] = rows[g, i * wp + j]
                o_f += g_end
    return y
