"""Checks of the arguments the data sets share: each returns the checked value or raises a
:class:`cnnrun.errors.DataError` with a one-line message that names the argument and its value."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from cnnrun.errors import DataError


def is_int(value: object) -> bool:
    """An integer, but not a bool (``True`` is no image size)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def parse_image_size(value: object, what: str = "image_size") -> tuple[int, int]:
    """An int (square) or a pair ``(H, W)`` of ints >= 1, as a tuple ``(H, W)``."""
    if is_int(value) and value >= 1:
        return int(value), int(value)
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(is_int(v) and v >= 1 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise DataError(f"invalid {what} {value!r}: expected an int >= 1 or a pair [H, W] of them")


def check_int(value: object, what: str, low: int) -> int:
    """``value`` as an int, if it is one and ``>= low``."""
    if not is_int(value) or value < low:
        raise DataError(f"invalid {what} {value!r}: expected an int >= {low}")
    return int(value)


def check_fraction(value: object, what: str) -> float:
    """``value`` as a float, if it is a number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
        raise DataError(f"invalid {what} {value!r}: expected a number in (0, 1)")
    return float(value)


def make_rng(seed: object) -> np.random.Generator:
    """A Generator as it is, or a fresh one seeded with an int >= 0 (never the global RNG)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if not is_int(seed) or seed < 0:
        raise DataError(f"invalid seed {seed!r}: expected an int >= 0 or a numpy Generator")
    return np.random.default_rng(int(seed))


def check_native(name: str, what: str, given: object, native: int) -> None:
    """``channels`` / ``num_classes`` of a real data set may only restate the native value."""
    if given is not None and (not is_int(given) or given != native):
        raise DataError(
            f"data set {name} has {what}={native}, got {what}={given!r}: "
            f"leave {what} unset (null) or set it to {native}"
        )
