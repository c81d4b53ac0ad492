"""The written contract of a kernel backend: every function each backend module provides.

A backend is a module (:mod:`~cnnrun.backends.numpy_backend`, :mod:`~cnnrun.backends.numba`,
:mod:`~cnnrun.backends.reference`) that satisfies :class:`Kernels`; ``tests/test_contract.py``
holds every backend to these names and signatures. Shapes are PyTorch's::

    x_pad (N, C, Hp, Wp)   padded layer input (the layer pads, with its backend's pad2d)
    w     (F, C, kh, kw)   conv kernel
    y, dy (N, F, Ho, Wo)   output and its error (pooling: F = C)

**Layout.** Every kernel takes any memory layout in (views, transposes, negative strides) and
returns (N, C, H, W)-shaped arrays laid out as its backend likes best: NumPy: batch-last, i.e.
(N, C, H, W) views of C-contiguous (C, H, W, N) arrays; Numba: C order; reference: whatever
NumPy gives. ``native(a)`` puts an array in that layout once. Every result keeps the dtype of
the data input (x_pad, dy or x); weights are cast to it.

**What a forward keeps.** A layer keeps references, not copies, to what its backward needs: its
input (a conv's x_pad may be x itself, or hold it; batch norm's xhat may hold x) or its output
(ReLU, tanh and sigmoid contexts may be y). Change one of those arrays in place between the
forward and the backward pass and the gradients change; give the layer a copy instead.

**ctx.** A forward kernel returns ``(y, ctx)``; ``ctx`` is private to the backend that made it
(NumPy's conv: the column matrix; max pooling: the index of each window's first maximum; None
where nothing is needed) and only that backend's backward may read it: a layer runs backward on
the kernels that ran its forward.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

Pair = tuple[int, int]
Window = tuple[int, int, int, int]  # (top, left, height, width)


def padded(x: np.ndarray, pads, value: float = 0.0) -> np.ndarray:
    """Pad the H and W axes of (N, C, H, W) by (top, bottom, left, right); no copy if all 0.

    The padded array keeps x's memory layout (a batch-last x gives a batch-last result; see
    :mod:`cnnrun.backends.numpy_backend`)."""
    top, bottom, left, right = pads
    if not any(pads):
        return x
    n, c, h, w = x.shape
    out = np.empty_like(x, shape=(n, c, top + h + bottom, left + w + right))
    out[:, :, :top] = value
    out[:, :, top + h :] = value
    inner = out[:, :, top : top + h]
    inner[..., :left] = value
    inner[..., left + w :] = value
    inner[..., left : left + w] = x
    return out


def crop_window(a: np.ndarray, window: Window | None) -> np.ndarray:
    """The (H, W) window (top, left, height, width) of a (N, C, H, W) array, a view; ``a``
    itself for None."""
    if window is None:
        return a
    top, left, h, w = window
    return a[:, :, top : top + h, left : left + w]


class Kernels(Protocol):
    """The functions of a kernel backend module (see the module's notes on shapes and layout)."""

    NAME: str

    def native(self, a: np.ndarray) -> np.ndarray:
        """``a`` (any shape) with the same values, laid out as this backend's kernels want it:
        a view of ``a``'s memory (or ``a`` itself) where it already is, one copy otherwise."""
        ...

    # -- convolution ---------------------------------------------------------------------------

    def pad2d(self, x: np.ndarray, pads: tuple[int, int, int, int]) -> Any:
        """x (N, C, H, W) zero-padded by ``pads`` (top, bottom, left, right), as this
        backend's conv kernels take their x_pad: anything with the padded ``shape`` and x's
        ``dtype`` that ``np.asarray`` makes the padded array of. NumPy and reference: that
        array (:func:`padded`, x's layout kept); numba: x and the pads, which its stride-1
        kernels pad as they load each image, so that no padded copy of the batch is made
        (strided layers pad as they stack its phases)."""
        ...

    def conv2d_forward(
        self,
        x_pad: np.ndarray,
        w: np.ndarray,
        stride: Pair,
        dilation: Pair,
        bias: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        """y (N, F, Ho, Wo): the valid cross-correlation of x_pad (N, C, Hp, Wp) with w
        (F, C, kh, kw), ``y[n, f, i, j] = sum_{c,p,q} x_pad[n, c, i*sh + p*dh, j*sw + q*dw] *
        w[f, c, p, q]``, ``Ho = (Hp - dh*(kh - 1) - 1) // sh + 1`` (Wo alike), plus ``bias[f]``
        where a bias (F,) is given (added to the finished sum, one rounding). ctx: whatever
        :meth:`conv2d_grad_weight` can reuse (NumPy: x_pad laid out (C, Hp, Wp, N), which it
        makes its column tiles from again; numba: the stacked phases of a strided layer, else None;
        reference: None)."""
        ...

    def conv2d_grad_weight(
        self,
        x_pad: np.ndarray,
        ctx: Any,
        dy: np.ndarray,
        kernel_size: Pair,
        stride: Pair,
        dilation: Pair,
    ) -> np.ndarray:
        """dW (F, C, kh, kw): the valid cross-correlation of x_pad (N, C, Hp, Wp) with dY
        (N, F, Ho, Wo) dilated by the stride, summed over the batch: ``dW[f, c, p, q] =
        sum_{n,i,j} x_pad[n, c, i*sh + p*dh, j*sw + q*dw] * dy[n, f, i, j]``. ``ctx`` is the
        forward's, or None (then it is recomputed from x_pad)."""
        ...

    def conv2d_grad_input(
        self,
        dy: np.ndarray,
        w: np.ndarray,
        stride: Pair,
        dilation: Pair,
        padded_hw: Pair,
        window: Window | None = None,
    ) -> np.ndarray:
        """dX_pad (N, C, Hp, Wp), before cropping: the full convolution of dY (N, F, Ho, Wo),
        dilated by the stride, with the kernel, summed over the filters: ``dx_pad[n, c,
        i*sh + p*dh, j*sw + q*dw] += w[f, c, p, q] * dy[n, f, i, j]`` over every (f, p, q, i, j),
        i.e. dY zero-padded by the kernel's span correlated with w rotated 180 degrees.

        With ``window`` = (top, left, h, w): only that window of dX_pad, ``crop_window(dx_pad,
        window)`` (N, C, h, w), which the kernels may compute alone: the layer asks for its
        input's window, dX, and so crops its padding off."""
        ...

    def conv2d_grad_bias(self, dy: np.ndarray) -> np.ndarray:
        """db (F,): dY (N, F, Ho, Wo) summed over (N, Ho, Wo) in float64, in dY's dtype. A
        float32 sum of values that largely cancel loses digits, and in an order that depends on
        dY's layout (a backend's choice); summed in float64, every backend gives float32 dY's
        float32 nearest the exact sum but where the sum lies within about 1e-16 of a tie. For
        float64 dY the backends' sums agree to float64 rounding (their orders differ)."""
        ...

    # -- pooling -------------------------------------------------------------------------------

    def maxpool2d_forward(
        self, x_pad: np.ndarray, kernel_size: Pair, stride: Pair
    ) -> tuple[np.ndarray, np.ndarray]:
        """y (N, C, Ho, Wo): the maximum of each kh x kw window of x_pad (N, C, Hp, Wp), NaN
        if the window holds one. ctx: the index ``p * kw + q`` of each window's first maximum
        (or first NaN), as ``np.argmax`` gives, (N, C, Ho, Wo)-shaped."""
        ...

    def maxpool2d_backward(
        self, dy: np.ndarray, ctx: np.ndarray, kernel_size: Pair, stride: Pair, padded_hw: Pair
    ) -> np.ndarray:
        """dX_pad (N, C, Hp, Wp): each dy (N, C, Ho, Wo) added to the pixel its window's first
        maximum was (ctx from :meth:`maxpool2d_forward`), zero elsewhere."""
        ...

    def avgpool2d_forward(
        self, x_pad: np.ndarray, kernel_size: Pair, stride: Pair
    ) -> tuple[np.ndarray, None]:
        """y (N, C, Ho, Wo): the mean of each kh x kw window of x_pad (N, C, Hp, Wp), padding
        counting as zeros (PyTorch's ``count_include_pad=True``). ctx: None."""
        ...

    def avgpool2d_backward(
        self, dy: np.ndarray, ctx: None, kernel_size: Pair, stride: Pair, padded_hw: Pair
    ) -> np.ndarray:
        """dX_pad (N, C, Hp, Wp): each dy (N, C, Ho, Wo) shared equally, ``dy / (kh * kw)``, by
        the pixels of its window (summed where windows overlap)."""
        ...

    # -- batch normalisation -------------------------------------------------------------------

    def batchnorm2d_forward(
        self,
        x: np.ndarray,
        gamma: np.ndarray,
        beta: np.ndarray,
        eps: float,
        mean: np.ndarray | None = None,
        var: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(y, xhat, mean, var, inv_std) for x (N, C, H, W) and gamma, beta (C,):
        ``xhat = (x - mean) * inv_std``, ``inv_std = 1 / sqrt(var + eps)``, ``y = gamma * xhat +
        beta`` per channel; mean and the biased var over (N, H, W) when ``mean`` is None
        (training), the given (C,) ones otherwise. y and xhat (N, C, H, W); the rest (C,).
        xhat is what :meth:`batchnorm2d_backward` takes: an array, or something with xhat's
        shape and dtype that ``np.asarray`` makes the array of (numba: x, mean and inv_std,
        so that the forward need not write it)."""
        ...

    def batchnorm2d_backward(
        self,
        dy: np.ndarray,
        xhat: np.ndarray,
        gamma: np.ndarray,
        inv_std: np.ndarray,
        training: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dx, dgamma, dbeta): ``dgamma = sum(dy * xhat)``, ``dbeta = sum(dy)`` over (N, H, W);
        in training, with means over (N, H, W) and ``dxhat = dy * gamma``, ``dx = (dxhat -
        mean(dxhat) - xhat * mean(dxhat * xhat)) * inv_std``; in eval ``dx = dxhat * inv_std``."""
        ...

    # -- element-wise, any shape ---------------------------------------------------------------

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a + b`` of one shape (a residual block's sum, forward and backward), in NumPy's
        result dtype."""
        ...

    # -- activations: element-wise, any shape; ctx is what the backward needs --------------------

    def relu_forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """``y = max(x, 0)``, NaN stays NaN (as in PyTorch). ctx: what tells where ``x > 0``
        (NumPy: that mask; numba: y itself, positive exactly there)."""
        ...

    def relu_backward(self, dy: np.ndarray, ctx: Any) -> np.ndarray:
        """``dx = dy`` where ``x > 0``, else 0."""
        ...

    def leaky_relu_forward(self, x: np.ndarray, negative_slope: float) -> tuple[np.ndarray, Any]:
        """``y = x`` where ``x > 0``, else ``negative_slope * x``. ctx: the slope (NumPy: dy/dx,
        1 or negative_slope, as an x-shaped array)."""
        ...

    def leaky_relu_backward(self, dy: np.ndarray, ctx: Any) -> np.ndarray:
        """``dx = dy`` where ``x > 0``, else ``negative_slope * dy``."""
        ...

    def tanh_forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """``y = tanh(x)``. ctx: y."""
        ...

    def tanh_backward(self, dy: np.ndarray, ctx: Any) -> np.ndarray:
        """``dx = dy * (1 - y^2)``."""
        ...

    def sigmoid_forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """``y = 1 / (1 + exp(-x))``, without overflow (NumPy: ``(1 + tanh(x / 2)) / 2``).
        ctx: y."""
        ...

    def sigmoid_backward(self, dy: np.ndarray, ctx: Any) -> np.ndarray:
        """``dx = dy * y * (1 - y)``."""
        ...


def kernel_names() -> tuple[str, ...]:
    """The functions of :class:`Kernels`, in the order written."""
    return tuple(
        name for name, value in vars(Kernels).items() if callable(value) and name[0] != "_"
    )
