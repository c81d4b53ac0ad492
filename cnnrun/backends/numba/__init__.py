"""Numba kernels: compiled loops over (N, C, H, W), a few images per work item, the items cut
among the threads by :func:`.common.parallel`.

Same contract as :mod:`cnnrun.backends.contract` and :mod:`cnnrun.backends.reference`, whose
loops define every product here; the tests hold these kernels to those loops and to the NumPy
backend. Every array keeps its input's dtype (float32 stays float32), arrays come back in C
order (two results are not arrays but what ``np.asarray`` makes them of: :func:`pad2d`'s x_pad,
x and its pads, and batch norm's xhat, x with its statistics), and a second run loads the
compiled code from Numba's cache. By concern:

* :mod:`.conv`: convolution (register-blocked micro-kernels over wide rows at stride 1, in
  :mod:`.wide` and :mod:`.wide_grad`, written in :mod:`.simd`'s vector registers; other
  strides as sums of stride-1 problems by phase; plain loops where strided and dilated);
* :mod:`.pool`: max and average pooling;
* :mod:`.norm`: batch normalisation;
* :mod:`.act`: the activations (ReLU compiled, the others NumPy's element-wise kernels).

Each module defines its public kernels first and its jitted loops after: Numba compiles a loop
on its first call, by which time the whole module has run.
"""

from __future__ import annotations

import numpy as np

from .act import (
    add,
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
from .conv import (
    conv2d_forward,
    conv2d_grad_bias,
    conv2d_grad_input,
    conv2d_grad_weight,
    pad2d,
)
from .norm import batchnorm2d_backward, batchnorm2d_forward
from .pool import avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward

__all__ = [
    "NAME",
    "add",
    "avgpool2d_backward",
    "avgpool2d_forward",
    "batchnorm2d_backward",
    "batchnorm2d_forward",
    "conv2d_forward",
    "conv2d_grad_bias",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "maxpool2d_backward",
    "maxpool2d_forward",
    "native",
    "pad2d",
    "relu_backward",
    "relu_forward",
    "sigmoid_backward",
    "sigmoid_forward",
    "tanh_backward",
    "tanh_forward",
]

NAME = "numba"


def native(a: np.ndarray) -> np.ndarray:
    """An array laid out as these kernels want it, C order: ``a`` itself where it already is.
    A layer that hands one array to several kernels converts it once."""
    return np.ascontiguousarray(a)
