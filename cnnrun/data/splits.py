"""The stratified train/validation split of the data sets without a fixed test split."""

from __future__ import annotations

import numpy as np


def stratified_split(
    y: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Train and val indices with each class split in proportion ``val_fraction``.

    The validation size is ``round(val_fraction * N)`` (at least 1, at most N - 1); it is shared
    out to the classes by largest remainder, so each class gets the floor or the ceiling of its
    exact share. Both index arrays come back in random order.
    """
    n = len(y)
    n_val = min(max(round(val_fraction * n), 1), n - 1)
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * (n_val / n)
    per_class = np.floor(exact).astype(np.int64)
    short = n_val - int(per_class.sum())
    per_class[np.argsort(per_class - exact, kind="stable")[:short]] += 1  # largest remainders
    train, val = [], []
    for c, k in zip(classes, per_class, strict=True):
        idx = rng.permutation(np.flatnonzero(y == c))
        val.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def split_by_class(
    x: np.ndarray, y: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_val, y_val``: the samples of ``(N, ...)`` ``x`` and ``(N,)`` ``y``
    taken by :func:`stratified_split`."""
    train, val = stratified_split(y, val_fraction, rng)
    return x[train], y[train], x[val], y[val]
