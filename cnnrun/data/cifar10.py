"""``cifar10``: 60,000 32x32 colour images in ten classes, CIFAR-10's python version.

The files are the pickled batches ``data_batch_1`` to ``data_batch_5`` (the training files:
validation is held out of them, ``val_fraction``) and ``test_batch`` (the test split), looked
for in ``root/cifar-10-batches-py`` (where the official archive unpacks), then
``root/cifar10/cifar-10-batches-py``, then ``root`` itself. With ``verify_checksums`` each
must have its published MD5 digest."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from cnnrun.errors import DataError

from .files import find_files, verify_official
from .registry import Request, Splits, register

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR10_MD5 = {  # the python batches, as listed by torchvision
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


@register("cifar10", channels=3, classes=CIFAR10_CLASSES, order=20)
def load_cifar10(request: Request) -> Splits:
    """The training batches 1-5 and the test batch as ``(N, 3, 32, 32)`` float32 in [0, 1]."""
    root = request.root
    paths = _batch_paths(root, request.verify_checksums)
    train = [read_cifar_batch(paths[f"data_batch_{i}"]) for i in range(1, 6)]
    val_x, val_y = read_cifar_batch(paths["test_batch"])
    train_x = np.concatenate([b[0] for b in train])
    train_y = np.concatenate([b[1] for b in train])
    if len(train_x) == 0 or len(val_x) == 0:
        raise DataError(f"CIFAR-10 batches in {root} hold no images: expected at least one")
    return Splits(
        train_x.astype(np.float32) / 255.0, train_y, val_x.astype(np.float32) / 255.0, val_y
    )


def _batch_paths(root: Path, verify: bool) -> dict[str, Path]:
    """The six batches' paths by name, found (and checked if ``verify``) under ``root``."""
    folders = [root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py", root]

    def missing(folder: Path, names: list[str]) -> str:
        return (
            f"missing CIFAR-10 file(s) {', '.join(names)} in {folder}: download "
            f"{CIFAR10_URL} and extract it in {root} (it unpacks to cifar-10-batches-py/)"
        )

    paths = find_files(folders, {name: [name] for name in _CIFAR10_MD5}, missing)
    if verify:
        verify_official(paths, _CIFAR10_MD5)
    return paths


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64.

    The file is a pickled dict with ``b"data"`` ``(N, 3072)`` uint8 (1024 red, then green,
    then blue values, each row-major 32x32) and ``b"labels"`` (N ints in 0..9). Only unpickle
    files you trust: pickle can run code.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as exc:  # a damaged pickle can fail in many ways
        raise DataError(f"cannot read {path} as a CIFAR-10 python batch: {exc!r}") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}: expected a CIFAR-10 batch dict")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path} lacks the key b'data' or b'labels' of a CIFAR-10 batch")
    data, labels = np.asarray(data), np.asarray(labels)
    _check_batch(path, data, labels)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)  # (N, 3072) -> (N, 3, 32, 32)


def _check_batch(path: Path, data: np.ndarray, labels: np.ndarray) -> None:
    """DataError unless ``data`` is ``(N, 3072)`` uint8 and ``labels`` N integers in 0..9."""
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise DataError(
            f"{path} has data of shape {data.shape} and dtype {data.dtype}: "
            "expected (N, 3072) uint8"
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path} has labels of shape {labels.shape} and dtype {labels.dtype}: "
            f"expected {len(data)} integers"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= 10):
        raise DataError(f"{path} has labels from {labels.min()} to {labels.max()}: expected 0 to 9")
