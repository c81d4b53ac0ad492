"""Process-wide settings for the kernels: set once per run by the runner, never by a lookup.

:func:`configure_process` sets everything from its arguments alone, so two runs with the same
``threads`` and ``backend`` compute with the same settings whatever ran before them in the
process (a notebook, a test session, a sweep's worker):

* threads: the results do not depend on them. BLAS always has one thread: OpenBLAS's results
  depend on its thread count (float32 LeNet products gave other bits on 2 threads than on 1),
  so the products run through :func:`cnnrun.backends.gemm.matmul` instead, which cuts the large
  ones into a plan of blocks made from the shapes alone, each one single-threaded BLAS call, on
  a pool of ``threads`` threads. Numba's kernels (the numba backend) get ``threads`` threads and
  are bit-identical at any count. A single-threaded BLAS also spares Numba's threads the cores
  that OpenBLAS's idle workers spin on after each product (measured on 2 cores: a LeNet step on
  the numba backend ran 10 times slower with BLAS and Numba both at 2 threads); the gemm pool's
  idle threads wait without spinning.
* memory: glibc hands freed blocks above 128 KiB back to the system, so every step faulted its
  large arrays back in, page by page (about 15% of a LeNet step at batch 256 on the numba
  backend). Freed memory is kept for reuse instead: blocks up to 32 MiB come from the heap, and
  the heap is trimmed only when more than 1 GiB of it is free.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

from ..errors import ConfigError
from . import gemm


@dataclass(frozen=True)
class ProcessSettings:
    """What :func:`configure_process` set; ``str()`` is the phrase a run logs."""

    threads: int
    gemm_workers: int
    blas_threads: int
    numba_threads: int
    freed_memory_kept: bool

    def __str__(self) -> str:
        memory = "freed memory kept" if self.freed_memory_kept else "default allocator"
        return (
            f"threads {self.threads} (gemm blocks {self.gemm_workers}, BLAS {self.blas_threads}, "
            f"numba {self.numba_threads}), {memory}"
        )


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure_process(threads: int | None = None, backend: str = "numpy") -> ProcessSettings:
    """Use ``threads`` threads (None or 0: :func:`machine_cores`) for the blocks of the matrix
    products, Numba's kernels and OpenMP, one for BLAS, and keep freed memory for reuse; see the
    module's notes. The results are the same at any ``threads``, and both backends get the same
    settings (``backend`` is kept for the callers that name it). A sweep running k jobs at once
    gives each ``machine_cores() // k``."""
    if threads is not None and (
        isinstance(threads, bool) or int(threads) != threads or threads < 0
    ):
        raise ConfigError(
            f"invalid backend.threads {threads!r}: expected an int >= 1, "
            "or null for the machine's cores"
        )
    n = int(threads) if threads else machine_cores()
    import numba
    from threadpoolctl import threadpool_limits

    numba_threads = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(numba_threads)
    threadpool_limits(limits=n)  # OpenMP and every other pool
    threadpool_limits(limits=1, user_api="blas")
    gemm.set_workers(n)
    return ProcessSettings(n, n, 1, numba_threads, keep_freed_memory())


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
