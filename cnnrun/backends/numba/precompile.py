"""The first compile, on two cores: while this process compiles the forward kernels, a second
process compiles the dW kernels into Numba's cache, and this one loads them from there when
its backward pass reaches them.

Numba compiles on one thread, under a lock: on a machine of two cores a cold cache leaves one
idle for the whole first step. The first LeNet step with an empty cache spent about 6 s
compiling, a third of it in the two dW kernels of :mod:`.wide_grad` (the micro-kernel's blocks,
and the few-filters dot products that LeNet's first layer takes), which the first forward pass
does not need. So at the first conv forward of a dtype, where a probe kernel of
:mod:`.wide_grad` misses the cache (:func:`start`), a child (``python -m
cnnrun.backends.numba.precompile float32``) runs both on a small zero problem, the same
wrappers making the same argument types as a real call, and says each kernel's name once it
is in the cache. Before its first call of one, dW waits for that word (:func:`ready`); then
Numba's dispatcher, which looks in the cache before it compiles, loads it.

Nothing depends on the child: where it fails, is slow past :data:`WAIT_S`, or the machine has
one core, this process compiles the kernel itself, as it would have. The code is the same
either way (one compiler, one source, the same flags), so are the bits. A warm cache costs the
probe's load, under a millisecond. ``CNNRUN_PRECOMPILE=0`` turns the child off.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

JOBS = ("blocks", "few")  # in the order the child compiles them: every 3x3 layer takes blocks
WAIT_S = 120.0  # the longest dW waits for the child before it compiles the kernel itself
# the child imports this cnnrun, wherever this process found it (a checkout on sys.path, an
# install): its folder goes first on the child's path unless that path has it already
_ROOT = str(Path(__file__).resolve().parents[3])
_CHILD = (
    "import sys; root = sys.argv[1]; root in sys.path or sys.path.insert(0, root); "
    "from cnnrun.backends.numba.precompile import main; main(sys.argv[2:])"
)
_probed: set[str] = set()  # dtypes whose first conv forward has looked at the cache
_children: dict[str, _Child] = {}  # by dtype: the child compiling its dW kernels


class _Child:
    """The second process (``command``), compiling the dW kernels of ``dtype`` and saying the
    name of each once it is cached; a thread reads those words."""

    def __init__(self, dtype: str, command: list[str] | None = None):
        self.done = {job: threading.Event() for job in JOBS}
        self.errors = tempfile.TemporaryFile()  # a file: warnings cannot fill a pipe and stall it
        self.proc = subprocess.Popen(
            command or [sys.executable, "-c", _CHILD, _ROOT, dtype],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
        )
        threading.Thread(target=self._read, name="cnnrun-precompile", daemon=True).start()
        atexit.register(self.stop)

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip() in self.done:
                self.done[line.strip()].set()
        if self.proc.wait() != 0:  # the caller compiles what is missing, as without a child
            self.errors.seek(0)
            error = self.errors.read().decode(errors="replace").strip()[-500:]
            log.debug("the precompile child failed (%s): %s", self.proc.returncode, error)
        self.errors.close()
        for event in self.done.values():
            event.set()

    def wait(self, job: str) -> None:
        if job in self.done and not self.done[job].wait(WAIT_S):
            log.debug("the precompile child took over %s s for %s", WAIT_S, job)

    def stop(self) -> None:
        """At exit: a child still compiling is not left running (Numba's cache writes each
        file under a temporary name first, so a stopped write leaves no partial entry)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def enabled() -> bool:
    """Whether a cold cache gets a child: two cores or more, and no ``CNNRUN_PRECOMPILE=0``."""
    if os.environ.get("CNNRUN_PRECOMPILE", "").strip() == "0":
        return False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) >= 2


def start(dtype) -> None:
    """At a conv forward: the first of ``dtype`` in this process loads or compiles the probe
    kernel of :mod:`.wide_grad`, and where that missed Numba's cache (its file is new, or
    changed, or the cache is empty), starts the child for the dW kernels of ``dtype``."""
    name = np.dtype(dtype).name
    if name in _probed:
        return
    _probed.add(name)
    if not enabled():
        return
    from .wide_grad import cache_probe

    cache_probe(np.zeros(1, name))
    if sum(cache_probe.stats.cache_misses.values()):
        _children[name] = _Child(name)


def ready(job: str, dtype) -> None:
    """Before dW's first call of the kernel ``job``: wait for the child to have it cached."""
    child = _children.get(np.dtype(dtype).name)
    if child is not None:
        child.wait(job)


def started(dtype) -> bool:
    """Whether this process started a child for ``dtype``."""
    return np.dtype(dtype).name in _children


def _after_fork_in_child() -> None:
    """A forked process shares none of its parent's child (nor the thread that reads it)."""
    _probed.clear()
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
    for job in JOBS:
        compile_job(job, argv[0])
        print(job, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
