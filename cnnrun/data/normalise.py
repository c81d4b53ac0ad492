"""Standardisation per channel with the *train* split's mean and std, applied to every split
(validation and test are never looked at to fit it)."""

from __future__ import annotations

import numpy as np


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of ``(N, C, H, W)`` in float64, a chunk of images at a time.

    Both come back as ``(C,)``; a constant channel's std is 1, so it is only centred.
    """
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].astype(np.float64)
        total += part.sum(axis=(0, 2, 3))
        squares += np.square(part).sum(axis=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean, np.where(std > 1e-8, std, 1.0)  # a constant channel is only centred


def standardise(x_train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """The ``(N, C, H, W)`` splits as float32 ``(x - mean) / std``, with the train stats."""
    mean, std = channel_stats(x_train)
    shift = mean.astype(np.float32)[:, None, None]  # (C, 1, 1), broadcasts over (N, C, H, W)
    scale = (1.0 / std).astype(np.float32)[:, None, None]
    return tuple(((x - shift) * scale).astype(np.float32, copy=False) for x in (x_train, *others))
