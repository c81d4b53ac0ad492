"""Plain-loop kernels: the definitions, written to be read.

Every loop here is the formula of the operation, one output element at a time. They are slow
and exist to be compared against: the tests hold the vectorised kernels to these. Shapes::

    x_pad (N, C, Hp, Wp)   padded layer input
    w     (F, C, kh, kw)   kernel, PyTorch layout
    y, dy (N, F, Ho, Wo)   output and its error
"""

from __future__ import annotations

import numpy as np

from .contract import Window, crop_window, padded

NAME = "reference"

Pair = tuple[int, int]


def pad2d(x: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    """x zero-padded by (top, bottom, left, right), laid out as x: the padded array itself."""
    return padded(x, pads)


def native(a: np.ndarray) -> np.ndarray:
    """The loops take any layout: ``a`` itself."""
    return a


def dilate(dy: np.ndarray, stride: Pair) -> np.ndarray:
    """Insert ``stride - 1`` zeros between the pixels of dy: (N, F, Ho, Wo) -> (N, F, Hd, Wd)."""
    n, f, ho, wo = dy.shape
    sh, sw = stride
    out = np.zeros((n, f, (ho - 1) * sh + 1, (wo - 1) * sw + 1), dtype=dy.dtype)
    out[:, :, ::sh, ::sw] = dy
    return out


def conv2d_forward(
    x_pad: np.ndarray,
    w: np.ndarray,
    stride: Pair,
    dilation: Pair,
    bias: np.ndarray | None = None,
) -> tuple[np.ndarray, None]:
    """``y[n, f, i, j] = sum_{c,p,q} x_pad[n, c, i*sh + p*dh, j*sw + q*dw] * w[f, c, p, q]``,
    plus ``bias[f]`` if given."""
    n, _, hp, wp = x_pad.shape
    f, _, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho = (hp - dh * (kh - 1) - 1) // sh + 1
    wo = (wp - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, f, ho, wo), dtype=x_pad.dtype)
    for b in range(n):
        for o in range(f):
            for i in range(ho):
                for j in range(wo):
                    # the (C, kh, kw) patch under the kernel at output pixel (i, j)
                    patch = x_pad[
                        b,
                        :,
                        i * sh : i * sh + dh * (kh - 1) + 1 : dh,
                        j * sw : j * sw + dw * (kw - 1) + 1 : dw,
                    ]
                    y[b, o, i, j] = np.sum(patch * w[o])
    if bias is not None:
        y += bias.astype(y.dtype, copy=False)[None, :, None, None]
    return y, None


def conv2d_grad_weight(
    x_pad: np.ndarray,
    ctx: None,
    dy: np.ndarray,
    kernel_size: Pair,
    stride: Pair,
    dilation: Pair,
) -> np.ndarray:
    """dW: the *valid* cross-correlation of x_pad with dy dilated by the stride.

    ``dW[f, c, p, q] = sum_n sum_{u,v} x_pad[n, c, p*dh + u, q*dw + v] * dyd[n, f, u, v]``,
    where ``dyd = dilate(dy, stride)`` of size (Hd, Wd) slides over x_pad as the "kernel" and
    the kernel taps ``(p, q)`` are its valid positions, ``dilation`` apart.
    """
    kh, kw = kernel_size
    dh, dw = dilation
    dyd = dilate(dy, stride)
    _, f, hd, wd = dyd.shape
    c = x_pad.shape[1]
    dW = np.zeros((f, c, kh, kw), dtype=dy.dtype)
    for o in range(f):
        for ch in range(c):
            for p in range(kh):
                for q in range(kw):
                    window = x_pad[:, ch, p * dh : p * dh + hd, q * dw : q * dw + wd]
                    dW[o, ch, p, q] = np.sum(window * dyd[:, o])
    return dW


def conv2d_grad_bias(dy: np.ndarray) -> np.ndarray:
    """db (F,) = dY summed over (N, Ho, Wo), in float64 (about 0.3 ms per million values)."""
    return np.einsum("nfhw->f", dy, dtype=np.float64).astype(dy.dtype, copy=False)


def conv2d_grad_input(
    dy: np.ndarray,
    w: np.ndarray,
    stride: Pair,
    dilation: Pair,
    padded_hw: Pair,
    window: Window | None = None,
) -> np.ndarray:
    """dX_pad: the *full* convolution of the dilated dy with w, summed over the filters.

    A full convolution is a correlation with the kernel rotated by 180 degrees over dy padded by
    the kernel's span ``d(k - 1)`` on every side (plus, at the bottom/right, the rows and columns
    of x_pad that no window reached when the stride does not divide the size evenly):
    ``dx_pad[n, c, i, j] = sum_{f,p,q} dyd_full[n, f, i + p*dh, j + q*dw] * w_rot[f, c, p, q]``
    with ``w_rot[f, c, p, q] = w[f, c, kh-1-p, kw-1-q]``.
    The caller crops the forward padding off the (N, C, Hp, Wp) result, or asks for its
    ``window`` alone (cut from the whole result here).
    """
    f, c, kh, kw = w.shape
    dh, dw = dilation
    hp, wp = padded_hw
    dyd = dilate(dy, stride)
    n, _, hd, wd = dyd.shape
    span_h, span_w = dh * (kh - 1), dw * (kw - 1)
    # full padding on each side (plus the rows/cols that no window reached, at the bottom/right)
    dyd_full = np.pad(dyd, ((0, 0), (0, 0), (span_h, hp - hd), (span_w, wp - wd)))
    w_rot = w[:, :, ::-1, ::-1]  # rotate the kernel 180 degrees
    dx_pad = np.zeros((n, c, hp, wp), dtype=dy.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(hp):
                for j in range(wp):
                    patch = dyd_full[b, :, i : i + span_h + 1 : dh, j : j + span_w + 1 : dw]
                    dx_pad[b, ch, i, j] = np.sum(patch * w_rot[:, ch])
    return crop_window(dx_pad, window)


def maxpool2d_forward(
    x_pad: np.ndarray, kernel_size: Pair, stride: Pair
) -> tuple[np.ndarray, np.ndarray]:
    """``y = max`` over each window; ``ctx`` holds the flat index of the first maximum."""
    n, c, hp, wp = x_pad.shape
    (kh, kw), (sh, sw) = kernel_size, stride
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    y = np.empty((n, c, ho, wo), dtype=x_pad.dtype)
    arg = np.empty((n, c, ho, wo), dtype=np.intp)
    for b in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    window = x_pad[b, ch, i * sh : i * sh + kh, j * sw : j * sw + kw]
                    arg[b, ch, i, j] = np.argmax(window)  # first maximum wins ties
                    y[b, ch, i, j] = window.flat[arg[b, ch, i, j]]
    return y, arg


def maxpool2d_backward(
    dy: np.ndarray, ctx: np.ndarray, kernel_size: Pair, stride: Pair, padded_hw: Pair
) -> np.ndarray:
    """Each dy goes to the one input pixel that was the (first) maximum of its window."""
    n, c, ho, wo = dy.shape
    (_, kw), (sh, sw) = kernel_size, stride
    dx_pad = np.zeros((n, c, *padded_hw), dtype=dy.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    p, q = divmod(int(ctx[b, ch, i, j]), kw)
                    dx_pad[b, ch, i * sh + p, j * sw + q] += dy[b, ch, i, j]
    return dx_pad


def avgpool2d_forward(
    x_pad: np.ndarray, kernel_size: Pair, stride: Pair
) -> tuple[np.ndarray, None]:
    """Mean over each window; padding counts as zeros (PyTorch's ``count_include_pad=True``)."""
    n, c, hp, wp = x_pad.shape
    (kh, kw), (sh, sw) = kernel_size, stride
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    y = np.empty((n, c, ho, wo), dtype=x_pad.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    y[b, ch, i, j] = np.mean(
                        x_pad[b, ch, i * sh : i * sh + kh, j * sw : j * sw + kw]
                    )
    return y, None


def avgpool2d_backward(
    dy: np.ndarray, ctx: None, kernel_size: Pair, stride: Pair, padded_hw: Pair
) -> np.ndarray:
    """Each dy is shared equally by the ``kh * kw`` pixels of its window."""
    n, c, ho, wo = dy.shape
    (kh, kw), (sh, sw) = kernel_size, stride
    dx_pad = np.zeros((n, c, *padded_hw), dtype=dy.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    dx_pad[b, ch, i * sh : i * sh + kh, j * sw : j * sw + kw] += dy[b, ch, i, j] / (
                        kh * kw
                    )
    return dx_pad


def batchnorm2d_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    mean: np.ndarray | None = None,
    var: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel of (N, C, H, W); with the
    batch's mean and biased variance over (N, H, W) when ``mean`` is None (training), the given
    ones otherwise. Returns (y, xhat, mean, var, inv_std), the last three (C,)."""
    if mean is None:
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    inv_std = 1 / np.sqrt(var + x.dtype.type(eps))
    xhat = (x - mean[None, :, None, None]) * inv_std[None, :, None, None]
    y = xhat * gamma[None, :, None, None] + beta[None, :, None, None]
    return y, xhat, mean, var, inv_std


def batchnorm2d_backward(
    dy: np.ndarray, xhat: np.ndarray, gamma: np.ndarray, inv_std: np.ndarray, training: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dgamma, dbeta). In training, with the means over (N, H, W)::

        dxhat = dy * gamma
        dx    = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) * inv_std

    (the batch's mean and variance depend on x too); in eval, ``dx = dxhat * inv_std``."""
    dgamma = (dy * xhat).sum(axis=(0, 2, 3))
    dbeta = dy.sum(axis=(0, 2, 3))
    dxhat = dy * gamma[None, :, None, None]
    if training:
        dxhat = (
            dxhat
            - dxhat.mean(axis=(0, 2, 3), keepdims=True)
            - xhat * (dxhat * xhat).mean(axis=(0, 2, 3), keepdims=True)
        )
    return dxhat * inv_std[None, :, None, None], dgamma, dbeta


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b``."""
    return a + b


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y = x`` where ``x > 0``, else 0; NaN stays NaN (``NaN <= 0`` is false). ctx is x."""
    return np.where(x <= 0, x.dtype.type(0), x), x


def relu_backward(dy: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """``dx = dy`` where ``x > 0``, else 0."""
    return np.where(ctx > 0, dy, dy.dtype.type(0))


def leaky_relu_forward(x: np.ndarray, negative_slope: float) -> tuple[np.ndarray, np.ndarray]:
    """``y = x`` where ``x > 0``, else ``negative_slope * x``. ctx is (x, negative_slope)."""
    a = x.dtype.type(negative_slope)
    return np.where(x > 0, x, a * x), (x, a)


def leaky_relu_backward(dy: np.ndarray, ctx: tuple[np.ndarray, float]) -> np.ndarray:
    """``dx = dy`` where ``x > 0``, else ``negative_slope * dy``."""
    x, a = ctx
    return np.where(x > 0, dy, a * dy)


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y = tanh(x)``. ctx is y."""
    y = np.tanh(x)
    return y, y


def tanh_backward(dy: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """``dx = dy * (1 - y^2)``."""
    return dy * (1 - ctx * ctx)


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y = 1 / (1 + exp(-x))`` (exp overflows to inf for very negative x: y is then 0).
    ctx is y."""
    with np.errstate(over="ignore"):
        y = (1 / (1 + np.exp(-x))).astype(x.dtype, copy=False)
    return y, y


def sigmoid_backward(dy: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """``dx = dy * y * (1 - y)``."""
    return dy * ctx * (1 - ctx)
