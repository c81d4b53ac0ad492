"""Stride-1 gradients in wide rows (see :mod:`.wide` for the layout): dW as dot products of
each tap's run of x with dY in wide rows, four filters by four taps; dX for few input channels
by adding each tap's dY back onto the run it read."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import _FAST, CHUNK
from .wide import _tap_offsets


@njit(cache=True, fastmath=_FAST, inline="always")
def _four_dots(acc, d0, d1, d2, d3, xf, offs, span):
    """``acc[g, t] += dot(d_g, xf[offs[t] : offs[t] + span])`` for four filters g (acc is
    (4, K)), four taps per pass: each element loaded feeds four multiply-adds."""
    k = offs.shape[0]
    zero = xf.dtype.type(0)
    t = 0
    while t + 4 <= k:
        x0 = xf[offs[t] : offs[t] + span]
        x1 = xf[offs[t + 1] : offs[t + 1] + span]
        x2 = xf[offs[t + 2] : offs[t + 2] + span]
        x3 = xf[offs[t + 3] : offs[t + 3] + span]
        s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
        s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
        for o in range(span):
            a, b, c, d = d0[o], d1[o], d2[o], d3[o]
            v0, v1, v2, v3 = x0[o], x1[o], x2[o], x3[o]
            s00 += a * v0
            s01 += a * v1
            s02 += a * v2
            s03 += a * v3
            s10 += b * v0
            s11 += b * v1
            s12 += b * v2
            s13 += b * v3
            s20 += c * v0
            s21 += c * v1
            s22 += c * v2
            s23 += c * v3
            s30 += d * v0
            s31 += d * v1
            s32 += d * v2
            s33 += d * v3
        acc[0, t] += s00
        acc[0, t + 1] += s01
        acc[0, t + 2] += s02
        acc[0, t + 3] += s03
        acc[1, t] += s10
        acc[1, t + 1] += s11
        acc[1, t + 2] += s12
        acc[1, t + 3] += s13
        acc[2, t] += s20
        acc[2, t + 1] += s21
        acc[2, t + 2] += s22
        acc[2, t + 3] += s23
        acc[3, t] += s30
        acc[3, t + 1] += s31
        acc[3, t + 2] += s32
        acc[3, t + 3] += s33
        t += 4
    while t < k:
        x0 = xf[offs[t] : offs[t] + span]
        s00 = s10 = s20 = s30 = zero
        for o in range(span):
            v0 = x0[o]
            s00 += d0[o] * v0
            s10 += d1[o] * v0
            s20 += d2[o] * v0
            s30 += d3[o] * v0
        acc[0, t] += s00
        acc[1, t] += s10
        acc[2, t] += s20
        acc[3, t] += s30
        t += 1


@njit(cache=True, fastmath=_FAST, inline="always")
def _two_dots(acc, d0, d1, xf, offs, span):
    """:func:`_four_dots` for two filters (acc is (2, K))."""
    k = offs.shape[0]
    zero = xf.dtype.type(0)
    t = 0
    while t + 4 <= k:
        x0 = xf[offs[t] : offs[t] + span]
        x1 = xf[offs[t + 1] : offs[t + 1] + span]
        x2 = xf[offs[t + 2] : offs[t + 2] + span]
        x3 = xf[offs[t + 3] : offs[t + 3] + span]
        s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
        for o in range(span):
            a, b = d0[o], d1[o]
            v0, v1, v2, v3 = x0[o], x1[o], x2[o], x3[o]
            s00 += a * v0
            s01 += a * v1
            s02 += a * v2
            s03 += a * v3
            s10 += b * v0
            s11 += b * v1
            s12 += b * v2
            s13 += b * v3
        acc[0, t] += s00
        acc[0, t + 1] += s01
        acc[0, t + 2] += s02
        acc[0, t + 3] += s03
        acc[1, t] += s10
        acc[1, t + 1] += s11
        acc[1, t + 2] += s12
        acc[1, t + 3] += s13
        t += 4
    while t < k:
        x0 = xf[offs[t] : offs[t] + span]
        s00 = s10 = zero
        for o in range(span):
            v0 = x0[o]
            s00 += d0[o] * v0
            s10 += d1[o] * v0
        acc[0, t] += s00
        acc[1, t] += s10
        t += 1


@njit(cache=True, fastmath=_FAST, inline="always")
def _one_dot(acc, d0, xf, offs, span):
    """:func:`_four_dots` for one filter (acc is (K,))."""
    k = offs.shape[0]
    zero = xf.dtype.type(0)
    for t in range(k):
        x0 = xf[offs[t] : offs[t] + span]
        s00 = zero
        for o in range(span):
            s00 += d0[o] * x0[o]
        acc[t] += s00


@njit(parallel=True, cache=True, fastmath=_FAST)
def _corr_grad_weight_wide(x_pad, dy, kh, kw, dh, dw):
    """dW (F, C, kh, kw): dot products of each tap's run of x with dY in wide rows, summed over
    the batch. Partial sums per chunk of images, added in chunk order, so the result does not
    depend on the number of threads."""
    n, c, hp, wp = x_pad.shape
    f, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    k = c * kh * kw
    span = (ho - 1) * wp + wo
    offs = _tap_offsets(c, kh, kw, hp, wp, dh, dw)
    n_chunks = (n + CHUNK - 1) // CHUNK
    part = np.zeros((n_chunks, f, k), x_pad.dtype)  # (chunks, F, C*kh*kw)
    for chunk in prange(n_chunks):
        dyw = np.zeros((f, span), x_pad.dtype)  # dY in wide rows; junk columns 0
        acc = part[chunk]
        for b in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):
            xf = x_pad[b].reshape(c * hp * wp)  # (C, Hp, Wp) -> (C*Hp*Wp,), a view
            for o_f in range(f):
                for i in range(ho):
                    for j in range(wo):
                        dyw[o_f, i * wp + j] = dy[b, o_f, i, j]
            o_f = 0
            while o_f < f:
                if o_f + 4 <= f:
                    _four_dots(
                        acc[o_f : o_f + 4],
                        dyw[o_f],
                        dyw[o_f + 1],
                        dyw[o_f + 2],
                        dyw[o_f + 3],
                        xf,
                        offs,
                        span,
                    )
                    o_f += 4
                elif o_f + 2 <= f:
                    _two_dots(acc[o_f : o_f + 2], dyw[o_f], dyw[o_f + 1], xf, offs, span)
                    o_f += 2
                else:
                    _one_dot(acc[o_f], dyw[o_f], xf, offs, span)
                    o_f += 1
    dW = part[0].copy()
    for chunk in range(1, n_chunks):
        dW += part[chunk]
    return dW.reshape(f, c, kh, kw)  # (F, C*kh*kw) -> (F, C, kh, kw)


@njit(parallel=True, cache=True, fastmath=_FAST)
def _conv_grad_input_scatter(dy, w, dh, dw, hp, wp):
    """Stride-1 dX_pad for few input channels: dY in wide rows (junk columns 0) times each
    kernel tap, added onto the run of dx_pad that tap read in the forward pass; eight filters
    per pass. The same sum as the full convolution, term by term."""
    n, f, ho, wo = dy.shape
    c, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    span = (ho - 1) * wp + wo
    dx = np.empty((n, c, hp, wp), dy.dtype)
    for chunk in prange((n + CHUNK - 1) // CHUNK):
        dyw = np.zeros((f, span), dy.dtype)
        for b in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):
            for o_f in range(f):
                for i in range(ho):
                    for j in range(wo):
                        dyw[o_f, i * wp + j] = dy[b, o_f, i, j]
            dxf = dx[b].reshape(c * hp * wp)  # (C, Hp, Wp) -> (C*Hp*Wp,), a view
            dxf[:] = 0
            for ch in range(c):
                for p in range(kh):
                    for q in range(kw):
                        off = ch * hp * wp + p * dh * wp + q * dw
                        seg = dxf[off : off + span]  # the pixels tap (p, q) read
                        g = 0
                        while g + 8 <= f:
                            w0, w1, w2, w3 = (
                                w[g, ch, p, q],
                                w[g + 1, ch, p, q],
                                w[g + 2, ch, p, q],
                                w[g + 3, ch, p, q],
                            )
                            w4, w5, w6, w7 = (
                                w[g + 4, ch, p, q],
                                w[g + 5, ch, p, q],
                                w[g + 6, ch, p, q],
                                w[g + 7, ch, p, q],
                            )
                            d0, d1, d2, d3 = dyw[g], dyw[g + 1], dyw[g + 2], dyw[g + 3]
                            d4, d5, d6, d7 = dyw[g + 4], dyw[g + 5], dyw[g + 6], dyw[g + 7]
                            for o in range(span):
                                seg[o] += (
                                    w0 * d0[o]
                                    + w1 * d1[o]
                                    + w2 * d2[o]
                                    + w3 * d3[o]
                                    + w4 * d4[o]
                                    + w5 * d5[o]
                                    + w6 * d6[o]
                                    + w7 * d7[o]
                                )
                            g += 8
                        while g < f:
                            w0 = w[g, ch, p, q]
                            d0 = dyw[g]
                            for o in range(span):
                                seg[o] += w0 * d0[o]
                            g += 1
    return dx
