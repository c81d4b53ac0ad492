"""The benchmark's results: images/s, ms, GFLOP/s, shares of the GEMM peak and ratios to
PyTorch from the best seconds per call, and what the JSON file holds beside them (machine,
libraries, settings). The table is :mod:`cnnrun.bench.table`'s."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import libraries
from .convs import KINDS, LAYER_BATCH, LAYERS, conv_flops
from .nets import STEP_NETS, STEPS, step_name
from .peak import CEILINGS, GEMM_N, gemm_flops


def _step_rows(cases: dict[str, float], torch_best: dict | None) -> dict[str, dict]:
    """``{network: {batch: row}}`` of one implementation."""
    rows: dict[str, dict] = {}
    for net, batch in STEPS:
        seconds = cases[step_name(net, batch)]
        row = {"images_per_s": batch / seconds, "ms": seconds * 1e3}
        if torch_best:
            row["ratio_to_torch"] = torch_best[step_name(net, batch)] / seconds
        rows.setdefault(net, {})[str(batch)] = row
    return rows


def gemm_peaks(cases: dict[str, float], n: int = GEMM_N) -> dict[str, float]:
    """GFLOP/s of each GEMM case of a worker, by how (``matmul``, ``blas``, ``torch``)."""
    return {
        name.split("/", 1)[1]: gemm_flops(n) / seconds / 1e9
        for name, seconds in cases.items()
        if name.startswith("gemm/")
    }


def _layer_row(
    name: str, cases: dict[str, float], peak: float | None, torch_best: dict | None
) -> dict[str, float]:
    row = {}
    for kind, count in zip(KINDS, conv_flops(name)):
        seconds = cases[f"{kind}/{name}"]
        row[f"{kind}_ms"] = seconds * 1e3
        row[f"{kind}_gflops"] = count / seconds / 1e9
        if peak:
            row[f"{kind}_percent_of_peak"] = 100.0 * row[f"{kind}_gflops"] / peak
        if torch_best:
            row[f"{kind}_ratio_to_torch"] = torch_best[f"{kind}/{name}"] / seconds
    return row


def ceiling(impl: str, peaks: dict[str, float]) -> float | None:
    """The GEMM GFLOP/s that ``impl``'s conv layers are put beside (:data:`CEILINGS`)."""
    return peaks.get(CEILINGS[impl].split("/", 1)[1])


def report(best: dict[str, dict[str, float]], threads: int) -> dict:
    """Images/s, ms, GFLOP/s, % of the GEMM peak and ratios to PyTorch from the best seconds
    per call."""
    torch_best = best.get("torch")
    step = {impl: _step_rows(cases, torch_best) for impl, cases in best.items()}
    peaks = {impl: gemm_peaks(cases) for impl, cases in best.items()}
    layers = {
        impl: {
            name: _layer_row(name, cases, ceiling(impl, peaks[impl]), torch_best) for name in LAYERS
        }
        for impl, cases in best.items()
    }
    gemm = {
        "n": GEMM_N,
        "gflops": peaks,
        "ceiling": {impl: CEILINGS[impl] for impl in best},
    }
    return {"step": step, "layers": layers, "gemm_peak": gemm, "threads": threads}


def library_report(info: dict[str, dict]) -> dict:
    """What the workers compute with, from their ``ready`` messages: each one's thread pools
    (numpy's BLAS among them), how cnnrun's workers make short, wide products (the most
    multiply-adds of a BLAS call, or None: one call each), PyTorch's libraries, the
    environment variables that change them, and :func:`~cnnrun.bench.libraries.kernel_note`."""
    pools = {impl: said.get("thread_pools", []) for impl, said in info.items()}
    env = libraries.environment()
    first = next(iter(pools.values()), [])
    return {
        "thread_pools": pools,
        "small_products": {
            i: s["small_products"] for i, s in info.items() if "small_products" in s
        },
        "torch": info.get("torch", {}).get("torch"),
        "environment": env,
        "kernel_note": libraries.kernel_note(first, libraries.cpu_flags(), env),
    }


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int, versions: dict[str, str]) -> dict:
    """The CPU, its cores, the threads used and the versions of what was timed."""
    import numba

    from ..backends import machine_cores

    return {
        "cpu": _cpu(),
        "cores": machine_cores(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": versions.get("torch"),
    }


def settings(quick: bool, rounds: int, block_s: float, impls: Sequence[str]) -> dict:
    """How the figures were taken: rounds, block length, the cases' shapes."""
    keys = ("in", "out", "kernel", "size", "padding", "input_is_data")
    nets = {
        name: {"model": net.model, "data": net.data, "overrides": list(net.overrides)}
        for name, net in STEP_NETS.items()
    }
    return {
        "quick": quick,
        "rounds": rounds,
        "block_s": block_s,
        "dtype": "float32",
        "step_nets": nets,
        "steps": [{"net": net, "batch": batch} for net, batch in STEPS],
        "layer_batch": LAYER_BATCH,
        "gemm_n": GEMM_N,
        "impls": list(impls),
        "layers": {name: dict(zip(keys, spec)) for name, spec in LAYERS.items()},
    }
