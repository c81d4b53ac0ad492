"""Stride-1 dW in wide rows (see :mod:`.wide` for the layout, and for dX, which the forward
kernel computes): dot products of each tap's run of x with dY in wide rows.

**The micro-kernel** (:func:`_taps`) sums, over the outputs o of the images of a chunk,
``dW[f, t] += dY[f, o] * x[off_t + o]``, with dY laid out output by output, filters last
(``dyt[o, f]``, transposed in registers): each step loads dY for one or two registers of
filters (16 float32 each with AVX-512, 8 with AVX2) and broadcasts an element of x per tap
into them (:func:`.simd.outer_fma`). The accumulators hold whole sums (no sum across the
lanes), stay in registers over every output of the chunk's images, and are stored once: at
most :data:`TAPS`, 24 where the machine has 32 vector registers (AVX-512, where each broadcast
folds into its multiply-add), 12 where it has 16 (AVX2, where a broadcast takes a register of
its own), so that they never spill. A block is

* two registers of filters by :data:`PAIR_TAPS` taps (12; AVX2: 6) where the filters fill
  pairs of registers, so each broadcast feeds two multiply-adds and the tap addresses fit in
  the general registers;
* one register by :data:`SINGLE_TAPS` taps (12) otherwise. With 24 (AVX-512's 24
  accumulators), the 24 tap addresses did not fit in the 16 general registers: each step
  reloaded 17 of them from the stack, 40 loads to 24 multiply-adds, where 12 taps make 15 to
  12. On 2 AVX-512 cores at batch 64, dW of ResNet-20's 16-channel 3x3 layer on 32x32 maps:
  1.34-1.37 -> 1.26 ms; of LeNet's conv2 at batch 256 (its taps now padded to 156, not 168):
  0.92 -> 0.83-0.89 ms.

The taps are padded to whole blocks with taps at offset 0, whose sums are dropped. The sums
run over the valid outputs alone, row by row, not over the whole run: its junk columns and
rounding have a dY of 0 (2 AVX-512 cores, dW at batch 256 of LeNet's conv2, 100 outputs of a
run of 144: 0.90-0.95 -> 0.71-0.78 ms; at batch 64 of a 64-channel 3x3 layer on 8x8 maps, 64
of 80: 1.58-1.62 -> 1.33-1.46 ms).

On one core, float32, 3x3 layers of 16 to 64 channels at 32x32, batch 4, AVX-512: 117-148
GFLOP/s for 32 and 64 filters, 118-133 for 16 (with 24 taps), 102-105 on 8x8 maps (before
the row-by-row sums); four-by-four dot products
(:func:`_four_dots`) ran at 90-100, and 50 on 8x8 maps, where each tap's run was 78 outputs
long. On an AVX2 machine (AMD EPYC, 2 cores, GEMM peak 139-142 GFLOP/s) 24 accumulators
spilled to the stack and the 3x3 layers' forward+backward ran at 39-47 GFLOP/s; with 12 (and
the forward's four filters, :mod:`.wide`), at 104-112.

:func:`_four_dots` stays for layers of fewer filters than a register holds, where the
micro-kernel would leave more than a quarter of its lanes to zero filters (AVX-512: LeNet's
first, 6 filters of 16 lanes). With AVX2, LeNet's 6 fill three quarters of a register and the
micro-kernel is as fast as the dot products (0.41-0.46 ms against 0.44-0.90 for that layer's dW
at batch 64), and LeNet compiles one dW kernel, not two.

**Compile time.** Both block shapes run in one compiled function, :func:`_grad_weight_blocks`:
its buffers and loading are compiled once, and the micro-kernel is four intrinsics of
:mod:`.simd` (its loops over helpers, inlined by Numba, took most of the compile time).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import precompile
from .common import _FAST, CHUNK, chunks, parallel
from .simd import (
    REGISTERS,
    VECTOR_BYTES,
    lanes,
    outer_fma,
    row_indices,
    store_block,
    vtranspose,
    vzeros,
)
from .wide import (
    _copy,
    _load_padded,
    buffer_size,
    frame,
    groups_up,
    image_size,
    phase_count,
    span_up,
    tap_offsets,
)

TAPS = 24 if REGISTERS >= 32 else 12  # accumulators per block of the dW micro-kernel (notes)
PAIR_TAPS = TAPS // 2  # taps per block of two registers of filters
# taps per block of one register of filters: at most 12, so that their addresses fit in the
# 16 general registers (24 reloaded 17 of them from the stack at every step)
SINGLE_TAPS = min(TAPS, 12)
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
    padded = frame(x.shape[2:], pads, dy.shape[2:])
    k = c * kernel_size[0] * kernel_size[1]
    register = VECTOR_BYTES // x.itemsize
    few = few_filters(f, x.dtype)
    if few:  # (F', K') partial sums, filters and taps in groups of four
        offs = tap_offsets((f, c, *kernel_size), padded, dilation, FEW, stride)
        part = np.zeros((chunks(x.shape[0]), groups_up(f, FEW), offs.size), x.dtype)
        precompile.ready("few", x.dtype)
        parallel(_grad_weight_few, part.shape[0], part, x, pads, padded, dy, offs)
    else:  # (K', F') partial sums: taps in whole blocks, filters in whole registers
        fp = groups_up(f, register)
        pairs = fp % (2 * register) == 0
        taps = PAIR_TAPS if pairs else SINGLE_TAPS
        offs = tap_offsets((f, c, *kernel_size), padded, dilation, taps, stride)
        part = np.zeros((chunks(x.shape[0]), offs.size * fp), x.dtype)  # (K', F') flat
        precompile.ready("blocks", x.dtype)
        parallel(_grad_weight_blocks, part.shape[0], part, x, pads, padded, dy, offs, pairs)
    dW = part[0].copy()  # the chunks' sums added in chunk order: the same at any thread count
    for chunk in range(1, part.shape[0]):
        dW += part[chunk]
    dW = dW[:f, :k] if few else dW.reshape(-1, fp)[:k, :f].T
    return np.ascontiguousarray(dW).reshape(f, c, *kernel_size)


def few_filters(filters: int, dtype) -> bool:
    """Whether dW of a layer of ``filters`` takes the few-filters dot products: fewer filters
    than a register holds, more than a quarter of whose lanes would be padding."""
    register = VECTOR_BYTES // np.dtype(dtype).itemsize
    return filters < register and register - filters > register // 4


@njit(cache=True)
def cache_probe(a):
    """Nothing: where loading it misses Numba's cache, this file's kernels are not cached
    either (new, changed, or an empty cache: :func:`.precompile.start`); where it hits, they
    most likely are."""
    return a.size


@njit(nogil=True, cache=True)
def _grad_weight_blocks(part, x, pads, padded, dy, offs, pairs, lo, hi):
    """``part[chunk]`` (K', F') flat: the sum of dW over the images of each chunk in [lo, hi),
    tap by tap, filters last; blocks of one register of filters by :data:`SINGLE_TAPS` taps,
    or of two registers by :data:`PAIR_TAPS` where ``pairs`` (:func:`_taps`)."""
    fp, step = part.shape[1] // offs.shape[0], lanes(x)
    grid = (dy.shape[2], dy.shape[3], padded[1])  # (Ho, Wo, R): the outputs in the wide rows
    xf, dyw, dyt, size, span = _chunk_buffers(fp, x, pads, padded, dy)
    for chunk in range(lo, hi):
        count = _load_chunk(chunk, x, pads, padded, dy, xf, dyw, dyt, size, span, fp)
        out = part[chunk]
        if pairs:
            for f0 in range(0, fp, 2 * step):
                for t0 in range(0, offs.shape[0], PAIR_TAPS):
                    acc = vzeros(x, PAIR_TAPS, 2)
                    _taps(acc, out, xf, dyt, offs, t0, f0, count, size, span, fp, grid)
        else:
            for f0 in range(0, fp, step):
                for t0 in range(0, offs.shape[0], SINGLE_TAPS):
                    acc = vzeros(x, SINGLE_TAPS, 1)
                    _taps(acc, out, xf, dyt, offs, t0, f0, count, size, span, fp, grid)


@njit(cache=True, inline="always")
def _chunk_buffers(fp, x, pads, padded, dy):
    """A work item's buffers, for fp filters: the chunk's images one after another then
    zeros (xf), one image's dY in wide rows (dyw: junk columns and padded filters 0), the chunk's dY
    transposed (dyt: (image, o, F')), the size of an image in xf, and the run length (image i
    starts at ``i*size`` in xf, at ``i*span*F'`` in dyt)."""
    (hp, wp) = padded
    size = image_size(x.shape[1], x.shape[2], pads, hp, wp)
    span = span_up(dy.shape[2], dy.shape[3], wp, lanes(x))  # so that whole tiles transpose
    # borders stay 0: images fill the interiors
    xf = np.zeros(buffer_size(CHUNK, x.shape[1], x.shape[2], pads, padded, span), x.dtype)
    dyw = np.zeros(fp * span, x.dtype)
    dyt = np.empty(CHUNK * span * fp, x.dtype)
    return xf, dyw, dyt, size, span


@njit(cache=True, inline="always")
def _load_chunk(chunk, x, pads, padded, dy, xf, dyw, dyt, size, span, fp):
    """The images of ``chunk`` into xf (``size`` elements apart), padded, their dY into dyt;
    returns how many."""
    (hp, wp), n, step = padded, x.shape[0], lanes(x)
    first, last = chunk * CHUNK, min(n, (chunk + 1) * CHUNK)
    for b in range(first, last):
        _load_padded(xf[(b - first) * size :], x[b], pads[0], pads[2], hp, wp)
        _load_dy_wide(dyw, dy[b], span, wp)
        for o0 in range(0, span, step):
            for f0 in range(0, fp, step):
                d_at = (b - first) * span * fp + o0 * fp + f0
                vtranspose(dyw, f0 * span + o0, span, dyt, d_at, fp)
    return last - first


@njit(cache=True, inline="always")
def _load_dy_wide(dyw, dy_b, span, row):
    """One image's dY (F, Ho, Wo) into ``dyw``: each filter's wide rows (``row`` apart) in a run
    of ``span``, one after another; the junk columns keep their zeros."""
    f, ho, wo = dy_b.shape
    for o_f in range(f):
        for i in range(ho):
            _copy(dyw[o_f * span + i * row :], dy_b[o_f, i], wo)


@njit(cache=True, inline="always")
def _taps(acc, out, xf, dyt, offs, t0, f0, count, size, span, fp, grid):
    """``out[(t0 + j)*fp + f0 + r*lanes :][:lanes] = sum_i sum_o xf[i*size + offs[t0 + j] + o]
    * dyt[i*span*fp + o*fp + f0 + r*lanes :][:lanes]``, over the ``count`` images i and the
    outputs ``o = row*R + col`` (row < Ho, col < Wo) of ``grid`` (Ho, Wo, R), for the taps j and
    registers r of the zero block ``acc`` (a tap's filters in a row of ``out``, fp of them).
    The junk columns and the rounding, whose dY is 0, are skipped."""
    ho, wo, width = grid
    for i in range(count):
        at = row_indices(offs, t0, i * size, acc)  # where each tap reads x for output 0
        d_i = i * span * fp + f0
        for out_row in range(ho):
            for o in range(out_row * width, out_row * width + wo):
                acc = outer_fma(acc, xf, at, o, dyt, d_i + o * fp)
    store_block(out, t0 * fp + f0, fp, acc)


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
    ho, wo, fg = dy.shape[2], dy.shape[3], part.shape[1]
    span = span_up(ho, wo, wp, lanes(x))  # in whole registers
    xf = np.zeros(buffer_size(1, c, x.shape[2], pads, padded, span), x.dtype)  # an image, 0s
    dyw = np.zeros(fg * span, x.dtype)  # dY in wide rows, one after another; junk, padding 0
    for chunk in range(lo, hi):
        for b in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):
            _load_padded(xf, x[b], pads[0], pads[2], hp, wp)
            _load_dy_wide(dyw, dy[b], span, wp)
            for f0 in range(0, fg, FEW):
                at = f0 * span
                d0, d1 = dyw[at : at + span], dyw[at + span : at + 2 * span]
                d2, d3 = dyw[at + 2 * span : at + 3 * span], dyw[at + 3 * span : at + 4 * span]
                _four_dots(part[chunk, f0 : f0 + FEW], d0, d1, d2, d3, xf, offs, span)
