"""Flatten, Linear and Dropout."""

from __future__ import annotations

import numpy as np

from ..backends.gemm import matmul
from ..errors import ConfigError, ShapeError
from .conv import check_count
from .init import init_weight_and_bias
from .module import Module, Parameter, Product
from .registry import register_layer


@register_layer
class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W), in PyTorch's (C, H, W) order."""

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._shape)


@register_layer
class Linear(Module):
    """``y = x W^T + b`` over (N, in) -> (N, out); W is (out, in) as in PyTorch.

    Backward: ``dW = dY^T x`` (out, in), ``db = sum_N dY`` (out,), ``dX = dY W`` (N, in).
    """

    param_names = ("weight", "bias")

    def __init__(
        self,
        in_features,
        out_features,
        bias=True,
        *,
        rng: np.random.Generator | None = None,
        init: str = "default",
        dtype=np.float32,
    ):
        super().__init__()
        self.in_features = check_count(in_features, "in_features", "Linear")
        self.out_features = check_count(out_features, "out_features", "Linear")
        self.weight = Parameter(np.zeros((self.out_features, self.in_features), dtype), "weight")
        self.bias = Parameter(np.zeros(self.out_features, dtype), "bias") if bias else None
        self.reset_parameters(rng, init)

    def reset_parameters(self, rng=None, scheme: str = "default") -> None:
        init_weight_and_bias(self.weight, self.bias, scheme, rng)

    def forward(self, x):
        if (
            not isinstance(x, np.ndarray)
            or x.ndim != 2
            or x.shape[1] != self.in_features
            or not np.issubdtype(x.dtype, np.floating)
        ):
            got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise ShapeError(
                f"{self.name or 'Linear'}: expected a floating (N, "
                f"{self.in_features}) array, got {got}"
            )
        self._x = x
        y = matmul(x, self.weight.data.astype(x.dtype, copy=False).T)  # (N, out)
        if self.bias is not None:
            y += self.bias.data.astype(x.dtype, copy=False)
        return y

    def backward(self, dy):
        x = self._x
        w = self.weight.data.astype(dy.dtype, copy=False)
        dW = matmul(dy.T, x)  # (out, N) @ (N, in)
        self.weight.grad += dW
        db = None
        if self.bias is not None:
            db = dy.sum(axis=0)  # (out,)
            self.bias.grad += db
        dx = matmul(dy, w)  # (N, out) @ (out, in)
        if self.tracing:
            self.products = [
                Product("dW", "matmul", [("dY^T", dy.T.shape), ("x", x.shape)], dW.shape),
                Product("dX", "matmul", [("dY", dy.shape), ("W", w.shape)], dx.shape),
            ]
            if db is not None:
                self.products.append(Product("db", "sum_N", [("dY", dy.shape)], db.shape))
        return dx

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}" + (
            "" if self.bias is not None else ", bias=False"
        )


@register_layer
class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability ``p`` and scale the
    rest by ``1 / (1 - p)``; in eval mode, the identity. The mask comes from ``rng`` (a
    ``numpy.random.Generator``; a fresh one if not given), never from the global RNG."""

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None):
        super().__init__()
        try:
            ok = 0.0 <= float(p) <= 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"invalid dropout probability {p!r}: expected 0 <= p <= 1")
        self.p = float(p)
        self.rng = np.random.default_rng() if rng is None else rng

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.p  # drawn in (N, C, H, W) order
        scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        self._mask = np.empty_like(x)  # laid out as x (batch-last on the NumPy backend)
        np.multiply(keep, x.dtype.type(scale), out=self._mask)
        return x * self._mask

    def backward(self, dy):
        return dy if self._mask is None else dy * self._mask

    def extra_repr(self):
        return f"p={self.p}"
