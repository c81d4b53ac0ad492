"""Numba activations: NumPy's element-wise kernels, re-exported as they are.

Not compiled loops, on purpose: each activation is one or two passes over memory that NumPy's
ufuncs already run vectorised (and, backward, in cache-sized blocks), and they take whatever
layout a neighbouring layer hands over (C order here, batch-last from a NumPy layer) without a
copy. A plain ``prange`` loop was not faster: on 2 shared cores, for (256, 6, 28, 28) float32,
ReLU forward took 0.47 ms in NumPy against 7.7 ms, Tanh backward 0.28 ms against 7.6 ms.
"""

from __future__ import annotations

from ..elementwise import (  # noqa: F401 (re-exported by the package)
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
