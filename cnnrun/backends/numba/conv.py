"""Numba convolution kernels: wide rows at stride 1 (:mod:`.wide`, :mod:`.wide_grad`), plain
loops otherwise.

Other strides than 1 use plain loops of the reference formulas (dX then adds ``w * dy`` straight
into the pixels each window touched, instead of correlating a dY dilated with zeros).

Floating-point contraction and reassociation are allowed in the conv loops (``fastmath``, without
the no-NaN/no-inf flags): sums come out in another order than NumPy's, which changes the last
bits only. Sums over the batch (dW) are taken per chunk of images and added in chunk order, so
results do not depend on the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import _FAST, CHUNK, Pair, out_hw
from .wide import _corr_wide
from .wide_grad import _conv_grad_input_scatter, _corr_grad_weight_wide

# dX with fewer input channels than this, and at least as many filters: the forward kernel (four
# output channels per pass) runs half empty on the transposed problem, and adding each tap's dY
# back, eight filters per pass, is faster (LeNet's conv2, 6 channels and 16 filters: 1.7 -> 1.4 ms
# at batch 256). Otherwise the full-convolution form (16 channels: twice as fast as adding back)
SCATTER = 8


def conv2d_forward(
    x_pad: np.ndarray, w: np.ndarray, stride: Pair, dilation: Pair
) -> tuple[np.ndarray, None]:
    """``y[n, f, i, j] = sum_{c,p,q} x_pad[n, c, i*sh + p*dh, j*sw + q*dw] * w[f, c, p, q]``;
    (N, C, Hp, Wp) -> (N, F, Ho, Wo). No context is kept: dW reads x_pad itself."""
    x_pad = np.ascontiguousarray(x_pad)
    w = np.ascontiguousarray(w, dtype=x_pad.dtype)
    (sh, sw), (dh, dw) = stride, dilation
    ho, wo = out_hw(x_pad.shape[2:], w.shape[2:], stride, dilation)
    if (sh, sw) == (1, 1):
        return _corr_wide(x_pad, w, dh, dw, 0, 0, ho, wo), None
    return _conv_forward_strided(x_pad, w, sh, sw, dh, dw, ho, wo), None


def conv2d_grad_weight(
    x_pad: np.ndarray,
    ctx: None,
    dy: np.ndarray,
    kernel_size: Pair,
    stride: Pair,
    dilation: Pair,
) -> np.ndarray:
    """dW = valid correlation of x_pad with dilate(dy, stride), summed over the batch:
    ``dW[f, c, p, q] = sum_{n,i,j} x_pad[n, c, i*sh + p*dh, j*sw + q*dw] * dy[n, f, i, j]``."""
    x_pad = np.ascontiguousarray(x_pad)
    dy = np.ascontiguousarray(dy, dtype=x_pad.dtype)
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    if (sh, sw) == (1, 1):
        return _corr_grad_weight_wide(x_pad, dy, kh, kw, dh, dw)
    return _conv_grad_weight_strided(x_pad, dy, kh, kw, sh, sw, dh, dw)


def conv2d_grad_input(
    dy: np.ndarray, w: np.ndarray, stride: Pair, dilation: Pair, padded_hw: Pair
) -> np.ndarray:
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
        # rotated 180 degrees, in/out swapped: (F, C, kh, kw) -> (C, F, kh, kw)
        w_rot = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), dtype=dy.dtype)
        return _corr_wide(dy, w_rot, dh, dw, dh * (kh - 1), dw * (kw - 1), hp, wp)
    w = np.ascontiguousarray(w, dtype=dy.dtype)
    return _conv_grad_input_strided(dy, w, sh, sw, dh, dw, hp, wp)


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
