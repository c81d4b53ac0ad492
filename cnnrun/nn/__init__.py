"""The hand-written layers: every ``forward`` keeps what its ``backward`` needs."""

from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .conv import Conv2d
from .init import initialize
from .layers import Dropout, Flatten, Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, Product, Sequential
from .norm import BatchNorm2d
from .pool import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .registry import LAYERS, register_layer
from .residual import Merge, Residual

__all__ = [
    "LAYERS",
    "AvgPool2d",
    "BatchNorm2d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2d",
    "LeakyReLU",
    "Linear",
    "MSELoss",
    "MaxPool2d",
    "Merge",
    "Module",
    "Parameter",
    "Product",
    "ReLU",
    "Residual",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "initialize",
    "register_layer",
]
