"""``digits``: scikit-learn's 8x8 handwritten digits, 1797 images with 16 grey levels.

They ship with scikit-learn, so this data set works offline. It has no test files: the test
split (``test_fraction``) and then validation (``val_fraction``) are held out by class with
the run's ``seed`` (:func:`cnnrun.data.load_data`).
"""

from __future__ import annotations

import numpy as np

from .registry import Request, Splits, register


@register("digits", channels=1, classes=tuple(str(c) for c in range(10)), order=0)
def load_digits(request: Request) -> Splits:
    """The 1797 digits as ``(N, 1, 8, 8)`` float32 in [0, 1], all of them training files."""
    from sklearn import datasets  # local: only this data set needs sklearn

    bunch = datasets.load_digits()
    x = bunch.images.astype(np.float32)[:, None] / 16.0  # (1797, 8, 8) -> (1797, 1, 8, 8), 0..16
    y = bunch.target.astype(np.int64)
    return Splits(x, y)
