"""What computes the products: the BLAS library and kernel each worker's numpy uses, what
PyTorch uses for its convolutions on the CPU, the environment variables that change either,
and how loaded the machine was.

Why: a GEMM peak or a ratio to PyTorch means little without the kernel behind it. On an AMD
Zen 5 (AVX-512) numpy's bundled OpenBLAS 0.3.31 picks its 'Haswell' (AVX2) kernel, about 226
GFLOP/s for a float32 product on 2 threads; ``OPENBLAS_CORETYPE=SkylakeX`` gives its AVX-512
kernel, about 436. PyTorch's CPU wheels convolve with oneDNN (mkldnn), which picks its own ISA
(``jit:avx512_core`` on the same machine): its verbose log, captured for one convolution, says
which. :func:`kernel_note` says so in a line where the CPU has more than OpenBLAS uses.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

# the variables that choose a library's threads or kernels, or where Numba caches (and whether
# a second process shares its first compile: cnnrun.backends.numba.precompile)
ENV_VARIABLES = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "NUMBA_CPU_NAME",
    "NUMBA_CPU_FEATURES",
    "NUMBA_CACHE_DIR",
    "CNNRUN_PRECOMPILE",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
)
# OpenBLAS kernels that use AVX2 at most, though the CPU may have AVX-512
AVX2_KERNELS = ("haswell", "zen", "sandybridge", "nehalem", "prescott", "core2")
POOL_KEYS = ("user_api", "internal_api", "version", "architecture", "threading_layer")


# and any other variable set with one of these prefixes (OPENBLAS_L2_SIZE, KMP_AFFINITY, ...)
ENV_PREFIXES = ("OPENBLAS_", "OMP_", "GOMP_", "KMP_", "MKL_", "NUMBA_", "DNNL_", "ONEDNN_")


def environment(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Each of :data:`ENV_VARIABLES` with its value, or ``"unset"``; then every other variable
    set whose name starts with one of :data:`ENV_PREFIXES`, sorted."""
    found = {name: env.get(name, "unset") for name in ENV_VARIABLES}
    others = sorted(k for k in env if k.startswith(ENV_PREFIXES) and k not in found)
    return found | {name: env[name] for name in others}


def thread_pools() -> list[dict]:
    """The thread pools of this process's libraries (``threadpoolctl.threadpool_info()``):
    API, library, version, kernel architecture, threads now, the library's file name (not
    where it is), and ``numpy``: whether it is a BLAS NumPy calls (:func:`gemm.numpy_blas`:
    SciPy may have loaded an OpenBLAS of its own beside it)."""
    from threadpoolctl import threadpool_info

    from ..backends import gemm

    infos = threadpool_info()
    numpy_own = {id(info) for info in gemm.numpy_blas(infos)}
    pools = []
    for info in infos:
        pool = {key: info.get(key) for key in POOL_KEYS if key in info}
        pool["num_threads"] = info.get("num_threads")
        pool["library"] = Path(info.get("filepath", "")).name
        pool["numpy"] = id(info) in numpy_own
        pools.append(pool)
    return pools


def capture_stdout(fn: Callable[[], object]) -> str:
    """What ``fn`` writes to file descriptor 1 (C libraries included), which goes to a
    temporary file meanwhile: a worker's stdout carries its messages."""
    sys.stdout.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1)
        os.dup2(sink.fileno(), 1)
        try:
            fn()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        sink.seek(0)
        return sink.read().decode(errors="replace")


def parse_onednn(log: str) -> dict:
    """oneDNN's ISA and its convolution implementations by pass, from its verbose log:
    ``{"isa": "Intel AVX-512 ...", "convolution": {"forward_training": "jit:avx512_core"}}``."""
    found: dict = {"isa": None, "convolution": {}}
    for line in log.splitlines():
        fields = line.split(",")
        if "info" in fields and any(f.startswith("isa:") for f in fields):
            found["isa"] = next(f for f in fields if f.startswith("isa:"))[4:]
        if "exec" in fields and "convolution" in fields:
            at = fields.index("convolution")
            found["convolution"][fields[at + 2]] = fields[at + 1]
    return found


def onednn_probe() -> dict:
    """One 3x3 convolution's forward and backward in PyTorch with oneDNN's verbose log on:
    the ISA and implementations it used (empty where PyTorch convolved without oneDNN)."""
    import torch

    conv = torch.nn.Conv2d(16, 32, 3, padding=1)
    x = torch.zeros(8, 16, 16, 16, requires_grad=True)

    def convolve() -> None:
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            conv(x).sum().backward()

    return parse_onednn(capture_stdout(convolve))


def torch_info() -> dict:
    """What PyTorch computes with on the CPU: its BLAS, oneDNN (mkldnn) and its ISA, ATen's
    CPU capability, from ``torch.__config__.show()`` and a convolution's verbose log."""
    import torch

    shown = torch.__config__.show()
    build = [line.strip(" -") for line in shown.splitlines() if line.startswith("  - ")]
    settings = next((line for line in build if line.startswith("Build settings")), "")
    blas = next((p.split("=", 1)[1] for p in settings.split(", ") if "BLAS_INFO=" in p), None)
    return {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": blas,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "onednn": onednn_probe() if torch.backends.mkldnn.is_available() else None,
        "built_with": [line for line in build if not line.startswith("Build settings")],
    }


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (empty where the file is not there)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def kernel_note(pools: list[dict], flags: set[str], env: Mapping[str, str]) -> str:
    """A line on numpy's OpenBLAS kernel: which one, and ``OPENBLAS_CORETYPE``, which picks
    it; where the CPU has AVX-512 and the kernel is an AVX2 one, that SkylakeX would use it.
    NumPy's own OpenBLAS (``numpy`` in :func:`thread_pools`) first, then any other."""
    openblas = [p for p in pools if p.get("internal_api") == "openblas"]
    blas = next((p for p in openblas if p.get("numpy")), openblas[0] if openblas else None)
    if blas is None:
        return ""
    kernel = blas.get("architecture") or "unknown"
    coretype = env.get("OPENBLAS_CORETYPE")
    chosen = f"OPENBLAS_CORETYPE={coretype}" if coretype else "OPENBLAS_CORETYPE unset"
    line = f"numpy's OpenBLAS kernel: {kernel} ({chosen})"
    if "avx512f" in flags and kernel.lower() in AVX2_KERNELS:
        line += (
            f": the CPU has AVX-512, but {kernel} uses AVX2 at most; "
            "OPENBLAS_CORETYPE=SkylakeX selects OpenBLAS's AVX-512 kernel"
        )
    return line


def load() -> list[float]:
    """The machine's load averages over 1, 5 and 15 minutes (``os.getloadavg()``)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []
