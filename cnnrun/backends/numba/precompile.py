"""The first compile, on two cores: while this process compiles the forward kernels, a second
process compiles the dW kernels into Numba's cache, and this one loads them from there when
its backward pass reaches them.

Numba compiles on one thread, under a lock: on a machine of two cores a cold cache leaves one
idle for the whole first step. The first LeNet step with an empty cache spent about 6 s
compiling, half of it in the two dW kernels of :mod:`.wide_grad` (the micro-kernel's blocks,
and the few-filters dot products that LeNet's first layer takes), which the forward pass does
not need. So at the first conv forward of a dtype, where a probe kernel of :mod:`.wide_grad`
misses the cache (:func:`start`), a child process compiles them by a call on a small zero
problem, the same wrapper making the same argument types as a real call: the blocks, then the
few-filters kernel if a layer's forward asks for it before the first dW. It says as it begins
each and once it is in the cache. Before its first call of one, dW waits for the child if it
has begun that kernel, and compiles it itself if it has not (:func:`ready`); after the wait
Numba's dispatcher, which looks in the cache before it compiles, loads it. The child needs about
0.8 s to start (Python, NumPy, Numba and its registries), so it is done with the blocks as the
backward pass reaches them, and the few-filters kernel follows. LeNet's first step, the two
ways taken in turn on 2 cores of an AMD EPYC with AVX-512: 6.4-6.7 s alone, 4.5-4.9 s with the
child.

Nothing depends on the child: where it fails, is slow past :data:`WAIT_S`, or the process has
one core or one thread, this process compiles the kernel itself, as it would have. The code
is the same either way (one compiler, one source, the same flags), so are the bits. A warm
cache costs the probe's load from it, 3-4 ms. ``CNNRUN_PRECOMPILE=0`` turns the child off.
"""

from __future__ import annotations

import atexit
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np

log = logging.getLogger(__name__)

JOBS = ("blocks", "few")  # blocks first, always (every 3x3 layer takes it); few where asked
WAIT_S = 120.0  # the longest dW waits for the child before it compiles the kernel itself
ASK_S = 60.0  # the longest the child waits for this process's next word before it ends
# the child imports this very cnnrun, from the folder this process found it in (as found, not
# resolved: Numba's cache is keyed on that path), ahead of the child's working directory, and
# checks that it did (:func:`main`)
_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)
# SIGINT and SIGTERM are blocked before anything is imported: the threads that libraries start
# (OpenBLAS's, at NumPy's import) inherit the mask, and none of them takes the signal either
_CHILD = (
    "import signal; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}); "
    "import sys; root = sys.argv[1]; "
    "sys.path[:] = [root] + [p for p in sys.path if p not in ('', root)]; "
    "from cnnrun.backends.numba.precompile import main; main(sys.argv[2:])"
)
_STOP = {signal.SIGINT, signal.SIGTERM}  # what the child acts on between jobs only
_probed: set[np.dtype] = set()  # dtypes whose first conv forward has looked at the cache
_asked_few: set[np.dtype] = set()  # dtypes whose child was asked for the few-filters kernel
_children: dict[
    np.dtype, _Child
] = {}  # by dtype (np.dtype: its .name costs 2 us a call): the child compiling its dW kernels


class _Child:
    """The second process (``command``), compiling the dW kernels of ``dtype``: the blocks,
    then those that this process asks for on its stdin (:meth:`ask`) until it closes it
    (:meth:`asked_all`). It says ``start <job>`` as it begins one and ``done <job>`` once it
    is in the cache, and a thread of this process reads those words."""

    def __init__(self, dtype: str, command: list[str] | None = None):
        self.begun = {job: threading.Event() for job in JOBS}
        self.done = {job: threading.Event() for job in JOBS}
        self.said: list[str] = []
        self.errors = tempfile.TemporaryFile()  # a file: warnings cannot fill a pipe and stall it
        from . import wide_grad

        self.proc = subprocess.Popen(
            command or [sys.executable, "-c", _CHILD, _ROOT, dtype, wide_grad.__file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
        )
        threading.Thread(target=self._read, name="cnnrun-precompile", daemon=True).start()
        atexit.register(self.stop)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.said.append(line.strip())
            word, _, job = line.strip().partition(" ")
            events = {"start": self.begun, "done": self.done}.get(word, {})
            if job in events:
                events[job].set()
        if self.proc.wait() != 0:  # the caller compiles what is missing, as without a child
            self.errors.seek(0)
            error = self.errors.read().decode(errors="replace").strip()[-500:]
            log.debug("the precompile child failed (%s): %s", self.proc.returncode, error)
        self.errors.close()
        for event in (*self.begun.values(), *self.done.values()):
            event.set()

    def ask(self, job: str) -> None:
        """Have ``job`` compiled too, after the blocks (a lost child changes nothing)."""
        try:
            self.proc.stdin.write(job + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):  # it ended, or this process asked all already
            pass

    def asked_all(self) -> None:
        """No more jobs: the first dW is here, every layer's forward has been."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def wait(self, job: str) -> None:
        """Until ``job`` is cached, if the child has begun it; not at all if it has not (it is
        still starting, or on another job): then the caller compiles it sooner itself."""
        if job not in self.done or not self.begun[job].is_set():
            return
        if not self.done[job].wait(WAIT_S):
            log.debug("the precompile child took over %s s for %s", WAIT_S, job)

    def stop(self) -> None:
        """At exit: the child is asked to stop, and does so after the job it is on (a kill
        between Numba's writes of a cache entry's index and data could leave an index that
        names another version's data)."""
        if self.proc.poll() is None:
            self.proc.terminate()


def enabled() -> bool:
    """Whether a cold cache gets a child: two cores or more for this process
    (:func:`~cnnrun.backends.process.machine_cores`: its affinity, cgroup quota and SLURM
    allocation), a thread count (``backend.threads``) of two or more if one is set, and no
    ``CNNRUN_PRECOMPILE=0``."""
    from .. import process

    if os.environ.get("CNNRUN_PRECOMPILE", "").strip() == "0":
        return False
    threads = process.kernel_threads()
    return process.machine_cores() >= 2 and (threads is None or threads >= 2)


def start(dtype, filters: int | None = None) -> None:
    """At a conv forward (``filters``: the layer's, where its dW takes the wide-row kernels):
    the first of ``dtype`` in this process loads or compiles the probe kernel of
    :mod:`.wide_grad` for it, and where that missed Numba's cache (the file is new, or changed,
    or the cache is empty), starts the child for the dW kernels of ``dtype``; a forward whose
    dW takes the few-filters kernel asks it for that kernel too. Every other call, once per
    conv forward, is two set lookups."""
    key = np.dtype(dtype)
    if key not in _probed:
        _probed.add(key)
        if _cache_missed(key):
            _children[key] = _Child(key.name)
    child = _children.get(key)
    if child is None or filters is None or key in _asked_few:
        return
    from .wide_grad import few_filters

    if few_filters(filters, key):
        _asked_few.add(key)
        child.ask("few")


def _cache_missed(dtype: np.dtype) -> bool:
    """Whether the probe kernel missed the cache for ``dtype`` (False where there is to be no
    child: :func:`enabled`)."""
    if not enabled():
        return False
    from numba import typeof

    from .wide_grad import cache_probe

    probe = np.zeros(1, dtype)
    cache_probe(probe)
    return bool(cache_probe.stats.cache_misses.get((typeof(probe),), 0))


def ready(job: str, dtype) -> None:
    """Before dW's first call of the kernel ``job``: the child's compile of it, if begun."""
    child = _children.get(np.dtype(dtype))
    if child is not None:
        child.asked_all()
        child.wait(job)


def started(dtype) -> bool:
    """Whether this process started a child for ``dtype``."""
    return np.dtype(dtype) in _children


def _after_fork_in_child() -> None:
    """A forked process shares none of its parent's child (nor the thread that reads it), and
    lets go of the pipe to its stdin, whose end is the child's word that all is asked."""
    for child in _children.values():
        try:
            child.proc.stdin.close()
        except OSError:
            pass
    _probed.clear()
    _asked_few.clear()
    _children.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def compile_job(job: str, dtype) -> None:
    """Compile the dW kernel ``job`` for ``dtype`` (into the cache): one call of the wrapper
    on a zero problem that takes that path (few filters: one; blocks: a register of them)."""
    from .simd import VECTOR_BYTES
    from .wide_grad import corr_grad_weight_wide

    dtype = np.dtype(dtype)
    filters = 1 if job == "few" else VECTOR_BYTES // dtype.itemsize
    x = np.zeros((1, 1, 3, 3), dtype)
    dy = np.zeros((1, filters, 1, 1), dtype)
    corr_grad_weight_wide(x, (0, 0, 0, 0), dy, (3, 3), (1, 1))


def main(argv: list[str]) -> None:
    """The child: ``dtype`` and the parent's ``wide_grad.py``, which must be the one imported
    here (else nothing is compiled, for nothing would be found). The blocks, then each job the
    parent asks for, one a line, until it closes stdin or says nothing for :data:`ASK_S`. A
    SIGINT or SIGTERM, blocked during a job (:data:`_CHILD`), ends it after the job."""
    from . import wide_grad

    dtype, expected = argv
    if os.path.abspath(wide_grad.__file__) != os.path.abspath(expected):
        sys.exit(f"imported {wide_grad.__file__}, not the parent's {expected}")
    done: set[str] = set()
    for job in _jobs():
        if job in JOBS and job not in done:
            print("start", job, flush=True)
            compile_job(job, dtype)
            print("done", job, flush=True)
            done.add(job)


def _jobs():
    """The child's jobs: the blocks, then the parent's words, one a line. SIGINT and SIGTERM
    are let through while it waits for a word, between jobs: one that came during a job ends
    the child there."""
    yield JOBS[0]
    while True:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP)
        ready = select.select([sys.stdin], [], [], ASK_S)[0]
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP)
        line = sys.stdin.readline() if ready else ""
        if not line:  # closed (every job asked), or nothing said for ASK_S
            return
        yield line.strip()
