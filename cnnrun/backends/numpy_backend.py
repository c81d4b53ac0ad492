"""Vectorised NumPy kernels: zero-copy windows, one BLAS matrix product per conv product.

Same contract as :mod:`cnnrun.backends.reference` (the loops these are tested against).
A conv product is computed as im2col: a strided *view* of every kernel window, copied once into
a ``(rows, C*kh*kw)`` column matrix, then one matrix product with the reshaped kernel. The
column matrix of the forward pass is the window matrix of the dW correlation too, so it is kept
and reused. Nothing here scatters with ``np.add.at``, and every array stays in its input's dtype.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .reference import dilate

NAME = "numpy"


def windows(a, kernel, stride, dilation, out_hw):
    """Zero-copy view of the sliding windows of a (N, C, H, W) array: (N, C, Ho, Wo, kh, kw)."""
    sn, sc, sh_, sw_ = a.strides
    (sh, sw), (dh, dw) = stride, dilation
    return as_strided(
        a,
        shape=(a.shape[0], a.shape[1], out_hw[0], out_hw[1], kernel[0], kernel[1]),
        strides=(sn, sc, sh_ * sh, sw_ * sw, sh_ * dh, sw_ * dw),
        writeable=False,
    )


def _out_hw(padded_hw, kernel, stride, dilation):
    return tuple((p - d * (k - 1) - 1) // s + 1
                 for p, k, s, d in zip(padded_hw, kernel, stride, dilation))


def im2col(a, kernel, stride, dilation, out_hw):
    """(N, C, H, W) -> columns (N*Ho*Wo, C*kh*kw): a row per output pixel, a column per tap."""
    n, c = a.shape[:2]
    win = windows(a, kernel, stride, dilation, out_hw)           # (N, C, Ho, Wo, kh, kw)
    cols = np.empty((n, *out_hw, c, *kernel), dtype=a.dtype)     # (N, Ho, Wo, C, kh, kw)
    np.copyto(cols, win.transpose(0, 2, 3, 1, 4, 5))
    return cols.reshape(n * out_hw[0] * out_hw[1], c * kernel[0] * kernel[1])


def conv2d_forward(x_pad, w, stride, dilation):
    """y (N, F, Ho, Wo) = cols (N*Ho*Wo, C*kh*kw) @ w (F, C*kh*kw).T; ctx is the cols."""
    f, _, kh, kw = w.shape
    n = x_pad.shape[0]
    ho, wo = _out_hw(x_pad.shape[2:], (kh, kw), stride, dilation)
    cols = im2col(x_pad, (kh, kw), stride, dilation, (ho, wo))
    y = cols @ w.reshape(f, -1).T                                 # (N*Ho*Wo, F)
    y = y.reshape(n, ho, wo, f).transpose(0, 3, 1, 2)             # (N, F, Ho, Wo)
    return np.ascontiguousarray(y), cols


def conv2d_grad_weight(x_pad, ctx, dy, kernel_size, stride, dilation):
    """dW = valid correlation of x_pad with dilate(dy): dy (F, N*Ho*Wo) @ cols -> (F, C, kh, kw)."""
    n, f, ho, wo = dy.shape
    cols = ctx if ctx is not None else im2col(x_pad, kernel_size, stride, dilation, (ho, wo))
    dy_rows = dy.transpose(0, 2, 3, 1).reshape(n * ho * wo, f)   # (N*Ho*Wo, F), rows as in cols
    dW = dy_rows.T @ cols                                        # (F, C*kh*kw)
    return dW.reshape(f, x_pad.shape[1], *kernel_size)


def conv2d_grad_input(dy, w, stride, dilation, padded_hw):
    """dX_pad = full convolution of dilate(dy) with w (rotated 180 degrees), summed over F."""
    f, c, kh, kw = w.shape
    dh, dw = dilation
    hp, wp = padded_hw
    dyd = dilate(dy, stride) if stride != (1, 1) else dy         # (N, F, Hd, Wd)
    n, _, hd, wd = dyd.shape
    # full padding d(k-1) on each side; extra rows/cols at the bottom/right when the stride
    # left part of x_pad unvisited, so that the result is exactly (Hp, Wp)
    dyd_full = np.pad(dyd, ((0, 0), (0, 0),
                            (dh * (kh - 1), hp - hd), (dw * (kw - 1), wp - wd)))
    cols = im2col(dyd_full, (kh, kw), (1, 1), dilation, (hp, wp))  # (N*Hp*Wp, F*kh*kw)
    w_rot = w[:, :, ::-1, ::-1].transpose(0, 2, 3, 1).reshape(f * kh * kw, c)  # (F*kh*kw, C)
    dx = (cols @ w_rot).reshape(n, hp, wp, c).transpose(0, 3, 1, 2)            # (N, C, Hp, Wp)
    return np.ascontiguousarray(dx)


def _window_slices(p, q, stride, out_hw):
    """The input pixels that kernel tap (p, q) touches, as strided slices."""
    (sh, sw), (ho, wo) = stride, out_hw
    return (slice(None), slice(None),
            slice(p, p + sh * (ho - 1) + 1, sh), slice(q, q + sw * (wo - 1) + 1, sw))


def maxpool2d_forward(x_pad, kernel_size, stride):
    """y = max over each window; ctx = flat index (p * kw + q) of the window's first maximum."""
    out_hw = _out_hw(x_pad.shape[2:], kernel_size, stride, (1, 1))
    win = windows(x_pad, kernel_size, stride, (1, 1), out_hw)
    flat = win.reshape(*win.shape[:4], -1)                        # (N, C, Ho, Wo, kh*kw), a copy
    arg = flat.argmax(axis=-1)                                    # first maximum wins ties
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return y, arg


def maxpool2d_backward(dy, ctx, kernel_size, stride, padded_hw):
    """Route each dy to its window's argmax: one strided add per kernel tap, no scatter."""
    kh, kw = kernel_size
    dx_pad = np.zeros((*dy.shape[:2], *padded_hw), dtype=dy.dtype)
    for tap in range(kh * kw):
        p, q = divmod(tap, kw)
        dx_pad[_window_slices(p, q, stride, dy.shape[2:])] += np.where(ctx == tap, dy, 0)
    return dx_pad


def avgpool2d_forward(x_pad, kernel_size, stride):
    """Mean over each window (padding counts as zeros, as PyTorch's ``count_include_pad``)."""
    out_hw = _out_hw(x_pad.shape[2:], kernel_size, stride, (1, 1))
    win = windows(x_pad, kernel_size, stride, (1, 1), out_hw)
    y = win.sum(axis=(4, 5)) / (kernel_size[0] * kernel_size[1])
    return y, None


def avgpool2d_backward(dy, ctx, kernel_size, stride, padded_hw):
    """Share each dy equally among its window: one strided add per kernel tap."""
    kh, kw = kernel_size
    share = dy / (kh * kw)
    dx_pad = np.zeros((*dy.shape[:2], *padded_hw), dtype=dy.dtype)
    for tap in range(kh * kw):
        dx_pad[_window_slices(*divmod(tap, kw), stride, dy.shape[2:])] += share
    return dx_pad
