"""The benchmark's results: images/s, ms, GFLOP/s and ratios to PyTorch from the best seconds
per call, as a table and as what the JSON file holds beside them (machine, settings)."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cases import KINDS, LAYER_BATCH, LAYERS, STEP_BATCHES, STEP_NET, conv_flops

KIND_LABELS = {"forward": "forward", "forward_backward": "forward+backward"}


def _step_rows(cases: dict[str, float], torch_best: dict | None) -> dict[str, dict]:
    rows = {}
    for batch in STEP_BATCHES:
        seconds = cases[f"step/{batch}"]
        row = {"images_per_s": batch / seconds, "ms": seconds * 1e3}
        if torch_best:
            row["ratio_to_torch"] = torch_best[f"step/{batch}"] / seconds
        rows[str(batch)] = row
    return rows


def _layer_row(name: str, cases: dict[str, float], torch_best: dict | None) -> dict[str, float]:
    row = {}
    for kind, count in zip(KINDS, conv_flops(name)):
        seconds = cases[f"{kind}/{name}"]
        row[f"{kind}_ms"] = seconds * 1e3
        row[f"{kind}_gflops"] = count / seconds / 1e9
        if torch_best:
            row[f"{kind}_ratio_to_torch"] = torch_best[f"{kind}/{name}"] / seconds
    return row


def report(best: dict[str, dict[str, float]], threads: int) -> dict:
    """Images/s, ms, GFLOP/s and ratios to PyTorch from the best seconds per call."""
    torch_best = best.get("torch")
    step = {impl: _step_rows(cases, torch_best) for impl, cases in best.items()}
    layers = {
        impl: {name: _layer_row(name, cases, torch_best) for name in LAYERS}
        for impl, cases in best.items()
    }
    return {"step": step, "layers": layers, "threads": threads}


def _ratio(row: dict, key: str) -> str:
    return f" ({row[key]:.2f}x)" if key in row else ""


def _step_lines(result: dict) -> list[str]:
    step = result["step"]
    lines = [
        f"LeNet-5 training step, float32, {result['threads']} threads: images/s (ratio to PyTorch)",
        f"{'':8}" + "".join(f"{'batch ' + str(b):>22}" for b in STEP_BATCHES),
    ]
    for impl, rows in step.items():
        cells = [
            f"{row['images_per_s']:,.0f}{_ratio(row, 'ratio_to_torch')}"
            for row in (rows[str(b)] for b in STEP_BATCHES)
        ]
        lines.append(f"{impl:8}" + "".join(f"{cell:>22}" for cell in cells))
    return lines


def _layer_lines(result: dict) -> list[str]:
    layers = result["layers"]
    lines = [
        f"Conv layers, batch {LAYER_BATCH}: ms, GFLOP/s (ratio to PyTorch); conv1's "
        "backward is dW and db only"
    ]
    for kind in KINDS:
        lines.append(f"{KIND_LABELS[kind]:24}" + "".join(f"{impl:>28}" for impl in layers))
        for name in LAYERS:
            cells = [
                f"{row[f'{kind}_ms']:.3f} ms {row[f'{kind}_gflops']:5.1f}"
                f"{_ratio(row, f'{kind}_ratio_to_torch')}"
                for row in (rows[name] for rows in layers.values())
            ]
            lines.append(f"  {name:22}" + "".join(f"{cell:>28}" for cell in cells))
    return lines


def format_table(result: dict) -> str:
    """The report as text: the LeNet step, the conv layers, Numba's compile times."""
    lines = _step_lines(result) + [""] + _layer_lines(result)
    compile_ = result.get("numba_compile")
    if compile_:
        lines.append("")
        lines.append(
            f"Numba first LeNet step, compile time: {compile_['cold_compile_s']:.1f} s "
            f"with an empty cache, {compile_['warm_compile_s']:.2f} s with the cache "
            f"({compile_['warm_cache_misses']} cache misses)"
        )
    return "\n".join(lines)


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
    return {
        "quick": quick,
        "rounds": rounds,
        "block_s": block_s,
        "dtype": "float32",
        "step_net": {
            "model": STEP_NET.model,
            "data": STEP_NET.data,
            "overrides": list(STEP_NET.overrides),
        },
        "step_batches": list(STEP_BATCHES),
        "layer_batch": LAYER_BATCH,
        "impls": list(impls),
        "layers": {name: dict(zip(keys, spec)) for name, spec in LAYERS.items()},
    }
