"""The processes that time: one worker per implementation, and Numba's compile probe; and the
parent's side of talking to them.

A worker sets its process up once (threads, BLAS, allocator), builds every case, warms each one
up and sizes its timing block, says ``{"ready": ..., "versions": ..., "thread_pools": ...}``
(cnnrun's, ``"small_products"``: see :func:`cnnrun.backends.gemm.product_into`; PyTorch's,
``"torch"``: what it convolves with), then answers each
``<case>`` line on stdin with one block: ``{"case": ..., "seconds": <per call>}``. An empty
line or EOF ends it. Messages are JSON lines on stdout.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from . import cases
from .nets import cnnrun_step

IMPLS = ("numpy", "numba", "torch")
SETTLE_S = 0.5  # pause between two workers' turns
MAX_CALLS = 1000  # per timing block


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _seconds(fn: cases.Case, calls: int = 1) -> float:
    """Seconds per call over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def setup(impl: str, threads: int) -> tuple[dict[str, cases.Case], dict]:
    """This process set up once for ``impl`` on ``threads`` threads, every case built; and what
    it computes with: versions, its libraries' thread pools and kernels (and PyTorch's)."""
    from . import libraries

    if impl == "torch":
        import torch

        torch.set_num_threads(threads)
        found = libraries.torch_info()  # before any other convolution: oneDNN's first log
        info = {"versions": {"torch": torch.__version__}, "torch": found}
        return cases.torch_cases(threads), info | {"thread_pools": libraries.thread_pools()}
    from ..backends import configure_process, get_backend

    get_backend(impl)
    settings = configure_process(threads, impl)
    found = {"thread_pools": libraries.thread_pools(), "small_products": settings.small_products}
    return cases.cnnrun_cases(impl, threads), found


def block_calls(fn: cases.Case, block_s: float) -> int:
    """Calls of ``fn`` that fill about ``block_s`` seconds, after a first call (which compiles
    and allocates)."""
    fn()
    once = max(_seconds(fn), 1e-6)
    return max(1, min(MAX_CALLS, math.ceil(block_s / once)))


def worker(impl: str, threads: int, block_s: float) -> None:
    """Serve timing blocks of ``impl``'s cases on stdin and stdout (see the module's notes)."""
    fns, info = setup(impl, threads)
    calls = {name: block_calls(fn, block_s) for name, fn in fns.items()}
    _say({"ready": impl} | info)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        _say({"case": name, "seconds": _seconds(fns[name], calls[name])})


def _cache_counts() -> tuple[int, int]:
    """Numba's cache hits and misses over every compiled function of the backends."""
    from .. import backends

    stats = {}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(backends.__name__):
            continue
        for value in vars(module).values():
            found = getattr(value, "stats", None)
            if found is not None and hasattr(found, "cache_hits"):
                stats[id(value)] = found
    hits = sum(sum(s.cache_hits.values()) for s in stats.values())
    return hits, sum(sum(s.cache_misses.values()) for s in stats.values())


def compile_probe(threads: int, setup_first: bool = False) -> None:
    """One LeNet step at batch 64 on the numba backend in a fresh process: its time,
    the steady time of the next steps, and Numba's cache hits and misses. ``setup_first``:
    Numba's own start-up (:func:`_numba_setup`) is done and timed before that step."""
    started = time.perf_counter()
    from ..backends import configure_process, get_backend

    get_backend("numba")
    imported = time.perf_counter() - started
    configure_process(threads, "numba")
    setup = _numba_setup() if setup_first else None
    step = cnnrun_step("numba", 64)
    first = _seconds(step)
    steady = min(_seconds(step) for _ in range(5))
    hits, misses = _cache_counts()
    from ..backends.numba import precompile

    _say(
        {
            "precompile_child": precompile.started("float32"),
            # Numba imports it at its start where SciPy is installed (0.2 s); cnnrun never needs it
            "scipy_blas_imported": "scipy.linalg.cython_blas" in sys.modules,
            "import_s": imported,
            "numba_setup_s": setup,
            "first_step_s": first,
            "steady_step_s": steady,
            "cache_hits": hits,
            "cache_misses": misses,
        }
    )


def _numba_setup() -> float:
    """Seconds of what Numba does once per process before its first function runs, compiled or
    loaded from the cache: loading its typing and lowering registries (which import SciPy's
    BLAS, where SciPy is installed, for ``np.dot``)."""
    from numba.core.registry import cpu_target

    started = time.perf_counter()
    cpu_target.target_context.refresh()
    cpu_target.typing_context.refresh()
    return time.perf_counter() - started


# -- the parent's side ---------------------------------------------------------------------------


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", __package__, *args]


class Worker:
    """A worker process of the parent: :meth:`ask` for one timing block of a case."""

    def __init__(self, impl: str, threads: int, block_s: float):
        self.impl = impl
        # stderr goes to a file: a worker's warnings cannot fill a pipe nobody reads and stall it
        self.errors = tempfile.TemporaryFile()
        args = ("--worker", impl, "--threads", str(threads), "--block", str(block_s))
        self.proc = subprocess.Popen(
            _command(*args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
        )

    def read(self) -> dict:
        """The worker's next message; a ``RuntimeError`` with its stderr if it stopped."""
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.errors.seek(0)
            error = self.errors.read().decode(errors="replace").strip()[-2000:]
            raise RuntimeError(
                f"the {self.impl} worker stopped (exit status {self.proc.returncode}): {error}"
            )
        return json.loads(line)

    def ask(self, case: str) -> float:
        """Seconds per call of ``case`` over one timing block."""
        self.proc.stdin.write(case + "\n")
        self.proc.stdin.flush()
        return self.read()["seconds"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.errors.close()


def measure(
    impls: Sequence[str], threads: int, rounds: int, block_s: float
) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
    """Best seconds per call, ``{impl: {case: s}}``, and what each worker said it computes
    with (its ``ready`` message: versions, thread pools)."""
    workers: dict[str, Worker] = {}
    try:
        for impl in impls:
            workers[impl] = Worker(impl, threads, block_s)
        info = {impl: worker_.read() for impl, worker_ in workers.items()}
        names = {impl: cases.case_names(impl) for impl in impls}
        best = {impl: dict.fromkeys(names[impl], math.inf) for impl in impls}
        order = list(impls)
        for r in range(rounds):
            for impl in order[r % len(order) :] + order[: r % len(order)]:
                # the previous worker's idle BLAS and OpenMP threads spin for a while before
                # they sleep, on the cores this one needs: let them settle first
                time.sleep(SETTLE_S)
                for name in names[impl]:
                    best[impl][name] = min(best[impl][name], workers[impl].ask(name))
        return best, info
    finally:
        for worker_ in workers.values():
            worker_.close()


def _probe(env: dict, threads: int, setup_first: bool = False) -> dict:
    start = time.perf_counter()
    extra = ("--numba-setup-first",) if setup_first else ()
    done = subprocess.run(
        _command("--compile-probe", "--threads", str(threads), *extra),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the numba compile probe failed: {done.stderr[-2000:]}")
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    probe["compile_s"] = max(0.0, probe["first_step_s"] - probe["steady_step_s"])
    probe["process_s"] = wall
    return probe


def measure_compile(threads: int) -> dict:
    """The numba compile probe three times, sharing a fresh cache folder: cold, warm, and warm
    again with Numba's own start-up timed apart (what of the warm time is not cnnrun's)."""
    with tempfile.TemporaryDirectory(prefix="cnnrun-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = _probe(env, threads)
        warm = _probe(env, threads)
        split = _probe(env, threads, setup_first=True)
    return {
        "cold_compile_s": cold["compile_s"],
        "warm_compile_s": warm["compile_s"],
        "warm_cache_misses": warm["cache_misses"],
        "cold_precompile_child": cold["precompile_child"],
        "warm_scipy_blas_imported": warm["scipy_blas_imported"],
        "warm_numba_setup_s": split["numba_setup_s"],
        "warm_kernels_s": split["compile_s"],
        "cold": cold,
        "warm": warm,
        "warm_setup_apart": split,
    }
