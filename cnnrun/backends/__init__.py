"""Kernel backends: modules with the same functions, picked by ``set_backend(name)``.

``numpy`` (the default) is vectorised; ``reference`` is the plain loops it is tested against.
``numba`` is accepted and, until its compiled kernels exist, runs the NumPy kernels (a warning
says so once).
"""

from __future__ import annotations

import logging
from types import ModuleType

from ..errors import ConfigError
from . import numpy_backend, reference

BACKENDS = ("numpy", "numba", "reference")
log = logging.getLogger(__name__)
_warned: set[str] = set()


def get_backend(name: str) -> ModuleType:
    """The kernel module for ``name``; a :class:`ConfigError` naming the accepted ones otherwise."""
    key = str(name).lower()
    if key == "numpy":
        return numpy_backend
    if key == "reference":
        return reference
    if key == "numba":
        if key not in _warned:
            _warned.add(key)
            log.warning("backend 'numba' has no compiled kernels yet: running the NumPy kernels")
        return numpy_backend
    raise ConfigError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")
