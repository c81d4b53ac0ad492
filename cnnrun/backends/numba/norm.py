"""Numba batch normalisation: one channel per work item (:func:`.common.parallel`), sums in
float64. Two passes over the
batch forward (three while training, for the statistics), two backward, each element read once
per pass."""

from __future__ import annotations

import numpy as np
from numba import njit

from .. import numpy_backend
from .common import parallel


def batchnorm2d_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    mean: np.ndarray | None = None,
    var: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`cnnrun.backends.reference.batchnorm2d_forward`, in fused passes per channel."""
    if x.size == 0:  # nothing to sum over: NumPy's NaN statistics
        return numpy_backend.batchnorm2d_forward(x, gamma, beta, eps, mean, var)
    x = np.ascontiguousarray(x)
    dt = x.dtype
    c = x.shape[1]
    if mean is None:
        mean, var = np.empty(c, dt), np.empty(c, dt)
        parallel(_bn_stats, c, x, mean, var)
    mean, var = np.ascontiguousarray(mean, dtype=dt), np.ascontiguousarray(var, dtype=dt)
    inv_std = 1 / np.sqrt(var + dt.type(eps))
    xhat, y = np.empty_like(x), np.empty_like(x)
    parallel(
        _bn_normalise,
        c,
        x,
        mean,
        inv_std,
        np.ascontiguousarray(gamma, dtype=dt),
        np.ascontiguousarray(beta, dtype=dt),
        xhat,
        y,
    )
    return y, xhat, mean, var, inv_std


def batchnorm2d_backward(
    dy: np.ndarray, xhat: np.ndarray, gamma: np.ndarray, inv_std: np.ndarray, training: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`cnnrun.backends.reference.batchnorm2d_backward`, in two passes per channel."""
    if dy.size == 0:
        return numpy_backend.batchnorm2d_backward(dy, xhat, gamma, inv_std, training)
    xhat = np.ascontiguousarray(xhat)
    dy = np.ascontiguousarray(dy, dtype=xhat.dtype)
    c, dt = dy.shape[1], xhat.dtype
    dx = np.empty_like(xhat)
    dgamma, dbeta = np.empty(c, dt), np.empty(c, dt)
    parallel(
        _bn_backward,
        c,
        dy,
        xhat,
        np.ascontiguousarray(gamma, dtype=dt),
        np.ascontiguousarray(inv_std, dtype=dt),
        bool(training),
        dx,
        dgamma,
        dbeta,
    )
    return dx, dgamma, dbeta


# -- the jitted loops -------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _bn_stats(x, mean, var, lo, hi):
    n, c, h, w = x.shape
    m = n * h * w
    for ch in range(lo, hi):
        total = 0.0
        for b in range(n):
            for i in range(h):
                for j in range(w):
                    total += x[b, ch, i, j]
        mu = total / m
        squares = 0.0
        for b in range(n):
            for i in range(h):
                for j in range(w):
                    d = x[b, ch, i, j] - mu
                    squares += d * d
        mean[ch] = mu
        var[ch] = squares / m


@njit(nogil=True, cache=True)
def _bn_normalise(x, mean, inv_std, gamma, beta, xhat, y, lo, hi):
    n, c, h, w = x.shape
    for ch in range(lo, hi):
        mu, s, g, bt = mean[ch], inv_std[ch], gamma[ch], beta[ch]
        for b in range(n):
            for i in range(h):
                for j in range(w):
                    v = (x[b, ch, i, j] - mu) * s
                    xhat[b, ch, i, j] = v
                    y[b, ch, i, j] = v * g + bt


@njit(nogil=True, cache=True)
def _bn_backward(dy, xhat, gamma, inv_std, training, dx, dgamma, dbeta, lo, hi):
    n, c, h, w = dy.shape
    m = n * h * w
    for ch in range(lo, hi):
        s_dy = 0.0
        s_dy_xhat = 0.0
        for b in range(n):
            for i in range(h):
                for j in range(w):
                    s_dy += dy[b, ch, i, j]
                    s_dy_xhat += dy[b, ch, i, j] * xhat[b, ch, i, j]
        dgamma[ch] = s_dy_xhat
        dbeta[ch] = s_dy
        a = gamma[ch] * inv_std[ch]
        k_xhat = -a * s_dy_xhat / m if training else 0.0
        k_one = -a * s_dy / m if training else 0.0
        for b in range(n):
            for i in range(h):
                for j in range(w):
                    dx[b, ch, i, j] = a * dy[b, ch, i, j] + k_xhat * xhat[b, ch, i, j] + k_one
