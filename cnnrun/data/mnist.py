"""``mnist`` and ``fashion_mnist``: 28x28 grey images in the IDX format, ten classes.

Each is four IDX files, gzipped (``.gz``, as downloaded) or not::

    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte

looked for in ``root/mnist`` (``root/fashion_mnist``), then ``root/MNIST/raw``
(``root/FashionMNIST/raw``) as torchvision leaves them, then ``root`` itself. The t10k files
are the test split; validation is held out of the train files (``val_fraction``). With
``verify_checksums`` the gzipped files must have the published MD5 digests. The uncompressed
files have no published digests, so they are checked by their structure only (IDX magic
numbers, sizes, label range).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnrun.errors import DataError

from .files import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, find_files, read_idx, verify_official
from .registry import Request, Splits, register

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class _IdxSet:
    title: str  # as messages name it
    folders: tuple[str, ...]  # under root, tried in order before root itself
    url: str  # where to download the files
    md5: dict[str, str]  # official .gz name -> MD5 digest


# MD5 digests of the official .gz files (as published by the data sets and listed by torchvision).
_MNIST = _IdxSet(
    title="MNIST",
    folders=("mnist", "MNIST/raw"),
    url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)
_FASHION_MNIST = _IdxSet(
    title="Fashion-MNIST",
    folders=("fashion_mnist", "FashionMNIST/raw"),
    url="https://github.com/zalandoresearch/fashion-mnist/tree/master/data/fashion",
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)


@register("mnist", channels=1, classes=tuple(str(c) for c in range(10)), order=10)
def load_mnist(request: Request) -> Splits:
    """MNIST's train and t10k splits (see the module's docstring for the files)."""
    return _load_idx_set(_MNIST, request.root, request.verify_checksums)


@register("fashion_mnist", channels=1, classes=FASHION_MNIST_CLASSES, order=11)
def load_fashion_mnist(request: Request) -> Splits:
    """Fashion-MNIST's train and t10k splits (the same files as MNIST's)."""
    return _load_idx_set(_FASHION_MNIST, request.root, request.verify_checksums)


def _load_idx_set(spec: _IdxSet, root: Path, verify: bool) -> Splits:
    """The train files and the t10k (test) files as ``(N, 1, H, W)`` float32 in [0, 1] and
    int64 labels."""
    paths = _idx_paths(spec, root, verify)
    train_x, train_y = _read_pair(paths, "train")
    val_x, val_y = _read_pair(paths, "t10k")
    if train_x.shape[1:] != val_x.shape[1:]:
        raise DataError(
            f"{paths['train-images-idx3-ubyte']} has {train_x.shape[1:]} images but "
            f"{paths['t10k-images-idx3-ubyte']} has {val_x.shape[1:]}: expected the same size"
        )
    if len(train_x) == 0 or len(val_x) == 0:
        raise DataError(f"{spec.title} files in {root} hold no images: expected at least one")
    return Splits(
        train_x[:, None].astype(np.float32) / 255.0,  # (N, H, W) -> (N, 1, H, W)
        train_y.astype(np.int64),
        val_x[:, None].astype(np.float32) / 255.0,
        val_y.astype(np.int64),
    )


def _idx_paths(spec: _IdxSet, root: Path, verify: bool) -> dict[str, Path]:
    """The four files' paths by base name, found (and checked if ``verify``) under ``root``."""
    folders = [root / f for f in spec.folders] + [root]

    def missing(folder: Path, bases: list[str]) -> str:
        return (
            f"missing {spec.title} file(s) {', '.join(b + '(.gz)' for b in bases)} in "
            f"{folder}: download the four IDX files from {spec.url} and put them there"
            + (f" (or directly in {root})" if folder == folders[0] else "")
        )

    paths = find_files(folders, {base: [base + ".gz", base] for base in _IDX_FILES}, missing)
    if verify:
        verify_official(paths, spec.md5)
    return paths


def _read_pair(paths: dict[str, Path], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """The images ``(N, H, W)`` uint8 and labels ``(N,)`` uint8 of split ``prefix``."""
    img_path = paths[f"{prefix}-images-idx3-ubyte"]
    lab_path = paths[f"{prefix}-labels-idx1-ubyte"]
    images = read_idx(img_path, IDX_IMAGES_MAGIC)  # (N, H, W) uint8
    labels = read_idx(lab_path, IDX_LABELS_MAGIC)  # (N,) uint8
    if len(images) != len(labels):
        raise DataError(
            f"{img_path} holds {len(images)} images but {lab_path} holds {len(labels)} "
            "labels: expected the same count"
        )
    if len(labels) and labels.max() >= 10:
        raise DataError(f"{lab_path} has label {labels.max()}: expected labels 0 to 9")
    return images, labels
