"""Max and average pooling over (N, C, H, W)."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .conv import check_input, crop2d, pad2d
from .geometry import output_hw, pair
from .module import Module, Product
from .registry import register_layer


class _Pool2d(Module):
    """Windows of ``kernel_size`` every ``stride`` (default: the kernel size) over a padded input.

    ``Ho = floor((H + 2 p - k) / s) + 1``; padding is symmetric, at most half the kernel (as in
    PyTorch), with ``-inf`` for max pooling and zeros for average pooling.
    """

    pad_value = 0.0
    op = ""
    kernel_names = ("", "")  # the backend's forward and backward kernels

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ConfigError(
                f"invalid padding {padding!r} for {type(self).__name__} with kernel "
                f"{self.kernel_size}: expected at most half the kernel size"
            )

    @property
    def label(self) -> str:
        return self.name or type(self).__name__

    def pads(self, in_hw=None) -> tuple[int, int, int, int]:
        ph, pw = self.padding
        return (ph, ph, pw, pw)

    def output_shape(self, in_shape):
        hw = output_hw(
            in_shape[2:], self.kernel_size, self.stride, (1, 1), self.pads(), owner=self.label
        )
        return (*in_shape[:2], *hw)

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_input(self, x)
        self.output_shape(x.shape)
        x_pad = pad2d(x, self.pads(), self.pad_value)  # (N, C, Hp, Wp)
        kernels = self.kernels
        y, ctx = getattr(kernels, self.kernel_names[0])(x_pad, self.kernel_size, self.stride)
        # backward runs on the kernels that made ctx, even if the backend changes in between
        self._cache = (x.shape, x_pad.shape, ctx, kernels)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x_shape, padded_shape, ctx, kernels = self._forward_cache()
        dx_pad = getattr(kernels, self.kernel_names[1])(
            dy, ctx, self.kernel_size, self.stride, padded_shape[2:]
        )
        dx = crop2d(dx_pad, self.pads(), x_shape[2:])  # (N, C, H, W)
        if self.tracing:
            self.products = [
                Product("dX", self.op, [("dY", dy.shape)], dx_pad.shape, cropped=dx.shape)
            ]
        return dx

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


@register_layer
class MaxPool2d(_Pool2d):
    """``y = max`` of each window. Backward routes each dY to the window's maximum; with ties,
    to the first one in row-major order (as PyTorch does), so each dY is routed exactly once."""

    pad_value = -np.inf
    op = "route_to_argmax"
    kernel_names = ("maxpool2d_forward", "maxpool2d_backward")


@register_layer
class AvgPool2d(_Pool2d):
    """``y = mean`` of each window, padding counted as zeros (PyTorch's ``count_include_pad``).
    Backward shares each dY equally among the ``kh * kw`` pixels of its window."""

    op = "spread_mean"
    kernel_names = ("avgpool2d_forward", "avgpool2d_backward")


@register_layer
class GlobalAvgPool2d(Module):
    """The mean of each feature map, flattened: (N, C, H, W) -> (N, C), as PyTorch's
    ``AdaptiveAvgPool2d(1)`` followed by ``Flatten()`` (so no flatten layer follows it).

    ``y[n, c] = sum_ij x[n, c, i, j] / (H W)``. Backward spreads each dY equally over its map:
    ``dX[n, c, i, j] = dY[n, c] / (H W)`` -> (N, C, H, W).

    The sum is taken in float64 and rounded once to x's dtype, so every backend (and every
    memory layout of x) gives the same numbers.
    """

    @property
    def label(self) -> str:
        return self.name or "GlobalAvgPool2d"

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_input(self, x)
        self._cache = x.shape
        return np.mean(x, axis=(2, 3), dtype=np.float64).astype(x.dtype)  # (N, C)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        n, c, h, w = self._forward_cache()
        dx = np.empty((n, c, h, w), dtype=dy.dtype)  # C order, written once
        dx[...] = (dy / dy.dtype.type(h * w))[:, :, None, None]  # (N, C) -> (N, C, 1, 1)
        if self.tracing:
            self.products = [Product("dX", "spread_mean", [("dY", dy.shape)], dx.shape)]
        return dx
