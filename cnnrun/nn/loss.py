"""Losses: ``forward(outputs, targets) -> float`` and ``backward() -> d loss / d outputs``."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError


class CrossEntropyLoss:
    """Softmax then the mean negative log-likelihood of integer labels, as PyTorch's.

    For logits z (N, K) and labels t (N,): ``loss = mean_n (logsumexp(z_n) - z_n[t_n])`` and
    ``dz = (softmax(z) - onehot(t)) / N``, in the logits' dtype.
    """

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:
        targets = np.asarray(targets)
        if logits.ndim != 2 or targets.shape != (logits.shape[0],):
            raise ShapeError(
                f"CrossEntropyLoss: expected logits (N, K) and labels (N,), got "
                f"{logits.shape} and {targets.shape}"
            )
        if not np.issubdtype(targets.dtype, np.integer):
            raise ShapeError(f"CrossEntropyLoss: labels must be integers, got {targets.dtype}")
        k = logits.shape[1]
        if targets.size and (targets.min() < 0 or targets.max() >= k):
            raise ShapeError(
                f"CrossEntropyLoss: labels must lie in 0..{k - 1}, got "
                f"{targets.min()}..{targets.max()}"
            )
        shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), max 0 per row
        log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, 1)
        log_p = shifted - log_z  # log-softmax
        rows = np.arange(logits.shape[0])
        self._cache = (log_p, targets)
        return float(-log_p[rows, targets].mean())

    def backward(self) -> np.ndarray:
        log_p, targets = self._cache
        n = log_p.shape[0]
        grad = np.exp(log_p)  # softmax (N, K)
        grad[np.arange(n), targets] -= 1
        return grad / n

    __call__ = forward


class MSELoss:
    """``loss = mean((y - t)^2)`` over every element; ``dy = 2 (y - t) / y.size``."""

    def forward(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        targets = np.asarray(targets)
        if outputs.shape != targets.shape:
            raise ShapeError(f"MSELoss: outputs {outputs.shape} and targets {targets.shape} differ")
        self._diff = outputs - targets.astype(outputs.dtype, copy=False)
        return float(np.mean(self._diff * self._diff))

    def backward(self) -> np.ndarray:
        return self._diff * (2 / self._diff.size)

    __call__ = forward
