"""2-D convolution (cross-correlation, as in every deep-learning library)."""

from __future__ import annotations

from numbers import Integral

import numpy as np

from ..backends.contract import padded as pad2d  # noqa: F401 (pooling pads with it)
from ..errors import ConfigError, ShapeError
from .geometry import check_padding, output_hw, pair, resolve_padding
from .init import init_weight_and_bias
from .module import Module, Parameter, Product
from .registry import register_layer


def crop2d(x_pad: np.ndarray, pads, hw) -> np.ndarray:
    """Undo :func:`pad2d`: the (H, W) window at (top, left). Never ``x[p:-p]`` (empty for p=0)."""
    top, _, left, _ = pads
    return x_pad[:, :, top : top + hw[0], left : left + hw[1]]


def check_input(layer: Module, x, channels: int | None = None) -> None:
    """A (N, C, H, W) floating array with the layer's channel count, or a clear ShapeError."""
    if not isinstance(x, np.ndarray) or x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        got = (
            f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        )
        raise ShapeError(f"{layer.label}: expected a floating (N, C, H, W) array, got {got}")
    if channels is not None and x.shape[1] != channels:
        raise ShapeError(f"{layer.label}: expected {channels} input channels, got input {x.shape}")


def check_count(value, what: str, owner: str) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"invalid {what} {value!r} for {owner}: expected an int >= 1")
    return int(value)


@register_layer
class Conv2d(Module):
    """``y[n, f] = b[f] + sum_c corr(x_pad[n, c], W[f, c])`` over (N, C, H, W) -> (N, F, Ho, Wo).

    Output size per axis: ``Ho = floor((H + p_top + p_bottom - d(k-1) - 1) / s) + 1``; padding
    modes ``valid``, ``same``, ``full`` are defined in :mod:`cnnrun.nn.geometry`.

    Backward, for an output error dY (N, F, Ho, Wo):

    * ``dW = corr_valid(x_pad, dY)``: the *valid* cross-correlation of the padded input with dY
      (dY dilated by the stride first), summed over the batch -> (F, C, kh, kw).
    * ``dX = conv_full(dY, W)``: the *full* convolution of dY (dilated by the stride) with the
      kernel, i.e. a correlation with W rotated 180 degrees, summed over the F filters ->
      (N, C, Hp, Wp), then cropped by the forward padding -> (N, C, H, W).
    * ``db = dY`` summed over N, Ho, Wo -> (F,).
    """

    param_names = ("weight", "bias")

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding="valid",
        dilation=1,
        bias=True,
        *,
        rng: np.random.Generator | None = None,
        init: str = "default",
        dtype=np.float32,
    ):
        super().__init__()
        self.in_channels = check_count(in_channels, "in_channels", "Conv2d")
        self.out_channels = check_count(out_channels, "out_channels", "Conv2d")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        self.padding = check_padding(padding, "Conv2d")
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self.weight = Parameter(np.zeros(shape, dtype=dtype), "weight")
        self.bias = Parameter(np.zeros(self.out_channels, dtype=dtype), "bias") if bias else None
        self.reset_parameters(rng, init)

    def reset_parameters(self, rng=None, scheme: str = "default") -> None:
        init_weight_and_bias(self.weight, self.bias, scheme, rng)

    @property
    def label(self) -> str:
        return self.name or "Conv2d"

    def pads(self, in_hw) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) padding for an input of size ``in_hw``."""
        return resolve_padding(
            self.padding, self.kernel_size, self.stride, self.dilation, tuple(in_hw)
        )

    def output_shape(self, in_shape) -> tuple[int, int, int, int]:
        hw = output_hw(
            in_shape[2:],
            self.kernel_size,
            self.stride,
            self.dilation,
            self.pads(in_shape[2:]),
            owner=self.label,
        )
        return (in_shape[0], self.out_channels, *hw)

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_input(self, x, self.in_channels)
        self.output_shape(x.shape)  # a clear ShapeError if the kernel does not fit
        pads = self.pads(x.shape[2:])
        kernels = self.kernels
        x_pad = kernels.pad2d(x, pads)  # (N, C, Hp, Wp), as this backend's kernels take it
        w = self.weight.data.astype(x.dtype, copy=False)  # compute in the input's dtype
        bias = None if self.bias is None else self.bias.data.astype(x.dtype, copy=False)
        y, ctx = kernels.conv2d_forward(x_pad, w, self.stride, self.dilation, bias)
        # backward runs on the kernels that made ctx, even if the backend changes in between
        self._cache = (x.shape, x_pad, pads, ctx, kernels)
        return y

    def backward_params(self, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """dW and db only (the full convolution for dX is skipped); returns them."""
        _, x_pad, _, ctx, kernels = self._forward_cache()
        dy = kernels.native(dy)  # a no-op if backward already converted it
        dW = kernels.conv2d_grad_weight(
            x_pad, ctx, dy, self.kernel_size, self.stride, self.dilation
        )
        self.weight.grad += dW
        db = None
        if self.bias is not None:
            db = kernels.conv2d_grad_bias(dy)  # (F,), summed in float64
            self.bias.grad += db
        return dW, db

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x_shape, x_pad, pads, _, kernels = self._forward_cache()
        dy = kernels.native(dy)  # once, for both the dW and the dX kernels
        w = self.weight.data.astype(dy.dtype, copy=False)
        dW, db = self.backward_params(dy)
        # dX_pad (N, C, Hp, Wp) cropped by the forward padding: dX (N, C, H, W), the window
        # the kernels are asked for (they may skip the rest)
        window = (pads[0], pads[2], *x_shape[2:])
        dx = kernels.conv2d_grad_input(dy, w, self.stride, self.dilation, x_pad.shape[2:], window)
        if self.tracing:
            self.products = self._products(x_pad, dy, dW, db, x_pad.shape, dx)
        return dx

    def _products(self, x_pad, dy, dW, db, padded, dx) -> list[Product]:
        """The trace's rows, with the shapes of the arrays this backward pass computed."""
        n, f, ho, wo = dy.shape
        (sh, sw), (dh, dw), (kh, kw) = self.stride, self.dilation, self.kernel_size
        dy_label, dy_shape = "dY", dy.shape
        if self.stride != (1, 1):
            dy_label = f"dilate(dY, stride {sh}x{sw})"
            dy_shape = (n, f, (ho - 1) * sh + 1, (wo - 1) * sw + 1)
        # a full convolution grows each side by the kernel's span d(k-1)
        full = (n, x_pad.shape[1], dy_shape[2] + dh * (kh - 1), dy_shape[3] + dw * (kw - 1))
        w_label = "W" if self.dilation == (1, 1) else f"W dilation {dh}x{dw}"
        rows = [
            Product("dW", "corr_valid", [("x_pad", x_pad.shape), (dy_label, dy_shape)], dW.shape),
            Product(
                "dX",
                "conv_full",
                [(dy_label, dy_shape), (w_label, self.weight.shape)],
                full,
                cropped=dx.shape,
                padded=padded,
            ),
        ]
        if db is not None:
            rows.append(Product("db", "sum_NHW", [("dY", dy.shape)], db.shape))
        return rows

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding!r}"
        )
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        return text + ("" if self.bias is not None else ", bias=False")
