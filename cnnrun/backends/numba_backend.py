"""Numba kernels: compiled loops over (N, C, H, W), a few images per thread (``prange``).

Same contract as :mod:`cnnrun.backends.reference`, whose loops define every product here; the
tests hold these kernels to those loops and to the NumPy backend. Every array keeps its input's
dtype (float32 stays float32), and a second run loads the compiled code from Numba's cache.

**Wide rows (stride 1).** Flatten one image of ``x_pad`` (C, Hp, Wp) into a vector. Output pixel
(i, j) reads, for kernel tap (c, p, q), the element ``c*Hp*Wp + (i + p*dh)*Wp + (j + q*dw)`` =
``o + off(c, p, q)`` with ``o = i*Wp + j``. Indexing the output by ``o`` ("wide" rows of Wp
columns, of which the last ``Wp - Wo`` are junk and dropped) turns every tap into one contiguous
run of ``L = (Ho - 1)*Wp + Wo`` elements, long enough for the vector units even when Wo is 10:

* forward: ``y_wide[f] = sum_t w[f, t] * x[off_t : off_t + L]``, four filters by four taps per
  pass, so that every element of x loaded feeds four multiply-adds;
* dW: ``dW[f, t] = dot(x[off_t : off_t + L], dy_wide[f])``, the valid correlation of x_pad with
  dY, with dY copied into wide rows whose junk columns are zero; four filters by four taps;
* dX: the full convolution, as the design defines it: dY zero-padded by the kernel's span on
  every side, correlated with the kernel rotated 180 degrees (in and out channels swapped), by
  the forward kernel.

Other strides use plain loops of the reference formulas (dX then adds ``w * dy`` straight into
the pixels each window touched, instead of correlating a dY dilated with zeros).

Floating-point contraction and reassociation are allowed in the conv loops (``fastmath``, without
the no-NaN/no-inf flags): sums come out in another order than NumPy's, which changes the last
bits only. Sums over the batch (dW) are taken per chunk of images and added in chunk order, so
results do not depend on the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

NAME = "numba"

# fused multiply-add and vectorised reductions; NaN and infinity keep their meaning
_FAST = {"contract", "reassoc", "nsz", "arcp"}


def native(a: np.ndarray) -> np.ndarray:
    """An array laid out as these kernels want it, C order: ``a`` itself where it already is.
    A layer that hands one array to several kernels converts it once."""
    return np.ascontiguousarray(a)


def _out_hw(padded_hw, kernel, stride, dilation):
    return tuple(
        (p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(padded_hw, kernel, stride, dilation)
    )


# -- conv, stride 1: wide rows ---------------------------------------------------------------

CHUNK = 4  # images per parallel work item: scratch rows are allocated once per item
# dX with fewer input channels than this, and at least as many filters: the forward kernel (four
# output channels per pass) runs half empty on the transposed problem, and adding each tap's dY
# back, eight filters per pass, is faster (LeNet's conv2, 6 channels and 16 filters: 1.7 -> 1.4 ms
# at batch 256). Otherwise the full-convolution form (16 channels: twice as fast as adding back)
SCATTER = 8


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
    wf = w.reshape(f, c * kh * kw)  # (F, C*kh*kw)
    y = np.empty((n, f, ho, wo), src.dtype)
    padded = ph > 0 or pw > 0
    for chunk in prange((n + CHUNK - 1) // CHUNK):
        buf = np.zeros((c, hp, wp), src.dtype)  # the padded image; borders stay 0
        rows = np.empty((4, span), src.dtype)  # y_wide of four filters
        for b in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):
            if padded:
                buf[:, ph : ph + hs, pw : pw + ws] = src[b]
                xf = buf.reshape(c * hp * wp)
            else:
                xf = src[b].reshape(c * hp * wp)  # one image, flattened
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
            xf = x_pad[b].reshape(c * hp * wp)
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
    return dW.reshape(f, c, kh, kw)


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
            dxf = dx[b].reshape(c * hp * wp)
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


# -- conv, any stride: plain loops -------------------------------------------------------------


@njit(parallel=True, cache=True, fastmath=_FAST)
def _conv_forward_strided(x_pad, w, sh, sw, dh, dw, ho, wo):
    n = x_pad.shape[0]
    f, c, kh, kw = w.shape
    y = np.zeros((n, f, ho, wo), x_pad.dtype)
    for bf in prange(n * f):
        b, o_f = bf // f, bf % f
        for ch in range(c):
            for p in range(kh):
                for q in range(kw):
                    wv = w[o_f, ch, p, q]
                    for i in range(ho):
                        r = i * sh + p * dh
                        for j in range(wo):
                            y[b, o_f, i, j] += wv * x_pad[b, ch, r, j * sw + q * dw]
    return y


@njit(parallel=True, cache=True, fastmath=_FAST)
def _conv_grad_weight_strided(x_pad, dy, kh, kw, sh, sw, dh, dw):
    n, c = x_pad.shape[0], x_pad.shape[1]
    f, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    zero = x_pad.dtype.type(0)
    n_chunks = (n + CHUNK - 1) // CHUNK
    part = np.zeros((n_chunks, f, c, kh, kw), x_pad.dtype)
    for chunk in prange(n_chunks):
        for b in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):
            for o_f in range(f):
                for ch in range(c):
                    for p in range(kh):
                        for q in range(kw):
                            s = zero
                            for i in range(ho):
                                r = i * sh + p * dh
                                for j in range(wo):
                                    s += x_pad[b, ch, r, j * sw + q * dw] * dy[b, o_f, i, j]
                            part[chunk, o_f, ch, p, q] += s
    dW = part[0].copy()
    for chunk in range(1, n_chunks):
        dW += part[chunk]
    return dW


@njit(parallel=True, cache=True, fastmath=_FAST)
def _conv_grad_input_strided(dy, w, sh, sw, dh, dw, hp, wp):
    n, f, ho, wo = dy.shape
    c, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    dx = np.zeros((n, c, hp, wp), dy.dtype)
    for bc in prange(n * c):
        b, ch = bc // c, bc % c
        for o_f in range(f):
            for p in range(kh):
                for q in range(kw):
                    wv = w[o_f, ch, p, q]
                    for i in range(ho):
                        r = i * sh + p * dh
                        for j in range(wo):
                            dx[b, ch, r, j * sw + q * dw] += wv * dy[b, o_f, i, j]
    return dx


# -- the contract -------------------------------------------------------------------------------


def conv2d_forward(x_pad, w, stride, dilation):
    """``y[n, f, i, j] = sum_{c,p,q} x_pad[n, c, i*sh + p*dh, j*sw + q*dw] * w[f, c, p, q]``;
    (N, C, Hp, Wp) -> (N, F, Ho, Wo). No context is kept: dW reads x_pad itself."""
    x_pad = np.ascontiguousarray(x_pad)
    w = np.ascontiguousarray(w, dtype=x_pad.dtype)
    (sh, sw), (dh, dw) = stride, dilation
    ho, wo = _out_hw(x_pad.shape[2:], w.shape[2:], stride, dilation)
    if (sh, sw) == (1, 1):
        return _corr_wide(x_pad, w, dh, dw, 0, 0, ho, wo), None
    return _conv_forward_strided(x_pad, w, sh, sw, dh, dw, ho, wo), None


def conv2d_grad_weight(x_pad, ctx, dy, kernel_size, stride, dilation):
    """dW = valid correlation of x_pad with dilate(dy, stride), summed over the batch:
    ``dW[f, c, p, q] = sum_{n,i,j} x_pad[n, c, i*sh + p*dh, j*sw + q*dw] * dy[n, f, i, j]``."""
    x_pad = np.ascontiguousarray(x_pad)
    dy = np.ascontiguousarray(dy, dtype=x_pad.dtype)
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    if (sh, sw) == (1, 1):
        return _corr_grad_weight_wide(x_pad, dy, kh, kw, dh, dw)
    return _conv_grad_weight_strided(x_pad, dy, kh, kw, sh, sw, dh, dw)


def conv2d_grad_input(dy, w, stride, dilation, padded_hw):
    """dX_pad (N, C, Hp, Wp) = full convolution of dilate(dy, stride) with w, summed over F.

    Stride 1: literally the definition, a valid correlation of dY zero-padded by the kernel's
    span ``d(k - 1)`` on every side with the kernel rotated 180 degrees and its in/out axes
    swapped (C, F, kh, kw), by the same wide-row kernel as the forward pass. Other strides add
    ``w[f, c, p, q] * dy[n, f, i, j]`` into ``dx_pad[n, c, i*sh + p*dh, j*sw + q*dw]``: the same
    sum, without the zeros that dilating dY by the stride would insert.
    """
    dy = np.ascontiguousarray(dy)
    (sh, sw), (dh, dw) = stride, dilation
    hp, wp = padded_hw
    if (sh, sw) == (1, 1) and w.shape[1] < SCATTER <= w.shape[0]:
        return _conv_grad_input_scatter(dy, np.ascontiguousarray(w, dtype=dy.dtype), dh, dw, hp, wp)
    if (sh, sw) == (1, 1):
        kh, kw = w.shape[2:]
        w_rot = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), dtype=dy.dtype)
        return _corr_wide(dy, w_rot, dh, dw, dh * (kh - 1), dw * (kw - 1), hp, wp)
    w = np.ascontiguousarray(w, dtype=dy.dtype)
    return _conv_grad_input_strided(dy, w, sh, sw, dh, dw, hp, wp)


# -- pooling ------------------------------------------------------------------------------------


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


def maxpool2d_forward(x_pad, kernel_size, stride):
    """y = max over each window; ctx = flat index (p * kw + q) of the window's first maximum."""
    x_pad = np.ascontiguousarray(x_pad)
    ho, wo = _out_hw(x_pad.shape[2:], kernel_size, stride, (1, 1))
    return _maxpool_forward(x_pad, *kernel_size, *stride, ho, wo)


def maxpool2d_backward(dy, ctx, kernel_size, stride, padded_hw):
    """Each dy goes to the one input pixel that was the (first) maximum of its window."""
    dy = np.ascontiguousarray(dy)
    return _maxpool_backward(dy, np.ascontiguousarray(ctx), kernel_size[1], *stride, *padded_hw)


def avgpool2d_forward(x_pad, kernel_size, stride):
    """Mean over each window; padding counts as zeros (PyTorch's ``count_include_pad=True``)."""
    x_pad = np.ascontiguousarray(x_pad)
    ho, wo = _out_hw(x_pad.shape[2:], kernel_size, stride, (1, 1))
    return _avgpool_forward(x_pad, *kernel_size, *stride, ho, wo), None


def avgpool2d_backward(dy, ctx, kernel_size, stride, padded_hw):
    """Each dy is shared equally by the ``kh * kw`` pixels of its window."""
    dy = np.ascontiguousarray(dy)
    return _avgpool_backward(dy, *kernel_size, *stride, *padded_hw)


# -- batch normalisation ------------------------------------------------------------------------
# One channel per work item, sums in float64: two passes over the batch forward (three while
# training, for the statistics), two backward, each element read once per pass.


@njit(parallel=True, cache=True)
def _bn_stats(x, mean, var):
    n, c, h, w = x.shape
    m = n * h * w
    for ch in prange(c):
        total = 0.0
        for b in range(n):
            for i in range(h):
                for j in range(w):
                    total += x[b, ch, i, j]
        mu = total / m
        squares = 0.0
        for b in range(n):
            for i in range(h):
                for j in range(w):
                    d = x[b, ch, i, j] - mu
                    squares += d * d
        mean[ch] = mu
        var[ch] = squares / m


@njit(parallel=True, cache=True)
def _bn_normalise(x, mean, inv_std, gamma, beta, xhat, y):
    n, c, h, w = x.shape
    for ch in prange(c):
        mu, s, g, bt = mean[ch], inv_std[ch], gamma[ch], beta[ch]
        for b in range(n):
            for i in range(h):
                for j in range(w):
                    v = (x[b, ch, i, j] - mu) * s
                    xhat[b, ch, i, j] = v
                    y[b, ch, i, j] = v * g + bt


@njit(parallel=True, cache=True)
def _bn_backward(dy, xhat, gamma, inv_std, training, dx, dgamma, dbeta):
    n, c, h, w = dy.shape
    m = n * h * w
    for ch in prange(c):
        s_dy = 0.0
        s_dy_xhat = 0.0
        for b in range(n):
            for i in range(h):
                for j in range(w):
                    s_dy += dy[b, ch, i, j]
                    s_dy_xhat += dy[b, ch, i, j] * xhat[b, ch, i, j]
        dgamma[ch] = s_dy_xhat
        dbeta[ch] = s_dy
        a = gamma[ch] * inv_std[ch]
        k_xhat = -a * s_dy_xhat / m if training else 0.0
        k_one = -a * s_dy / m if training else 0.0
        for b in range(n):
            for i in range(h):
                for j in range(w):
                    dx[b, ch, i, j] = a * dy[b, ch, i, j] + k_xhat * xhat[b, ch, i, j] + k_one


def batchnorm2d_forward(x, gamma, beta, eps, mean=None, var=None):
    """As :func:`cnnrun.backends.reference.batchnorm2d_forward`, in fused passes per channel."""
    if x.size == 0:  # nothing to sum over: NumPy's NaN statistics
        from . import numpy_backend

        return numpy_backend.batchnorm2d_forward(x, gamma, beta, eps, mean, var)
    x = np.ascontiguousarray(x)
    dt = x.dtype
    c = x.shape[1]
    if mean is None:
        mean, var = np.empty(c, dt), np.empty(c, dt)
        _bn_stats(x, mean, var)
    mean, var = np.ascontiguousarray(mean, dtype=dt), np.ascontiguousarray(var, dtype=dt)
    inv_std = 1 / np.sqrt(var + dt.type(eps))
    xhat, y = np.empty_like(x), np.empty_like(x)
    _bn_normalise(
        x,
        mean,
        inv_std,
        np.ascontiguousarray(gamma, dtype=dt),
        np.ascontiguousarray(beta, dtype=dt),
        xhat,
        y,
    )
    return y, xhat, mean, var, inv_std


def batchnorm2d_backward(dy, xhat, gamma, inv_std, training):
    """As :func:`cnnrun.backends.reference.batchnorm2d_backward`, in two passes per channel."""
    if dy.size == 0:
        from . import numpy_backend

        return numpy_backend.batchnorm2d_backward(dy, xhat, gamma, inv_std, training)
    xhat = np.ascontiguousarray(xhat)
    dy = np.ascontiguousarray(dy, dtype=xhat.dtype)
    c, dt = dy.shape[1], xhat.dtype
    dx = np.empty_like(xhat)
    dgamma, dbeta = np.empty(c, dt), np.empty(c, dt)
    _bn_backward(
        dy,
        xhat,
        np.ascontiguousarray(gamma, dtype=dt),
        np.ascontiguousarray(inv_std, dtype=dt),
        bool(training),
        dx,
        dgamma,
        dbeta,
    )
    return dx, dgamma, dbeta
