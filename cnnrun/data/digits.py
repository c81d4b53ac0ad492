"""``digits``: 8x8 handwritten digits, 1797 images with 17 grey levels (0..16).

The test part of UCI's *Optical Recognition of Handwritten Digits* (E. Alpaydin and C. Kaynak,
1998; CC BY 4.0), the set scikit-learn ships as ``load_digits``. cnnrun carries its own copy,
``digits.npz`` beside this module (45 KB), so the default run works offline and needs neither
scikit-learn nor SciPy (which Numba would otherwise import at its start: 0.2 s of every run).
It holds ``images``, ``(1797, 8, 8)`` uint8, and ``labels``, ``(1797,)`` uint8, in
scikit-learn's order; ``tests/test_data.py`` checks it against scikit-learn's where that is
installed.

It has no test files: the test split (``test_fraction``) and then validation
(``val_fraction``) are held out by class with the run's ``seed`` (:func:`cnnrun.data.load_data`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .registry import Request, Splits, register

FILE = Path(__file__).with_name("digits.npz")
COUNT, LEVELS = 1797, 16


def read_file(path: Path = FILE) -> tuple[np.ndarray, np.ndarray]:
    """The file's ``images`` and ``labels``, checked: a missing or damaged copy is a
    :class:`DataError` that names it, never a run on wrong data."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            images, labels = stored["images"], stored["labels"]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(
            f"cnnrun's digits file {path} cannot be read ({error}); reinstall cnnrun"
        ) from None
    if (
        images.shape != (COUNT, 8, 8)
        or labels.shape != (COUNT,)
        or images.dtype != np.uint8
        or labels.dtype != np.uint8
        or images.max() > LEVELS
        or labels.max() > 9
    ):
        raise DataError(
            f"cnnrun's digits file {path} holds images {images.dtype}{images.shape} and labels "
            f"{labels.dtype}{labels.shape}, not {COUNT} uint8 8x8 images of 0..{LEVELS} and their "
            "labels 0..9; reinstall cnnrun"
        )
    return images, labels


@register("digits", channels=1, classes=tuple(str(c) for c in range(10)), order=0)
def load_digits(request: Request) -> Splits:
    """The 1797 digits as ``(N, 1, 8, 8)`` float32 in [0, 1] (grey level / 16), all of them
    training files."""
    images, labels = read_file()
    x = images.astype(np.float32).reshape(-1, 1, 8, 8) / float(LEVELS)  # (1797, 1, 8, 8)
    return Splits(x, labels.astype(np.int64))
