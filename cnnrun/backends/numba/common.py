"""What the numba kernels share: the fastmath flags, the chunk of images per work item, the
output size of a window sweep, and :func:`parallel`, which runs a kernel's work items on the
configured threads.

**Threads.** The kernels are compiled serial (``nogil=True``) over a range ``[lo, hi)`` of work
items (chunks of images, or (image, channel) planes, or channels), and :func:`parallel` cuts
the items into one contiguous range per thread: the caller takes the first, a pool of
``threads - 1`` threads the others. Numba's own ``parallel=True`` would do the same split, but
compiling a ``prange`` loop costs about twice what the serial loop costs (its body is compiled
as a gufunc, then linked and optimised again in the caller): the first LeNet run compiled for
18 s with it, 6 s without. Handing a range to a pool thread costs about 25 us on an idle
machine (a prange loop: 2 us), several times that when other processes hold the cores, which
shows on LeNet at batch 64, whose kernels take 0.2 to 0.5 ms. Every item is computed alone, or
into its own slot of a partial sum (dW: one per chunk, added in chunk order), so which thread
takes it changes no bit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba

# fused multiply-add and vectorised reductions; NaN and infinity keep their meaning
_FAST = {"contract", "reassoc", "nsz", "arcp"}

Pair = tuple[int, int]
CHUNK = 4  # images per work item: scratch rows are allocated once per item

_threads = max(1, int(numba.config.NUMBA_NUM_THREADS))  # until set_threads is called
_pool: ThreadPoolExecutor | None = None


def set_threads(threads: int) -> None:
    """Run the kernels on ``threads`` threads from now on (called by
    :func:`cnnrun.backends.configure_process`)."""
    global _threads, _pool
    threads = max(1, int(threads))
    if threads != _threads and _pool is not None:
        _pool.shutdown(wait=False)  # idle: every parallel() call waits for its ranges
        _pool = None
    _threads = threads


def threads() -> int:
    """The threads the kernels run on."""
    return _threads


def _after_fork_in_child() -> None:
    """A forked child inherits the pool without its threads: it makes its own when needed."""
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def chunks(n: int) -> int:
    """Work items of :data:`CHUNK` images for a batch of ``n``."""
    return (n + CHUNK - 1) // CHUNK


def parallel(kernel: Callable, items: int, *args) -> None:
    """``kernel(*args, lo, hi)`` over the work items ``[0, items)``, one contiguous range per
    thread (see the module's notes)."""
    global _pool
    n = min(_threads, items)
    if n <= 1:
        kernel(*args, 0, items)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(_threads - 1, "cnnrun-numba")
    edges = [items * i // n for i in range(n + 1)]
    futures = [_pool.submit(kernel, *args, lo, hi) for lo, hi in zip(edges[1:-1], edges[2:])]
    try:
        kernel(*args, edges[0], edges[1])
    finally:
        for future in futures:
            future.result()


def out_hw(padded_hw: Pair, kernel: Pair, stride: Pair, dilation: Pair) -> Pair:
    """(Ho, Wo) of ``kernel`` taps ``dilation`` apart, every ``stride``, over (Hp, Wp)."""
    return tuple(
        (p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(padded_hw, kernel, stride, dilation)
    )
