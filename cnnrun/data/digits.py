"""``digits``: scikit-learn's 8x8 handwritten digits, 1797 images with 16 grey levels.

They ship with scikit-learn, so this data set works offline. It has no test files: the test
split (``test_fraction``) and then validation (``val_fraction``) are held out by class with
the run's ``seed`` (:func:`cnnrun.data.load_data`).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import DataError
from .registry import Request, Splits, register


def _digits_file() -> Path:
    """scikit-learn's ``datasets/data/digits.csv.gz``, found without importing scikit-learn
    (its import pulls in SciPy: about a second of every run's start-up)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "data=digits needs scikit-learn, which ships them: pip install scikit-learn"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DataError(f"scikit-learn's digits file is missing: {path}; reinstall scikit-learn")
    return path


@register("digits", channels=1, classes=tuple(str(c) for c in range(10)), order=0)
def load_digits(request: Request) -> Splits:
    """The 1797 digits as ``(N, 1, 8, 8)`` float32 in [0, 1], all of them training files:
    the 64 grey levels (0..16) of each row of scikit-learn's file, then its class."""
    with gzip.open(_digits_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64)  # (1797, 65)
    x = table[:, :-1].astype(np.float32).reshape(-1, 1, 8, 8) / 16.0  # (1797, 1, 8, 8)
    y = table[:, -1].astype(np.int64)
    return Splits(x, y)
