"""The data sets cnnrun trains on, as normalised ``(N, C, H, W)`` float32 arrays.

``load_data(name, ...)`` returns a :class:`DataSplit` with a train and a validation split:

- ``digits`` (default): scikit-learn's 8x8 handwritten digits (1797 images, ships with
  scikit-learn, works offline), split by class with ``seed`` and ``val_fraction``.
- ``mnist`` / ``fashion_mnist``: the four IDX files (``.gz`` or not) under ``root/mnist`` or
  ``root/fashion_mnist`` (also ``root/MNIST/raw``, ``root/FashionMNIST/raw`` as torchvision
  leaves them, or ``root`` itself). The train files are the train split, t10k the validation.
- ``cifar10``: the python batches under ``root/cifar-10-batches-py``,
  ``root/cifar10/cifar-10-batches-py`` or ``root``; ``test_batch`` is the validation split.
- ``synthetic``: generated images of simple shapes, any size, channels and class count.

Pixels are scaled to [0, 1], resized (bilinear) when ``image_size`` differs from the native
size, then standardised per channel with the *train* split's mean and std. A user's mistake
(missing or corrupt file, a value out of range) raises :class:`cnnrun.errors.DataError` with a
one-line message. No function here touches NumPy's global RNG.
"""

from __future__ import annotations

import gzip
import hashlib
import numbers
import pickle
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnrun.errors import DataError

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "synthetic")


@dataclass
class DataSplit:
    """A data set's train and validation splits, ready for training.

    ``x_*`` are ``(N, C, H, W)`` float32, standardised with the train split's per-channel
    mean and std; ``y_*`` are ``(N,)`` int64 class indices in ``[0, num_classes)``.
    """

    name: str
    x_train: np.ndarray  # (N_train, C, H, W) float32
    y_train: np.ndarray  # (N_train,) int64
    x_val: np.ndarray  # (N_val, C, H, W) float32
    y_val: np.ndarray  # (N_val,) int64
    num_classes: int
    channels: int
    image_size: tuple[int, int]  # (H, W)
    classes: list[str]


# --- arguments ------------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def parse_image_size(value, what: str = "image_size") -> tuple[int, int]:
    """An int (square) or a pair ``(H, W)`` of ints >= 1, as a tuple ``(H, W)``."""
    if _is_int(value) and value >= 1:
        return int(value), int(value)
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(_is_int(v) and v >= 1 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise DataError(f"invalid {what} {value!r}: expected an int >= 1 or a pair [H, W] of them")


def _check_int(value, what: str, low: int) -> int:
    if not _is_int(value) or value < low:
        raise DataError(f"invalid {what} {value!r}: expected an int >= {low}")
    return int(value)


def _make_rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if not _is_int(seed) or seed < 0:
        raise DataError(f"invalid seed {seed!r}: expected an int >= 0 or a numpy Generator")
    return np.random.default_rng(int(seed))


def _check_native(name: str, what: str, given, native: int) -> None:
    """``channels`` / ``num_classes`` of a real data set may only restate the native value."""
    if given is not None and (not _is_int(given) or given != native):
        raise DataError(
            f"data set {name} has {what}={native}, got {what}={given!r}: "
            f"leave {what} unset (null) or set it to {native}"
        )


# --- public API -----------------------------------------------------------------------------------


def load_data(
    name: str,
    *,
    root: str | Path = "data",
    image_size=None,
    channels: int | None = None,
    num_classes: int | None = None,
    num_samples: int = 1000,
    val_fraction: float = 0.2,
    seed: int | np.random.Generator = 0,
    verify_checksums: bool = True,
) -> DataSplit:
    """Load data set ``name`` (one of :data:`DATASETS`) as a normalised :class:`DataSplit`.

    ``image_size`` None keeps the native size, an int makes it square, a pair is ``(H, W)``.
    ``channels`` / ``num_classes`` None mean native; for the real data sets any other value
    than the native one is an error, for ``synthetic`` they are free (defaults 1 and 10).
    ``num_samples`` is used by ``synthetic`` only; ``val_fraction`` and ``seed`` decide the
    split of ``digits`` and ``synthetic`` (MNIST-style sets and CIFAR-10 have a fixed test
    split) and the images of ``synthetic``. ``verify_checksums`` checks the MD5 of official
    file names against the published digests.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r}: expected one of {', '.join(DATASETS)}")
    size = None if image_size is None else parse_image_size(image_size)
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, numbers.Real)
        or not 0.0 < val_fraction < 1.0
    ):
        raise DataError(f"invalid val_fraction {val_fraction!r}: expected a number in (0, 1)")
    rng = _make_rng(seed)
    root = Path(root).expanduser().resolve()

    if key == "synthetic":
        channels = 1 if channels is None else _check_int(channels, "channels", 1)
        num_classes = 10 if num_classes is None else _check_int(num_classes, "num_classes", 2)
        if num_classes > len(SHAPES):
            raise DataError(
                f"invalid num_classes {num_classes} for synthetic: it draws {len(SHAPES)} "
                f"shapes, so expected 2 to {len(SHAPES)}"
            )
        num_samples = _check_int(num_samples, "num_samples", 1)
        if num_samples < 2 * num_classes:
            raise DataError(
                f"invalid num_samples {num_samples} for synthetic with {num_classes} classes: "
                f"expected at least {2 * num_classes} (two per class)"
            )
        x, y = make_synthetic(num_samples, size or (28, 28), channels, num_classes, rng)
        train, val = _stratified_split(y, float(val_fraction), rng)
        return _finish(key, x[train], y[train], x[val], y[val], None, list(SHAPES[:num_classes]))

    channels_native, classes_native = (3, 10) if key == "cifar10" else (1, 10)
    _check_native(key, "channels", channels, channels_native)
    _check_native(key, "num_classes", num_classes, classes_native)
    if key == "digits":
        from sklearn.datasets import load_digits  # local: only this data set needs sklearn

        bunch = load_digits()
        x = bunch.images.astype(np.float32)[:, None] / 16.0  # (1797, 1, 8, 8), values 0..16
        y = bunch.target.astype(np.int64)
        classes = [str(c) for c in range(10)]
        train, val = _stratified_split(y, float(val_fraction), rng)
        x_train, y_train, x_val, y_val = x[train], y[train], x[val], y[val]
    elif key in ("mnist", "fashion_mnist"):
        x_train, y_train, x_val, y_val = _load_mnist_like(key, root, verify_checksums)
        classes = list(_MNIST_LIKE[key]["classes"])
    else:
        x_train, y_train, x_val, y_val = _load_cifar10(root, verify_checksums)
        classes = list(CIFAR10_CLASSES)

    return _finish(key, x_train, y_train, x_val, y_val, size, classes)


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
    if not _is_int(batch_size) or batch_size < 1:
        raise DataError(f"invalid batch_size {batch_size!r}: expected an int >= 1")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    order = np.random.default_rng(rng).permutation(len(x)) if shuffle else None
    stop = len(x) - len(x) % batch_size if drop_last else len(x)

    def batches():
        for start in range(0, stop, batch_size):
            if order is None:
                yield x[start : start + batch_size], y[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                yield x[idx], y[idx]

    return batches()  # a generator, but batch_size is checked at the call


def resize_images(x: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of ``(N, C, H, W)`` images to ``size`` (int or ``(H, W)``); dtype kept.

    Pixel centres are aligned as in PyTorch's ``interpolate(mode="bilinear",
    align_corners=False)``: output pixel ``i`` samples input coordinate
    ``(i + 0.5) * H_in / H_out - 0.5``, clamped to ``[0, H_in - 1]``, and blends the two
    nearest input pixels linearly; the same along W. Computed as ``R_h @ img @ R_w.T`` with
    interpolation matrices (two weights per row), one matrix product per axis for all images,
    which is far quicker than gathering pixels. Integer images are rounded back.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"resize_images expects (N, C, H, W) images, got shape {x.shape}")
    out_h, out_w = parse_image_size(size, "size")
    n, c, h, w = x.shape
    if (out_h, out_w) == (h, w):
        return x.copy()
    work = x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)
    r_h = _interpolation_matrix(h, out_h, work.dtype)  # (out_h, H)
    r_w = _interpolation_matrix(w, out_w, work.dtype)  # (out_w, W)
    cols = work.reshape(-1, w) @ r_w.T  # (N*C*H, out_w)
    cols = cols.reshape(n, c, h, out_w).transpose(0, 1, 3, 2)  # (N, C, out_w, H)
    rows = cols.reshape(-1, h) @ r_h.T  # (N*C*out_w, out_h)
    out = rows.reshape(n, c, out_w, out_h).transpose(0, 1, 3, 2)  # (N, C, out_h, out_w)
    if not np.issubdtype(x.dtype, np.floating):
        info = np.iinfo(x.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return np.ascontiguousarray(out, dtype=x.dtype)


def _interpolation_matrix(n_in: int, n_out: int, dtype) -> np.ndarray:
    """``(n_out, n_in)`` matrix of linear-interpolation weights, two per row, summing to 1."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), i0), 1.0 - frac)  # add.at: i0 == i1 at the edges
    np.add.at(matrix, (np.arange(n_out), i1), frac)
    return matrix.astype(dtype)


# --- split, normalise -----------------------------------------------------------------------------


def _stratified_split(
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
    train, val = [], []
    for c, k in zip(classes, per_class, strict=True):
        idx = rng.permutation(np.flatnonzero(y == c))
        val.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of ``(N, C, H, W)`` in float64, a chunk of images at a time."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].astype(np.float64)
        total += part.sum(axis=(0, 2, 3))
        squares += np.square(part).sum(axis=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean, np.where(std > 1e-8, std, 1.0)  # a constant channel is only centred


def _finish(name, x_train, y_train, x_val, y_val, size, classes) -> DataSplit:
    """Resize float images in [0, 1] if asked, standardise with train stats, package."""
    if size is not None:
        x_train, x_val = resize_images(x_train, size), resize_images(x_val, size)
    mean, std = _channel_stats(x_train)
    shift = mean.astype(np.float32)[:, None, None]  # (C, 1, 1), broadcasts over (N, C, H, W)
    scale = (1.0 / std).astype(np.float32)[:, None, None]
    x_train = ((x_train - shift) * scale).astype(np.float32, copy=False)
    x_val = ((x_val - shift) * scale).astype(np.float32, copy=False)
    return DataSplit(
        name=name,
        x_train=x_train,
        y_train=y_train.astype(np.int64, copy=False),
        x_val=x_val,
        y_val=y_val.astype(np.int64, copy=False),
        num_classes=len(classes),
        channels=int(x_train.shape[1]),
        image_size=(int(x_train.shape[2]), int(x_train.shape[3])),
        classes=classes,
    )


# --- files ----------------------------------------------------------------------------------------


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: Path, expected: str) -> None:
    """Raise DataError unless the file's MD5 is ``expected``."""
    actual = _md5(path)
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {path}: expected MD5 {expected}, got {actual}; the file is "
            "corrupt or not the official one: download it again (or set "
            "data.verify_checksums=false for your own files)"
        )


def _find_files(folders: list[Path], wanted: dict[str, list[str]]) -> tuple[Path, dict]:
    """The first folder holding every wanted file, with the path found for each.

    ``wanted`` maps a file's base name to the names it may have on disk, in order of
    preference. If no folder has them all, raise FileNotFoundError with the folder that has
    the most of them (or the first folder) and the base names missing there.
    """
    best = None
    for folder in folders:
        found = {}
        for base, names in wanted.items():
            hit = next((folder / n for n in names if (folder / n).is_file()), None)
            if hit is not None:
                found[base] = hit
        if len(found) == len(wanted):
            return folder, found
        if best is None or len(found) > len(best[1]):
            best = (folder, found)
    folder, found = best
    raise FileNotFoundError(folder, [b for b in wanted if b not in found])


# --- MNIST-style IDX ------------------------------------------------------------------------------

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# MD5 digests of the official .gz files (as published by the data sets and listed by torchvision).
_MNIST_LIKE = {
    "mnist": {
        "title": "MNIST",
        "folders": ("mnist", "MNIST/raw"),
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "classes": tuple(str(c) for c in range(10)),
    },
    "fashion_mnist": {
        "title": "Fashion-MNIST",
        "folders": ("fashion_mnist", "FashionMNIST/raw"),
        "url": "https://github.com/zalandoresearch/fashion-mnist/tree/master/data/fashion",
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "classes": FASHION_MNIST_CLASSES,
    },
}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims: (N, rows, cols)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim: (N,)
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped if its name ends in ``.gz``).

    Layout, big-endian: a 4-byte magic number ``0x00 0x00 0x08 ndim``, then ``ndim`` int32
    dimensions, then ``prod(dims)`` bytes row-major. Returns a uint8 array of shape ``dims``;
    a wrong magic number or a payload of the wrong length raises DataError.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, too short for an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        kind = "images" if magic == IDX_IMAGES_MAGIC else "labels"
        raise DataError(
            f"{path} is not an IDX {kind} file: magic number 0x{found:08x}, expected 0x{magic:08x}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{path} is truncated: expected a {header}-byte header, got {len(raw)} bytes"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected, actual = int(np.prod(dims)), len(raw) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "too long"
        raise DataError(
            f"{path} is {problem}: its header says {dims}, so expected {expected} bytes of "
            f"data after the header, got {actual}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def _load_mnist_like(key: str, root: Path, verify: bool):
    """Train and t10k splits of MNIST / Fashion-MNIST as float32 in [0, 1] and int64 labels."""
    spec = _MNIST_LIKE[key]
    folders = [root / f for f in spec["folders"]] + [root]
    wanted = {base: [base + ".gz", base] for base in _IDX_FILES}
    try:
        _, paths = _find_files(folders, wanted)
    except FileNotFoundError as exc:
        folder, missing = exc.args
        raise DataError(
            f"missing {spec['title']} file(s) {', '.join(m + '(.gz)' for m in missing)} in "
            f"{folder}: download the four IDX files from {spec['url']} and put them there"
            + (f" (or directly in {root})" if folder == folders[0] else "")
        ) from None
    if verify:
        for path in paths.values():
            if path.name in spec["md5"]:
                verify_md5(path, spec["md5"][path.name])

    splits = []
    for prefix in ("train", "t10k"):
        img_path, lab_path = (
            paths[f"{prefix}-images-idx3-ubyte"],
            paths[f"{prefix}-labels-idx1-ubyte"],
        )
        images = read_idx(img_path, IDX_IMAGES_MAGIC)  # (N, H, W) uint8
        labels = read_idx(lab_path, IDX_LABELS_MAGIC)  # (N,) uint8
        if len(images) != len(labels):
            raise DataError(
                f"{img_path} holds {len(images)} images but {lab_path} holds {len(labels)} "
                "labels: expected the same count"
            )
        if len(labels) and labels.max() >= 10:
            raise DataError(f"{lab_path} has label {labels.max()}: expected labels 0 to 9")
        splits.append((images, labels))
    (train_x, train_y), (val_x, val_y) = splits
    if train_x.shape[1:] != val_x.shape[1:]:
        raise DataError(
            f"{paths['train-images-idx3-ubyte']} has {train_x.shape[1:]} images but "
            f"{paths['t10k-images-idx3-ubyte']} has {val_x.shape[1:]}: expected the same size"
        )
    if len(train_x) == 0 or len(val_x) == 0:
        raise DataError(f"{spec['title']} files in {root} hold no images: expected at least one")
    return (
        train_x[:, None].astype(np.float32) / 255.0,  # (N, 1, H, W)
        train_y.astype(np.int64),
        val_x[:, None].astype(np.float32) / 255.0,
        val_y.astype(np.int64),
    )


# --- CIFAR-10 -------------------------------------------------------------------------------------

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
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _load_cifar10(root: Path, verify: bool):
    """CIFAR-10 train (batches 1-5) and test splits as float32 in [0, 1] and int64 labels."""
    folders = [root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py", root]
    wanted = {name: [name] for name in _CIFAR10_MD5}
    try:
        _, paths = _find_files(folders, wanted)
    except FileNotFoundError as exc:
        folder, missing = exc.args
        raise DataError(
            f"missing CIFAR-10 file(s) {', '.join(missing)} in {folder}: download "
            f"{CIFAR10_URL} and extract it in {root} (it unpacks to cifar-10-batches-py/)"
        ) from None
    if verify:
        for name, path in paths.items():
            verify_md5(path, _CIFAR10_MD5[name])
    train = [read_cifar_batch(paths[f"data_batch_{i}"]) for i in range(1, 6)]
    val_x, val_y = read_cifar_batch(paths["test_batch"])
    train_x = np.concatenate([b[0] for b in train])
    train_y = np.concatenate([b[1] for b in train])
    if len(train_x) == 0 or len(val_x) == 0:
        raise DataError(f"CIFAR-10 batches in {root} hold no images: expected at least one")
    return train_x.astype(np.float32) / 255.0, train_y, val_x.astype(np.float32) / 255.0, val_y


# --- synthetic shapes -----------------------------------------------------------------------------

# Each shape is a distance-like function d(u, v) of the pixel's offset from the shape's centre
# in units of its half-size: d <= 0 inside, d grows by about 1 per half-size outside.
_T = 0.3  # half the width of strokes (bars, cross, diagonals) in half-sizes


def _box(u, v):
    return np.maximum(np.abs(u), np.abs(v)) - 1.0


def _diagonal(u, v):
    return np.maximum(np.abs(u - v) * np.float32(0.7071) - _T, _box(u, v))


def _anti_diagonal(u, v):
    return np.maximum(np.abs(u + v) * np.float32(0.7071) - _T, _box(u, v))


def _hbar(u, v):
    return np.maximum(np.abs(v) - _T, np.abs(u) - 1.0)


def _vbar(u, v):
    return np.maximum(np.abs(u) - _T, np.abs(v) - 1.0)


SHAPE_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "square": _box,
    "disc": lambda u, v: np.sqrt(u * u + v * v) - 1.0,
    "triangle": lambda u, v: np.maximum(v - 1.0, (2.0 * np.abs(u) - v - 1.0) * np.float32(0.45)),
    "cross": lambda u, v: np.minimum(_hbar(u, v), _vbar(u, v)),
    "horizontal_bar": _hbar,
    "vertical_bar": _vbar,
    "ring": lambda u, v: np.abs(np.sqrt(u * u + v * v) - 0.75) - 0.25,
    "diagonal": _diagonal,
    "anti_diagonal": _anti_diagonal,
    "x": lambda u, v: np.minimum(_diagonal(u, v), _anti_diagonal(u, v)),
    "frame": lambda u, v: np.maximum(_box(u, v), 0.55 - np.maximum(np.abs(u), np.abs(v))),
    "diamond": lambda u, v: (np.abs(u) + np.abs(v) - 1.0) * np.float32(0.7071),
}
SHAPES = tuple(SHAPE_FUNCTIONS)


def make_synthetic(
    num_samples: int,
    image_size,
    channels: int,
    num_classes: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Images of simple shapes: ``x`` ``(N, C, H, W)`` float32 in [0, 1], ``y`` ``(N,)`` int64.

    Class ``k`` is ``SHAPES[k]``; classes are balanced (counts differ by at most one). Each
    image draws its shape's half-size (22-40 % of min(H, W)), centre (shape kept inside),
    colour (per channel), background level and Gaussian pixel noise (std 0.05) from ``rng``.
    Edges are anti-aliased over about one pixel, so shapes stay recognisable down to 8x8.
    """
    h, w = parse_image_size(image_size)
    n = num_samples
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    f32 = np.float32
    half = rng.uniform(0.22, 0.40, n).astype(f32) * min(h, w)  # (N,) half-size in pixels
    cx = rng.uniform(half, w - half).astype(f32)  # centre, pixel units
    cy = rng.uniform(half, h - half).astype(f32)
    cols = np.arange(w, dtype=f32) + 0.5  # pixel centres
    rows = np.arange(h, dtype=f32) + 0.5

    coverage = np.empty((n, h, w), dtype=f32)
    for k in range(num_classes):
        idx = np.flatnonzero(y == k)
        s = half[idx, None, None]  # (n_k, 1, 1)
        u = (cols[None, None, :] - cx[idx, None, None]) / s  # (n_k, 1, W)
        v = (rows[None, :, None] - cy[idx, None, None]) / s  # (n_k, H, 1)
        d = SHAPE_FUNCTIONS[SHAPES[k]](u, v)  # (n_k, H, W)
        coverage[idx] = np.clip(0.5 - d * s, 0.0, 1.0)  # about one pixel of soft edge

    colour = rng.uniform(0.5, 1.0, (n, channels, 1, 1)).astype(f32)
    background = rng.uniform(0.0, 0.2, (n, 1, 1, 1)).astype(f32)
    x = background + (colour - background) * coverage[:, None]  # (N, C, H, W)
    x += 0.05 * rng.standard_normal(x.shape, dtype=f32)
    np.clip(x, 0.0, 1.0, out=x)
    return x, y
