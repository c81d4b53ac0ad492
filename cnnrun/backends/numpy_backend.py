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

**Conv products.** The column matrix is laid out ``cols (C, kh, kw, Ho, Wo, N)``: row
``(c, p, q)`` holds the input pixels that kernel tap ``(p, q)`` of channel c meets, for every
output pixel. It is filled with one strided copy per tap, and then:

* forward: ``y = W (F, C*kh*kw) @ cols`` -> (F, Ho, Wo, N), already batch-last;
* dW, the valid correlation of x_pad with dY: ``dW.T = cols @ dY.T``, a reduction over all
  ``Ho*Wo*N`` output pixels, with the forward's cols kept as the context (the copy is made once
  per step). For a short kernel axis (``C*kh*kw <= 32``, LeNet's conv1) the reduction runs in
  blocks of 512 pixels, one small product each, summed in a fixed order: OpenBLAS was 3 times
  slower on the single long product;
* dX, the full convolution of dY with the kernel: ``dcols = W.T @ dY`` -> (C, kh, kw, Ho, Wo,
  N) holds, for every tap, what that tap sends back to the pixels it met; adding each tap's block
  into those pixels (one strided add per tap: col2im) sums, for each input pixel, the
  ``w[f, c, p, q] * dy[n, f, i, j]`` of every window that covered it. That is the correlation of
  the zero-padded, stride-dilated dY with the rotated kernel, without building either.

Every product goes through :func:`cnnrun.backends.gemm.matmul`: single-threaded BLAS calls on
a fixed plan of blocks, so the bits do not depend on the thread count. Nothing here scatters
with ``np.add.at``, and every array stays in its input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# the activations: the element-wise kernels, shared with the numba backend
from .elementwise import (  # noqa: F401
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
from .gemm import matmul

NAME = "numpy"
Pair = tuple[int, int]
# dW's reduction runs in blocks of this many output pixels when the kernel axis is this short
SHORT_KERNEL_AXIS = 32
REDUCTION_BLOCK = 512


def batch_last(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> a C-contiguous (C, H, W, N) array: a view where ``a`` is already laid out
    batch-last, one transposing copy otherwise."""
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0))  # (N, C, H, W) -> (C, H, W, N)


def batch_first(a_t: np.ndarray) -> np.ndarray:
    """(C, H, W, N) -> the (N, C, H, W) view of the same memory."""
    return a_t.transpose(3, 0, 1, 2)  # (C, H, W, N) -> (N, C, H, W), a view


def native(a: np.ndarray) -> np.ndarray:
    """An (N, C, H, W) array laid out as these kernels want it, batch-last: a view of ``a``'s
    memory where it already is, one copy otherwise. A layer that hands one array to several
    kernels converts it once."""
    return batch_first(batch_last(a))


def _out_hw(padded_hw: Pair, kernel: Pair, stride: Pair, dilation: Pair) -> Pair:
    return tuple(
        (p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(padded_hw, kernel, stride, dilation)
    )


def tap(a_t: np.ndarray, p: int, q: int, stride: Pair, dilation: Pair, out_hw: Pair) -> np.ndarray:
    """The pixels of a (C, H, W, N) array that kernel tap (p, q) meets, one per output pixel:
    a strided view (C, Ho, Wo, N)."""
    (sh, sw), (dh, dw), (ho, wo) = stride, dilation, out_hw
    return a_t[
        :, p * dh : p * dh + sh * (ho - 1) + 1 : sh, q * dw : q * dw + sw * (wo - 1) + 1 : sw
    ]


def im2col(x_t: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair) -> np.ndarray:
    """(C, Hp, Wp, N) -> cols (C, kh, kw, Ho, Wo, N): one strided copy per kernel tap."""
    c, n = x_t.shape[0], x_t.shape[3]
    kh, kw = kernel
    cols = np.empty((c, kh, kw, *out_hw, n), dtype=x_t.dtype)
    for p in range(kh):
        for q in range(kw):
            np.copyto(cols[:, p, q], tap(x_t, p, q, stride, dilation, out_hw))
    return cols


def conv2d_forward(
    x_pad: np.ndarray, w: np.ndarray, stride: Pair, dilation: Pair
) -> tuple[np.ndarray, np.ndarray]:
    """y (N, F, Ho, Wo) = W (F, C*kh*kw) @ cols (C*kh*kw, Ho*Wo*N); ctx is the cols."""
    f, c, kh, kw = w.shape
    n = x_pad.shape[0]
    ho, wo = _out_hw(x_pad.shape[2:], (kh, kw), stride, dilation)
    cols = im2col(batch_last(x_pad), (kh, kw), stride, dilation, (ho, wo))
    w = w.astype(x_pad.dtype, copy=False)
    # (F, C, kh, kw) -> (F, C*kh*kw) and (C, kh, kw, Ho, Wo, N) -> (C*kh*kw, Ho*Wo*N)
    y_t = matmul(w.reshape(f, c * kh * kw), cols.reshape(c * kh * kw, ho * wo * n))
    return batch_first(y_t.reshape(f, ho, wo, n)), cols  # (F, Ho*Wo*N) -> (F, Ho, Wo, N)


def _product_over_pixels(cols: np.ndarray, dy_t: np.ndarray) -> np.ndarray:
    """``cols (K, M) @ dy_t (F, M).T`` -> (K, F), the sum over M output pixels; in blocks of
    :data:`REDUCTION_BLOCK` pixels, added in order, when K is short (see the module's notes)."""
    k, m = cols.shape
    blocks = m // REDUCTION_BLOCK
    if k > SHORT_KERNEL_AXIS or blocks < 2:
        return matmul(cols, dy_t.T)  # (K, M) @ (M, F)
    split = blocks * REDUCTION_BLOCK
    # views: (K, B*512) -> (K, B, 512) -> (B, K, 512) and (F, B*512) -> (F, B, 512) -> (B, 512, F)
    cols_b = cols[:, :split].reshape(k, blocks, REDUCTION_BLOCK).transpose(1, 0, 2)
    dy_b = dy_t[:, :split].reshape(dy_t.shape[0], blocks, REDUCTION_BLOCK).transpose(1, 2, 0)
    total = matmul(cols_b, dy_b).sum(axis=0)  # (K, F)
    if split < m:
        total += matmul(cols[:, split:], dy_t[:, split:].T)  # (K, rest) @ (rest, F)
    return total


def conv2d_grad_weight(
    x_pad: np.ndarray,
    ctx: np.ndarray | None,
    dy: np.ndarray,
    kernel_size: Pair,
    stride: Pair,
    dilation: Pair,
) -> np.ndarray:
    """dW = valid correlation of x_pad with dilate(dy): ``cols @ dY.T`` over every output pixel."""
    n, f, ho, wo = dy.shape
    c = x_pad.shape[1]
    cols = (
        ctx
        if ctx is not None
        else im2col(batch_last(x_pad), kernel_size, stride, dilation, (ho, wo))
    )
    k = c * kernel_size[0] * kernel_size[1]
    # (C, kh, kw, Ho, Wo, N) -> (C*kh*kw, Ho*Wo*N) and dy (N, F, Ho, Wo) -> (F, Ho*Wo*N)
    dW_t = _product_over_pixels(cols.reshape(k, ho * wo * n), batch_last(dy).reshape(f, -1))
    return dW_t.T.reshape(f, c, *kernel_size)  # (C*kh*kw, F) -> (F, C, kh, kw)


def conv2d_grad_input(
    dy: np.ndarray, w: np.ndarray, stride: Pair, dilation: Pair, padded_hw: Pair
) -> np.ndarray:
    """dX_pad (N, C, Hp, Wp) = full convolution of dilate(dy) with w (rotated 180 degrees),
    summed over F: ``dcols = W.T @ dY``, then each tap's block added back where it was read."""
    f, c, kh, kw = w.shape
    n, _, ho, wo = dy.shape
    w = w.astype(dy.dtype, copy=False)
    # (F, C, kh, kw) -> (C*kh*kw, F) and dy (N, F, Ho, Wo) -> (F, Ho*Wo*N)
    dcols = matmul(w.reshape(f, c * kh * kw).T, batch_last(dy).reshape(f, ho * wo * n))
    dcols = dcols.reshape(c, kh, kw, ho, wo, n)  # (C*kh*kw, Ho*Wo*N) -> (C, kh, kw, Ho, Wo, N)
    dx_t = np.zeros((c, *padded_hw, n), dtype=dy.dtype)
    for p in range(kh):
        for q in range(kw):
            tap(dx_t, p, q, stride, dilation, (ho, wo))[...] += dcols[:, p, q]
    return batch_first(dx_t)


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
        pixels = tap(dx_t, p, q, stride, (1, 1), (ho, wo))
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
    taps = [tap(x_t, p, q, stride, (1, 1), out_hw) for p, q in _pool_taps(kernel_size)]
    y_t = taps[0].copy()
    for v in taps[1:]:
        np.maximum(y_t, v, out=y_t)  # NaN propagates
    has_nan = bool(np.isnan(y_t).any())
    # the first tap that holds the maximum: last to first, ``arg += hit * (t - arg)`` moves arg
    # to t where tap t holds it (arithmetic: a select on a random mask stalls on branches)
    arg = np.zeros(y_t.shape, dtype=np.int32)
    for t in range(len(taps) - 1, -1, -1):
        hit = taps[t] == y_t
        if has_nan:
            hit |= np.isnan(taps[t])  # only NaNs where y is NaN
        step = np.subtract(t, arg, dtype=np.int32)
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


def _per_channel(v: np.ndarray) -> np.ndarray:
    return v[None, :, None, None]  # (C,) -> (1, C, 1, 1)


def batchnorm2d_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    mean: np.ndarray | None = None,
    var: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`cnnrun.backends.reference.batchnorm2d_forward`, in fewer passes: the centred x
    is normalised in place and y written once; every array keeps x's layout."""
    if mean is None:
        mean = x.mean(axis=(0, 2, 3))
        xhat = x - _per_channel(mean)
        var = np.square(xhat).mean(axis=(0, 2, 3))  # biased
    else:
        xhat = x - _per_channel(mean)
    inv_std = 1 / np.sqrt(var + x.dtype.type(eps))
    xhat *= _per_channel(inv_std)
    y = xhat * _per_channel(gamma)
    y += _per_channel(beta)
    return y, xhat, mean, var, inv_std


def batchnorm2d_backward(
    dy: np.ndarray, xhat: np.ndarray, gamma: np.ndarray, inv_std: np.ndarray, training: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`cnnrun.backends.reference.batchnorm2d_backward`. With ``a = gamma * inv_std``
    per channel the training formula is ``dx = a dy - a mean(dy) - a mean(dy xhat) xhat``, and
    the two means are ``dbeta / m`` and ``dgamma / m``: two reductions and a few passes."""
    dgamma = np.einsum("nchw,nchw->c", dy, xhat)
    dbeta = dy.sum(axis=(0, 2, 3))
    a = gamma * inv_std
    dx = dy * _per_channel(a)
    if training:
        m = dy.size // dy.shape[1]
        dx += xhat * _per_channel(-a * dgamma / m)
        dx += _per_channel(-a * dbeta / m)
    return dx, dgamma, dbeta
