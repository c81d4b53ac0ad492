"""Kernel backends: modules with the same functions, picked by ``set_backend(name)``.

``numpy`` (the default) is vectorised; ``numba`` is compiled loops (imported, and compiled or
loaded from Numba's cache, on first use); ``reference`` is the plain loops both are tested against.

Every backend has the same functions over (N, C, H, W)-shaped arrays (see
:mod:`cnnrun.backends.reference`). Each lays its results out in memory as its kernels like best
(NumPy: batch-last; Numba: C order) and takes any layout in; ``native(a)`` puts an array in that
layout once, for a layer that hands it to several kernels. The ``ctx`` a forward kernel returns
is private to its backend: layers run backward on the kernels that ran their forward.

The process around the kernels (what :func:`set_threads` sets up, and training calls it):

* threads: BLAS and Numba share the cores. Once the numba backend is in use, BLAS keeps a single
  thread: the conv and pooling kernels then run on Numba's threads and BLAS only serves the small
  Linear layers, and OpenBLAS's idle workers spin for a while after each product on the cores
  that Numba's threads need next (measured on 2 cores: a LeNet step ran 10 times slower with
  both at 2 threads);
* memory: glibc hands freed blocks above 128 KiB back to the system, so every step faulted its
  large arrays back in, page by page (about 15% of a LeNet step at batch 256 on the numba
  backend). Freed memory is kept for reuse instead: blocks up to 32 MiB come from the heap, and
  the heap is trimmed only when more than 1 GiB of it is free.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
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
        _limit_blas(1)
        keep_freed_memory()
        return module
    raise ConfigError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` threads (None or 0: :func:`machine_cores`) for Numba's kernels, OpenMP and
    BLAS, except that BLAS keeps one thread while the numba backend is in use, and keep freed
    memory for reuse (see the module's notes); returns the number of threads.

    A sweep that runs k jobs at once on one machine gives each ``machine_cores() // k``.
    """
    if threads is not None and (
        isinstance(threads, bool) or int(threads) != threads or threads < 0
    ):
        raise ConfigError(
            f"invalid backend.threads {threads!r}: expected an int >= 1, "
            "or null for the machine's cores"
        )
    n = int(threads) if threads else machine_cores()
    import numba

    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    if "numba" in _loaded:
        _limit_blas(1)
    keep_freed_memory()
    return n


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks for reuse (see the module's notes); False where the C
    library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 1 << 30))


def _limit_blas(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
