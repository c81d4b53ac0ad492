"""Stride-1 convolution in wide rows: the jitted loops behind :mod:`.conv`.

Flatten one image of ``x_pad`` (C, Hp, Wp) into a vector. Output pixel (i, j) reads, for kernel
tap (c, p, q), the element ``c*Hp*Wp + (i + p*dh)*Wp + (j + q*dw)`` = ``o + off(c, p, q)`` with
``o = i*Wp + j``. Indexing the output by ``o`` ("wide" rows of Wp columns, of which the last
``Wp - Wo`` are junk and dropped) turns every tap into one contiguous run of
``(Ho - 1)*Wp + Wo`` elements, long enough for the vector units even when Wo is 10:

* forward: ``y_wide[f] = sum_t w[f, t] * x[off_t : off_t + L]``, by the register-blocked
  micro-kernel :func:`_block`;
* dW (:mod:`.wide_grad`): ``dW[f, t] = dot(x[off_t : off_t + L], dy_wide[f])``;
* dX: the full convolution, as the design defines it: dY zero-padded by the kernel's span on
  every side, correlated with the kernel rotated 180 degrees (in and out channels swapped), by
  the forward kernel; of it only the window of dX_pad the layer keeps (dY padded by what that
  window reaches).

The padding is done as each image is copied into the kernel's buffer (:func:`_load_padded`):
the layer's x and its pads come in, never a padded copy of the batch.

**The frame.** The zeros a tap reads left of a row are the zeros right of the row before it,
and those above a channel plane the zeros below the plane before it. So the buffer's rows are
``R = W + max(left, right)`` wide (at least Wo), not ``W + left + right``, and its planes
``P = H + max(top, bottom)`` rows tall (:func:`frame`); the formulas above hold with (P, R)
for (Hp, Wp): a run that passes a row's end reads the next row's left zeros, where the padded
image had its own right ones. Fewer junk columns are computed: a 'same' 3x3 layer on 8x8 maps
makes runs of 71 outputs where it made 78; the full convolution that is dX of LeNet's conv2
(dY 10x10 padded by 4) 196 where it made 248.

**The micro-kernel.** One call of :func:`_block` computes a block of :data:`GROUP` filters by
:data:`BLOCK` (3) vector registers of outputs, whose accumulators (:mod:`.simd`) stay in
registers over every tap of the sum and are stored once (:func:`.simd.outer_fma` makes a
tap's multiply-adds, :func:`.simd.store_block` the stores): eight filters (24 accumulators) where
the machine has 32 vector registers (AVX-512), four (12) where it has 16 (AVX2), so that the
accumulators, three registers of x and a broadcast weight never spill. Per tap it loads three
registers of x and broadcasts a weight per filter: each x loaded feeds a multiply-add per
filter, each weight three. With AVX-512 it ran at 131-147 GFLOP/s on one core of a machine
whose float32 GEMM peaks at about 183 a core (3x3 layers of 16 to 64 channels on 32x32 and
16x16 maps; 103-113 on 8x8, where, before frames, a quarter of each block was rounding), where
the loops that kept their sums in rows of memory, four filters by four taps a pass, ran at
77-96 (50 on 8x8).
On an AVX2 machine (2 cores, GEMM peak 139-142 GFLOP/s) eight filters spilled and ran at
37-43 GFLOP/s; four run at 99-140. The weights of a group are packed tap by tap, (K*GROUP,),
so the broadcasts of a tap read one cache line.

**Whole registers.** The run length L is rounded up to whole registers, read from a copy of
the image with zeros after it (:func:`buffer_size`), so no block ends in a scalar remainder:
blocks of BLOCK registers, then one block of the one or two registers left. Filters are padded
with zero weights to whole groups (:func:`packed`). Junk columns, the rounding and the padded
filters are computed and dropped. Frames and the last short block together, measured on 2
cores with AVX-512 at batch 64, forward+backward: ResNet-20's 64-channel 3x3 layer on 8x8 maps
4.13-4.23 -> 3.81-3.83 ms, where runs of 78 had been rounded up to 96 (now 80); LeNet's conv2
0.82-0.84 -> 0.73-0.75 ms; LeNet's step at batch 256 7.00 -> 6.39 ms.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from .common import CHUNK, chunks, parallel
from .simd import REGISTERS, lanes, outer_fma, store_block, vzeros

GROUP = 8 if REGISTERS >= 32 else 4  # filters per block of the forward kernel (see the notes)
BLOCK = 3  # vector registers of outputs per block


def groups_up(count: int, group: int = GROUP) -> int:
    """``count`` rounded up to whole ``group``\\ s."""
    return -(-count // group) * group


@njit(cache=True, inline="always")
def span_up(ho, wo, wp, width):
    """The run length ``(ho - 1)*wp + wo`` of a wide-row image, rounded up to whole blocks of
    ``width`` elements."""
    return -(-((ho - 1) * wp + wo) // width) * width


def frame(src_hw, pads, out_hw) -> tuple[int, int]:
    """(P, R) of the flat buffer an image of ``src_hw`` (H, W), zero-padded by ``pads`` (top,
    bottom, left, right), is loaded into for outputs of ``out_hw`` (see the module's notes):
    channel planes of ``P = H + max(top, bottom)`` rows of ``R = W + max(left, right)``
    columns (at least Wo), so that a row's right padding is the next row's left padding, and
    a plane's bottom padding the next plane's top padding."""
    (h, w), (top, bottom, left, right) = src_hw, pads
    return h + max(top, bottom), max(w + max(left, right), out_hw[1])


# image_size, buffer_size, span_up and _load_padded are compiled into wide_grad's kernels too,
# and Numba's cache keys each kernel on its own file alone: a change to them here must come
# with a change to wide_grad.py (a comment will do), or its cached kernels keep the old ones


@njit(cache=True, inline="always")
def image_size(c, h, pads, plane_rows, row):
    """Elements of one image in a frame (P, R) = (``plane_rows``, ``row``): C planes, the last
    one as long as the image padded (``h + top + bottom`` rows)."""
    return ((c - 1) * plane_rows + h + pads[0] + pads[1]) * row


@njit(cache=True, inline="always")
def buffer_size(images, c, h, pads, padded, span):
    """Elements of a buffer of ``images`` images of C channels and h rows in the frame
    ``padded`` (P, R), then zeros for every run of ``span`` outputs of the last one: a run
    reads past its image by at most min(left, right) + a register, less than a row and the
    span."""
    return images * image_size(c, h, pads, padded[0], padded[1]) + padded[1] + span


def tap_offsets(w_shape, padded_hw, dilation, group: int = 1, stride=(1, 1)) -> np.ndarray:
    """(K,) offsets of the taps (c, p, q), in weight order, into a flat image of channel planes
    of ``padded_hw`` (P, R) (:func:`frame`); K is ``C*kh*kw`` rounded up to whole ``group``\\ s,
    the extra taps at offset 0. Read-only, and made once per geometry (building it took 60 us,
    a ResNet-20 step asks 80 times).

    With a ``stride`` other than 1 the image is phase-stacked (:func:`phase_count`; see
    :mod:`.conv`): tap (c, p, q) reads channel ``phase * C + c`` of (phases * C, Hq, Wq), its
    phase ``(p mod sh) * min(sw, kw) + (q mod sw)``, at row ``p // sh`` and column ``q // sw``."""
    key = (tuple(w_shape[1:]), tuple(padded_hw), tuple(dilation), group, tuple(stride))
    return _tap_offsets(*key)


def phase_count(stride, kernel_size) -> int:
    """The phases of a stride that hold a tap of the kernel: ``min(sh, kh) * min(sw, kw)``."""
    return min(stride[0], kernel_size[0]) * min(stride[1], kernel_size[1])


@functools.lru_cache(maxsize=256)
def _tap_offsets(kernel_shape, padded_hw, dilation, group, stride) -> np.ndarray:
    c, kh, kw = kernel_shape
    (hp, wp), (dh, dw), (sh, sw) = padded_hw, dilation, stride
    p, q = np.arange(kh), np.arange(kw)
    phase = (p % sh)[:, None] * min(sw, kw) + (q % sw)[None, :]  # (kh, kw); 0 at stride 1
    offs = (
        (phase[None] * c + np.arange(c)[:, None, None]) * (hp * wp)
        + ((p // sh) * (dh * wp))[None, :, None]
        + ((q // sw) * dw)[None, None, :]
    ).ravel()
    offs = np.concatenate([offs, np.zeros(groups_up(offs.size, group) - offs.size, offs.dtype)])
    offs.flags.writeable = False
    return offs


def packed(w: np.ndarray, dtype) -> np.ndarray:
    """(F, C, kh, kw) -> (F'/GROUP, K*GROUP) C-contiguous in ``dtype``: the weights of each
    group of filters tap by tap, F rounded up to whole groups with zero weights."""
    f, k = w.shape[0], w[0].size
    wp = np.zeros((groups_up(f), k), dtype)
    wp[:f] = w.reshape(f, k)
    return np.ascontiguousarray(wp.reshape(-1, GROUP, k).transpose(0, 2, 1)).reshape(-1, k * GROUP)


def corr_wide(
    src: np.ndarray, w: np.ndarray, dilation, pads, out_hw, bias=None, stride=(1, 1)
) -> np.ndarray:
    """Stride-1 valid cross-correlation of ``src`` (N, C, Hs, Ws), zero-padded by ``pads`` =
    (top, bottom, left, right), with ``w`` (F, C, kh, kw) dilated by ``dilation``: the first
    ``out_hw`` rows and columns of the result, (N, F, Ho, Wo); plus ``bias`` (F,) if given,
    added as the rows are written out (not in a pass of its own). With a ``stride``, ``src``
    is the phase-stacked image of that stride (:func:`tap_offsets`) and the result the strided
    correlation."""
    src = np.ascontiguousarray(src)
    padded = frame(src.shape[2:], pads, out_hw)
    offs = tap_offsets(w.shape, padded, dilation, stride=stride)
    y = np.empty((src.shape[0], w.shape[0], *out_hw), src.dtype)
    b = np.zeros(0, src.dtype) if bias is None else np.asarray(bias, dtype=src.dtype)
    parallel(_corr_wide, chunks(src.shape[0]), y, src, packed(w, src.dtype), offs, pads, padded, b)
    return y


# -- the jitted loops -----------------------------------------------------------------------------


@njit(cache=True)
def _copy(dst, src, length):
    """``dst[:length] = src[:length]`` for 1-D arrays, as a loop over views: indices from a
    range are never negative, so the copy is vectorised (indexing a 4-D array with computed
    indices inside the loop was not, and cost LeNet's conv1 as much as its multiply-adds)."""
    for k in range(length):
        dst[k] = src[k]


@njit(cache=True, inline="always")
def _copy_plus(dst, src, length, b):
    """``dst[:length] = src[:length] + b`` (see :func:`_copy`)."""
    for k in range(length):
        dst[k] = src[k] + b


@njit(cache=True, inline="always")
def _load_padded(xf, img, top, left, hp, wp):
    """Copy ``img`` (C, Hs, Ws) into the flat image ``xf`` of channel planes of ``hp`` rows of
    ``wp`` (a frame, :func:`frame`) at (top, left); the borders and the tail keep their
    zeros."""
    c, hs, ws = img.shape
    for ch in range(c):
        for i in range(hs):
            _copy(xf[ch * hp * wp + (i + top) * wp + left :], img[ch, i], ws)


@njit(cache=True, inline="always")
def _block(rows, span, xf, wg, offs, o0, acc):
    """``rows[g*span + o0 :][: r*lanes] = sum_t wg[t*GROUP + g] * xf[offs[t] + o0 :][: r*lanes]``
    for the filters g of a group (rows: their wide rows, one after another; wg: their weights,
    tap by tap), from the zero block ``acc`` of GROUP by r registers, which stay in registers
    over every tap."""
    for t in range(offs.shape[0]):
        acc = outer_fma(acc, wg, t * GROUP, 0, xf, offs[t] + o0)
    store_block(rows, o0, span, acc)


@njit(nogil=True, cache=True)
def _corr_wide(y, src, wp, offs, pads, padded, bias, lo, hi):
    """Images of the chunks [lo, hi): ``y[b]`` from ``src[b]``, padded by ``pads`` in the frame
    ``padded`` (P, R), plus the bias unless it is empty (no zero added then: -0.0 stays)."""
    n, c = src.shape[0], src.shape[1]
    f, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    (top, _, left, _), (hp, wp_) = pads, padded
    step = lanes(src)
    span = span_up(ho, wo, wp_, step)  # whole registers: whole blocks, then one of 1 or 2
    blocks = span - span % (BLOCK * step)
    xf = np.zeros(buffer_size(1, c, src.shape[2], pads, padded, span), src.dtype)
    rows = np.empty(GROUP * span, src.dtype)  # y_wide of a group of filters, one after another
    for b in range(lo * CHUNK, min(n, hi * CHUNK)):
        _load_padded(xf, src[b], top, left, hp, wp_)
        for g0 in range(wp.shape[0]):
            for o0 in range(0, blocks, BLOCK * step):
                _block(rows, span, xf, wp[g0], offs, o0, vzeros(xf, GROUP, BLOCK))
            if span - blocks == 2 * step:
                _block(rows, span, xf, wp[g0], offs, blocks, vzeros(xf, GROUP, 2))
            elif span > blocks:
                _block(rows, span, xf, wp[g0], offs, blocks, vzeros(xf, GROUP, 1))
            for g in range(min(GROUP, f - g0 * GROUP)):  # drop padded filters, junk columns
                o_f = g0 * GROUP + g
                for i in range(ho):
                    if bias.size:
                        _copy_plus(y[b, o_f, i], rows[g * span + i * wp_ :], wo, bias[o_f])
                    else:
                        _copy(y[b, o_f, i], rows[g * span + i * wp_ :], wo)
