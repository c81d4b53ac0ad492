"""Mini-batches of a split, in order or shuffled with a given generator."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from cnnrun.errors import DataError

from .checks import is_int


def iterate_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    rng: np.random.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(xb, yb)`` batches covering every sample once, along the first axis.

    With ``shuffle`` the order is ``rng.permutation(N)`` (a fresh unseeded generator when
    ``rng`` is None). The last, smaller batch is kept unless ``drop_last``.
    """
    if not is_int(batch_size) or batch_size < 1:
        raise DataError(f"invalid batch_size {batch_size!r}: expected an int >= 1")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    order = np.random.default_rng(rng).permutation(len(x)) if shuffle else None
    stop = len(x) - len(x) % batch_size if drop_last else len(x)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, stop, batch_size):
            if order is None:
                yield x[start : start + batch_size], y[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                yield x[idx], y[idx]

    return batches()  # a generator, but batch_size is checked at the call
