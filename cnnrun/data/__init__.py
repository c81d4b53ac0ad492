"""The data sets cnnrun trains on, as normalised ``(N, C, H, W)`` float32 arrays.

``load_data(name, ...)`` returns a :class:`DataSplit` with a train, a validation and a test
split (see :mod:`.load` for how they are drawn).
The data sets, one module each (its docstring says its format and where its files are looked
for), registered by name in :mod:`.registry` and found by importing every module here:

- ``digits`` (default, :mod:`.digits`): the 8x8 handwritten digits, carried in cnnrun;
- ``mnist`` / ``fashion_mnist`` (:mod:`.mnist`): the four IDX files under ``root``;
- ``cifar10`` (:mod:`.cifar10`): the python batches under ``root``;
- ``synthetic`` (:mod:`.synthetic`): generated images of simple shapes, no files.

Pixels are scaled to [0, 1], resized (bilinear, :mod:`.resize`) when ``image_size`` differs
from the native size, then standardised per channel with the *train* split's mean and std
(:mod:`.normalise`). A user's mistake (missing or corrupt file, a value out of range) raises
:class:`cnnrun.errors.DataError` with a one-line message. No function here touches NumPy's
global RNG.
"""

from __future__ import annotations

from .batches import iterate_batches
from .checks import parse_image_size
from .cifar10 import CIFAR10_CLASSES, CIFAR10_URL, read_cifar_batch
from .files import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx, verify_md5
from .load import DataSplit, load_data
from .mnist import FASHION_MNIST_CLASSES
from .registry import Request, Splits, discover, names, register, unregister
from .resize import resize_images
from .synthetic import SHAPE_FUNCTIONS, SHAPES, make_synthetic

discover(__name__)  # every module of the package, so that each data set registers

DATASETS = names()  # the data sets of the package, as they stand once imported

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_URL",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "SHAPES",
    "SHAPE_FUNCTIONS",
    "DataSplit",
    "Request",
    "Splits",
    "iterate_batches",
    "load_data",
    "make_synthetic",
    "names",
    "parse_image_size",
    "read_cifar_batch",
    "read_idx",
    "register",
    "resize_images",
    "unregister",
    "verify_md5",
]
