"""Kernel backends: modules with the same functions, picked by ``set_backend(name)``.

``numpy`` (the default) is vectorised; ``numba`` is compiled loops (imported, and compiled, on
first use); ``reference`` is the plain loops both are tested against.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ConfigError
from . import numpy_backend, reference

BACKENDS = ("numpy", "numba", "reference")
_loaded: dict[str, ModuleType] = {"numpy": numpy_backend, "reference": reference}


def get_backend(name: str) -> ModuleType:
    """The kernel module for ``name``; a :class:`ConfigError` naming the accepted ones otherwise."""
    key = str(name).lower()
    module = _loaded.get(key)
    if module is not None:
        return module
    if key == "numba":
        module = _loaded[key] = importlib.import_module(".numba_backend", __name__)
        return module
    raise ConfigError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")
