"""Stratified, seeded splits: validation out of the training files, and a test split out of
a data set that has no test files."""

from __future__ import annotations

import numpy as np

from cnnrun.errors import DataError


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
    per_class = _keep_one_each(per_class, counts, exact)
    train, val = [], []
    for c, k in zip(classes, per_class, strict=True):
        idx = rng.permutation(np.flatnonzero(y == c))
        val.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def _keep_one_each(per_class: np.ndarray, counts: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Move held-out images away from a class they would empty, to the classes furthest below
    their exact share that can spare one, where the total allows."""
    cap = np.maximum(counts - 1, 0)
    extra = int(np.maximum(per_class - cap, 0).sum())
    if extra == 0 or int(cap.sum()) < int(per_class.sum()):
        return per_class  # nothing to move, or no way to keep one of each: the caller says so
    per_class = np.minimum(per_class, cap)
    for i in np.argsort(per_class - exact, kind="stable"):
        take = min(int(cap[i] - per_class[i]), extra)
        per_class[i] += take
        extra -= take
    return per_class


def split_by_class(
    x: np.ndarray, y: np.ndarray, fraction: float, rng: np.random.Generator, what: str = ""
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_kept, y_kept, x_out, y_out``: the samples of ``(N, ...)`` ``x`` and ``(N,)`` ``y``
    split by :func:`stratified_split`, ``fraction`` of them held out. With ``what`` (the
    config key, e.g. ``data.val_fraction``) a split that leaves a class without a kept
    sample, or either part empty, is a :class:`DataError` naming the value."""
    if what and len(y) < 2:
        raise DataError(
            f"{what}={fraction}: {len(y)} image(s) cannot be split in two; use more data"
        )
    kept, out = stratified_split(y, fraction, rng)
    if what:
        lost = sorted(set(np.unique(y).tolist()) - set(np.unique(y[kept]).tolist()))
        if lost:
            raise DataError(
                f"{what}={fraction} leaves class {lost[0]} without an image to train on "
                f"({int((y == lost[0]).sum())} in all): choose a smaller fraction or more data"
            )
    return x[kept], y[kept], x[out], y[out]
