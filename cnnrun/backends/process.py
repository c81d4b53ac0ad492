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
* short, wide products: where NumPy's BLAS is OpenBLAS with its AVX-512 kernel, which has a
  faster path for products of at most about 10**6 multiply-adds, the conv kernels' products of
  few filters are made in blocks of columns within it (:func:`cnnrun.backends.gemm.product_into`,
  planned from the shapes alone); elsewhere one call each.
* memory: glibc hands freed blocks above 128 KiB back to the system, so every step faulted its
  large arrays back in, page by page (about 15% of a LeNet step at batch 256 on the numba
  backend). Freed memory is kept for reuse instead: blocks up to 32 MiB come from the heap, and
  the heap is trimmed only when more than 1 GiB of it is free.
"""

from __future__ import annotations

import ctypes
import math
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
    source: str = "backend.threads"  # where the thread count came from
    compile_note: str = ""  # the numba backend with no compiled kernels cached yet
    # the most multiply-adds of a BLAS call of a short, wide product (gemm.product_into); None:
    # one call a product
    small_products: int | None = None

    def __str__(self) -> str:
        memory = "freed memory kept" if self.freed_memory_kept else "default allocator"
        small = ""
        if self.small_products:
            small = f", short products in BLAS calls of <= {self.small_products:,} multiply-adds"
        note = f"; {self.compile_note}" if self.compile_note else ""
        return (
            f"threads {self.threads} (gemm blocks {self.gemm_workers}, BLAS {self.blas_threads}, "
            f"numba {self.numba_threads}) from {self.source}, {memory}{small}{note}"
        )


class ThreadCount(int):
    """A thread count that says where it came from (``SLURM_CPUS_PER_TASK``, a sweep's share
    of the cores), for the run's log; a plain int is ``backend.threads``."""

    source: str

    def __new__(cls, n: int, source: str) -> ThreadCount:
        count = super().__new__(cls, n)
        count.source = source
        return count


COMPILE_SECONDS = 5  # numba's first compile for a LeNet step on 2 cores; longer on busy ones


def numba_cache() -> str:
    """Where Numba caches cnnrun's compiled kernels: ``NUMBA_CACHE_DIR``, else the
    ``__pycache__`` beside the kernels' source."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "numba", "__pycache__")
    return os.environ.get("NUMBA_CACHE_DIR") or here


def compile_note(backend: str) -> str:
    """A word before Numba's first compile, which prints nothing while it runs (about
    COMPILE_SECONDS on 2 idle cores): empty for the numpy backend, or where compiled kernels
    are cached already."""
    if backend != "numba":
        return ""
    cache = numba_cache()
    for _, _, files in os.walk(cache):
        if any(f.endswith(".nbi") for f in files):
            return ""
    return f"compiling the numba kernels once, about {COMPILE_SECONDS} s; cached in {cache}"


# a thread count the user set for the process: it sets the gemm blocks' and Numba's threads
# (BLAS keeps one, for the same bits at any count), in this order of precedence
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def user_threads() -> tuple[int, str] | None:
    """The first of :data:`THREAD_VARIABLES` set to an int >= 1, and its name."""
    for name in THREAD_VARIABLES:
        text = os.environ.get(name, "").strip()
        if text.isdigit() and int(text) >= 1:
            return int(text), name
    return None


def cgroup_cpus(root: str = "/sys/fs/cgroup") -> int | None:
    """The CPUs this process's cgroup may use in a period (its quota, rounded up); None where
    there is no quota. cgroup v2's ``cpu.max``, else v1's ``cpu.cfs_quota_us``."""
    try:
        quota, period = open(os.path.join(root, "cpu.max")).read().split()[:2]
    except (OSError, ValueError):
        try:
            quota = open(os.path.join(root, "cpu", "cpu.cfs_quota_us")).read().strip()
            period = open(os.path.join(root, "cpu", "cpu.cfs_period_us")).read().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit():
        return None
    return max(1, math.ceil(int(quota) / int(period))) if int(period) > 0 else None


def machine_cores() -> int:
    """The cores this process may use: its CPU affinity, within its cgroup's CPU quota (a
    container's limit) and SLURM's allocation (``SLURM_CPUS_PER_TASK``)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_cpus()
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    for limit in (quota, int(slurm) if slurm.isdigit() and int(slurm) > 0 else None):
        if limit:
            n = min(n, limit)
    return n


def default_threads() -> tuple[int, str]:
    """The user's thread variable (:func:`user_threads`), else :func:`machine_cores`."""
    return user_threads() or (machine_cores(), "the cores this process may use")


_kernel_threads: int | None = None  # None: configure_process has not been called


def set_kernel_threads(threads: int) -> None:
    """The threads the numba backend's kernels run on from now on (set here, not in that
    backend's package, so that a numpy run does not import it)."""
    global _kernel_threads
    _kernel_threads = max(1, int(threads))


def kernel_threads() -> int | None:
    """The threads set by :func:`set_kernel_threads`; None before."""
    return _kernel_threads


def configure_process(threads: int | None = None, backend: str = "numpy") -> ProcessSettings:
    """Use ``threads`` threads (None or 0: :func:`default_threads`) for the blocks of the matrix
    products, Numba's kernels and OpenMP, one for BLAS, and keep freed memory for reuse; see the
    module's notes. The results are the same at any ``threads``, and both backends get the same
    settings (``backend`` only chooses the :func:`compile_note`). A sweep running k jobs at
    once gives each ``machine_cores() // k``."""
    if threads is not None and (
        isinstance(threads, bool) or int(threads) != threads or threads < 0
    ):
        raise ConfigError(
            f"invalid backend.threads {threads!r}: expected an int >= 1, "
            "or null for the machine's cores"
        )
    source = getattr(threads, "source", "backend.threads")
    n, source = (int(threads), source) if threads else default_threads()
    import numba
    from threadpoolctl import threadpool_limits

    numba_threads = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(numba_threads)
    set_kernel_threads(numba_threads)  # the numba backend's own threads (numba/common.py)
    threadpool_limits(limits=n)  # OpenMP and every other pool
    threadpool_limits(limits=1, user_api="blas")
    gemm.set_workers(n)
    small = gemm.SMALL_WORK if gemm.blas_small_kernel() else None
    gemm.set_small_products(small)
    note = compile_note(backend)
    return ProcessSettings(n, n, 1, numba_threads, keep_freed_memory(), source, note, small)


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
