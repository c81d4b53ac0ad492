"""Vectorised NumPy kernels: im2col by kernel tap, one BLAS matrix product per conv product.

Same contract as :mod:`cnnrun.backends.reference` (the loops these are tested against).

A conv product is computed as im2col. The column matrix is laid out tap-major,
``cols (C, kh, kw, N, Ho, Wo)``: row ``(c, p, q)`` holds the input pixels that kernel tap
``(p, q)`` of channel c meets, for every output pixel. It is filled with one strided copy per
tap (kh*kw copies of whole (C, N, Ho, Wo) blocks, no element-wise gather), and then:

* forward: ``y = W (F, C*kh*kw) @ cols`` -> (F, N, Ho, Wo), transposed into (N, F, Ho, Wo)
  (or, for large images, one product per image straight into y);
* dW, the valid correlation of x_pad with dY: ``dW = dY (F, N*Ho*Wo) @ cols.T``, as one product
  per image summed over the batch, with the forward's cols kept as the context, so the copy is
  made once per step;
* dX, the full convolution of dY with the kernel: ``dcols = W.T @ dY`` -> (C, kh, kw, N, Ho, Wo)
  holds, for every tap, what that tap sends back to the pixels it met; adding each tap's block
  into those pixels (one strided add per tap: col2im) sums, for each input pixel, the
  ``w[f, c, p, q] * dy[n, f, i, j]`` of every window that covered it. That is the correlation of
  the zero-padded, stride-dilated dY with the rotated kernel, without building either.

Nothing here scatters with ``np.add.at``, and every array stays in its input's dtype.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

NAME = "numpy"
# the forward pass runs one BLAS product per image from this many output pixels per image (LeNet's
# conv1: 784), one product over the whole batch below it (conv2: 100); measured on 2 cores
PER_IMAGE_PIXELS = 512
LOOP_COST = 5  # NumPy's cost of one inner loop, in elements copied by a transpose (measured)


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


def tap(a, p, q, stride, dilation, out_hw):
    """The pixels of a (.., H, W) array that kernel tap (p, q) meets, one per output pixel:
    a strided view (.., Ho, Wo)."""
    (sh, sw), (dh, dw), (ho, wo) = stride, dilation, out_hw
    return a[..., p * dh: p * dh + sh * (ho - 1) + 1: sh, q * dw: q * dw + sw * (wo - 1) + 1: sw]


def im2col(x_pad, kernel, stride, dilation, out_hw):
    """(N, C, Hp, Wp) -> cols (C, kh, kw, N, Ho, Wo): one strided copy per kernel tap."""
    n, c = x_pad.shape[:2]
    kh, kw = kernel
    cols = np.empty((c, kh, kw, n, *out_hw), dtype=x_pad.dtype)
    x_cn = x_pad.transpose(1, 0, 2, 3)                             # (C, N, Hp, Wp), a view
    for p in range(kh):
        for q in range(kw):
            np.copyto(cols[:, p, q], tap(x_cn, p, q, stride, dilation, out_hw))
    return cols


def _filters_first(a):
    """(N, F, H, W) -> a contiguous (F, N, H, W) copy."""
    out = np.empty((a.shape[1], a.shape[0], *a.shape[2:]), dtype=a.dtype)
    np.copyto(out, a.transpose(1, 0, 2, 3))
    return out


def conv2d_forward(x_pad, w, stride, dilation):
    """y (N, F, Ho, Wo) = W (F, C*kh*kw) @ cols (C*kh*kw, N*Ho*Wo); ctx is the cols."""
    f, c, kh, kw = w.shape
    n = x_pad.shape[0]
    k = c * kh * kw
    ho, wo = _out_hw(x_pad.shape[2:], (kh, kw), stride, dilation)
    cols = im2col(x_pad, (kh, kw), stride, dilation, (ho, wo))    # (C, kh, kw, N, Ho, Wo)
    if ho * wo >= PER_IMAGE_PIXELS:
        # one product per image, written straight into its (F, Ho*Wo) block of y
        cols_img = cols.reshape(k, n, ho * wo).transpose(1, 0, 2)  # (N, C*kh*kw, Ho*Wo), a view
        return np.matmul(w.reshape(f, k), cols_img).reshape(n, f, ho, wo), cols
    y_fn = w.reshape(f, k) @ cols.reshape(k, n * ho * wo)          # (F, N*Ho*Wo)
    y = np.empty((n, f, ho, wo), dtype=x_pad.dtype)
    np.copyto(y, y_fn.reshape(f, n, ho, wo).transpose(1, 0, 2, 3))
    return y, cols


def conv2d_grad_weight(x_pad, ctx, dy, kernel_size, stride, dilation):
    """dW = valid correlation of x_pad with dilate(dy): sum over images of cols @ dY.T."""
    n, f, ho, wo = dy.shape
    cols = ctx if ctx is not None else im2col(x_pad, kernel_size, stride, dilation, (ho, wo))
    k = cols.size // (n * ho * wo)                                 # C*kh*kw
    # one (C*kh*kw, Ho*Wo) @ (Ho*Wo, F) product per image, summed: OpenBLAS is several times
    # slower on the single product whose reduction runs over all N*Ho*Wo pixels
    cols_img = cols.reshape(k, n, ho * wo).transpose(1, 0, 2)      # (N, C*kh*kw, Ho*Wo), a view
    dW_t = np.matmul(cols_img, dy.reshape(n, f, ho * wo).transpose(0, 2, 1)).sum(axis=0)
    return dW_t.T.reshape(f, x_pad.shape[1], *kernel_size)


def conv2d_grad_input(dy, w, stride, dilation, padded_hw):
    """dX_pad (N, C, Hp, Wp) = full convolution of dilate(dy) with w (rotated 180 degrees),
    summed over F: ``dcols = W.T @ dY``, then each tap's block added back where it was read.

    The adds run row by row, ``kh*kw*C*N*Ho`` inner loops of Wo elements; NumPy's cost per inner
    loop dominates when rows are short. Putting the batch axis last, (C, Hp, Wp, N), makes each
    tap's add one run of ``Wo * N`` contiguous elements, at the price of moving dY and dX through
    two more transposes; it is done where the loops saved outweigh the elements moved (LeNet's
    conv2, rows of 10: 5.2 -> 3.2 ms at batch 256; not for the 3x3 layers of 16-32 channels).
    """
    f, c, kh, kw = w.shape
    n, _, ho, wo = dy.shape
    hp, wp = padded_hw
    batch_last = kh * kw * c * ho * LOOP_COST > f * ho * wo + c * hp * wp
    dy_f = np.empty((f, ho, wo, n) if batch_last else (f, n, ho, wo), dtype=dy.dtype)
    np.copyto(dy_f, dy.transpose((1, 2, 3, 0) if batch_last else (1, 0, 2, 3)))
    dcols = w.reshape(f, c * kh * kw).T @ dy_f.reshape(f, n * ho * wo)  # (C*kh*kw, N*Ho*Wo)
    if batch_last:
        dcols = dcols.reshape(c, kh, kw, ho, wo, n)
        dx_t = np.zeros((c, *padded_hw, n), dtype=dy.dtype)        # (C, Hp, Wp, N)
        rows = dx_t.transpose(0, 3, 1, 2)                          # (C, N, Hp, Wp), a view
        for p in range(kh):
            for q in range(kw):
                tap(rows, p, q, stride, dilation, (ho, wo))[...] += dcols[:, p, q].transpose(
                    0, 3, 1, 2)
        order = (3, 0, 1, 2)
    else:
        dcols = dcols.reshape(c, kh, kw, n, ho, wo)
        dx_t = np.zeros((c, n, *padded_hw), dtype=dy.dtype)        # (C, N, Hp, Wp)
        for p in range(kh):
            for q in range(kw):
                tap(dx_t, p, q, stride, dilation, (ho, wo))[...] += dcols[:, p, q]
        order = (1, 0, 2, 3)
    dx = np.empty((n, c, *padded_hw), dtype=dy.dtype)
    np.copyto(dx, dx_t.transpose(order))
    return dx


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
    for t in range(kh * kw):
        p, q = divmod(t, kw)
        dx_pad[_window_slices(p, q, stride, dy.shape[2:])] += np.where(ctx == t, dy, 0)
    return dx_pad


def _tiles(shape, kernel_size, stride) -> bool:
    """Whether the pooling windows tile the (Hp, Wp) image exactly (LeNet's 2x2 every 2)."""
    (kh, kw), (sh, sw) = kernel_size, stride
    return (sh, sw) == (kh, kw) and shape[-2] % kh == 0 and shape[-1] % kw == 0


def _sum(parts):
    """The sum of a list of same-shape arrays, as a new array (one pass fewer than copy-and-add)."""
    total = parts[0] + parts[1] if len(parts) > 1 else parts[0].copy()
    for part in parts[2:]:
        total += part
    return total


def avgpool2d_forward(x_pad, kernel_size, stride):
    """Mean over each window (padding counts as zeros, as PyTorch's ``count_include_pad``):
    the kh rows of each window summed first (whole rows), then kw strided columns."""
    (kh, kw), (sh, sw) = kernel_size, stride
    n, c, hp, wp = x_pad.shape
    ho, wo = _out_hw((hp, wp), kernel_size, stride, (1, 1))
    if _tiles(x_pad.shape, kernel_size, stride) and x_pad.flags.c_contiguous:
        # windows that tile the image: rows of the image in groups of kh, then the row sums in
        # groups of kw, each a flat strided add over the whole batch
        groups = x_pad.reshape(n * c * ho, kh, wp)
        flat = _sum([groups[:, p] for p in range(kh)]).reshape(-1)     # (N*C*Ho*Wp,)
        y = _sum([flat[q::kw] for q in range(kw)])                      # (N*C*Ho*Wo,)
        y /= kh * kw
        return y.reshape(n, c, ho, wo), None
    rows = _sum([x_pad[:, :, p: p + sh * (ho - 1) + 1: sh] for p in range(kh)])  # (N, C, Ho, Wp)
    y = _sum([rows[..., q: q + sw * (wo - 1) + 1: sw] for q in range(kw)])       # (N, C, Ho, Wo)
    y /= kh * kw
    return y, None


def avgpool2d_backward(dy, ctx, kernel_size, stride, padded_hw):
    """Share each dy equally among its window: one strided write per kernel tap (an add where
    windows overlap)."""
    (kh, kw), (sh, sw) = kernel_size, stride
    n, c, ho, wo = dy.shape
    share = dy / (kh * kw)
    if _tiles(padded_hw, kernel_size, stride):
        # each share repeated kw times along a row, and that row written to the window's kh rows
        rows = np.repeat(share.reshape(-1), kw).reshape(n * c * ho, 1, wo * kw)
        dx_pad = np.empty((n * c * ho, kh, wo * kw), dtype=dy.dtype)
        dx_pad[...] = rows
        return dx_pad.reshape(n, c, *padded_hw)
    overlap = sh < kh or sw < kw
    dx_pad = np.zeros((n, c, *padded_hw), dtype=dy.dtype)
    for t in range(kh * kw):
        window_pixels = dx_pad[_window_slices(*divmod(t, kw), stride, dy.shape[2:])]
        if overlap:
            window_pixels += share
        else:
            window_pixels[...] = share
    return dx_pad
