"""The data sets by name: each registers a loader, and :func:`load_data` does the rest.

Adding a data set is one module in this package (and its ``conf/data/<name>.yaml``)::

    from .registry import Request, Splits, register

    @register("tiny", channels=1, classes=("no", "yes"))
    def load_tiny(request: Request) -> Splits:
        ...  # (N, 1, H, W) float32 in [0, 1] and (N,) labels: the training files, and the
        return Splits(x_train, y_train, x_test, y_test)  # official test files if there are

:func:`cnnrun.data.load_data` makes the three splits from that: validation is carved out of
the training files (``val_fraction``, stratified by class, seeded), and a data set without
test files of its own gets a held-out test split carved first (``test_fraction``). (Before the
three splits a loader returned train and validation: its second pair is now the test split.)

:func:`discover` imports every module of the package when :mod:`cnnrun.data` is imported, so
nothing else needs an edit; :func:`names` lists the registered data sets, by their ``order``
and then by name. A data set with ``channels`` / ``classes`` given has those fixed (asking
for other values is an error before the loader runs); one without them reads
``request.channels`` / ``request.num_classes`` itself and returns its class names.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnrun.errors import DataError


@dataclass(frozen=True)
class Request:
    """The arguments of :func:`cnnrun.data.load_data`, those shared by all data sets checked."""

    name: str  # the registered name
    root: Path  # absolute: the folder the data set's files are looked for under
    image_size: tuple[int, int] | None  # (H, W), None for the native size
    channels: object  # as given: None, or for a data set with fixed channels that number
    num_classes: object  # as given, likewise
    num_samples: object  # as given (unchecked: only data sets that generate samples use it)
    val_fraction: float  # in (0, 1): of the training files, for validation
    test_fraction: float  # in (0, 1): held out for testing, where there are no test files
    rng: np.random.Generator  # the only randomness a loader may use
    verify_checksums: bool


@dataclass
class Splits:
    """What a loader returns: images in [0, 1], before resizing and standardising. The
    training files, and the official test files where the data set has them (None: a test
    split is held out of the training files)."""

    x_train: np.ndarray  # (N_train, C, H, W) float32
    y_train: np.ndarray  # (N_train,) integer labels in [0, num_classes)
    x_test: np.ndarray | None = None  # (N_test, C, H, W) float32
    y_test: np.ndarray | None = None  # (N_test,) integer labels
    classes: Sequence[str] | None = None  # None: the class names the data set registered


Loader = Callable[[Request], Splits]


@dataclass(frozen=True)
class DataSet:
    """A registered data set: its loader and what is fixed about it."""

    name: str
    load: Loader
    channels: int | None = None  # native channel count; None: the loader decides
    classes: tuple[str, ...] | None = None  # class names; None: the loader decides
    order: int = 100  # place in names(): lower first, then by name


_DATASETS: dict[str, DataSet] = {}


def register(
    name: str,
    *,
    channels: int | None = None,
    classes: Sequence[str] | None = None,
    order: int = 100,
) -> Callable[[Loader], Loader]:
    """Decorator: register the loader it wraps as data set ``name`` (returned unchanged)."""
    if not name or name != key(name):
        raise ValueError(f"data set name {name!r} must be lower case, with _ rather than -")

    def add(load: Loader) -> Loader:
        if name in _DATASETS:
            raise ValueError(f"data set {name!r} is already registered")
        fixed = None if classes is None else tuple(classes)
        _DATASETS[name] = DataSet(name, load, channels, fixed, order)
        return load

    return add


def unregister(name: str) -> None:
    """Forget data set ``name`` (a no-op if it is not registered)."""
    _DATASETS.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered data sets' names, by ``order`` and then alphabetically."""
    return tuple(sorted(_DATASETS, key=lambda n: (_DATASETS[n].order, n)))


def key(name: object) -> str:
    """A name as it is registered: stripped, lower case, ``-`` as ``_`` (``Fashion-MNIST``)."""
    return str(name).strip().lower().replace("-", "_")


def lookup(name: object) -> DataSet:
    """The data set called ``name`` (in any case, ``-`` or ``_``); DataError if there is none."""
    found = _DATASETS.get(key(name))
    if found is None:
        raise DataError(f"unknown data set {name!r}: expected one of {', '.join(names())}")
    return found


def discover(package: str) -> None:
    """Import every module of ``package`` (a dotted name), so their data sets register."""
    path = importlib.import_module(package).__path__
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
