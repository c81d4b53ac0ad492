"""What the numba kernels share: the fastmath flags, the chunk of images per work item, the
output size of a window sweep, and :func:`parallel`, which runs a kernel's work items on the
configured threads.

**Threads.** The kernels are compiled serial (``nogil=True``) over a range ``[lo, hi)`` of work
items (chunks of images, or (image, channel) planes, or channels), and :func:`parallel` cuts
the items into one contiguous range per thread: the caller takes the first, ``threads - 1``
threads of this module the others. Numba's own ``parallel=True`` would do the same split, but
compiling a ``prange`` loop costs about twice what the serial loop costs (its body is compiled
as a gufunc, then linked and optimised again in the caller): the first LeNet run compiled for
18 s with it, 5 s without. Waking a sleeping thread to hand it a range took 50-100 us on this
2-core virtual machine (a prange loop: 2 us), which shows on LeNet at batch 64, whose kernels
take 0.2 to 0.5 ms, so the threads poll for work for a while before they sleep (:mod:`.spin`).
Every item is computed alone, or into its own slot of a partial sum (dW: one per chunk, added
in chunk order), so which thread takes it changes no bit. A second Python thread calling in
while the threads are busy runs its kernel alone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numba
import numpy as np

from .. import process
from .spin import handover, wait_for

# fused multiply-add and vectorised reductions; NaN and infinity keep their meaning
_FAST = {"contract", "reassoc", "nsz", "arcp"}

Pair = tuple[int, int]
CHUNK = 4  # images per work item: scratch rows are allocated once per item

# about 500 us of polling (25 ns a poll) before a thread sleeps on its lock: 200 us was shorter
# than the gap a LeNet step leaves between its last conv kernel and its first pooling one
# backward (the linear layers', on one thread), and the woken worker started 25-50 us late
# (LeNet at batch 64 2.22 -> 2.14 ms). A parallel sweep gives each job its share of the cores,
# so one job's polls do not take another's core.
POLLS = 20000
# polls after a ticket is seen, while the caller enters native code (.spin): 100 (about 2 us)
# was too few for the caller's dispatch of the conv kernels, whose workers then slept on the
# GIL (seen 25 us after the ticket, against 6 with 300; LeNet at batch 64 2.35 -> 2.20 ms)
SETTLE = 300
_workers: list[_Worker] = []  # started on first use, threads - 1 of them
_busy = threading.Lock()  # held while the workers run a kernel's ranges


class _Worker:
    """A thread that runs one range at a time. The caller posts a ticket, and the thread polls
    for it (:func:`.spin.handover`, :data:`POLLS` polls after its last range: 500 us) before
    it sleeps on a lock; the caller polls for the ticket done the same way, which the thread
    marks from native code as it starts polling again. The locks are released for every range
    too, so a thread that stopped polling is woken all the same."""

    def __init__(self, index: int):
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.flags = np.zeros(16, np.int64)  # [0]: posted, [8]: done (another cache line)
        self.task: tuple | None = None
        self.error: BaseException | None = None
        name = f"cnnrun-numba-{index}"
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self) -> None:
        ticket = 0
        while True:
            # ticket done, then poll for the next, with the GIL released (see .spin)
            handover(self.flags, 8, ticket, 0, ticket + 1, POLLS, SETTLE)
            ticket += 1
            self.go.acquire()  # at once if the ticket is posted
            kernel, args = self.task
            try:
                kernel(*args)
            except BaseException as error:  # handed to the caller, which waits for it
                self.error = error
            self.done.release()

    def start(self, kernel: Callable, args: tuple) -> None:
        self.task, self.error = (kernel, args), None
        self.flags[0] += 1
        self.go.release()

    def wait(self) -> None:
        wait_for(self.flags, 8, self.flags[0], POLLS)
        self.done.acquire()
        if self.error is not None:
            raise self.error


def set_threads(threads: int) -> None:
    """Run the kernels on ``threads`` threads from now on (as
    :func:`cnnrun.backends.configure_process` does); idle threads beyond that number stay
    idle."""
    process.set_kernel_threads(threads)


def threads() -> int:
    """The threads the kernels run on: as configured, Numba's default before."""
    return process.kernel_threads() or max(1, int(numba.config.NUMBA_NUM_THREADS))


def _after_fork_in_child() -> None:
    """A forked child inherits the workers without their threads: it starts its own."""
    _workers.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def chunks(n: int) -> int:
    """Work items of :data:`CHUNK` images for a batch of ``n``."""
    return (n + CHUNK - 1) // CHUNK


def parallel(kernel: Callable, items: int, *args) -> None:
    """``kernel(*args, lo, hi)`` over the work items ``[0, items)``, one contiguous range per
    thread (see the module's notes)."""
    n = min(threads(), items)
    if n <= 1 or not _busy.acquire(blocking=False):
        kernel(*args, 0, items)
        return
    try:
        _split(kernel, items, n, args)
    finally:
        _busy.release()


def _split(kernel: Callable, items: int, n: int, args: tuple) -> None:
    """The caller's range here, the others on the workers; their first error raised here."""
    while len(_workers) < n - 1:
        _workers.append(_Worker(len(_workers) + 1))
    edges = [items * i // n for i in range(n + 1)]
    helpers = _workers[: n - 1]
    for worker, lo, hi in zip(helpers, edges[1:-1], edges[2:]):
        worker.start(kernel, (*args, lo, hi))
    try:
        kernel(*args, edges[0], edges[1])
    finally:
        errors = []
        for worker in helpers:
            try:
                worker.wait()
            except BaseException as error:
                errors.append(error)
    if errors:
        raise errors[0]


def out_hw(padded_hw: Pair, kernel: Pair, stride: Pair, dilation: Pair) -> Pair:
    """(Ho, Wo) of ``kernel`` taps ``dilation`` apart, every ``stride``, over (Hp, Wp)."""
    return tuple(
        (p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(padded_hw, kernel, stride, dilation)
    )
