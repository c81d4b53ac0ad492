"""Element-wise activations: ``y = f(x)``, ``dx = dy * f'(x)``, any shape, dtype kept.

The formulas are the backend's kernels (``relu_forward`` ... ``sigmoid_backward``, see
:mod:`cnnrun.backends.contract`); backward runs on the kernels of its forward, as conv does."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .module import Module
from .registry import register_layer


@register_layer
class ReLU(Module):
    """``y = max(x, 0)`` (NaN stays NaN, as in PyTorch); ``dx = dy * [x > 0]``."""

    def forward(self, x):
        kernels = self.kernels
        y, ctx = kernels.relu_forward(x)
        self._cache = (ctx, kernels)
        return y

    def backward(self, dy):
        ctx, kernels = self._forward_cache()
        return kernels.relu_backward(dy, ctx)  # dy where x > 0, else 0


@register_layer
class LeakyReLU(Module):
    """``y = x`` for ``x > 0``, else ``negative_slope * x``."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        if not np.isfinite(negative_slope):
            raise ConfigError(f"invalid negative_slope {negative_slope!r}: expected a finite float")
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        kernels = self.kernels
        y, ctx = kernels.leaky_relu_forward(x, self.negative_slope)
        self._cache = (ctx, kernels)
        return y

    def backward(self, dy):
        ctx, kernels = self._forward_cache()
        return kernels.leaky_relu_backward(dy, ctx)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


@register_layer
class Tanh(Module):
    """``y = tanh(x)``; ``dx = dy * (1 - y^2)``."""

    def forward(self, x):
        kernels = self.kernels
        y, ctx = kernels.tanh_forward(x)
        self._cache = (ctx, kernels)
        return y

    def backward(self, dy):
        ctx, kernels = self._forward_cache()
        return kernels.tanh_backward(dy, ctx)


@register_layer
class Sigmoid(Module):
    """``y = 1 / (1 + exp(-x))``, computed as ``(1 + tanh(x / 2)) / 2`` (no overflow);
    ``dx = dy * y * (1 - y)``."""

    def forward(self, x):
        kernels = self.kernels
        y, ctx = kernels.sigmoid_forward(x)
        self._cache = (ctx, kernels)
        return y

    def backward(self, dy):
        ctx, kernels = self._forward_cache()
        return kernels.sigmoid_backward(dy, ctx)
