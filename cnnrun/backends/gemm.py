"""Matrix products whose bits depend on the operands alone, never on the thread count.

OpenBLAS splits a product among its threads in a way that depends on how many it has, and the
split changes the order in which the terms of a sum are added: with numpy's bundled OpenBLAS
0.3.31 (Haswell), float32 ``a @ b`` gave other bits with 2 BLAS threads than with 1 for 7 of 8
LeNet-sized shapes tried, among them (6, 25) @ (25, 18432), (32, 256) @ (256, 120) and
(64, 1600) @ (1600, 10) (up to 4e-5 apart). A run's numbers, and a sweep's winner, then changed
with the cores its launcher gave it.

So after :func:`cnnrun.backends.configure_process` BLAS has one thread, and :func:`matmul` cuts
a large product into a fixed plan of blocks along one axis of its *output* (the stack of a
stacked product, or the rows of ``a``, or the columns of ``b``, whichever is longer), each block
single-threaded BLAS writing straight into its slice of the result (one call, or
:func:`product_into`'s, below)
(``np.matmul(..., out=view)``: BLAS takes a strided row or column block of a C-contiguous
array as it is), and the caller and a pool of ``threads - 1`` threads take the blocks in turn
(NumPy releases the GIL in matmul). The plan is made from the shapes alone and no block splits
the reduction axis, so every element of the result is the same sum in the same order whatever
the pool's size, and whichever thread computed it.

:func:`run_tasks` runs other independent pieces of work on the same threads the same way: the
NumPy backend's conv kernels cut their column matrices into tiles of output rows, each tile
copied and multiplied by one thread while it is in that core's cache (see
:mod:`cnnrun.backends.numpy_backend`); each tile writes its own part of the result.

Before ``configure_process`` is called (a library user in a notebook) :func:`matmul` is plain
``a @ b`` under the environment's BLAS settings: the promise holds for runs, which call it.

:func:`product_into` makes a short, wide product (a conv's few filters by its taps, times a
tile of thousands of pixels) as one stacked call over blocks of columns where OpenBLAS's
AVX-512 kernel has a faster path for small products (see :data:`SMALL_WORK`), and as one call
elsewhere; ``configure_process`` turns it on where NumPy's BLAS has that kernel. The blocks
come from the shapes alone, like the plan's.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# a product is cut into a power of two of blocks of at least BLOCK_WORK multiply-adds (each BLAS
# call, one per matrix of a stack, counted as CALL_WORK more: its own cost, about 5 us), at most
# MAX_BLOCKS of them and none thinner than MIN_WIDTH rows or columns (stacks: one matrix). A
# block must be worth waking a pool thread for: on a 2-core VM that took 50-150 us, and each
# GIL hand-over between the threads as long, so smaller blocks made products slower, not faster.
# 2**24 (16.8M, about 0.2 ms of one core), not 2**23: LeNet's NumPy step at batch 64 went 4.87 ->
# 4.50 ms, at 256 and on vgg_small and ResNet-20 it stayed as it was (2**25 slowed those).
BLOCK_WORK = 1 << 24
CALL_WORK = 1 << 17
MAX_BLOCKS = 16
MIN_WIDTH = 64

# OpenBLAS's kernels for AVX-512 (the SkylakeX kernel, which its Cooperlake and SapphireRapids
# cores also use) multiply a product of at most about 10**6 multiply-adds by a path of their
# own. For the short, wide products of the conv kernels (16 filters by 144 taps, a tile of
# thousands of pixels) that path ran 1.5-2 times as fast as the general one on the whole
# product, so :func:`product_into` cuts such a product into blocks of columns of at most
# SMALL_WORK multiply-adds (measured on one core of an AMD EPYC with AVX-512, OpenBLAS
# 0.3.31, GFLOP/s whole -> in blocks: (16, 144) @ (144, 2048) 43-51 -> 90-96,
# (32, 288) @ (288, 1024) 59-77 -> 94-96, (6, 25) @ (25, 8960) 38 -> 84; at exactly 10**6 the
# blocks were slower again, and OpenBLAS's AVX2 kernels, Haswell and Zen, gained nothing).
# The blocks are one stacked np.matmul, which loops over them without the GIL: one Python call
# per block made two threads wait on each other's hand-overs and ran slower than one product.
# dW's products (the reduction over the pixels) gained nothing from it, in blocks or whole.
SMALL_KERNEL_CORES = ("skylakex", "cooperlake", "sapphirerapids")
SMALL_SINCE = (0, 3, 18)  # the OpenBLAS that added those kernels (its changelog, x86_64)
SMALL_WORK = 800_000
SMALL_STEP = 16  # a block's columns are a multiple of this ...
SMALL_MIN = 32  # ... and at least this many (narrower blocks cost more calls than they save)

_workers: int | None = None  # None: configure_process has not been called
_small_work: int | None = None  # None: products are one BLAS call (see set_small_products)
_pool: ThreadPoolExecutor | None = None


def set_workers(workers: int | None) -> None:
    """Run blocks on ``workers`` threads from now on (1: in the caller's thread; None: back to
    plain ``a @ b``). Called by :func:`cnnrun.backends.configure_process` only."""
    global _workers, _pool
    if workers == _workers:
        return
    if _pool is not None:
        _pool.shutdown(wait=False)  # idle: every matmul waits for its blocks
    _workers = workers
    # the caller takes blocks too: the pool has the other workers' threads
    _pool = ThreadPoolExecutor(workers - 1, "cnnrun-gemm") if workers and workers > 1 else None


def workers() -> int | None:
    """The threads that run the blocks (None: plain ``a @ b``, configure_process not called)."""
    return _workers


def _after_fork_in_child() -> None:
    """A forked child inherits the pool without its threads: give it a pool of its own."""
    global _workers, _pool
    size, _workers, _pool = _workers, None, None
    set_workers(size)


os.register_at_fork(after_in_child=_after_fork_in_child)


def plan(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> tuple[int, list[int]]:
    """(axis of the output to cut, edges of the blocks along it) for ``a @ b``, from the shapes
    alone; fewer than three edges: one call. 3-D products with the same stack are cut along the
    stack, 2-D ones along the rows of ``a`` or the columns of ``b``, whichever is longer, at
    multiples of :data:`MIN_WIDTH`; others (broadcasting, vectors) are one call."""
    if len(a_shape) != len(b_shape) or a_shape[-1:] != b_shape[-2:-1]:
        return 0, []  # vectors, or shapes that do not match: a @ b says why
    if len(a_shape) == 3 and a_shape[0] == b_shape[0]:
        axis, length, step = 0, a_shape[0], 1
    elif len(a_shape) == 2:
        axis = 0 if a_shape[0] >= b_shape[1] else 1
        length, step = (a_shape[0], b_shape[1])[axis], MIN_WIDTH
    else:
        return 0, []
    calls = a_shape[0] if len(a_shape) == 3 else 1
    work = math.prod(a_shape) * b_shape[-1] + calls * CALL_WORK
    most = min(MAX_BLOCKS, work // BLOCK_WORK, length // step)
    if most < 2:
        return axis, [0, length]
    blocks = 1 << (most.bit_length() - 1)  # a power of two: as many for each of 2, 4, 8 threads
    return axis, [length * i // blocks // step * step for i in range(blocks)] + [length]


def numpy_blas(pools: list[dict]) -> list[dict]:
    """Of threadpoolctl's ``pools``, the BLAS libraries NumPy's wheel bundles (in its
    ``numpy.libs`` or ``.dylibs`` folder): the one it calls, whatever else was loaded (SciPy's
    own OpenBLAS, say). Where there is none (NumPy linked to a BLAS of the system), every BLAS
    loaded."""
    here = Path(np.__file__).resolve().parent
    folders = (here, here.parent / "numpy.libs")
    blas = [p for p in pools if p.get("user_api") == "blas"]
    own = [
        p
        for p in blas
        if p.get("filepath")
        and any(Path(p["filepath"]).resolve().is_relative_to(f) for f in folders)
    ]
    return own or blas


def blas_small_kernel(pools: list[dict] | None = None) -> bool:
    """Whether NumPy's BLAS (:func:`numpy_blas` of ``pools``, threadpoolctl's view of the
    loaded libraries by default) is OpenBLAS :data:`SMALL_SINCE` or later running a kernel of
    :data:`SMALL_KERNEL_CORES` (``OPENBLAS_CORETYPE`` shows there as the kernel it picked); an
    OpenBLAS whose version is not known is taken for one before."""
    if pools is None:
        from threadpoolctl import threadpool_info

        pools = threadpool_info()
    blas = numpy_blas(pools)
    return bool(blas) and all(
        p.get("internal_api") == "openblas"
        and str(p.get("architecture", "")).lower() in SMALL_KERNEL_CORES
        and _version(p.get("version")) >= SMALL_SINCE
        for p in blas
    )


def _version(text) -> tuple[int, ...]:
    """``"0.3.31"`` (or ``"0.3.21.dev"``) as (0, 3, 31); () where it has no leading number."""
    parts = []
    for part in str(text or "").split("."):
        digits = part[: len(part) - len(part.lstrip("0123456789"))]
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def set_small_products(work: int | None) -> None:
    """Cut short, wide products into blocks of columns of at most ``work`` multiply-adds from
    now on (:func:`product_into`), or, for None, not. Called by
    :func:`cnnrun.backends.configure_process` only: :data:`SMALL_WORK` where
    :func:`blas_small_kernel`, else None."""
    global _small_work
    _small_work = work


def small_products() -> int | None:
    """The most multiply-adds of a block of :func:`product_into`; None: one call a product."""
    return _small_work


def block_columns(m: int, k: int, n: int) -> int | None:
    """Columns of b per BLAS call for an (m, k) @ (k, n) product in :func:`product_into`: the
    most, a multiple of :data:`SMALL_STEP`, that keep a call within the small-product work;
    None for one call (no such kernel, too few columns for it, or few enough for one)."""
    if _small_work is None or m * k == 0:
        return None
    width = _small_work // (m * k) // SMALL_STEP * SMALL_STEP
    return width if SMALL_MIN <= width < n else None


def product_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = a @ b`` for 2-D operands: one BLAS call, or where the BLAS has a faster
    kernel for small products (see the module's notes), one BLAS call per block of
    :func:`block_columns` columns, all made by one stacked np.matmul (and a narrower last
    block by one more; dtypes or strides BLAS does not take go through NumPy's own loop, as
    they would whole). The blocks come from the shapes alone, and each column of the result
    is one call's, so the bits do not depend on which thread runs it."""
    if not a.ndim == b.ndim == out.ndim == 2:  # np.matmul's own error, or its own product
        np.matmul(a, b, out=out)
        return
    (m, k), n = a.shape, b.shape[1]
    width = block_columns(m, k, n)
    if width is None or b.shape[0] != k or out.shape != (m, n):  # mismatched: matmul's error
        np.matmul(a, b, out=out)
        return
    whole = n - n % width  # the whole blocks: one stacked product, (n // width, k, width) views
    stack = (whole // width, width)
    np.matmul(
        a[None],
        b[:, :whole].reshape(k, *stack).transpose(1, 0, 2),
        out=out[:, :whole].reshape(m, *stack).transpose(1, 0, 2),
    )
    if whole < n:
        np.matmul(a, b[:, whole:], out=out[:, whole:])


def _block(a: np.ndarray, b: np.ndarray, out: np.ndarray, axis: int, lo: int, hi: int) -> None:
    """Block ``[lo, hi)`` of the plan: one BLAS call writing into its slice of ``out`` (a block
    of a stack: one call per matrix; a short, wide one: :func:`product_into`'s calls)."""
    if out.ndim == 3:  # the stack
        np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi])
    elif axis == 0:  # rows of a
        product_into(a[lo:hi], b, out[lo:hi])
    else:  # columns of b
        product_into(a, b[:, lo:hi], out[:, lo:hi])


class _Tasks:
    """``task(0) ... task(count - 1)``, each taken by whichever thread is free first (the caller
    or a pool thread: which one runs a task changes none of its bits)."""

    def __init__(self, task: Callable[[int], None], count: int):
        self.task = task
        self.todo = iter(range(count))
        self.left = count  # tasks not finished yet
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def work(self) -> None:
        """Run tasks until none is left to take."""
        while True:
            with self.lock:
                index = next(self.todo, None)
            if index is None:
                return
            try:
                self.task(index)
            except BaseException as error:  # handed to the caller, which waits for every task
                self.error = error
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.finished.set()


def run_tasks(task: Callable[[int], None], count: int) -> None:
    """``task(i)`` for every i in ``range(count)``, on the configured threads (the caller's
    alone before :func:`set_workers`). The tasks must be independent (each writes its own
    part of a result), so that their bits do not depend on which thread ran them, or when."""
    if not _workers or _workers == 1 or count < 2:
        for index in range(count):
            task(index)
        return
    tasks = _Tasks(task, count)
    for _ in range(min(_workers, count) - 1):
        _pool.submit(tasks.work)
    tasks.work()  # the caller too: it waits only for tasks that a pool thread took
    tasks.finished.wait()
    if tasks.error is not None:
        raise tasks.error


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (2-D, or 3-D with the same stack), computed by the plan of :func:`plan` on the
    configured threads: the same bits whatever their number (see the module's notes)."""
    if _workers is None:
        return a @ b
    axis, edges = plan(a.shape, b.shape)
    if len(edges) < 3:  # one block: one call, or a short, wide product's blocks of columns
        if not edges or a.ndim != 2:  # vectors, stacks, mismatched shapes: a @ b's own
            return a @ b
        out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
        product_into(a, b, out)  # decides between one call and blocks itself
        return out
    out = np.empty((*a.shape[:-1], b.shape[-1]), np.result_type(a, b))
    run_tasks(lambda i: _block(a, b, out, axis, edges[i], edges[i + 1]), len(edges) - 1)
    return out
