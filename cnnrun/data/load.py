"""``load_data``: the checks every data set shares, its registered loader, then the same
finish for all: three splits, pixels in [0, 1] resized (bilinear) when ``image_size`` differs
from the native size, and standardised per channel with the *train* split's mean and std.

The splits: the official test files are the test split; a data set without them has a test
split held out first (``test_fraction``). Validation is then held out of what is left of the
training files (``val_fraction``). Both are stratified by class and drawn from the seed, so
the same seed gives the same three splits, and no image is in two of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import registry
from .checks import check_fraction, check_native, make_rng, parse_image_size
from .normalise import standardise
from .resize import resize_images
from .splits import split_by_class


@dataclass
class DataSplit:
    """A data set's train, validation and test splits, ready for training.

    ``x_*`` are ``(N, C, H, W)`` float32, standardised with the train split's per-channel
    mean and std; ``y_*`` are ``(N,)`` int64 class indices in ``[0, num_classes)``.
    """

    name: str
    x_train: np.ndarray  # (N_train, C, H, W) float32
    y_train: np.ndarray  # (N_train,) int64
    x_val: np.ndarray  # (N_val, C, H, W) float32
    y_val: np.ndarray  # (N_val,) int64
    x_test: np.ndarray  # (N_test, C, H, W) float32
    y_test: np.ndarray  # (N_test,) int64
    num_classes: int
    channels: int
    image_size: tuple[int, int]  # (H, W)
    classes: list[str]


def load_data(
    name: str,
    *,
    root: str | Path = "data",
    image_size: int | Sequence[int] | None = None,
    channels: int | None = None,
    num_classes: int | None = None,
    num_samples: int = 1000,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int | np.random.Generator = 0,
    verify_checksums: bool = True,
) -> DataSplit:
    """Load data set ``name`` (one of :func:`~cnnrun.data.names`) as a :class:`DataSplit`.

    ``image_size`` None keeps the native size, an int makes it square, a pair is ``(H, W)``.
    ``channels`` / ``num_classes`` None mean native; for the real data sets any other value
    than the native one is an error, for ``synthetic`` they are free (defaults 1 and 10).
    ``num_samples`` is used by ``synthetic`` only. ``val_fraction`` of the training files is
    held out for validation (0.2 here for every data set; the run's ``conf/data/*.yaml`` set
    0.1 for MNIST, Fashion-MNIST and CIFAR-10); ``test_fraction`` of a data set without test
    files (``digits``, ``synthetic``) is held out for testing first; ``seed`` decides both, and
    the images of ``synthetic``. ``verify_checksums`` checks the MD5 of official
    file names against the published digests.
    """
    dataset = registry.lookup(name)
    request = registry.Request(  # the checks in this order: the first mistake is the one named
        name=dataset.name,
        image_size=None if image_size is None else parse_image_size(image_size),
        val_fraction=check_fraction(val_fraction, "val_fraction"),
        test_fraction=check_fraction(test_fraction, "test_fraction"),
        rng=make_rng(seed),
        root=Path(root).expanduser().resolve(),
        channels=channels,
        num_classes=num_classes,
        num_samples=num_samples,
        verify_checksums=verify_checksums,
    )
    _check_fixed(dataset, channels, num_classes)
    return _finish(dataset, _three_splits(dataset.load(request), request), request.image_size)


def _three_splits(raw: registry.Splits, request: registry.Request) -> tuple:
    """``(x_train, y_train, x_val, y_val, x_test, y_test, classes)`` from a loader's files."""
    x, y = raw.x_train, raw.y_train
    if raw.x_test is None:  # no test files: hold a test split out, from the seed
        x, y, x_test, y_test = split_by_class(
            x, y, request.test_fraction, request.rng, "data.test_fraction"
        )
    else:
        x_test, y_test = raw.x_test, raw.y_test
    x_train, y_train, x_val, y_val = split_by_class(
        x, y, request.val_fraction, request.rng, "data.val_fraction"
    )
    return x_train, y_train, x_val, y_val, x_test, y_test, raw.classes


def _check_fixed(dataset: registry.DataSet, channels: object, num_classes: object) -> None:
    """``channels`` and ``num_classes`` may only restate what the data set has fixed."""
    if dataset.channels is not None:
        check_native(dataset.name, "channels", channels, dataset.channels)
    if dataset.classes is not None:
        check_native(dataset.name, "num_classes", num_classes, len(dataset.classes))


def _finish(dataset: registry.DataSet, splits: tuple, size: tuple[int, int] | None) -> DataSplit:
    """Resize the images in [0, 1] if asked, standardise with train stats, package."""
    x_train, y_train, x_val, y_val, x_test, y_test, own_classes = splits
    x_train, x_val, x_test = standardise(*(_at_size(x, size) for x in (x_train, x_val, x_test)))
    classes = dataset.classes if own_classes is None else own_classes
    if classes is None:  # the data set's author's mistake, not the user's
        raise ValueError(f"data set {dataset.name} registered no classes and its loader gave none")
    classes = list(classes)
    return DataSplit(
        name=dataset.name,
        x_train=x_train,
        y_train=y_train.astype(np.int64, copy=False),
        x_val=x_val,
        y_val=y_val.astype(np.int64, copy=False),
        x_test=x_test,
        y_test=y_test.astype(np.int64, copy=False),
        num_classes=len(classes),
        channels=int(x_train.shape[1]),
        image_size=(int(x_train.shape[2]), int(x_train.shape[3])),
        classes=classes,
    )


def _at_size(x: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``(N, C, H, W)`` images resized to ``size`` (H, W), unless None or already that size."""
    return x if size is None or x.shape[2:] == size else resize_images(x, size)
