"""Stride-1 dW in wide rows (see :mod:`.wide` for the layout, and for dX, which the forward
kernel computes): dot products of each tap's run of x with dY in wide rows.

**The micro-kernels** sum, over the outputs o of the images of a chunk, ``dW[f, t] += dY[f, o]
* x[off_t + o]``, with dY laid out output by output, filters last (``dyt[o, f]``, transposed
in registers): each step loads dY for one or two registers of filters (16 float32 each with
AVX-512, 8 with AVX2) and broadcasts elements of x into them. The accumulators hold whole sums
(no sum across the lanes), stay in registers over every output of the chunk's images, and are
stored once: 24 of them where the machine has 32 vector registers (AVX-512, where each
broadcast folds into its multiply-add), 12 where it has 16 (AVX2, where a broadcast takes a
register of its own), so that they never spill (:data:`TAPS`).

* :func:`_taps_pair`, where the filters fill pairs of registers: two registers by 12 taps
  (AVX2: 6), so each broadcast feeds two multiply-adds and the tap addresses fit in the
  general registers;
* :func:`_taps` otherwise: one register by :data:`TAPS` taps (24; AVX2: 12).

On one core, float32, 3x3 layers of 16 to 64 channels at 32x32, batch 4: 117-148 GFLOP/s for
32 and 64 filters, 118-133 for 16 (:func:`_taps`), 102-105 on 8x8 maps; the four-by-four dot
products they replaced (:func:`_four_dots`) ran at 90-100, and 50 on 8x8 maps, where each
tap's run is 78 outputs long. On an AVX2 machine (AMD EPYC, 2 cores, GEMM peak 139-142
GFLOP/s) the 24-accumulator kernels spilled to the stack and the 3x3 layers' forward+backward
ran at 39-47 GFLOP/s; with 12 accumulators (and the forward's four filters, :mod:`.wide`) at
104-112. :func:`_four_dots` stays for layers of fewer filters than a
register holds (LeNet's first: 6), which the micro-kernels would pad with zero filters.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .common import _FAST, CHUNK, chunks, parallel
from .simd import REGISTERS, VECTOR_BYTES, lanes, vfma, vload, vsplat_at, vstore, vtranspose, vzero
from .wide import (
    _copy,
    _load_padded,
    _store4,
    _store8,
    groups_up,
    phase_count,
    span_up,
    tap_offsets,
)

TAPS = 24 if REGISTERS >= 32 else 12  # taps per block of the dW micro-kernel (see the notes)
FEW = 4  # filters, and taps, per pass of the few-filters dot products


def corr_grad_weight_wide(
    x: np.ndarray, pads, dy: np.ndarray, kernel_size, dilation, stride=(1, 1)
) -> np.ndarray:
    """dW (F, C, kh, kw) of a stride-1 layer: the valid correlation of ``x`` (N, C, H, W),
    zero-padded by ``pads`` (top, bottom, left, right), with ``dy`` (N, F, Ho, Wo), summed over
    the batch. Each image is padded as it is loaded. With a ``stride``, ``x`` is the
    phase-stacked image of that stride (:func:`.wide.tap_offsets`), of ``phases * C``
    channels."""
    x = np.ascontiguousarray(x)
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    f, c = dy.shape[1], x.shape[1] // phase_count(stride, kernel_size)
    padded = (x.shape[2] + pads[0] + pads[1], x.shape[3] + pads[2] + pads[3])
    k = c * kernel_size[0] * kernel_size[1]
    register = VECTOR_BYTES // x.itemsize
    if f < register:  # (F', K') partial sums, filters and taps in groups of four
        offs = tap_offsets((f, c, *kernel_size), padded, dilation, FEW, stride)
        part = np.zeros((chunks(x.shape[0]), groups_up(f, FEW), offs.size), x.dtype)
        parallel(_grad_weight_few, part.shape[0], part, x, pads, padded, dy, offs)
    else:  # (K', F') partial sums: taps in whole blocks, filters in whole registers
        offs = tap_offsets((f, c, *kernel_size), padded, dilation, TAPS, stride)
        fp = groups_up(f, register)
        part = np.zeros((chunks(x.shape[0]), offs.size, fp), x.dtype)
        kernel = _grad_weight_pairs if fp % (2 * register) == 0 else _grad_weight_taps
        parallel(kernel, part.shape[0], part, x, pads, padded, dy, offs)
    dW = part[0].copy()  # the chunks' sums added in chunk order: the same at any thread count
    for chunk in range(1, part.shape[0]):
        dW += part[chunk]
    dW = dW[:f, :k] if f < register else dW[:k, :f].T
    return np.ascontiguousarray(dW).reshape(f, c, *kernel_size)


@njit(nogil=True, cache=True)
def _grad_weight_taps(part, x, pads, padded, dy, offs, lo, hi):
    """``part[chunk]`` (K', F'): the sum of dW over the images of each chunk in [lo, hi), tap
    by tap, filters last; one register of filters by 24 taps a block (:func:`_taps`)."""
    xf, dyw, dyt, x_at, d_at, span = _chunk_buffers(part, x, padded, dy)
    fp, step = part.shape[2], lanes(x)
    for chunk in range(lo, hi):
        count = _load_chunk(chunk, x, pads, padded, dy, xf, dyw, dyt, d_at, span, fp)
        for f0 in range(0, fp, step):
            for t0 in range(0, offs.shape[0], TAPS):
                _taps(part[chunk], xf, dyt, offs, t0, f0, x_at[:count], d_at[:count], span, fp)


@njit(nogil=True, cache=True)
def _grad_weight_pairs(part, x, pads, padded, dy, offs, lo, hi):
    """As :func:`_grad_weight_taps`, two registers of filters by 12 taps a block
    (:func:`_taps_pair`). A function of its own, so that a network without such layers
    (LeNet) does not compile it (0.45 s)."""
    xf, dyw, dyt, x_at, d_at, span = _chunk_buffers(part, x, padded, dy)
    fp, step = part.shape[2], lanes(x)
    for chunk in range(lo, hi):
        count = _load_chunk(chunk, x, pads, padded, dy, xf, dyw, dyt, d_at, span, fp)
        for f0 in range(0, fp, 2 * step):
            for t0 in range(0, offs.shape[0], TAPS // 2):
                xs, ds = x_at[:count], d_at[:count]
                _taps_pair(part[chunk], xf, dyt, offs, t0, f0, xs, ds, span, fp)


@njit(cache=True, inline="always")
def _chunk_buffers(part, x, padded, dy):
    """A work item's buffers: the chunk's images one after another then zeros (xf), one
    image's dY in wide rows (dyw: junk columns and padded filters 0), the chunk's dY
    transposed (dyt: (image, o, F')), where each image starts in them, and the run length."""
    (hp, wp), fp = padded, part.shape[2]
    size = x.shape[1] * hp * wp
    span = span_up(dy.shape[2], dy.shape[3], wp, lanes(x))  # so that whole tiles transpose
    xf = np.zeros(CHUNK * size + span, x.dtype)  # borders stay 0: images fill the interiors
    dyw = np.zeros(fp * span, x.dtype)
    dyt = np.empty(CHUNK * span * fp, x.dtype)
    return xf, dyw, dyt, np.arange(CHUNK) * size, np.arange(CHUNK) * (span * fp), span


@njit(cache=True, inline="always")
def _load_chunk(chunk, x, pads, padded, dy, xf, dyw, dyt, d_at, span, fp):
    """The images of ``chunk`` into xf, padded, their dY into dyt; returns how many."""
    (hp, wp), n, step = padded, x.shape[0], lanes(x)
    f, ho, wo, size = dy.shape[1], dy.shape[2], dy.shape[3], x.shape[1] * hp * wp
    first, last = chunk * CHUNK, min(n, (chunk + 1) * CHUNK)
    for b in range(first, last):
        _load_padded(xf[(b - first) * size :], x[b], pads[0], pads[2], hp, wp)
        for o_f in range(f):
            for i in range(ho):
                _copy(dyw[o_f * span + i * wp :], dy[b, o_f, i], wo)
        for o0 in range(0, span, step):
            for f0 in range(0, fp, step):
                vtranspose(dyw, f0 * span + o0, span, dyt, d_at[b - first] + o0 * fp + f0, fp)
    return last - first


@njit(cache=True, inline="always")
def _taps24(out, xf, dyt, offs, t0, f0, x_at, d_at, span, fp):
    """``out[t0 + j, f0 : f0 + lanes] = sum_i sum_o dyt[d_at[i] + o*fp + f0 :][:lanes] *
    xf[x_at[i] + offs[t0 + j] + o]`` for the 24 taps t0 + j, over the images i."""
    a = b = c = _zeros8(xf)  # taps t0 + [0, 8), [8, 16), [16, 24)
    for i in range(x_at.shape[0]):
        pa, pb = _at8(x_at[i], offs, t0), _at8(x_at[i], offs, t0 + 8)
        pc = _at8(x_at[i], offs, t0 + 16)
        d_i = d_at[i] + f0
        for o in range(span):
            d = vload(dyt, d_i + o * fp)
            a, b, c = (
                _fma8_at(a, d, xf, pa, o),
                _fma8_at(b, d, xf, pb, o),
                _fma8_at(c, d, xf, pc, o),
            )
    _store8(out[t0:], f0, a)
    _store8(out[t0 + 8 :], f0, b)
    _store8(out[t0 + 16 :], f0, c)


@njit(cache=True, inline="always")
def _taps_pair12(out, xf, dyt, offs, t0, f0, x_at, d_at, span, fp):
    """As :func:`_taps`, for two registers of filters (``f0 : f0 + 2*lanes``) by 12 taps: each
    broadcast of x feeds two multiply-adds, and 12 tap addresses, not 24, stay in registers."""
    step = lanes(xf)
    zero = vzero(xf)
    z = (zero, zero, zero, zero)
    a, b, c, d, e, g = z, z, z, z, z, z  # a, b, c: taps of the first register; d, e, g: second
    for i in range(x_at.shape[0]):
        pa, pb, pc = (
            _at4(x_at[i], offs, t0),
            _at4(x_at[i], offs, t0 + 4),
            _at4(x_at[i], offs, t0 + 8),
        )
        d_i = d_at[i] + f0
        for o in range(span):
            lo, hi = vload(dyt, d_i + o * fp), vload(dyt, d_i + o * fp + step)
            a, d = _fma4_pair(a, d, lo, hi, xf, pa, o)
            b, e = _fma4_pair(b, e, lo, hi, xf, pb, o)
            c, g = _fma4_pair(c, g, lo, hi, xf, pc, o)
    _store4(out[t0:], f0, a)
    _store4(out[t0 + 4 :], f0, b)
    _store4(out[t0 + 8 :], f0, c)
    _store4(out[t0:], f0 + step, d)
    _store4(out[t0 + 4 :], f0 + step, e)
    _store4(out[t0 + 8 :], f0 + step, g)


@njit(cache=True, inline="always")
def _at4(base, offs, t):
    """Where the four taps ``t ...`` read x for output 0 of the image at ``base``."""
    return base + offs[t], base + offs[t + 1], base + offs[t + 2], base + offs[t + 3]


@njit(cache=True, inline="always")
def _fma4_pair(acc, acc2, d, d2, xf, p, o):
    """``acc[j] + xf[p[j] + o] * d`` and ``acc2[j] + xf[p[j] + o] * d2`` for four taps j."""
    s0, s1 = vsplat_at(xf, p[0] + o), vsplat_at(xf, p[1] + o)
    s2, s3 = vsplat_at(xf, p[2] + o), vsplat_at(xf, p[3] + o)
    return (
        (vfma(s0, d, acc[0]), vfma(s1, d, acc[1]), vfma(s2, d, acc[2]), vfma(s3, d, acc[3])),
        (
            vfma(s0, d2, acc2[0]),
            vfma(s1, d2, acc2[1]),
            vfma(s2, d2, acc2[2]),
            vfma(s3, d2, acc2[3]),
        ),
    )


@njit(cache=True, inline="always")
def _zeros8(xf):
    z = vzero(xf)
    return z, z, z, z, z, z, z, z


@njit(cache=True, inline="always")
def _at8(base, offs, t):
    """Where the eight taps ``t ...`` read x for output 0 of the image at ``base``."""
    return _at4(base, offs, t) + _at4(base, offs, t + 4)


@njit(cache=True, inline="always")
def _fma8_at(acc, d, xf, p, o):
    """``acc[j] + xf[p[j] + o] * d`` for eight taps j."""
    return _fma4_at(acc[:4], d, xf, p[:4], o) + _fma4_at(acc[4:], d, xf, p[4:], o)


@njit(cache=True, inline="always")
def _taps12(out, xf, dyt, offs, t0, f0, x_at, d_at, span, fp):
    """As :func:`_taps24`, for 12 taps: 12 accumulators, for 16 registers."""
    zero = vzero(xf)
    a = b = c = (zero, zero, zero, zero)  # taps t0 + [0, 4), [4, 8), [8, 12)
    for i in range(x_at.shape[0]):
        pa, pb = _at4(x_at[i], offs, t0), _at4(x_at[i], offs, t0 + 4)
        pc = _at4(x_at[i], offs, t0 + 8)
        d_i = d_at[i] + f0
        for o in range(span):
            d = vload(dyt, d_i + o * fp)
            a, b, c = (
                _fma4_at(a, d, xf, pa, o),
                _fma4_at(b, d, xf, pb, o),
                _fma4_at(c, d, xf, pc, o),
            )
    _store4(out[t0:], f0, a)
    _store4(out[t0 + 4 :], f0, b)
    _store4(out[t0 + 8 :], f0, c)


@njit(cache=True, inline="always")
def _taps_pair6(out, xf, dyt, offs, t0, f0, x_at, d_at, span, fp):
    """As :func:`_taps_pair12`, for 6 taps: 12 accumulators, for 16 registers."""
    step = lanes(xf)
    zero = vzero(xf)
    z = (zero, zero)
    a, b, c, d, e, g = z, z, z, z, z, z  # a, b, c: taps of the first register; d, e, g: second
    for i in range(x_at.shape[0]):
        base = x_at[i]
        pa = base + offs[t0], base + offs[t0 + 1]
        pb = base + offs[t0 + 2], base + offs[t0 + 3]
        pc = base + offs[t0 + 4], base + offs[t0 + 5]
        d_i = d_at[i] + f0
        for o in range(span):
            lo, hi = vload(dyt, d_i + o * fp), vload(dyt, d_i + o * fp + step)
            a, d = _fma2_pair(a, d, lo, hi, xf, pa, o)
            b, e = _fma2_pair(b, e, lo, hi, xf, pb, o)
            c, g = _fma2_pair(c, g, lo, hi, xf, pc, o)
    _store2_pair(out[t0:], f0, step, a, d)
    _store2_pair(out[t0 + 2 :], f0, step, b, e)
    _store2_pair(out[t0 + 4 :], f0, step, c, g)


@njit(cache=True, inline="always")
def _store2_pair(rows, f0, step, acc, acc2):
    """Two taps' registers: ``rows[j, f0 : f0 + lanes] = acc[j]``, the next ``lanes`` filters
    ``acc2[j]``."""
    vstore(rows[0], f0, acc[0])
    vstore(rows[1], f0, acc[1])
    vstore(rows[0], f0 + step, acc2[0])
    vstore(rows[1], f0 + step, acc2[1])


@njit(cache=True, inline="always")
def _fma2_pair(acc, acc2, d, d2, xf, p, o):
    """``acc[j] + xf[p[j] + o] * d`` and ``acc2[j] + xf[p[j] + o] * d2`` for two taps j."""
    s0, s1 = vsplat_at(xf, p[0] + o), vsplat_at(xf, p[1] + o)
    first = vfma(s0, d, acc[0]), vfma(s1, d, acc[1])
    return first, (vfma(s0, d2, acc2[0]), vfma(s1, d2, acc2[1]))


@njit(cache=True, inline="always")
def _fma4_at(acc, d, xf, p, o):
    """``acc[j] + xf[p[j] + o] * d`` for four taps j."""
    return (
        vfma(vsplat_at(xf, p[0] + o), d, acc[0]),
        vfma(vsplat_at(xf, p[1] + o), d, acc[1]),
        vfma(vsplat_at(xf, p[2] + o), d, acc[2]),
        vfma(vsplat_at(xf, p[3] + o), d, acc[3]),
    )


_taps = _taps24 if TAPS == 24 else _taps12
_taps_pair = _taps_pair12 if TAPS == 24 else _taps_pair6


# -- few filters: dot products, four filters by four taps -----------------------------------------


@njit(cache=True, fastmath=_FAST)
def _four_dots(acc, d0, d1, d2, d3, xf, offs, span):
    """``acc[g, t] += dot(d_g, xf[offs[t] : offs[t] + span])`` for four filters g and every
    tap (acc is (4, K)), four taps per pass: each element loaded feeds
    four multiply-adds, and the sixteen sums stay in registers."""
    zero = xf.dtype.type(0)
    for t in range(0, offs.shape[0], FEW):
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


@njit(nogil=True, cache=True)
def _grad_weight_few(part, x, pads, padded, dy, offs, lo, hi):
    """``part[chunk]`` (F', K'), filters and taps in whole groups: the sum of dW over the
    images of each chunk in [lo, hi)."""
    (n, c), (hp, wp) = x.shape[:2], padded
    f, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    fg, size = part.shape[1], c * hp * wp
    span = span_up(ho, wo, wp, lanes(x))  # in whole registers
    xf = np.zeros(size + span, x.dtype)  # one padded image (borders 0), then zeros
    dyw = np.zeros((fg, span), x.dtype)  # dY in wide rows; junk and padding 0
    for chunk in range(lo, hi):
        for b in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):
            _load_padded(xf, x[b], pads[0], pads[2], hp, wp)
            for o_f in range(f):
                for i in range(ho):
                    _copy(dyw[o_f, i * wp :], dy[b, o_f, i], wo)
            for f0 in range(0, fg, FEW):
                d0, d1, d2, d3 = dyw[f0], dyw[f0 + 1], dyw[f0 + 2], dyw[f0 + 3]
                _four_dots(part[chunk, f0 : f0 + FEW], d0, d1, d2, d3, xf, offs, span)
