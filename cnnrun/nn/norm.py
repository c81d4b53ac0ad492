"""Batch normalisation over the channels of (N, C, H, W)."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .conv import check_count, check_input
from .module import Module, Parameter, Product


class BatchNorm2d(Module):
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel.

    Training: mean and (biased) variance over (N, H, W) of the batch; the running estimates move
    by ``momentum`` towards the batch mean and the *unbiased* variance, as in PyTorch. Eval: the
    running estimates. Backward in training, with ``m = N*H*W`` and ``xhat`` the normalised x::

        dxhat = dy * gamma
        dx    = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps)

    with the means over (N, H, W).
    """

    param_names = ("weight", "bias")
    buffer_names = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features, eps: float = 1e-5, momentum: float = 0.1, *,
                 dtype=np.float32):
        super().__init__()
        self.num_features = check_count(num_features, "num_features", "BatchNorm2d")
        if not eps > 0:
            raise ConfigError(f"invalid eps {eps!r} for BatchNorm2d: expected a float > 0")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"invalid momentum {momentum!r} for BatchNorm2d: expected 0..1")
        self.eps, self.momentum = float(eps), float(momentum)
        self.weight = Parameter(np.ones(num_features, dtype), "weight")
        self.bias = Parameter(np.zeros(num_features, dtype), "bias")
        self.running_mean = np.zeros(num_features, dtype)
        self.running_var = np.ones(num_features, dtype)
        self.num_batches_tracked = np.zeros((), np.int64)

    def reset_parameters(self, rng=None, scheme: str = "default") -> None:
        self.weight.data[...] = 1
        self.bias.data[...] = 0

    def forward(self, x):
        check_input(self, x, self.num_features)
        dt = x.dtype
        if self.training:
            mean = x.mean(axis=(0, 2, 3))
            xhat = x - mean[None, :, None, None]                    # centred, normalised below
            var = np.square(xhat).mean(axis=(0, 2, 3))              # biased, to normalise
            m = x.size // x.shape[1]
            mom = self.momentum
            self.running_mean = ((1 - mom) * self.running_mean + mom * mean).astype(
                self.running_mean.dtype)
            unbiased = var * (m / max(m - 1, 1))
            self.running_var = ((1 - mom) * self.running_var + mom * unbiased).astype(
                self.running_var.dtype)
            self.num_batches_tracked = self.num_batches_tracked + 1
        else:
            mean = self.running_mean.astype(dt, copy=False)
            var = self.running_var.astype(dt, copy=False)
            xhat = x - mean[None, :, None, None]
        inv_std = 1 / np.sqrt(var + dt.type(self.eps))              # (C,)
        xhat *= inv_std[None, :, None, None]
        self._cache = (xhat, inv_std, self.training)
        y = xhat * self.weight.data.astype(dt, copy=False)[None, :, None, None]
        y += self.bias.data.astype(dt, copy=False)[None, :, None, None]
        return y

    def backward(self, dy):
        """With ``a = gamma / sqrt(var + eps)`` per channel, the training formula above is
        ``dx = a * dy - a * mean(dy) - a * mean(dy * xhat) * xhat``, and the two means are
        ``dbeta / m`` and ``dgamma / m``: two reductions and a few passes over the batch."""
        xhat, inv_std, training = self._forward_cache()
        dgamma = np.einsum("nchw,nchw->c", dy, xhat)              # (C,): sum of dy * xhat
        dbeta = dy.sum(axis=(0, 2, 3))                            # (C,)
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        a = self.weight.data.astype(dy.dtype) * inv_std           # (C,)
        dx = dy * a[None, :, None, None]
        if training:
            m = dy.size // dy.shape[1]
            dx += xhat * (-a * dgamma / m)[None, :, None, None]
            dx += (-a * dbeta / m)[None, :, None, None]
        if self.tracing:
            self.products = [
                Product("dW", "sum_NHW", [("dY * xhat", dy.shape)], dgamma.shape),
                Product("db", "sum_NHW", [("dY", dy.shape)], dbeta.shape),
                Product("dX", "batch_norm_backward" if training else "scale",
                        [("dY", dy.shape), ("xhat", xhat.shape)], dx.shape),
            ]
        return dx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
