"""The NumPy backend's conv kernels, in the batch-last layout (see
:mod:`cnnrun.backends.numpy_backend`): im2col by kernel tap, in tiles of output rows.

**Column matrix.** ``cols (C, kh, kw, Ho, Wo, N)``: row ``(c, p, q)`` holds the input pixels that
kernel tap ``(p, q)`` of channel c meets, for every output pixel, filled with one strided copy
per tap. Then:

* forward: ``y = W (F, C*kh*kw) @ cols`` -> (F, Ho, Wo, N), already batch-last;
* dW, the valid correlation of x_pad with dY: ``dW.T = cols @ dY.T``, a reduction over all
  ``Ho*Wo*N`` output pixels. For a short kernel axis (``C*kh*kw <= 32``, LeNet's conv1) the
  reduction runs in blocks of 512 pixels, one small product each, summed in a fixed order:
  OpenBLAS was 3 times slower on the single long product;
* dX, the full convolution of dY with the kernel: ``dcols = W.T @ dY`` -> (C, kh, kw, Ho, Wo,
  N) holds, for every tap, what that tap sends back to the pixels it met; adding each tap's block
  into those pixels (one strided add per tap: col2im) sums, for each input pixel, the
  ``w[f, c, p, q] * dy[n, f, i, j]`` of every window that covered it. That is the correlation of
  the zero-padded, stride-dilated dY with the rotated kernel, without building either. For a
  stride of 1 that correlation is built after all where dX_pad has at most :data:`FULL_BORDER`
  times dY's pixels: a forward conv of the padded dY, whose product has F*kh*kw terms per
  element where col2im's has F (16 in ResNet-20's first stage: 4.7 -> 3.6 ms there).

**Tiles.** Made whole, a column matrix is large (ResNet-20's 16-channel 3x3 convs at batch 64:
144 x 65536 floats, 38 MB): its copy went out to memory and the product read it back, and dX's
dcols as large again. So the forward makes it in tiles of output rows of about :data:`TILE`
elements (1 MiB), each copied and multiplied at once by one thread, while it is in that core's
cache; the tiles run on the gemm pool (:func:`cnnrun.backends.gemm.run_tasks`). A column matrix
of up to :data:`KEEP_COLS` elements is kept whole for dW (one product, cut by the gemm plan);
a larger one is made again, tile by tile, in dW, each tile's partial sum added in tile order.
dX, above :data:`WHOLE_DX` elements of dcols, runs per channel group, each group's tiles in
order on one thread (the tiles of a group add into overlapping pixels). Measured on 2 cores,
batch 64, ResNet-20's 3x3 convs, ms before -> after (forward, dW, dX): 16 channels at 32x32
7.7 -> 2.8, 3.3 -> 3.0, 11.4 -> 4.7; 32 at 16x16 3.3 -> 2.4, 2.7 -> 2.4, 4.5 -> 3.5; 64 at 8x8
2.9 -> 2.6, 2.0 -> 1.9, 3.2 -> 2.5 (on a machine shared with other jobs: the ratios hold, the
figures are high). The whole step went from 285 to 223 ms, and to about 200 ms with dX's
correlation; PyTorch's (oneDNN, AVX-512) takes about 85 ms, and OpenBLAS's Haswell sgemm, which
NumPy's build picks on this machine, gives 60-110 GFLOPS a core on these shapes: the step's
conv products, about 15.6 GFLOP, take 70-130 ms at those rates on 2 cores.

**Small products.** The forward's and dX's products of few filters are short and wide,
(16, 144) @ (144, thousands of pixels): where OpenBLAS's AVX-512 kernel has its faster path
for small products, each is made in blocks of columns within it
(:func:`cnnrun.backends.gemm.product_into`). Measured on 2 cores of an AMD EPYC with
AVX-512, batch 64, the same process switching it on and off, median speed-up of
forward+backward: LeNet's conv1 1.24, 16 to 32 channels at 32x32 1.09 and at 16x16 1.15, 32
to 64 at 16x16 1.03; 64 to 64 channels make products too long for it and stay one call.
Steps: LeNet 1.03 (batch 64) and 1.08 (256), vgg_small 1.10, ResNet-20 1.06.

Every product is single-threaded BLAS on a plan of blocks or tiles made from the shapes alone,
so the bits do not depend on the thread count; each tile writes its own slice of the result.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .contract import Window, crop_window
from .gemm import BLOCK_WORK, matmul, product_into, run_tasks

Pair = tuple[int, int]
# dW's reduction runs in blocks of this many output pixels when the kernel axis is this short
SHORT_KERNEL_AXIS = 32
REDUCTION_BLOCK = 512
# a tile of a column matrix holds about this many elements (1 MiB of float32: a core's L2)
TILE = 1 << 18
# conv2d_forward keeps a column matrix of at most this many elements (16 MiB of float32) for
# dW, which then makes one product of it; larger ones are made again, tile by tile
KEEP_COLS = 1 << 22
# dX's products and col2im run whole up to this many elements of dcols, else in tiles
WHOLE_DX = 1 << 21
# dX of a stride-1 conv is a correlation of the padded dY where dX_pad has at most this many
# times dY's pixels (a 3x3 conv on 16x16 maps: 1.27; on 8x8: 1.56, where col2im was faster)
FULL_BORDER = 1.3
# dX's col2im runs in this many channel groups, one task each (the tiles of a group add into
# the same pixels, so they run in order on one thread)
DX_GROUPS = 4


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


def tap(a_t: np.ndarray, p: int, q: int, stride: Pair, dilation: Pair, rows: Pair, wo: int):
    """The pixels of a (C, H, W, N) array that kernel tap (p, q) meets for the output rows
    ``range(*rows)`` and all Wo output columns: a strided view (C, rows, Wo, N)."""
    (sh, sw), (dh, dw), (i0, i1) = stride, dilation, rows
    top, left = p * dh + sh * i0, q * dw
    return a_t[:, top : top + sh * (i1 - i0 - 1) + 1 : sh, left : left + sw * (wo - 1) + 1 : sw]


class _Tiles(NamedTuple):
    """How a conv's column matrix is cut: ``rows`` output rows per tile (the last one may have
    fewer); made from the shapes alone."""

    kernel: Pair
    stride: Pair
    dilation: Pair
    ho: int
    wo: int
    rows: int

    def spans(self) -> list[Pair]:
        """Output rows ``[i0, i1)`` of each tile."""
        return [(i, min(i + self.rows, self.ho)) for i in range(0, self.ho, self.rows)]


def _tiles(
    c: int, f: int, n: int, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair
) -> _Tiles:
    """Tiles of about :data:`TILE` elements of the column matrix of ``c`` channels, and at least
    :data:`cnnrun.backends.gemm.BLOCK_WORK` multiply-adds of its product with ``f`` filters:
    each tile costs a copy per kernel tap and a hand-over to a thread (with 1-MiB tiles alone,
    LeNet's two forward convs at batch 64 made 275 copies in place of 50, and its step went
    from about 4.4 to 5.3 ms)."""
    row = c * kernel[0] * kernel[1] * out_hw[1] * n  # elements of one output row of it
    rows = max(TILE // row, -(-BLOCK_WORK // (row * f)), 1)
    return _Tiles(kernel, stride, dilation, *out_hw, min(out_hw[0], rows))


def _tile_cols(x_t: np.ndarray, tiles: _Tiles, rows: Pair, kept: np.ndarray | None = None):
    """The column matrix of output rows ``rows``: (C*kh*kw, r*Wo*N), one strided copy per
    kernel tap, into a fresh (cache-sized) array or into those rows of ``kept``, the whole
    (C, kh, kw, Ho, Wo, N) column matrix."""
    c, n = x_t.shape[0], x_t.shape[3]
    (kh, kw), r = tiles.kernel, rows[1] - rows[0]
    if kept is None:
        cols = np.empty((c, kh, kw, r, tiles.wo, n), dtype=x_t.dtype)
    else:
        cols = kept[:, :, :, rows[0] : rows[1]]
    for p in range(kh):
        for q in range(kw):
            view = tap(x_t, p, q, tiles.stride, tiles.dilation, rows, tiles.wo)
            np.copyto(cols[:, p, q], view)
    return cols.reshape(c * kh * kw, r * tiles.wo * n)


def _pixels(a_t: np.ndarray, rows: Pair) -> np.ndarray:
    """Output rows ``rows`` of a (F, Ho, Wo, N) array as an (F, r*Wo*N) view."""
    return a_t[:, rows[0] : rows[1]].reshape(a_t.shape[0], -1)


class ConvContext(NamedTuple):
    """What conv2d_forward keeps for conv2d_grad_weight: x_pad laid out (C, Hp, Wp, N), and
    the whole column matrix (C, kh, kw, Ho, Wo, N) where it holds at most :data:`KEEP_COLS`
    elements (None otherwise: dW makes its tiles again)."""

    x_t: np.ndarray
    cols: np.ndarray | None


def conv2d_forward(
    x_pad: np.ndarray,
    w: np.ndarray,
    stride: Pair,
    dilation: Pair,
    bias: np.ndarray | None = None,
) -> tuple[np.ndarray, ConvContext]:
    """y (N, F, Ho, Wo) = W (F, C*kh*kw) @ cols, one tile of output rows at a time; plus the
    bias (F,) if given."""
    f, c, kh, kw = w.shape
    x_t = batch_last(x_pad)
    n, out_hw = x_t.shape[3], _out_hw(x_pad.shape[2:], (kh, kw), stride, dilation)
    tiles = _tiles(c, f, n, (kh, kw), stride, dilation, out_hw)
    kept = None
    if c * kh * kw * out_hw[0] * out_hw[1] * n <= KEEP_COLS:
        kept = np.empty((c, kh, kw, *out_hw, n), dtype=x_t.dtype)
    y_t = _correlate(x_t, w.astype(x_pad.dtype, copy=False), tiles, kept)
    if bias is not None:
        y_t += bias.astype(y_t.dtype, copy=False)[:, None, None, None]
    return batch_first(y_t), ConvContext(x_t, kept)


def _correlate(x_t: np.ndarray, w: np.ndarray, tiles: _Tiles, kept: np.ndarray | None):
    """y_t (F, Ho, Wo, N) = W (F, C*kh*kw) @ cols of x_t (C, Hp, Wp, N), tile by tile (the
    columns written into ``kept`` where given)."""
    f = w.shape[0]
    w2 = w.reshape(f, -1)
    y_t = np.empty((f, tiles.ho, tiles.wo, x_t.shape[3]), dtype=x_t.dtype)
    spans = tiles.spans()

    def tile(t: int) -> None:
        cols = _tile_cols(x_t, tiles, spans[t], kept)
        product_into(w2, cols, _pixels(y_t, spans[t]))

    run_tasks(tile, len(spans))
    return y_t


def _product_over_pixels(cols: np.ndarray, dy_t: np.ndarray, dot=np.matmul) -> np.ndarray:
    """``cols (K, M) @ dy_t (F, M).T`` -> (K, F), the sum over M output pixels; in blocks of
    :data:`REDUCTION_BLOCK` pixels, added in order, when K is short (see the module's notes).
    ``dot``: :func:`cnnrun.backends.gemm.matmul` outside a tile, a plain product inside one."""
    k, m = cols.shape
    blocks = m // REDUCTION_BLOCK
    if k > SHORT_KERNEL_AXIS or blocks < 2:
        return dot(cols, dy_t.T)  # (K, M) @ (M, F)
    split = blocks * REDUCTION_BLOCK
    # views: (K, B*512) -> (K, B, 512) -> (B, K, 512) and (F, B*512) -> (F, B, 512) -> (B, 512, F)
    cols_b = cols[:, :split].reshape(k, blocks, REDUCTION_BLOCK).transpose(1, 0, 2)
    dy_b = dy_t[:, :split].reshape(dy_t.shape[0], blocks, REDUCTION_BLOCK).transpose(1, 2, 0)
    total = dot(cols_b, dy_b).sum(axis=0)  # (K, F)
    if split < m:
        total += dot(cols[:, split:], dy_t[:, split:].T)  # (K, rest) @ (rest, F)
    return total


def conv2d_grad_weight(
    x_pad: np.ndarray,
    ctx: np.ndarray | None,
    dy: np.ndarray,
    kernel_size: Pair,
    stride: Pair,
    dilation: Pair,
) -> np.ndarray:
    """dW = valid correlation of x_pad with dilate(dy): ``cols @ dY.T`` over every output pixel,
    one partial sum per tile (its columns made again), the partials added in tile order."""
    n, f, ho, wo = dy.shape
    ctx = ctx if ctx is not None else ConvContext(batch_last(x_pad), None)
    x_t, dy_t = ctx.x_t, batch_last(dy)
    c = x_t.shape[0]
    if ctx.cols is not None:  # (C, kh, kw, Ho, Wo, N) -> (C*kh*kw, Ho*Wo*N), dy_t alike
        k = c * kernel_size[0] * kernel_size[1]
        dW_t = _product_over_pixels(ctx.cols.reshape(k, -1), dy_t.reshape(f, -1), matmul)
        return dW_t.T.reshape(f, c, *kernel_size)
    tiles = _tiles(c, f, n, kernel_size, stride, dilation, (ho, wo))
    spans = tiles.spans()
    parts = np.empty((len(spans), c * kernel_size[0] * kernel_size[1], f), dtype=dy.dtype)

    def tile(t: int) -> None:
        cols = _tile_cols(x_t, tiles, spans[t])
        parts[t] = _product_over_pixels(cols, _pixels(dy_t, spans[t]))

    run_tasks(tile, len(spans))
    dW_t = parts[0] if len(spans) == 1 else parts.sum(axis=0)  # (C*kh*kw, F)
    return dW_t.T.reshape(f, c, *kernel_size)  # (C*kh*kw, F) -> (F, C, kh, kw)


def _col2im(dx_t: np.ndarray, dcols: np.ndarray, tiles: _Tiles, rows: Pair) -> None:
    """Add each tap's block of dcols (C*kh*kw, r*Wo*N) into the pixels of dx_t (C, Hp, Wp, N)
    that it was read from for the output rows ``rows``: one strided add per tap."""
    (kh, kw), r = tiles.kernel, rows[1] - rows[0]
    dcols = dcols.reshape(dx_t.shape[0], kh, kw, r, tiles.wo, dx_t.shape[3])
    for p in range(kh):
        for q in range(kw):
            tap(dx_t, p, q, tiles.stride, tiles.dilation, rows, tiles.wo)[...] += dcols[:, p, q]


def _border(padded_hw: Pair, out_hw: Pair) -> float:
    """How many more pixels dX_pad has than dY: the extra work of computing it as a
    correlation of the zero-padded dY, which makes every pixel of dX_pad."""
    return padded_hw[0] * padded_hw[1] / (out_hw[0] * out_hw[1])


def _full_correlation(dy_t: np.ndarray, w: np.ndarray, dilation: Pair) -> np.ndarray:
    """dX_pad (C, Hp, Wp, N) for stride 1: dY (F, Ho, Wo, N) zero-padded by the kernel's span
    on every side, correlated with w rotated 180 degrees, (C, F, kh, kw): a forward conv whose
    product has F*kh*kw terms (col2im's has F, and more elements to add back)."""
    f, c, kh, kw = w.shape
    (dh, dw), (_, ho, wo, n) = dilation, dy_t.shape
    sh, sw = dh * (kh - 1), dw * (kw - 1)
    dy_pad = np.zeros((f, ho + 2 * sh, wo + 2 * sw, n), dtype=dy_t.dtype)
    dy_pad[:, sh : sh + ho, sw : sw + wo] = dy_t
    w_rot = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), dtype=dy_t.dtype)
    tiles = _tiles(f, c, n, (kh, kw), (1, 1), dilation, (ho + sh, wo + sw))
    return _correlate(dy_pad, w_rot, tiles, None)


def conv2d_grad_input(
    dy: np.ndarray,
    w: np.ndarray,
    stride: Pair,
    dilation: Pair,
    padded_hw: Pair,
    window: Window | None = None,
) -> np.ndarray:
    """dX_pad (N, C, Hp, Wp) = full convolution of dilate(dy) with w (rotated 180 degrees),
    summed over F, or its ``window`` (a view of the whole): see :func:`_grad_input_padded`."""
    return crop_window(_grad_input_padded(dy, w, stride, dilation, padded_hw), window)


def _grad_input_padded(
    dy: np.ndarray, w: np.ndarray, stride: Pair, dilation: Pair, padded_hw: Pair
) -> np.ndarray:
    """dX_pad: ``dcols = W.T @ dY``, then each tap's block added back where it was read
    (col2im). Up to :data:`WHOLE_DX` elements of dcols that is one product and one col2im;
    larger ones run per channel group and tile, a group's tiles in order on one thread."""
    f, c, kh, kw = w.shape
    dy_t = batch_last(dy)
    n, out_hw = dy_t.shape[3], dy_t.shape[1:3]
    w_t = w.astype(dy.dtype, copy=False).reshape(f, c * kh * kw).T  # (C*kh*kw, F)
    dx_t = np.zeros((c, *padded_hw, n), dtype=dy.dtype)
    if c * kh * kw * out_hw[0] * out_hw[1] * n <= WHOLE_DX:
        tiles = _Tiles((kh, kw), stride, dilation, *out_hw, out_hw[0])
        _col2im(dx_t, matmul(w_t, dy_t.reshape(f, -1)), tiles, (0, out_hw[0]))
        return batch_first(dx_t)
    if stride == (1, 1) and _border(padded_hw, out_hw) <= FULL_BORDER:
        return batch_first(_full_correlation(dy_t, w, dilation))
    g = -(-c // min(c, DX_GROUPS))  # channels per group
    tiles = _tiles(g, f, n, (kh, kw), stride, dilation, out_hw)

    def group(j: int) -> None:
        c0, c1 = j * g, min(c, (j + 1) * g)
        for rows in tiles.spans():
            w_g, dy_rows = w_t[c0 * kh * kw : c1 * kh * kw], _pixels(dy_t, rows)
            dcols = np.empty((w_g.shape[0], dy_rows.shape[1]), dy_t.dtype)
            product_into(w_g, dy_rows, dcols)
            _col2im(dx_t[c0:c1], dcols, tiles, rows)

    run_tasks(group, -(-c // g))
    return batch_first(dx_t)
