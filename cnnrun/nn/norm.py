"""Batch normalisation over the channels of (N, C, H, W)."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .conv import check_count, check_input
from .module import Module, Parameter, Product
from .registry import register_layer


@register_layer
class BatchNorm2d(Module):
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel.

    Training: mean and (biased) variance over (N, H, W) of the batch; the running estimates move
    by ``momentum`` towards the batch mean and the *unbiased* variance, as in PyTorch. Eval: the
    running estimates. Backward in training, with ``m = N*H*W`` and ``xhat`` the normalised x::

        dxhat = dy * gamma
        dx    = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps)

    with the means over (N, H, W). The passes over the batch are the backend's kernels
    (``batchnorm2d_forward`` and ``batchnorm2d_backward``); the running estimates are kept here.
    """

    param_names = ("weight", "bias")
    buffer_names = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features, eps: float = 1e-5, momentum: float = 0.1, *, dtype=np.float32):
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
        kernels = self.kernels
        gamma = self.weight.data.astype(dt, copy=False)
        beta = self.bias.data.astype(dt, copy=False)
        if self.training:
            y, xhat, mean, var, inv_std = kernels.batchnorm2d_forward(x, gamma, beta, self.eps)
            m = x.size // x.shape[1]
            mom = self.momentum
            self.running_mean = ((1 - mom) * self.running_mean + mom * mean).astype(
                self.running_mean.dtype
            )
            unbiased = var * (m / max(m - 1, 1))
            self.running_var = ((1 - mom) * self.running_var + mom * unbiased).astype(
                self.running_var.dtype
            )
            self.num_batches_tracked = self.num_batches_tracked + 1
        else:
            y, xhat, _, _, inv_std = kernels.batchnorm2d_forward(
                x,
                gamma,
                beta,
                self.eps,
                self.running_mean.astype(dt, copy=False),
                self.running_var.astype(dt, copy=False),
            )
        # backward runs on the kernels of this forward, even if the backend changes in between
        self._cache = (xhat, inv_std, self.training, kernels)
        return y

    def backward(self, dy):
        xhat, inv_std, training, kernels = self._forward_cache()
        gamma = self.weight.data.astype(dy.dtype, copy=False)
        dx, dgamma, dbeta = kernels.batchnorm2d_backward(dy, xhat, gamma, inv_std, training)
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        if self.tracing:
            self.products = [
                Product("dW", "sum_NHW", [("dY * xhat", dy.shape)], dgamma.shape),
                Product("db", "sum_NHW", [("dY", dy.shape)], dbeta.shape),
                Product(
                    "dX",
                    "batch_norm_backward" if training else "scale",
                    [("dY", dy.shape), ("xhat", xhat.shape)],
                    dx.shape,
                ),
            ]
        return dx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
