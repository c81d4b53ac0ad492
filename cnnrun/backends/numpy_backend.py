"""Vectorised NumPy kernels in the batch-last layout: im2col by kernel tap, one matrix product per
conv product.

Same contract as :mod:`cnnrun.backends.reference` (the loops these are tested against): arrays
come in and go out with (N, C, H, W) shapes. What differs is where the elements lie in memory.

**Layout.** These kernels work on ``(C, H, W, N)`` arrays, the batch axis last (the layout
cuda-convnet used), and hand their results back as (N, C, H, W) *views* of such arrays. The
reason is NumPy's cost per inner loop. Every strided copy or add here runs over rows, and in
(N, C, H, W) a row of a LeNet-sized image is 10 to 28 elements long: the loop overhead, not the
elements, was the cost (copying LeNet conv2's columns was 25 * 6 * 256 * 10 rows of 10 elements
at batch 256). With the batch last, a row holds ``Wo * N`` elements (or N where a stride
interrupts them). Element-wise NumPy operations keep their input's layout, so the layers in
between (activations, bias, batch norm) pass it on and the next kernel gets its input for free;
an (N, C, H, W) array that arrives is transposed once, in one copy.

**Conv products** are :mod:`cnnrun.backends.numpy_conv`'s: im2col by kernel tap, in tiles of
output rows that stay in cache, one matrix product per tile.

Every product is single-threaded BLAS on a plan of blocks made from the shapes alone
(:mod:`cnnrun.backends.gemm`), so the bits do not depend on the thread count. Nothing here
scatters with ``np.add.at``, and every array stays in its input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# the activations: the element-wise kernels, shared with the numba backend
from .elementwise import (  # noqa: F401
    add,
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    select,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
from .numpy_conv import (  # noqa: F401
    ConvContext,
    Pair,
    _out_hw,
    batch_first,
    batch_last,
    conv2d_forward,
    conv2d_grad_input,
    conv2d_grad_weight,
    native,
    tap,
)
from .reference import (
    conv2d_grad_bias,  # noqa: F401 (one einsum in float64: any layout)
    pad2d,  # noqa: F401 (the padded array itself, x's layout kept)
)

NAME = "numpy"


def _pool_taps(kernel_size: Pair) -> list[Pair]:
    kh, kw = kernel_size
    return [(p, q) for p in range(kh) for q in range(kw)]


def _covers(padded_hw: Pair, kernel_size: Pair, stride: Pair) -> tuple[bool, bool]:
    """(overlap, tiles): whether pooling windows overlap, and whether they tile the image exactly
    (every pixel in exactly one window, as LeNet's 2x2 every 2)."""
    (kh, kw), (sh, sw), (hp, wp) = kernel_size, stride, padded_hw
    overlap = sh < kh or sw < kw
    tiles = (sh, sw) == (kh, kw) and hp % kh == 0 and wp % kw == 0
    return overlap, tiles


def _spread(
    dy_t: np.ndarray,
    route: Callable[[int], np.ndarray],
    kernel_size: Pair,
    stride: Pair,
    padded_hw: Pair,
) -> np.ndarray:
    """dX_pad (C, Hp, Wp, N) from what each kernel tap sends back, ``route(t)`` (C, Ho, Wo, N):
    one strided write per tap, an add where windows overlap."""
    overlap, tiles = _covers(padded_hw, kernel_size, stride)
    c, ho, wo, n = dy_t.shape
    dx_t = (np.empty if tiles else np.zeros)((c, *padded_hw, n), dtype=dy_t.dtype)
    for t, (p, q) in enumerate(_pool_taps(kernel_size)):
        pixels = tap(dx_t, p, q, stride, (1, 1), (0, ho), wo)
        if overlap:
            pixels += route(t)
        else:
            pixels[...] = route(t)
    return batch_first(dx_t)


def maxpool2d_forward(
    x_pad: np.ndarray, kernel_size: Pair, stride: Pair
) -> tuple[np.ndarray, np.ndarray]:
    """y = max over each window (NaN if it holds one); ctx = (C, Ho, Wo, N) index
    ``p * kw + q`` of the window's first maximum, or first NaN, as ``argmax`` gives."""
    out_hw = _out_hw(x_pad.shape[2:], kernel_size, stride, (1, 1))
    x_t = batch_last(x_pad)
    taps = [
        tap(x_t, p, q, stride, (1, 1), (0, out_hw[0]), out_hw[1])
        for p, q in _pool_taps(kernel_size)
    ]
    y_t = taps[0].copy()
    for v in taps[1:]:
        np.maximum(y_t, v, out=y_t)  # NaN propagates
    has_nan = bool(np.isnan(y_t).any())
    # the first tap that holds the maximum: last to first, ``arg += hit * (t - arg)`` moves arg
    # to t where tap t holds it (arithmetic: a select on a random mask stalls on branches)
    index = np.int8 if len(taps) <= 127 else np.int32  # a quarter of the bytes to pass over
    arg = np.zeros(y_t.shape, dtype=index)
    for t in range(len(taps) - 1, -1, -1):
        hit = taps[t] == y_t
        if has_nan:
            hit |= np.isnan(taps[t])  # only NaNs where y is NaN
        step = np.subtract(t, arg, dtype=index)
        step *= hit
        arg += step
    return batch_first(y_t), arg


def maxpool2d_backward(
    dy: np.ndarray, ctx: np.ndarray, kernel_size: Pair, stride: Pair, padded_hw: Pair
) -> np.ndarray:
    """Route each dy to its window's first maximum: one strided write per kernel tap."""
    dy_t = batch_last(dy)
    return _spread(dy_t, lambda t: select(ctx == t, dy_t), kernel_size, stride, padded_hw)


def _sum(parts: list[np.ndarray]) -> np.ndarray:
    """The sum of a list of same-shape arrays, as a new array (one pass fewer than copy-and-add)."""
    total = parts[0] + parts[1] if len(parts) > 1 else parts[0].copy()
    for part in parts[2:]:
        total += part
    return total


def avgpool2d_forward(
    x_pad: np.ndarray, kernel_size: Pair, stride: Pair
) -> tuple[np.ndarray, None]:
    """Mean over each window (padding counts as zeros, as PyTorch's ``count_include_pad``):
    the kh rows of each window summed first, then kw strided columns."""
    (kh, kw), (sh, sw) = kernel_size, stride
    ho, wo = _out_hw(x_pad.shape[2:], kernel_size, stride, (1, 1))
    x_t = batch_last(x_pad)  # (C, Hp, Wp, N)
    rows = _sum([x_t[:, p : p + sh * (ho - 1) + 1 : sh] for p in range(kh)])  # (C, Ho, Wp, N)
    y_t = _sum([rows[:, :, q : q + sw * (wo - 1) + 1 : sw] for q in range(kw)])  # (C, Ho, Wo, N)
    y_t /= kh * kw
    return batch_first(y_t), None


def avgpool2d_backward(
    dy: np.ndarray, ctx: None, kernel_size: Pair, stride: Pair, padded_hw: Pair
) -> np.ndarray:
    """Share each dy equally among the pixels of its window."""
    share = batch_last(dy) / (kernel_size[0] * kernel_size[1])
    return _spread(share, lambda t: share, kernel_size, stride, padded_hw)


def batchnorm2d_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    mean: np.ndarray | None = None,
    var: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`cnnrun.backends.reference.batchnorm2d_forward`, in fewer passes, on the rows
    (C, H*W*N) of the batch-last x: the means are row reductions over contiguous memory, the
    variance one product of the centred rows with themselves (no squared temporary), the
    centred x is normalised in place and y written once. y and xhat are batch-last."""
    x_t = batch_last(x)
    x2, dt = x_t.reshape(x_t.shape[0], -1), x.dtype  # (C, H*W*N)
    if mean is None:
        mean = x2.mean(axis=1)
        xhat = x2 - mean[:, None]
        var = np.einsum("cm,cm->c", xhat, xhat) / dt.type(x2.shape[1])  # biased
    else:
        xhat = x2 - mean[:, None]
    inv_std = 1 / np.sqrt(var + dt.type(eps))
    xhat *= inv_std[:, None]
    y = xhat * gamma[:, None]
    y += beta[:, None]
    return (
        batch_first(y.reshape(x_t.shape)),
        batch_first(xhat.reshape(x_t.shape)),
        mean,
        var,
        inv_std,
    )


def batchnorm2d_backward(
    dy: np.ndarray, xhat: np.ndarray, gamma: np.ndarray, inv_std: np.ndarray, training: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`cnnrun.backends.reference.batchnorm2d_backward`. With ``a = gamma * inv_std``
    per channel the training formula is ``dx = a dy - a mean(dy) - a mean(dy xhat) xhat``, and
    the two means are ``dbeta / m`` and ``dgamma / m``: two row reductions over the batch-last
    (C, H*W*N) rows, as in the forward, and a few passes."""
    xhat_t = batch_last(xhat)
    c = xhat_t.shape[0]
    xhat2, dy2 = xhat_t.reshape(c, -1), batch_last(dy).reshape(c, -1)
    dgamma = np.einsum("cm,cm->c", dy2, xhat2)
    dbeta = dy2.sum(axis=1)
    a = gamma * inv_std
    dx = dy2 * a[:, None]
    if training:
        m = dy2.shape[1]
        dx += xhat2 * (-a * dgamma / m)[:, None]
        dx += (-a * dbeta / m)[:, None]
    return batch_first(dx.reshape(xhat_t.shape)), dgamma, dbeta
