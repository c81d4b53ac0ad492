"""Numba kernels: compiled loops over (N, C, H, W), one image per thread (``prange``).

Same contract as :mod:`cnnrun.backends.reference`, whose loops define every product here; the
tests hold these kernels to those loops and to the NumPy backend. Every array keeps its input's
dtype (float32 stays float32), and a second run loads the compiled code from Numba's cache.

**Wide rows (stride 1).** Flatten one image of ``x_pad`` (C, Hp, Wp) into a vector. Output pixel
(i, j) reads, for kernel tap (c, p, q), the element ``c*Hp*Wp + (i + p*dh)*Wp + (j + q*dw)`` =
``o + off(c, p, q)`` with ``o = i*Wp + j``. Indexing the output by ``o`` ("wide" rows of Wp
columns, of which the last ``Wp - Wo`` are junk and dropped) turns every tap into one contiguous
run of ``L = (Ho - 1)*Wp + Wo`` elements, long enough for the vector units even when Wo is 10:

* forward: ``y_wide[f] = sum_t w[f, t] * x[off_t : off_t + L]`` (multiply-adds of whole runs);
* dW: ``dW[f, t] = dot(x[off_t : off_t + L], dy_wide[f])``, the valid correlation of x_pad with
  dY, with dY copied into wide rows whose junk columns are zero;
* dX: ``dx_pad[off_t : off_t + L] += sum_f w[f, t] * dy_wide[f]``: the full convolution of dY
  with the kernel, written tap by tap (tap (p, q) shifts dY by (p*dh, q*dw)); the same sum as
  the correlation of the zero-padded dY with the rotated kernel, without the zeros.

The inner loops take four taps (or filters) per pass, so that each load of the running row feeds
four multiply-adds. Other strides use plain loops of the same formulas.

Floating-point contraction and reassociation are allowed in the conv loops (``fastmath``,
without the no-NaN/no-inf flags): sums come out in a different order than NumPy's, which
changes the last bits only.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

NAME = "numba"

# fused multiply-add and vectorised reductions; NaN and infinity keep their meaning
_FAST = {"contract", "reassoc", "nsz", "arcp"}


def _out_hw(padded_hw, kernel, stride, dilation):
    return tuple((p - d * (k - 1) - 1) // s + 1
                 for p, k, s, d in zip(padded_hw, kernel, stride, dilation))


def _threads(n: int) -> int:
    """How many per-thread partial sums a reduction over the batch keeps."""
    return max(1, min(numba.get_num_threads(), n))


# -- conv, stride 1: wide rows ---------------------------------------------------------------

@njit(cache=True)
def _tap_offsets(c, kh, kw, hp, wp, dh, dw):
    """(C*kh*kw,) offsets of each tap (c, p, q) into one flattened image (C, Hp, Wp)."""
    offs = np.empty(c * kh * kw, np.int64)
    t = 0
    for ch in range(c):
        for p in range(kh):
            for q in range(kw):
                offs[t] = ch * hp * wp + p * dh * wp + q * dw
                t += 1
    return offs


@njit(parallel=True, cache=True, fastmath=_FAST)
def _conv_forward_wide(x_pad, w, dh, dw, ho, wo):
    n, c, hp, wp = x_pad.shape
    f, _, kh, kw = w.shape
    k = c * kh * kw
    span = (ho - 1) * wp + wo                             # L, the length of a wide output
    offs = _tap_offsets(c, kh, kw, hp, wp, dh, dw)
    wf = w.reshape(f, k)                                  # (F, C*kh*kw)
    y = np.empty((n, f, ho, wo), x_pad.dtype)
    for b in prange(n):
        xf = x_pad[b].reshape(c * hp * wp)                # one image, flattened
        row = np.empty(span, x_pad.dtype)                 # y_wide[f]: (Ho, Wp) minus the tail
        for o_f in range(f):
            wr = wf[o_f]
            row[:] = 0
            t = 0
            while t + 4 <= k:
                x0 = xf[offs[t]: offs[t] + span]
                x1 = xf[offs[t + 1]: offs[t + 1] + span]
                x2 = xf[offs[t + 2]: offs[t + 2] + span]
                x3 = xf[offs[t + 3]: offs[t + 3] + span]
                w0, w1, w2, w3 = wr[t], wr[t + 1], wr[t + 2], wr[t + 3]
                for o in range(span):
                    row[o] += w0 * x0[o] + w1 * x1[o] + w2 * x2[o] + w3 * x3[o]
                t += 4
            while t < k:
                x0 = xf[offs[t]: offs[t] + span]
                w0 = wr[t]
                for o in range(span):
                    row[o] += w0 * x0[o]
                t += 1
            for i in range(ho):                           # drop the junk columns
                for j in range(wo):
                    y[b, o_f, i, j] = row[i * wp + j]
    return y


@njit(parallel=True, cache=True, fastmath=_FAST)
def _conv_grad_weight_wide(x_pad, dy, kh, kw, dh, dw, nt):
    n, c, hp, wp = x_pad.shape
    f, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    k = c * kh * kw
    span = (ho - 1) * wp + wo
    offs = _tap_offsets(c, kh, kw, hp, wp, dh, dw)
    zero = x_pad.dtype.type(0)
    part = np.zeros((nt, f, k), x_pad.dtype)              # one partial dW per thread
    for t_id in prange(nt):
        dyw = np.zeros(span, x_pad.dtype)                 # dy_wide[f]; junk columns stay 0
        for b in range(t_id, n, nt):
            xf = x_pad[b].reshape(c * hp * wp)
            for o_f in range(f):
                for i in range(ho):
                    for j in range(wo):
                        dyw[i * wp + j] = dy[b, o_f, i, j]
                acc = part[t_id, o_f]
                t = 0
                while t + 4 <= k:
                    x0 = xf[offs[t]: offs[t] + span]
                    x1 = xf[offs[t + 1]: offs[t + 1] + span]
                    x2 = xf[offs[t + 2]: offs[t + 2] + span]
                    x3 = xf[offs[t + 3]: offs[t + 3] + span]
                    s0 = s1 = s2 = s3 = zero
                    for o in range(span):
                        d = dyw[o]
                        s0 += d * x0[o]
                        s1 += d * x1[o]
                        s2 += d * x2[o]
                        s3 += d * x3[o]
                    acc[t] += s0
                    acc[t + 1] += s1
                    acc[t + 2] += s2
                    acc[t + 3] += s3
                    t += 4
                while t < k:
                    x0 = xf[offs[t]: offs[t] + span]
                    s0 = zero
                    for o in range(span):
                        s0 += dyw[o] * x0[o]
                    acc[t] += s0
                    t += 1
    dW = part[0].copy()
    for t_id in range(1, nt):
        dW += part[t_id]
    return dW.reshape(f, c, kh, kw)


@njit(parallel=True, cache=True, fastmath=_FAST)
def _conv_grad_input_wide(dy, w, dh, dw, hp, wp):
    n, f, ho, wo = dy.shape
    c, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    span = (ho - 1) * wp + wo
    dx = np.empty((n, c, hp, wp), dy.dtype)
    for b in prange(n):
        dyw = np.zeros((f, span), dy.dtype)               # dY in wide rows, junk columns 0
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
                    seg = dxf[off: off + span]            # the pixels tap (p, q) touched
                    g = 0
                    while g + 4 <= f:
                        w0, w1 = w[g, ch, p, q], w[g + 1, ch, p, q]
                        w2, w3 = w[g + 2, ch, p, q], w[g + 3, ch, p, q]
                        d0, d1, d2, d3 = dyw[g], dyw[g + 1], dyw[g + 2], dyw[g + 3]
                        for o in range(span):
                            seg[o] += w0 * d0[o] + w1 * d1[o] + w2 * d2[o] + w3 * d3[o]
                        g += 4
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
def _conv_grad_weight_strided(x_pad, dy, kh, kw, sh, sw, dh, dw, nt):
    n, c = x_pad.shape[0], x_pad.shape[1]
    f, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    zero = x_pad.dtype.type(0)
    part = np.zeros((nt, f, c, kh, kw), x_pad.dtype)
    for t_id in prange(nt):
        for b in range(t_id, n, nt):
            for o_f in range(f):
                for ch in range(c):
                    for p in range(kh):
                        for q in range(kw):
                            s = zero
                            for i in range(ho):
                                r = i * sh + p * dh
                                for j in range(wo):
                                    s += x_pad[b, ch, r, j * sw + q * dw] * dy[b, o_f, i, j]
                            part[t_id, o_f, ch, p, q] += s
    dW = part[0].copy()
    for t_id in range(1, nt):
        dW += part[t_id]
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
        return _conv_forward_wide(x_pad, w, dh, dw, ho, wo), None
    return _conv_forward_strided(x_pad, w, sh, sw, dh, dw, ho, wo), None


def conv2d_grad_weight(x_pad, ctx, dy, kernel_size, stride, dilation):
    """dW = valid correlation of x_pad with dilate(dy, stride), summed over the batch:
    ``dW[f, c, p, q] = sum_{n,i,j} x_pad[n, c, i*sh + p*dh, j*sw + q*dw] * dy[n, f, i, j]``."""
    x_pad = np.ascontiguousarray(x_pad)
    dy = np.ascontiguousarray(dy, dtype=x_pad.dtype)
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    nt = _threads(dy.shape[0])
    if (sh, sw) == (1, 1):
        return _conv_grad_weight_wide(x_pad, dy, kh, kw, dh, dw, nt)
    return _conv_grad_weight_strided(x_pad, dy, kh, kw, sh, sw, dh, dw, nt)


def conv2d_grad_input(dy, w, stride, dilation, padded_hw):
    """dX_pad (N, C, Hp, Wp) = full convolution of dilate(dy, stride) with w, summed over F:
    ``dx_pad[n, c, i*sh + p*dh, j*sw + q*dw] += w[f, c, p, q] * dy[n, f, i, j]``."""
    dy = np.ascontiguousarray(dy)
    w = np.ascontiguousarray(w, dtype=dy.dtype)
    (sh, sw), (dh, dw) = stride, dilation
    hp, wp = padded_hw
    if (sh, sw) == (1, 1):
        return _conv_grad_input_wide(dy, w, dh, dw, hp, wp)
    return _conv_grad_input_strided(dy, w, sh, sw, dh, dw, hp, wp)


# -- pooling ------------------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _maxpool_forward(x_pad, kh, kw, sh, sw, ho, wo):
    n, c = x_pad.shape[0], x_pad.shape[1]
    y = np.empty((n, c, ho, wo), x_pad.dtype)
    arg = np.empty((n, c, ho, wo), np.intp)
    for bc in prange(n * c):
        b, ch = bc // c, bc % c
        for i in range(ho):
            for j in range(wo):
                best = x_pad[b, ch, i * sh, j * sw]
                at = 0
                for p in range(kh):
                    for q in range(kw):
                        v = x_pad[b, ch, i * sh + p, j * sw + q]
                        # the first maximum wins ties; a NaN wins, as in np.argmax
                        if v > best or (np.isnan(v) and not np.isnan(best)):
                            best = v
                            at = p * kw + q
                y[b, ch, i, j] = best
                arg[b, ch, i, j] = at
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
    n, c = x_pad.shape[0], x_pad.shape[1]
    y = np.empty((n, c, ho, wo), x_pad.dtype)
    zero = x_pad.dtype.type(0)
    count = x_pad.dtype.type(kh * kw)
    for bc in prange(n * c):
        b, ch = bc // c, bc % c
        for i in range(ho):
            for j in range(wo):
                s = zero
                for p in range(kh):
                    for q in range(kw):
                        s += x_pad[b, ch, i * sh + p, j * sw + q]
                y[b, ch, i, j] = s / count
    return y


@njit(parallel=True, cache=True)
def _avgpool_backward(dy, kh, kw, sh, sw, hp, wp):
    n, c, ho, wo = dy.shape
    dx = np.zeros((n, c, hp, wp), dy.dtype)
    count = dy.dtype.type(kh * kw)
    for bc in prange(n * c):
        b, ch = bc // c, bc % c
        for i in range(ho):
            for j in range(wo):
                share = dy[b, ch, i, j] / count
                for p in range(kh):
                    for q in range(kw):
                        dx[b, ch, i * sh + p, j * sw + q] += share
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
