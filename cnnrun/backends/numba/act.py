"""Numba activations: NumPy's element-wise kernels, re-exported as they are.

Not compiled loops, on purpose: each activation is one or two passes over memory that NumPy's
ufuncs already run vectorised (and, backward, in cache-sized blocks), so a loop of Numba's has
nothing left to win on the arithmetic; it would also have to take every layout a neighbouring
layer may hand over (C order here, batch-last from a NumPy layer) without a copy, which the
ufuncs do for free, and match NumPy's NaN handling bit for bit.
"""

from __future__ import annotations

from ..elementwise import (
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)

__all__ = [
    "leaky_relu_backward",
    "leaky_relu_forward",
    "relu_backward",
    "relu_forward",
    "sigmoid_backward",
    "sigmoid_forward",
    "tanh_backward",
    "tanh_forward",
]
