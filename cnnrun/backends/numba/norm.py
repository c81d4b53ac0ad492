"""Numba batch normalisation: one channel per work item (:func:`.common.parallel`), loops over
each image's plane of a channel as one run (vectorised: ``fastmath`` reassociates the sums, in
an order fixed by the shapes). The forward's statistics are summed in float64, shifted by the
channel's first element. The backward sums dY and dY * xhat in dY's dtype over runs of at most
:data:`RUN` elements of a plane and adds the runs' sums in float64, and its second pass runs in
the dtype: on one core, float32, batch 64, the backward of ResNet-20's three stage shapes
(16x32x32, 32x16x16, 64x8x8) took 0.66, 0.38-0.41 and 0.27-0.28 ms with every element added in
float64 (a conversion each, and half the lanes), 0.52-0.55, 0.28-0.29 and 0.17-0.19 ms so.
Float32 statistics were faster still, but lost up to 1e-3 of the variance where the first
element lay far from the mean (its shift then cancels nothing). One pass over the batch
forward (two while training, for the statistics), two backward, each element read once per
pass, a channel's passes one after the other, so that the second finds the channel in cache.
These passes are bound by memory traffic: each pass saved is a read of the whole activation.

**xhat is not written.** The forward returns :class:`Normalised` (x, mean, inv_std) in its
place, and the backward computes ``(x - mean) * inv_std`` as it reads x: the forward writes
only y (4 bytes an element fewer; on ResNet-20's first stage, a 4 MB array a layer), and the
backward reads x where it read xhat. ``np.asarray`` gives the xhat array, as the contract asks.

**Planes as rows.** The loops take (N, C, H*W) views (free for C order), so that each image's
plane of a channel is a row ``x[b, ch]``: a reshape of a (H, W) plane inside the loop cost more
than the plane's arithmetic on small maps (batch norm of (64, 64, 8, 8) float32, backward 0.39
-> 0.12 ms; ResNet-20's last stage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .. import numpy_backend
from .common import _FAST, parallel

# the backward sums a plane in its dtype over runs of at most this many elements, the runs' sums
# in float64, so that the rounding does not grow with the plane (a 2048x2048 plane's dbeta,
# summed whole in float32: 1.2e-6 of its terms; in runs: 2.9e-8)
RUN = 4096


@dataclass(frozen=True)
class Normalised:
    """xhat = (x - mean) * inv_std per channel, as this backend's batch norm hands it on."""

    x: np.ndarray  # (N, C, H, W), C order
    mean: np.ndarray  # (C,)
    inv_std: np.ndarray  # (C,)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.x.shape

    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        m, s = self.mean[None, :, None, None], self.inv_std[None, :, None, None]
        return np.asarray((self.x - m) * s, dtype=dtype)


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
    y = np.empty_like(x)
    g, b = np.ascontiguousarray(gamma, dtype=dt), np.ascontiguousarray(beta, dtype=dt)
    if mean is None:  # training: each channel's statistics, then its y, while it is in cache
        mean, var, inv_std = np.empty(c, dt), np.empty(c, dt), np.empty(c, dt)
        parallel(_bn_train, c, _rows(x), g, b, dt.type(eps), mean, var, inv_std, _rows(y))
        return y, Normalised(x, mean, inv_std), mean, var, inv_std
    mean, var = np.ascontiguousarray(mean, dtype=dt), np.ascontiguousarray(var, dtype=dt)
    inv_std = 1 / np.sqrt(var + dt.type(eps))
    parallel(_bn_normalise, c, _rows(x), mean, inv_std, g, b, _rows(y))
    return y, Normalised(x, mean, inv_std), mean, var, inv_std


def batchnorm2d_backward(
    dy: np.ndarray, xhat: np.ndarray, gamma: np.ndarray, inv_std: np.ndarray, training: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`cnnrun.backends.reference.batchnorm2d_backward`, in two passes per channel."""
    if dy.size == 0:
        return numpy_backend.batchnorm2d_backward(dy, np.asarray(xhat), gamma, inv_std, training)
    if isinstance(xhat, Normalised):  # xhat computed from x as it is read
        x, mean, scale = xhat.x, xhat.mean, xhat.inv_std
    else:  # an xhat array: (xhat - 0) * 1 is xhat
        x = np.ascontiguousarray(xhat)
        mean, scale = np.zeros(x.shape[1], x.dtype), np.ones(x.shape[1], x.dtype)
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    c, dt = dy.shape[1], x.dtype
    dx = np.empty_like(x)
    dgamma, dbeta = np.empty(c, dt), np.empty(c, dt)
    g, s = np.ascontiguousarray(gamma, dtype=dt), np.ascontiguousarray(inv_std, dtype=dt)
    rows = _rows(dy), _rows(x), mean, scale, g, s, bool(training), _rows(dx)
    parallel(_bn_backward, c, *rows, dgamma, dbeta)
    return dx, dgamma, dbeta


def _rows(a: np.ndarray) -> np.ndarray:
    """A C-order (N, C, H, W) array as its (N, C, H*W) view."""
    return a.reshape(a.shape[0], a.shape[1], -1)


# -- the jitted loops -------------------------------------------------------------------------


@njit(nogil=True, cache=True, fastmath=_FAST)
def _bn_stats(x, mean, var, lo, hi):
    """Mean and biased variance per channel in one pass: the sums of ``d = x - k`` and ``d**2``
    in float64, shifted by the channel's first element k, so that a mean far from 0 cancels
    in the shift, not in ``sum(d**2)/m - (sum(d)/m)**2``."""
    n, c, hw = x.shape
    m = n * hw
    for ch in range(lo, hi):
        k = np.float64(x[0, ch, 0])
        s1 = s2 = 0.0
        for b in range(n):
            plane = x[b, ch]
            for i in range(hw):
                d = plane[i] - k
                s1 += d
                s2 += d * d
        shift = s1 / m
        mean[ch] = k + shift
        var[ch] = max(s2 / m - shift * shift, 0.0)


@njit(nogil=True, cache=True)
def _bn_train(x, gamma, beta, eps, mean, var, inv_std, y, lo, hi):
    """Training's forward, channel by channel: the statistics (:func:`_bn_stats`), inv_std as
    NumPy computes it, then y (:func:`_bn_normalise`), whose pass over the channel finds it in
    cache (its 64 planes of 32x32 float32 in ResNet-20's first stage: 256 KB), where a pass
    over the statistics of every channel first left it to memory (0.30 -> 0.24 ms a layer
    there)."""
    one = x.dtype.type(1)
    for ch in range(lo, hi):
        _bn_stats(x, mean, var, ch, ch + 1)
        inv_std[ch] = one / np.sqrt(var[ch] + eps)  # no fastmath here: NumPy's float ops
        _bn_normalise(x, mean, inv_std, gamma, beta, y, ch, ch + 1)


@njit(nogil=True, cache=True, fastmath=_FAST)
def _bn_normalise(x, mean, inv_std, gamma, beta, y, lo, hi):
    n, c, hw = x.shape
    for ch in range(lo, hi):
        mu, s, g, bt = mean[ch], inv_std[ch], gamma[ch], beta[ch]
        for b in range(n):
            src, out_y = x[b, ch], y[b, ch]
            for k in range(hw):
                out_y[k] = (src[k] - mu) * s * g + bt


@njit(nogil=True, cache=True, fastmath=_FAST)
def _bn_backward(dy, x, mean, scale, gamma, inv_std, training, dx, dgamma, dbeta, lo, hi):
    """dX, dgamma and dbeta per channel, xhat computed as ``(x - mean) * scale`` where it is
    read. The sums of dy and dy * xhat are taken in dy's dtype over runs of at most
    :data:`RUN` elements of a plane, the runs' sums added in float64; the second pass is
    ``a * (dy - mean(dy)) - a * mean(dy * xhat) * xhat`` in dy's dtype, dY's mean taken off
    before the product, as the definition writes it."""
    n, c, hw = dy.shape
    m = n * hw
    zero = dy.dtype.type(0)
    for ch in range(lo, hi):
        mu, sc = mean[ch], scale[ch]
        s_dy = 0.0
        s_dy_xhat = 0.0
        for b in range(n):
            d, v = dy[b, ch], x[b, ch]
            for k0 in range(0, hw, RUN):  # slices: indices from 0, so the loop vectorises
                d_run, v_run = d[k0 : k0 + RUN], v[k0 : k0 + RUN]
                p1 = p2 = zero
                for k in range(d_run.shape[0]):
                    p1 += d_run[k]
                    p2 += d_run[k] * ((v_run[k] - mu) * sc)
                s_dy += p1
                s_dy_xhat += p2
        dgamma[ch] = s_dy_xhat
        dbeta[ch] = s_dy
        a = gamma[ch] * inv_std[ch]
        k_xhat = dy.dtype.type(-a * s_dy_xhat / m if training else 0.0)
        mean_dy = dy.dtype.type(s_dy / m if training else 0.0)
        for b in range(n):
            d, v, out = dy[b, ch], x[b, ch], dx[b, ch]
            for k in range(hw):
                out[k] = a * (d[k] - mean_dy) + k_xhat * ((v[k] - mu) * sc)
