"""Strided, undilated convolutions as one stride-1 problem each, their phases stacked as
channels (see :mod:`.conv` for why phases).

**Forward and dW.** The phases of x_pad that hold a tap, ``x_pad[:, c, a::sh, b::sw]``, are
laid side by side as the channels of one (N, P*C, Hq, Wq) image (:func:`phase_stack`, padding
done as it is copied); tap (c, p, q) of the kernel reads channel ``phase * C + c`` at row
``p // sh`` and column ``q // sw`` (:func:`.wide.tap_offsets`). The forward is then one pass of
the wide-row kernel over the real taps, no zero among them, the bias added as y is written, and
dW one pass of the dW kernels; the stacked image is the forward's ctx, which dW reads again.
Before, each phase ran as a conv of its own and the phase's outputs were added up: ResNet-20's
3x3 stride-2 layers (batch 64, float32, 2 threads) forward 3.2 -> 1.1-1.3 ms (16 -> 32
channels, 32x32) and 2.2 -> 1.1-1.2 ms (32 -> 64, 16x16), dW 1.3 -> 0.8 and 1.2 -> 0.9-1.0 ms;
PyTorch's forward takes 0.75 and 0.6 ms. The stacking is about 0.45 ms of the first forward.

**dX.** Phase (a, b) of dX_pad, ``dX_pad[:, c, a::sh, b::sw]``, is the stride-1 full
convolution of dY with the phase's taps ``w[:, c, a::sh, b::sw]``. All phases run as one
correlation of dY, padded by the most taps a phase has less one, with P*C "filters": filter
(phase, c) holds its phase's taps rotated 180 degrees, aligned to the end of a common (Kh, Kw)
grid, ``Kh = ceil(kh / sh)``, zeros where its phase has fewer taps (3x3 at stride 2: 16 taps a
filter, 9 of them real). Its (N, P*C, Hq, Wq) result is unstacked into the window of dX that
the layer keeps (:func:`_unstack`): 2.6 -> 1.45 ms on the 16 -> 32 layer, where the phases
ran one by one and were scattered into dX_pad by NumPy's strided copies (1.8 -> 1.5 ms on the
32 -> 64 one).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..contract import Window
from .common import Pair, parallel
from .wide import corr_wide


def phase_stack(x: np.ndarray, pads, stride: Pair, kernel_size: Pair) -> np.ndarray:
    """x (N, C, H, W) zero-padded by ``pads`` (top, bottom, left, right), as its phases that
    hold a tap stacked as channels: (N, P*C, Hq, Wq), channel ``(a * min(sw, kw) + b) * C + c``
    holding ``x_pad[:, c, a::sh, b::sw]`` (zeros past its edge), ``Hq = ceil(Hp / sh)`` (Wq
    alike). One image per work item."""
    x = np.ascontiguousarray(x)
    (n, c, h, w), (top, bottom, left, right) = x.shape, pads
    (sh, sw), (kh, kw) = stride, kernel_size
    na, nb = min(sh, kh), min(sw, kw)
    hq, wq = -(-(h + top + bottom) // sh), -(-(w + left + right) // sw)
    out = np.empty((n, na * nb * c, hq, wq), x.dtype)
    if (sh, sw, na, nb) != (2, 2, 2, 2) or w % 2:
        parallel(_phase_stack, n, out, x, sh, sw, na, nb, top, left)
        return out
    parallel(_phase_stack_by_two, n, out, x, top, left)
    return out


def grad_input_phased(
    dy: np.ndarray, w: np.ndarray, stride: Pair, padded_hw: Pair, window: Window | None
) -> np.ndarray:
    """dX_pad (N, C, Hp, Wp) of a strided, undilated layer, or its ``window`` (top, left, h,
    w), from one correlation over dY's phases (see the module's notes)."""
    dy = np.ascontiguousarray(dy)
    (sh, sw), (f, c, kh, kw), (hp, wp) = stride, w.shape, padded_hw
    na, nb = min(sh, kh), min(sw, kw)
    taps_h, taps_w = -(-kh // sh), -(-kw // sw)  # the most taps a phase has
    hq, wq = -(-hp // sh), -(-wp // sw)
    stacked_w = np.zeros((na, nb, c, f, taps_h, taps_w), dy.dtype)
    for a in range(na):
        for b in range(nb):
            w_ab = w[:, :, a::sh, b::sw]  # (F, C, ka, kb): rotated, in/out swapped, at the end
            ka, kb = w_ab.shape[2:]
            stacked_w[a, b, :, :, taps_h - ka :, taps_w - kb :] = w_ab[:, :, ::-1, ::-1].transpose(
                1, 0, 2, 3
            )
    ho, wo = dy.shape[2:]
    pads = (taps_h - 1, hq - ho, taps_w - 1, wq - wo)  # Hq >= Ho: never negative
    stacked = corr_wide(
        dy, stacked_w.reshape(na * nb * c, f, taps_h, taps_w), (1, 1), pads, (hq, wq)
    )
    top, left, h, w_ = (0, 0, hp, wp) if window is None else window
    dx = np.empty((dy.shape[0], c, h, w_), dy.dtype)
    if (sh, sw, na, nb) == (2, 2, 2, 2) and w_ % 2 == 0:
        parallel(_unstack_by_two, dy.shape[0], dx, stacked, top, left)
    else:
        parallel(_unstack, dy.shape[0], dx, stacked, sh, sw, na, nb, top, left)
    return dx


# -- the jitted loops ---------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _phase_stack(out, x, sh, sw, na, nb, top, left, lo, hi):
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    hq, wq = out.shape[2], out.shape[3]
    zero = x.dtype.type(0)
    for img in range(lo, hi):
        for a in range(na):
            for b in range(nb):
                # the phase's columns s that fall inside x: b + s*sw - left in [0, w)
                s_lo = -(-(left - b) // sw) if left > b else 0
                s_hi = min(wq, (w - 1 - b + left) // sw + 1)
                for ch in range(c):
                    plane = out[img, (a * nb + b) * c + ch]
                    for r in range(hq):
                        row, src_r = plane[r], a + r * sh - top
                        if src_r < 0 or src_r >= h:
                            for s in range(wq):
                                row[s] = zero
                            continue
                        src = x[img, ch, src_r, b + s_lo * sw - left :]
                        for s in range(s_lo):
                            row[s] = zero
                        for k in range(s_hi - s_lo):
                            row[s_lo + k] = src[k * sw]
                        for s in range(max(s_hi, s_lo), wq):
                            row[s] = zero


@njit(nogil=True, cache=True)
def _phase_stack_by_two(out, x, top, left, lo, hi):
    """:func:`_phase_stack` at a stride of 2 with four phases and an even width: each row of
    x split into its even and odd columns in one loop (:func:`_split_rows`), then the padding's
    rows and columns zeroed (:func:`_zero_borders`), two functions so that the first loop stays
    vectorised: 0.55 -> 0.25 ms on (64, 16, 32, 32), where the general loops read one phase at
    a time, strided."""
    _split_rows(out, x, top, left, lo, hi)
    _zero_borders(out, x.shape[1], x.shape[2], x.shape[3], top, left, lo, hi)


@njit(nogil=True, cache=True)
def _zero_borders(out, c, h, w, top, left, lo, hi):
    """The rows and columns of each phase's plane that no pixel of x reaches, zeros."""
    hq, wq = out.shape[2], out.shape[3]
    zero = out.dtype.type(0)
    for img in range(lo, hi):
        for a in range(2):
            r0 = (a - top) % 2  # x's first row in row phase a
            row_lo, row_hi = (r0 + top) // 2, (r0 + top) // 2 + (h - r0 + 1) // 2
            for b in range(2):
                col_lo = ((b - left) % 2 + left) // 2
                col_hi = col_lo + w // 2
                for ch in range(c):
                    plane = out[img, (2 * a + b) * c + ch]
                    for r in range(hq):
                        row = plane[r]
                        if r < row_lo or r >= row_hi:
                            for s in range(wq):
                                row[s] = zero
                            continue
                        for s in range(col_lo):
                            row[s] = zero
                        for s in range(col_hi, wq):
                            row[s] = zero


@njit(nogil=True, cache=True)
def _split_rows(out, x, top, left, lo, hi):
    """Each row of x into its row phase's two planes, even and odd columns."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    s0 = left % 2  # x's first column in column phase 0 (s + left even), and in phase 1
    s1 = 1 - s0
    q0, q1 = (s0 + left) // 2, (s1 + left) // 2  # where they go in their phase's rows
    for img in range(lo, hi):
        for ch in range(c):
            for r in range(h):
                a, rq = (r + top) % 2, (r + top) // 2
                src = x[img, ch, r]
                even, odd = src[s0:], src[s1:]
                d0 = out[img, 2 * a * c + ch, rq, q0:]
                d1 = out[img, (2 * a + 1) * c + ch, rq, q1:]
                for k in range(w // 2):
                    d0[k] = even[2 * k]
                    d1[k] = odd[2 * k]


@njit(nogil=True, cache=True)
def _unstack(dx, stacked, sh, sw, na, nb, top, left, lo, hi):
    """``dx[n, c, i, j] = stacked[n, phase * C + c, (i + top) // sh, (j + left) // sw]``, the
    phase of pixel (i + top, j + left); 0 where its phase holds no tap. Row by row, each row's
    columns phase by phase: no division in the loops."""
    c, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
    zero = dx.dtype.type(0)
    for img in range(lo, hi):
        for ch in range(c):
            for i in range(h):
                row, r = dx[img, ch, i], i + top
                a, rq = r % sh, r // sh
                if a >= na:
                    for j in range(w):
                        row[j] = zero
                    continue
                base = a * nb * c + ch
                for b in range(sw):
                    j0 = (b - left) % sw  # the first column of phase b
                    count = (w - j0 + sw - 1) // sw if j0 < w else 0
                    if b >= nb:
                        for k in range(count):
                            row[j0 + k * sw] = zero
                        continue
                    src = stacked[img, base + b * c, rq, (j0 + left) // sw :]
                    for k in range(count):
                        row[j0 + k * sw] = src[k]


@njit(nogil=True, cache=True)
def _unstack_by_two(dx, stacked, top, left, lo, hi):
    """:func:`_unstack` at a stride of 2 with four phases (3x3 kernels) and an even width:
    the two column phases interleaved in one loop of stores in order, 0.47 -> 0.18 ms on
    (64, 16, 32, 32). Only that loop: with a branch for rows of no phase, or for an odd
    width's last column, LLVM no longer vectorised it (0.44 ms)."""
    c, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
    odd = left % 2  # 1: column 0 of the window is in the odd phase
    for img in range(lo, hi):
        for ch in range(c):
            for i in range(h):
                row, a, rq = dx[img, ch, i], (i + top) % 2, (i + top) // 2
                base = 2 * a * c + ch
                first = stacked[img, base + odd * c, rq, left // 2 :]
                second = stacked[img, base + (1 - odd) * c, rq, left // 2 + odd :]
                for k in range(w // 2):
                    row[2 * k] = first[k]
                    row[2 * k + 1] = second[k]
