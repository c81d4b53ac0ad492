"""Numba convolution kernels: wide rows at stride 1 (:mod:`.wide`, :mod:`.wide_grad`); other
strides split into stride-1 problems by phase, or plain loops where the kernel is dilated.

**Phases.** With stride s (and no dilation), the output pixel i reads the rows ``i*s + p``:
write the tap ``p = s*p' + a`` with phase ``a = p mod s``, and it reads row ``i + p'`` of
``x_a = x_pad[a::s]``, the rows of phase a. So a strided convolution is the sum over the phases
(a, b) of stride-1 correlations of ``x_ab = x_pad[:, :, a::sh, b::sw]`` with the taps of that
phase, ``w_ab = w[:, :, a::sh, b::sw]``; the same holds for its gradients: ``dW[..., a::sh,
b::sw]`` is the stride-1 dW of ``x_ab`` and dY, and ``dX_pad[:, :, a::sh, b::sw]`` the stride-1
full convolution of dY with ``w_ab``. The phases are stacked as channels and run as one
stride-1 problem on the wide-row kernels (:mod:`.phases`), with no multiply by a zero of a
dilated dY. ResNet-20's 3x3 stride-2 layer (16 -> 32 channels, 32x32, batch 64, float32),
forward and both gradients: 3.4 ms, against 7 ms with a wide-row pass per phase and 106 ms for
the plain loops; its 1x1 shortcut 1.0 ms against 15 ms.
Dilated strided layers use plain loops of the reference formulas (dX
then adds ``w * dy`` straight into the pixels each window touched).

Floating-point contraction and reassociation are allowed in the conv loops (``fastmath``, without
the no-NaN/no-inf flags): sums come out in another order than NumPy's, which changes the last
bits only. Sums over the batch (dW) are taken per chunk of images and added in chunk order, so
results do not depend on the number of threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..contract import Window, crop_window, padded
from . import precompile
from .common import _FAST, CHUNK, Pair, out_hw, parallel
from .phases import grad_input_phased, phase_stack
from .wide import corr_wide
from .wide_grad import corr_grad_weight_wide


@dataclass(frozen=True)
class Padded:
    """x (N, C, H, W) zero-padded by ``pads`` (top, bottom, left, right), as this backend's
    conv kernels take their x_pad: at stride 1 they pad each image as they load it into their
    own buffer, so no padded copy of the batch is made (it took a pass over memory per layer,
    0.6 ms for (64, 16, 32, 32) float32). ``np.asarray`` gives the padded array; strided layers
    pad as they stack their phases (:func:`.phases.phase_stack`), dilated strided ones make
    the padded array."""

    x: np.ndarray
    pads: tuple[int, int, int, int]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        (n, c, h, w), (top, bottom, left, right) = self.x.shape, self.pads
        return (n, c, h + top + bottom, w + left + right)

    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(padded(self.x, self.pads), dtype=dtype)


def pad2d(x: np.ndarray, pads: tuple[int, int, int, int]) -> Padded:
    """x in C order and its pads (see :class:`Padded`)."""
    return Padded(np.ascontiguousarray(x), tuple(int(p) for p in pads))


def _unpadded(x_pad) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(x in C order, its pads) of an x_pad: a :class:`Padded` or a padded array."""
    if isinstance(x_pad, Padded):
        return x_pad.x, x_pad.pads
    return np.ascontiguousarray(x_pad), (0, 0, 0, 0)


def conv2d_forward(
    x_pad: np.ndarray | Padded,
    w: np.ndarray,
    stride: Pair,
    dilation: Pair,
    bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``y[n, f, i, j] = sum_{c,p,q} x_pad[n, c, i*sh + p*dh, j*sw + q*dw] * w[f, c, p, q]``;
    (N, C, Hp, Wp) -> (N, F, Ho, Wo). ctx: the stacked phases of a strided, undilated layer
    (:func:`.phases.phase_stack`), which dW reads again (None otherwise: dW reads x_pad
    itself). The bias is added as the kernel writes y, except in a dilated strided layer."""
    x, pads = _unpadded(x_pad)
    (sh, sw), (dh, dw) = stride, dilation
    # a cold cache: dW's kernels compile meanwhile in a second process, the few-filters one
    # where a layer will take it
    wide = (sh, sw) == (1, 1) or (dh, dw) == (1, 1)
    precompile.start(x.dtype, w.shape[0] if wide else None)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    ho, wo = out_hw(x_pad.shape[2:], w.shape[2:], stride, dilation)
    if (sh, sw) == (1, 1):
        return corr_wide(x, w, (dh, dw), pads, (ho, wo), bias), None
    if (dh, dw) == (1, 1):  # one stride-1 pass over the phases, stacked as channels
        stacked = phase_stack(x, pads, stride, w.shape[2:])  # dW reads it again
        return corr_wide(stacked, w, (1, 1), (0, 0, 0, 0), (ho, wo), bias, stride), stacked
    y = _conv_forward_strided(padded(x, pads), w, sh, sw, dh, dw, ho, wo)
    if bias is not None:
        y += bias.astype(y.dtype, copy=False)[None, :, None, None]
    return y, None


def conv2d_grad_weight(
    x_pad: np.ndarray | Padded,
    ctx: np.ndarray | None,
    dy: np.ndarray,
    kernel_size: Pair,
    stride: Pair,
    dilation: Pair,
) -> np.ndarray:
    """dW = valid correlation of x_pad with dilate(dy, stride), summed over the batch:
    ``dW[f, c, p, q] = sum_{n,i,j} x_pad[n, c, i*sh + p*dh, j*sw + q*dw] * dy[n, f, i, j]``.
    ctx: the forward's stacked phases at strides other than 1 (stacked again if None).

    The few-filters dot products of :mod:`.wide_grad` run over whole wide rows, and so also
    multiply the pixels that their junk columns reach, in the next row, channel or image, by a
    dY of zero: with a NaN or an infinity there, 0 * NaN would be NaN in another channel's dW
    (the micro-kernel sums over the valid outputs alone, each of which reads its own window).
    So a dW that is not all finite is made again by the plain loops, which read each window
    alone (one pass over dW's few elements to check; the loops compile on first use)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    x, pads = _unpadded(x_pad)
    if (dh, dw) != (1, 1) and (sh, sw) != (1, 1):
        return _grad_weight_loops(x, pads, dy, kernel_size, stride, dilation)
    if (sh, sw) == (1, 1):
        dW = corr_grad_weight_wide(x, pads, dy, (kh, kw), (dh, dw))
    else:
        stacked = phase_stack(x, pads, stride, (kh, kw)) if ctx is None else ctx
        dW = corr_grad_weight_wide(stacked, (0, 0, 0, 0), dy, (kh, kw), (1, 1), stride)
    if np.isfinite(dW).all():
        return dW
    return _grad_weight_loops(x, pads, dy, kernel_size, stride, dilation)


def _grad_weight_loops(x, pads, dy, kernel_size, stride, dilation):
    """dW by the plain loops, from x and its pads."""
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    return _conv_grad_weight_strided(padded(x, pads), dy, *kernel_size, *stride, *dilation)


def conv2d_grad_bias(dy: np.ndarray) -> np.ndarray:
    """db (F,): each filter's dY summed in float64 (fastmath's vector sums, in an order fixed
    by the shape), one filter per work item: LeNet's conv1 at batch 256, (256, 6, 28, 28),
    0.35 ms by NumPy's einsum, 0.10 ms here."""
    dy = np.ascontiguousarray(dy)
    n, f = dy.shape[:2]
    if dy.size == 0:  # nothing to add: zeros, as the reference's sum
        return np.zeros(f, dy.dtype)
    db = np.empty(f, np.float64)
    parallel(_sum_filters, f, dy.reshape(n, f, -1), db)
    return db.astype(dy.dtype, copy=False)


def conv2d_grad_input(
    dy: np.ndarray,
    w: np.ndarray,
    stride: Pair,
    dilation: Pair,
    padded_hw: Pair,
    window: Window | None = None,
) -> np.ndarray:
    """dX_pad (N, C, Hp, Wp) = full convolution of dilate(dy, stride) with w, summed over F;
    or its ``window`` (top, left, h, w) alone, in C order.

    Stride 1: literally the definition, a valid correlation of dY zero-padded by the kernel's
    span ``d(k - 1)`` on every side with the kernel rotated 180 degrees and its in/out axes
    swapped (C, F, kh, kw), by the same wide-row kernel as the forward pass; a window is that
    correlation with dY padded by what the window's rows and columns reach. On 'same' 3x3
    layers that skips the ring of padding the layer crops off, and the wide rows' junk:
    useful outputs 64 of 112 computed on 8x8 maps with the ring, 64 of 80 without (float32). Other
    strides: one correlation over dY's phases (:mod:`.phases`), or where the kernel is also
    dilated plain loops that add ``w[f, c, p, q] * dy[n, f, i, j]`` into ``dx_pad[n, c, i*sh +
    p*dh, j*sw + q*dw]``, the window cut from that.
    """
    dy = np.ascontiguousarray(dy)
    (sh, sw), (dh, dw) = stride, dilation
    if (sh, sw) == (1, 1):
        return _grad_input_stride1(dy, w, dilation, padded_hw, window)
    w = np.ascontiguousarray(w, dtype=dy.dtype)
    if (dh, dw) == (1, 1):
        return grad_input_phased(dy, w, stride, padded_hw, window)
    dx_pad = _conv_grad_input_strided(dy, w, sh, sw, dh, dw, *padded_hw)
    return np.ascontiguousarray(crop_window(dx_pad, window))


def _grad_input_stride1(dy, w, dilation, padded_hw, window):
    """:func:`conv2d_grad_input` at stride 1: the correlation of the padded dY with the
    rotated kernel, of the window's rows and columns alone where its padding allows."""
    (kh, kw), (dh, dw), (hp, wp) = w.shape[2:], dilation, padded_hw
    # rotated 180 degrees, in/out swapped: (F, C, kh, kw) -> (C, F, kh, kw)
    w_rot = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), dtype=dy.dtype)
    top, left, h, w_ = (0, 0, hp, wp) if window is None else window
    span_h, span_w = dh * (kh - 1), dw * (kw - 1)
    # dY's padding for rows top ... top + h - 1 of the full convolution (Hp = Ho + span)
    pads = (span_h - top, top + h - hp + span_h, span_w - left, left + w_ - wp + span_w)
    if min(pads) >= 0:
        return corr_wide(dy, w_rot, (dh, dw), pads, (h, w_))
    full = corr_wide(dy, w_rot, (dh, dw), (span_h, span_h, span_w, span_w), (hp, wp))
    return np.ascontiguousarray(crop_window(full, window))


# -- any stride: plain loops (jitted on first call) ---------------------------------------------


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


@njit(nogil=True, cache=True, fastmath=_FAST)
def _sum_filters(dy, db, lo, hi):
    """db[f] = the sum of dy[:, f] (N, F, Ho*Wo), in float64."""
    for o_f in range(lo, hi):
        s = 0.0
        for b in range(dy.shape[0]):
            row = dy[b, o_f]
            for k in range(row.size):
                s += row[k]
        db[o_f] = s
