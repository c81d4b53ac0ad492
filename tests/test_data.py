"""Tests for cnnrun.data: the data sets, the file readers, batching and resizing."""

import gzip
import hashlib
import pickle

import numpy as np
import pytest

from cnnrun.data import (
    CIFAR10_CLASSES,
    DATASETS,
    FASHION_MNIST_CLASSES,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    SHAPES,
    iterate_batches,
    load_data,
    read_idx,
    resize_images,
)
from cnnrun.errors import DataError


def standardise(raw_train, raw_val, scale=255.0):
    """What load_data should give for raw (N, C, H, W) pixels: [0, 1], then train stats."""
    tr, va = raw_train / scale, raw_val / scale
    mean = tr.mean(axis=(0, 2, 3), keepdims=True)
    std = tr.std(axis=(0, 2, 3), keepdims=True)
    return (tr - mean) / std, (va - mean) / std


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- digits -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", seed=0)


def test_digits_shapes_dtypes_and_metadata(digits):
    # 1797 images: 359 held out for testing, 288 of the other 1438 for validation
    assert digits.x_train.shape == (1150, 1, 8, 8)
    assert digits.x_val.shape == (288, 1, 8, 8) and digits.x_test.shape == (359, 1, 8, 8)
    assert digits.y_train.shape == (1150,) and digits.y_val.shape == (288,)
    assert digits.x_train.dtype == np.float32 and digits.x_val.dtype == np.float32
    assert digits.y_train.dtype == np.int64 and digits.y_val.dtype == np.int64
    assert (digits.name, digits.num_classes, digits.channels) == ("digits", 10, 1)
    assert digits.image_size == (8, 8)
    assert digits.classes == [str(c) for c in range(10)]


def test_digits_split_is_stratified_and_complete(digits):
    from cnnrun.data.digits import read_file

    totals = np.bincount(read_file()[1], minlength=10)
    val_counts = np.bincount(digits.y_val, minlength=10)
    test_counts = np.bincount(digits.y_test, minlength=10)
    train_counts = np.bincount(digits.y_train, minlength=10)
    np.testing.assert_array_equal(train_counts + val_counts + test_counts, totals)
    assert np.all(np.abs(test_counts - 0.2 * totals) < 1.0)
    assert np.all(np.abs(val_counts - 0.2 * (totals - test_counts)) < 1.0)
    # no image is in two splits: digits has a few exact duplicates, so compare counts of rows
    splits = [digits.x_train, digits.x_val, digits.x_test]
    all_rows = {r.tobytes() for r in np.concatenate(splits)}
    rows = [{r.tobytes() for r in x} for x in splits]
    assert sum(len(r) for r in rows) - len(all_rows) < 5


def test_digits_val_fraction_changes_split_size():
    data = load_data("digits", val_fraction=0.5, seed=1)
    assert (len(data.y_train), len(data.y_val)) == (719, 719)  # half of 1797 - 359


def test_digits_reproducible_with_seed_and_different_with_another(digits):
    again = load_data("digits", seed=0)
    other = load_data("digits", seed=1)
    np.testing.assert_array_equal(digits.x_train, again.x_train)
    np.testing.assert_array_equal(digits.y_val, again.y_val)
    assert not np.array_equal(digits.y_val, other.y_val)


def test_digits_normalised_with_train_statistics(digits):
    assert abs(float(digits.x_train.mean())) < 1e-4
    assert abs(float(digits.x_train.std()) - 1.0) < 1e-4
    assert abs(float(digits.x_val.mean())) < 0.1  # same transform, not refitted on val
    assert abs(float(digits.x_val.mean())) > 1e-6


def test_digits_resized_to_28_and_to_non_square():
    square = load_data("digits", image_size=28)
    assert square.x_train.shape == (1150, 1, 28, 28) and square.image_size == (28, 28)
    assert square.x_val.shape == (288, 1, 28, 28) and square.x_test.shape == (359, 1, 28, 28)
    assert abs(float(square.x_train.mean())) < 1e-4
    wide = load_data("digits", image_size=(12, 20))
    assert wide.x_train.shape == (1150, 1, 12, 20) and wide.image_size == (12, 20)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"name": "imagenet"}, ["'imagenet'", "digits, mnist, fashion_mnist, cifar10, synthetic"]),
        ({"val_fraction": 0.0}, ["val_fraction 0.0", "(0, 1)"]),
        ({"val_fraction": 1.5}, ["val_fraction 1.5"]),
        ({"image_size": 0}, ["image_size 0"]),
        ({"image_size": (28, -1)}, ["image_size (28, -1)"]),
        ({"image_size": "28"}, ["image_size '28'"]),
        ({"channels": 3}, ["channels=1", "channels=3"]),
        ({"num_classes": 5}, ["num_classes=10", "num_classes=5"]),
        ({"seed": -1}, ["seed -1"]),
        ({"name": "mnist", "channels": 3}, ["mnist", "channels=1", "channels=3"]),
        ({"name": "cifar10", "channels": 1}, ["cifar10", "channels=3", "channels=1"]),
    ],
)
def test_bad_arguments_name_the_value(kwargs, words, tmp_path):
    kwargs = {"name": "digits", "root": tmp_path, **kwargs}
    with pytest.raises(DataError) as excinfo:
        load_data(kwargs.pop("name"), **kwargs)
    message = one_line_error(excinfo)
    for word in words:
        assert word in message


def test_accepted_names():
    assert DATASETS == ("digits", "mnist", "fashion_mnist", "cifar10", "synthetic")


# --- MNIST-style IDX files --------------------------------------------------------------------

IDX_NAMES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "val_x": "t10k-images-idx3-ubyte",
    "val_y": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000 08 ndim, big-endian int32 dims, payload."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_file(path, data: bytes, gz: bool):
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def assert_same_up_to_standardising(x: np.ndarray, raw: np.ndarray) -> None:
    """``x`` is ``raw`` standardised per channel by some mean and std (the train split's)."""
    for c in range(x.shape[1]):
        a, b = raw[:, c].astype(np.float64).ravel(), x[:, c].astype(np.float64).ravel()
        scale = b.std() / a.std()
        np.testing.assert_allclose((a - a.mean()) * scale, b - b.mean(), atol=1e-4)


def assert_same_rows(x: np.ndarray, x_ref: np.ndarray, raw: np.ndarray, raw_ref: np.ndarray):
    """The standardised images ``x`` are the raw images ``raw``, in some order; the transform
    is read off a split whose order is known (``x_ref`` from ``raw_ref``)."""
    a = raw_ref[:, :, 0, 0].astype(np.float64)  # one pixel per channel fits the affine map
    b = x_ref[:, :, 0, 0].astype(np.float64)
    scale = (b.max(0) - b.min(0)) / np.maximum(a.max(0) - a.min(0), 1e-12)
    shift = b.min(0) - a.min(0) * scale
    back = ((x - shift[None, :, None, None]) / scale[None, :, None, None]).round()
    key = lambda arr: sorted(r.tobytes() for r in arr.astype(np.uint8))  # noqa: E731
    assert key(back) == key(raw)


def fake_mnist(folder, gz=True, n_train=20, n_val=3, size=(5, 6), seed=0, skip=()):
    """Small random IDX files under ``folder``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, *size), dtype=np.uint8),
        "train_y": np.arange(n_train, dtype=np.uint8) % 10,
        "val_x": rng.integers(0, 256, (n_val, *size), dtype=np.uint8),
        "val_y": (np.arange(n_val, dtype=np.uint8) + 3) % 10,
    }
    for key, name in IDX_NAMES.items():
        if key not in skip:
            write_file(folder / name, idx_bytes(arrays[key]), gz)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    images = np.random.default_rng(3).integers(0, 256, (4, 3, 5), dtype=np.uint8)
    labels = np.array([9, 0, 4, 2], dtype=np.uint8)
    img_path = write_file(tmp_path / "imgs", idx_bytes(images), gz)
    lab_path = write_file(tmp_path / "labs", idx_bytes(labels), gz)
    np.testing.assert_array_equal(read_idx(img_path, IDX_IMAGES_MAGIC), images)
    np.testing.assert_array_equal(read_idx(lab_path, IDX_LABELS_MAGIC), labels)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_round_trip_of_pixels_and_labels(tmp_path, gz):
    arrays = fake_mnist(tmp_path / "mnist", gz=gz)
    data = load_data("mnist", root=tmp_path, verify_checksums=False)
    # t10k is the test split, as it is; validation is held out of the train files
    assert_same_up_to_standardising(data.x_test, arrays["val_x"][:, None])
    np.testing.assert_array_equal(data.y_test, arrays["val_y"])
    assert_same_rows(
        np.concatenate([data.x_train, data.x_val]),
        data.x_test,
        arrays["train_x"][:, None],
        arrays["val_x"][:, None],
    )
    assert sorted(np.concatenate([data.y_train, data.y_val])) == sorted(arrays["train_y"])
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert (data.channels, data.image_size, data.num_classes) == (1, (5, 6), 10)


def test_mnist_files_directly_in_root_and_resized(tmp_path):
    fake_mnist(tmp_path, gz=False)
    data = load_data("mnist", root=tmp_path, image_size=(10, 4), verify_checksums=False)
    assert data.x_train.shape == (16, 1, 10, 4) and data.x_val.shape == (4, 1, 10, 4)
    assert data.x_test.shape == (3, 1, 10, 4)


def test_fashion_mnist_folder_and_class_names(tmp_path):
    fake_mnist(tmp_path / "fashion_mnist")
    data = load_data("fashion_mnist", root=tmp_path, verify_checksums=False)
    assert data.classes == list(FASHION_MNIST_CLASSES)
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert data.name == "fashion_mnist"


def test_idx_wrong_magic(tmp_path):
    arrays = fake_mnist(tmp_path / "mnist", gz=False)
    bad = tmp_path / "mnist" / IDX_NAMES["train_x"]
    bad.write_bytes(idx_bytes(arrays["train_y"]))  # a labels file under an images name
    with pytest.raises(DataError) as excinfo:
        load_data("mnist", root=tmp_path, verify_checksums=False)
    message = one_line_error(excinfo)
    assert str(bad) in message and "0x00000801" in message and "0x00000803" in message


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated_payload(tmp_path, gz):
    fake_mnist(tmp_path / "mnist", gz=gz)
    images = np.zeros((7, 5, 6), dtype=np.uint8)
    bad = write_file(tmp_path / "mnist" / IDX_NAMES["train_x"], idx_bytes(images)[:-10], gz)
    with pytest.raises(DataError) as excinfo:
        load_data("mnist", root=tmp_path, verify_checksums=False)
    message = one_line_error(excinfo)
    assert str(bad) in message and "truncated" in message
    assert "expected 210" in message and "got 200" in message


def test_idx_truncated_header(tmp_path):
    fake_mnist(tmp_path / "mnist", gz=False)
    bad = tmp_path / "mnist" / IDX_NAMES["val_x"]
    bad.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError) as excinfo:
        load_data("mnist", root=tmp_path, verify_checksums=False)
    assert str(bad) in one_line_error(excinfo)


def test_idx_count_mismatch(tmp_path):
    fake_mnist(tmp_path / "mnist", gz=False)
    labels = tmp_path / "mnist" / IDX_NAMES["train_y"]
    labels.write_bytes(idx_bytes(np.zeros(6, dtype=np.uint8)))
    with pytest.raises(DataError) as excinfo:
        load_data("mnist", root=tmp_path, verify_checksums=False)
    message = one_line_error(excinfo)
    assert "20 images" in message and "6 labels" in message and str(labels) in message


def test_idx_label_out_of_range(tmp_path):
    fake_mnist(tmp_path / "mnist", gz=False)
    labels = tmp_path / "mnist" / IDX_NAMES["val_y"]
    labels.write_bytes(idx_bytes(np.array([1, 10, 2], dtype=np.uint8)))
    with pytest.raises(DataError) as excinfo:
        load_data("mnist", root=tmp_path, verify_checksums=False)
    message = one_line_error(excinfo)
    assert str(labels) in message and "label 10" in message


def test_idx_corrupt_gzip(tmp_path):
    fake_mnist(tmp_path / "mnist", gz=True)
    bad = tmp_path / "mnist" / (IDX_NAMES["val_x"] + ".gz")
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(DataError) as excinfo:
        load_data("mnist", root=tmp_path, verify_checksums=False)
    assert str(bad) in one_line_error(excinfo)


def test_mnist_missing_file_names_file_and_folder(tmp_path):
    fake_mnist(tmp_path / "mnist", skip=("val_y",))
    with pytest.raises(DataError) as excinfo:
        load_data("mnist", root=tmp_path, verify_checksums=False)
    message = one_line_error(excinfo)
    assert "t10k-labels-idx1-ubyte(.gz)" in message
    assert "train-images" not in message  # only what is missing
    assert str((tmp_path / "mnist").resolve()) in message


def test_mnist_missing_everything_points_at_the_data_folder(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_data("fashion_mnist", root=tmp_path / "data")
    message = one_line_error(excinfo)
    assert str((tmp_path / "data" / "fashion_mnist").resolve()) in message
    assert all(name in message for name in IDX_NAMES.values())


def test_mnist_checksum_mismatch_on_official_names(tmp_path):
    fake_mnist(tmp_path / "mnist", gz=True)
    with pytest.raises(DataError) as excinfo:
        load_data("mnist", root=tmp_path, verify_checksums=True)
    message = one_line_error(excinfo)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    assert str(path) in message
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in message and actual in message


def test_mnist_train_and_test_image_sizes_must_agree(tmp_path):
    fake_mnist(tmp_path / "mnist", gz=False)
    images = np.zeros((3, 4, 4), dtype=np.uint8)
    (tmp_path / "mnist" / IDX_NAMES["val_x"]).write_bytes(idx_bytes(images))
    with pytest.raises(DataError) as excinfo:
        load_data("mnist", root=tmp_path, verify_checksums=False)
    assert "(4, 4)" in one_line_error(excinfo)


# --- CIFAR-10 python batches ------------------------------------------------------------------

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def fake_cifar(folder, n=4, seed=0, skip=()):
    """Small pickled batches with the CIFAR-10 structure; returns {name: (data, labels)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate(CIFAR_FILES):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(n)]
        batches[name] = (data, labels)
        if name not in skip:
            batch = {b"batch_label": name.encode(), b"data": data, b"labels": labels}
            (folder / name).write_bytes(pickle.dumps(batch))
    return batches


def test_cifar_round_trip_and_channel_layout(tmp_path):
    batches = fake_cifar(tmp_path / "cifar-10-batches-py")
    data = load_data("cifar10", root=tmp_path, verify_checksums=False)
    assert data.x_train.shape == (16, 3, 32, 32) and data.x_val.shape == (4, 3, 32, 32)
    assert data.x_test.shape == (4, 3, 32, 32)
    assert (data.channels, data.num_classes, data.image_size) == (3, 10, (32, 32))
    assert data.classes == list(CIFAR10_CLASSES) and data.classes[0] == "airplane"
    raw_train = np.concatenate([batches[n][0] for n in CIFAR_FILES[:5]]).reshape(-1, 3, 32, 32)
    raw_test = batches["test_batch"][0].reshape(-1, 3, 32, 32)
    assert_same_up_to_standardising(data.x_test, raw_test)
    np.testing.assert_array_equal(data.y_test, batches["test_batch"][1])
    assert_same_rows(np.concatenate([data.x_train, data.x_val]), data.x_test, raw_train, raw_test)
    # the first 1024 values of a row are the red channel, row-major
    red = batches["test_batch"][0][1, :1024].reshape(32, 32).astype(np.float64)
    corr = np.corrcoef(red.ravel(), data.x_test[1, 0].ravel())[0, 1]
    assert corr > 0.9999


@pytest.mark.parametrize("sub", ["cifar10/cifar-10-batches-py", "."])
def test_cifar_other_layouts_and_resize(tmp_path, sub):
    fake_cifar(tmp_path / sub)
    data = load_data("cifar10", root=tmp_path, image_size=16, verify_checksums=False)
    assert data.x_train.shape == (16, 3, 16, 16) and data.image_size == (16, 16)


@pytest.mark.parametrize(
    ("batch", "words"),
    [
        ({b"data": np.zeros((2, 3072), np.uint8)}, ["b'labels'"]),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, ["(2, 100)", "(N, 3072)"]),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, ["float32", "uint8"]),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, ["expected 2 integers"]),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 11]}, ["11", "0 to 9"]),
        ([1, 2, 3], ["list"]),
    ],
)
def test_cifar_bad_structure(tmp_path, batch, words):
    folder = tmp_path / "cifar-10-batches-py"
    fake_cifar(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError) as excinfo:
        load_data("cifar10", root=tmp_path, verify_checksums=False)
    message = one_line_error(excinfo)
    assert str(folder / "data_batch_3") in message
    for word in words:
        assert word in message


def test_cifar_not_a_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    fake_cifar(folder)
    (folder / "test_batch").write_bytes(b"this is not a pickle")
    with pytest.raises(DataError) as excinfo:
        load_data("cifar10", root=tmp_path, verify_checksums=False)
    assert str(folder / "test_batch") in one_line_error(excinfo)


def test_cifar_missing_files(tmp_path):
    fake_cifar(tmp_path / "cifar-10-batches-py", skip=("data_batch_4", "test_batch"))
    with pytest.raises(DataError) as excinfo:
        load_data("cifar10", root=tmp_path)
    message = one_line_error(excinfo)
    assert "data_batch_4" in message and "test_batch" in message
    assert "data_batch_1" not in message
    assert str((tmp_path / "cifar-10-batches-py").resolve()) in message


def test_cifar_checksum_mismatch(tmp_path):
    fake_cifar(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataError) as excinfo:
        load_data("cifar10", root=tmp_path, verify_checksums=True)
    message = one_line_error(excinfo)
    assert "data_batch_1" in message and "c99cafc152244af753f735de768cd75f" in message


# --- synthetic --------------------------------------------------------------------------------


def test_synthetic_shapes_and_balanced_classes():
    data = load_data(
        "synthetic", num_samples=250, image_size=16, val_fraction=0.2, test_fraction=0.2, seed=0
    )
    assert data.x_train.shape == (160, 1, 16, 16) and data.x_val.shape == (40, 1, 16, 16)
    assert data.x_test.shape == (50, 1, 16, 16)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(data.y_train), [16] * 10)
    np.testing.assert_array_equal(np.bincount(data.y_val), [4] * 10)
    np.testing.assert_array_equal(np.bincount(data.y_test), [5] * 10)
    assert data.classes == list(SHAPES[:10]) and len(set(data.classes)) == 10
    assert abs(float(data.x_train.mean())) < 1e-4 and abs(float(data.x_train.std()) - 1) < 1e-4


def test_synthetic_default_size_is_28():
    data = load_data("synthetic", num_samples=40)
    assert data.image_size == (28, 28) and data.channels == 1 and data.num_classes == 10


def test_synthetic_deterministic_per_seed():
    a = load_data("synthetic", num_samples=100, image_size=12, seed=5)
    b = load_data("synthetic", num_samples=100, image_size=12, seed=5)
    c = load_data("synthetic", num_samples=100, image_size=12, seed=6)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_val, b.y_val)
    assert not np.allclose(a.x_train, c.x_train)


def test_synthetic_colour_and_non_square():
    data = load_data(
        "synthetic", num_samples=60, image_size=(8, 20), channels=3, num_classes=3, seed=0
    )
    assert data.x_train.shape == (38, 3, 8, 20) and data.x_val.shape == (10, 3, 8, 20)
    assert data.x_test.shape == (12, 3, 8, 20)
    assert (data.channels, data.num_classes, data.image_size) == (3, 3, (8, 20))
    np.testing.assert_allclose(data.x_train.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    # colours differ per channel, so the channels are not copies of each other
    assert not np.allclose(data.x_train[:, 0], data.x_train[:, 1])


def test_synthetic_shapes_lie_inside_the_image():
    from cnnrun.data import make_synthetic

    x, y = make_synthetic(240, (9, 14), 1, len(SHAPES), np.random.default_rng(0))
    assert x.shape == (240, 1, 9, 14) and x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(y), [20] * len(SHAPES))
    # the shape is brighter than the background in every image
    assert np.all(x.max(axis=(1, 2, 3)) > 0.45)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"num_classes": len(SHAPES) + 1}, [str(len(SHAPES) + 1), f"2 to {len(SHAPES)}"]),
        ({"num_classes": 1}, ["num_classes 1"]),
        ({"num_classes": 5, "num_samples": 9}, ["num_samples 9", "at least 10"]),
        ({"channels": 0}, ["channels 0"]),
    ],
)
def test_synthetic_bad_arguments(kwargs, words):
    with pytest.raises(DataError) as excinfo:
        load_data("synthetic", **kwargs)
    message = one_line_error(excinfo)
    for word in words:
        assert word in message


def test_synthetic_is_learnable_by_nearest_class_mean():
    data = load_data("synthetic", num_samples=2000, image_size=28, seed=0)
    x_train = data.x_train.reshape(len(data.x_train), -1)
    x_val = data.x_val.reshape(len(data.x_val), -1)
    means = np.stack([x_train[data.y_train == k].mean(axis=0) for k in range(10)])  # (10, D)
    dist = ((x_val[:, None, :] - means[None]) ** 2).sum(axis=-1)  # (N_val, 10)
    accuracy = float((dist.argmin(axis=1) == data.y_val).mean())
    assert accuracy > 0.3  # chance is 0.1


def test_synthetic_makes_every_sample_asked_for_into_the_three_splits():
    data = load_data("synthetic", num_samples=10_000, image_size=28, seed=0)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (6400, 1600, 2000)


def test_no_global_rng_is_touched():
    # the legacy global RNG is what careless library code would reset or advance
    _, key, pos, *_ = np.random.get_state()  # noqa: NPY002
    key = key.copy()
    load_data("synthetic", num_samples=40, image_size=8)
    list(iterate_batches(np.zeros((5, 1)), np.zeros(5), 2, shuffle=True))
    _, key_after, pos_after, *_ = np.random.get_state()  # noqa: NPY002
    assert pos_after == pos
    np.testing.assert_array_equal(key_after, key)


# --- iterate_batches --------------------------------------------------------------------------


def toy(n=10):
    return np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1), np.arange(n, dtype=np.int64)


def test_batches_in_order_keep_last_partial_batch():
    x, y = toy()
    batches = list(iterate_batches(x, y, 3, shuffle=False))
    assert [len(yb) for _, yb in batches] == [3, 3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in batches]), np.arange(10))
    for xb, yb in batches:
        np.testing.assert_array_equal(xb.ravel(), yb)  # x and y stay paired


def test_batches_drop_last():
    x, y = toy()
    sizes = [len(yb) for _, yb in iterate_batches(x, y, 3, shuffle=False, drop_last=True)]
    assert sizes == [3, 3, 3]
    sizes = [len(yb) for _, yb in iterate_batches(x, y, 5, shuffle=True, drop_last=True)]
    assert sizes == [5, 5]


def test_shuffled_batches_cover_every_sample_once_and_are_reproducible():
    x, y = toy(23)
    first = list(iterate_batches(x, y, 4, shuffle=True, rng=np.random.default_rng(7)))
    again = list(iterate_batches(x, y, 4, shuffle=True, rng=np.random.default_rng(7)))
    order = np.concatenate([yb for _, yb in first])
    np.testing.assert_array_equal(np.sort(order), np.arange(23))
    np.testing.assert_array_equal(order, np.random.default_rng(7).permutation(23))
    np.testing.assert_array_equal(order, np.concatenate([yb for _, yb in again]))
    for xb, yb in first:
        np.testing.assert_array_equal(xb.ravel(), yb)


def test_shuffled_epochs_differ_with_one_generator():
    x, y = toy(50)
    rng = np.random.default_rng(0)
    epoch1 = np.concatenate([yb for _, yb in iterate_batches(x, y, 8, shuffle=True, rng=rng)])
    epoch2 = np.concatenate([yb for _, yb in iterate_batches(x, y, 8, shuffle=True, rng=rng)])
    assert not np.array_equal(epoch1, epoch2)


@pytest.mark.parametrize("batch_size", [0, -2, 2.5])
def test_bad_batch_size_fails_at_the_call(batch_size):
    x, y = toy()
    with pytest.raises(DataError, match="batch_size"):
        iterate_batches(x, y, batch_size, shuffle=False)  # no iteration needed


# --- resize_images ----------------------------------------------------------------------------


def bilinear_reference(x, out_h, out_w):
    """Pixel by pixel: sample at (i + 0.5) * in / out - 0.5, clamped, blend four neighbours."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        sy = min(max((i + 0.5) * h / out_h - 0.5, 0.0), h - 1)
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(out_w):
            sx = min(max((j + 0.5) * w / out_w - 0.5, 0.0), w - 1)
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = (1 - fx) * x[:, :, y0, x0] + fx * x[:, :, y0, x1]
            bottom = (1 - fx) * x[:, :, y1, x0] + fx * x[:, :, y1, x1]
            out[:, :, i, j] = (1 - fy) * top + fy * bottom
    return out


def test_resize_identity_when_size_unchanged():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)
    out = resize_images(x, (5, 7))
    np.testing.assert_array_equal(out, x)
    assert out is not x and out.dtype == np.float32


@pytest.mark.parametrize("size", [3, 13, (4, 9), (1, 1)])
def test_resize_constant_image_stays_constant(size):
    x = np.full((2, 2, 6, 5), 0.37, dtype=np.float32)
    out = resize_images(x, size)
    expected = (size, size) if isinstance(size, int) else size
    assert out.shape == (2, 2, *expected) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.37, rtol=1e-6)


def test_resize_known_examples():
    x = np.array([[0, 1], [2, 3]], dtype=np.float64)[None, None]
    up = np.array(
        [
            [0.0, 0.25, 0.75, 1.0],
            [0.5, 0.75, 1.25, 1.5],
            [1.5, 1.75, 2.25, 2.5],
            [2.0, 2.25, 2.75, 3.0],
        ]
    )
    np.testing.assert_allclose(resize_images(x, 4)[0, 0], up)
    grid = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    np.testing.assert_allclose(resize_images(grid, 2)[0, 0], [[2.5, 4.5], [10.5, 12.5]])


@pytest.mark.parametrize(("shape", "size"), [((2, 3, 5, 7), (11, 4)), ((1, 2, 8, 3), (3, 10))])
def test_resize_matches_pixel_by_pixel_reference(shape, size):
    x = np.random.default_rng(1).standard_normal(shape)
    np.testing.assert_allclose(resize_images(x, size), bilinear_reference(x, *size), atol=1e-12)


def test_resize_keeps_integer_dtype_with_rounding():
    x = np.array([[0, 255], [255, 0]], dtype=np.uint8)[None, None]
    out = resize_images(x, 4)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0, 0], [0, 64, 191, 255])


def test_resize_bad_size():
    with pytest.raises(DataError, match="size 0"):
        resize_images(np.zeros((1, 1, 4, 4)), 0)


def test_digits_are_scikit_learns_without_importing_it():
    """cnnrun's own copy is scikit-learn's set, image for image; loading it imports neither
    scikit-learn nor SciPy (whose presence makes Numba import SciPy's BLAS at its start)."""
    import subprocess
    import sys

    datasets = pytest.importorskip("sklearn.datasets")

    from cnnrun.data.digits import load_digits

    ours, theirs = load_digits(None), datasets.load_digits()
    np.testing.assert_array_equal(ours.x_train[:, 0], (theirs.images / 16.0).astype(np.float32))
    np.testing.assert_array_equal(ours.y_train, theirs.target)
    code = (
        "import sys; from cnnrun.data.digits import load_digits; load_digits(None); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def _digits_like(path, images, labels):
    np.savez_compressed(path, images=images, labels=labels)
    return path


@pytest.mark.parametrize(
    "damage",
    ["missing", "not a zip", "truncated", "no labels", "float images", "7x8 images", "level 17"],
)
def test_a_damaged_digits_file_is_named_never_loaded(tmp_path, damage):
    from cnnrun.data.digits import FILE, read_file

    images, labels = read_file()
    path = tmp_path / "digits.npz"
    if damage == "not a zip":
        path.write_bytes(b"images,labels\n")
    elif damage == "truncated":
        path.write_bytes(FILE.read_bytes()[:1000])
    elif damage == "no labels":
        np.savez_compressed(path, images=images)
    elif damage == "float images":
        _digits_like(path, images.astype(np.float32), labels)
    elif damage == "7x8 images":
        _digits_like(path, images[:, :7], labels)
    elif damage == "level 17":
        _digits_like(path, np.where(images == 16, 17, images).astype(np.uint8), labels)
    with pytest.raises(DataError, match=f"digits file {path}.*reinstall cnnrun"):
        read_file(path)
