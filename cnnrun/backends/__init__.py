"""Kernel backends: modules with the same functions, picked by ``set_backend(name)``.

``numpy`` (the default) is vectorised; ``numba`` is compiled loops (imported, and compiled or
loaded from Numba's cache, on first use); ``reference`` is the plain loops both are tested against.

Every backend has the same functions over (N, C, H, W)-shaped arrays (see
:mod:`cnnrun.backends.reference`). Each lays its results out in memory as its kernels like best
(NumPy: batch-last; Numba: C order) and takes any layout in; ``native(a)`` puts an array in that
layout once, for a layer that hands it to several kernels. The ``ctx`` a forward kernel returns
is private to its backend: layers run backward on the kernels that ran their forward.

Looking a backend up changes nothing about the process: thread pools and the allocator are
set by :func:`configure_process` (:mod:`cnnrun.backends.process`), which the runner calls once
at the start of every run and logs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ConfigError
from . import numpy_backend, reference
from .process import ProcessSettings, configure_process, keep_freed_memory, machine_cores

__all__ = [
    "BACKENDS",
    "ProcessSettings",
    "configure_process",
    "get_backend",
    "keep_freed_memory",
    "machine_cores",
]

BACKENDS = ("numpy", "numba", "reference")
_loaded: dict[str, ModuleType] = {"numpy": numpy_backend, "reference": reference}


def get_backend(name: str) -> ModuleType:
    """The kernel module for ``name`` (numba's is imported on first use); a
    :class:`ConfigError` naming the accepted ones otherwise. Nothing else happens."""
    key = str(name).lower()
    module = _loaded.get(key)
    if module is not None:
        return module
    if key == "numba":
        module = _loaded[key] = importlib.import_module(".numba", __name__)
        return module
    raise ConfigError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")
