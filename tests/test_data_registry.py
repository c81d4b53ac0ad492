"""The data set registry keeps its promises: a data set is one registered loader, load_data
checks, resizes, standardises and packages what it returns, and the package finds its modules
by itself. Every registration made here is undone, so the package's own list is untouched."""

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnrun.data import DATASETS, Request, Splits, load_data, names, register, unregister
from cnnrun.data.registry import discover
from cnnrun.data.splits import split_by_class
from cnnrun.errors import DataError

CONF_DATA = Path(__file__).resolve().parent.parent / "conf" / "data"


def tiny_images(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """12 random (1, 4, 6) images in [0, 1], four of each of three classes."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (12, 1, 4, 6)).astype(np.float32)
    return x, np.arange(12) % 3


@pytest.fixture
def tiny():
    """Data set ``tiny``, registered from here and removed after; yields what its loader saw."""
    seen = []

    @register("tiny", channels=1, classes=("a", "b", "c"))
    def load_tiny(request: Request) -> Splits:
        seen.append(request)
        return Splits(*tiny_images(0))  # its training files: no test files of its own

    try:
        yield seen
    finally:
        unregister("tiny")


def test_a_registered_data_set_loads_normalised_and_split(tiny):
    assert names()[-1] == "tiny" and "tiny" not in DATASETS
    data = load_data("tiny", val_fraction=0.25, test_fraction=0.2, seed=3)
    x, y = tiny_images(0)
    rng = np.random.default_rng(3)  # the test split first, then validation from the rest
    x, y, x_test, y_test = split_by_class(x, y, 0.2, rng)
    x_train, y_train, x_val, y_val = split_by_class(x, y, 0.25, rng)
    mean = x_train.astype(np.float64).mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.astype(np.float64).std(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(data.x_train, (x_train - mean) / std, atol=1e-5)
    np.testing.assert_allclose(data.x_val, (x_val - mean) / std, atol=1e-5)  # train stats
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_val, y_val)
    np.testing.assert_allclose(data.x_test, (x_test - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(data.y_test, y_test)
    assert data.x_train.dtype == np.float32 and data.y_val.dtype == np.int64
    assert (data.name, data.classes, data.num_classes) == ("tiny", ["a", "b", "c"], 3)
    assert (data.channels, data.image_size) == (1, (4, 6))
    (request,) = tiny
    assert request.name == "tiny" and request.val_fraction == 0.25
    assert request.root.is_absolute() and request.image_size is None


def test_a_registered_data_set_is_resized_and_checked(tiny, tmp_path):
    data = load_data("Tiny", root=tmp_path, image_size=(8, 3), channels=1, num_classes=3)
    assert data.x_train.shape == (8, 1, 8, 3) and data.image_size == (8, 3)
    assert abs(float(data.x_train.mean())) < 1e-5
    assert tiny[0].root == tmp_path.resolve() and tiny[0].image_size == (8, 3)
    with pytest.raises(DataError, match="data set tiny has channels=1, got channels=3"):
        load_data("tiny", channels=3)
    with pytest.raises(DataError, match="data set tiny has num_classes=3, got num_classes=10"):
        load_data("tiny", num_classes=10)
    assert len(tiny) == 1  # the loader is not called when the arguments are refused


def test_an_unregistered_data_set_is_unknown_again(tiny):
    unregister("tiny")
    assert names() == DATASETS
    with pytest.raises(DataError, match="unknown data set 'tiny': expected one of digits, mnist"):
        load_data("tiny")


def test_a_data_set_without_fixed_channels_reads_them_from_the_request():
    @register("free", order=-1)
    def load_free(request: Request) -> Splits:
        n = request.num_samples
        x = request.rng.uniform(0, 1, (n, request.channels, 3, 3)).astype(np.float32)
        y = np.arange(n) % 2
        return Splits(x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :], classes=("p", "q"))

    try:
        assert names()[0] == "free"  # order places it before the package's own
        data = load_data("free", channels=2, num_samples=8, seed=1)
        again = load_data("free", channels=2, num_samples=8, seed=1)
    finally:
        unregister("free")
    assert data.x_train.shape == (3, 2, 3, 3) and data.classes == ["p", "q"]
    assert data.x_test.shape == (4, 2, 3, 3)  # its own test files, as they are
    np.testing.assert_array_equal(data.x_val, again.x_val)  # the rng comes from the seed


@pytest.mark.parametrize("name", ["digits", "Tiny", "my-set", ""])
def test_register_refuses_taken_and_unnormalised_names(name):
    with pytest.raises(ValueError, match="data set"):
        register(name)(lambda request: None)
    assert names() == DATASETS


def test_discover_imports_every_module_of_a_package(tmp_path, monkeypatch):
    package = tmp_path / "more_data_sets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "pixels.py").write_text(
        textwrap.dedent(
            """
            from cnnrun.data import register

            @register("pixels", channels=1, classes=("dark", "light"))
            def load_pixels(request):
                raise NotImplementedError
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        discover("more_data_sets")
        assert "pixels" in names()
    finally:
        unregister("pixels")
        for module in ("more_data_sets", "more_data_sets.pixels"):
            sys.modules.pop(module, None)


def test_the_package_registers_its_data_sets_in_a_stable_order():
    assert names() == DATASETS == ("digits", "mnist", "fashion_mnist", "cifar10", "synthetic")


@pytest.mark.parametrize("name", names())
def test_every_data_set_has_its_config(name):
    path = CONF_DATA / f"{name}.yaml"
    assert path.is_file(), f"data set {name} has no {path.name} in conf/data"
    assert yaml.safe_load(path.read_text())["name"] == name
