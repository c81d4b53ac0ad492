"""The benchmark's results as the table it prints: machine load, the training steps, the GEMM
peak with the BLAS kernel behind it, the conv layers beside that peak, Numba's compile times,
a whole run against its steps alone, and the libraries and environment variables in use."""

from __future__ import annotations

import textwrap

from .convs import KINDS, LAYER_BATCH, LAYERS
from .nets import STEPS

KIND_LABELS = {"forward": "forward", "forward_backward": "forward+backward"}
GEMM_LABELS = {"matmul": "cnnrun gemm.matmul", "blas": "numpy BLAS", "torch": "torch.mm"}
STEP_CELL, LAYER_CELL = 20, 32


def _ratio(row: dict, key: str) -> str:
    return f" ({row[key]:.2f}x)" if key in row else ""


def _load_lines(result: dict) -> list[str]:
    load = result.get("load")
    if not load:
        return []
    start, end = (" ".join(f"{v:.2f}" for v in load[k]) for k in ("start", "end"))
    return [f"Machine load (1, 5, 15 min): {start} at the start, {end} at the end", ""]


def _step_lines(result: dict) -> list[str]:
    step = result["step"]
    lines = [
        f"Training steps, float32, {result['threads']} threads: images/s (ratio to PyTorch)",
        f"{'':24}" + "".join(f"{impl:>{STEP_CELL}}" for impl in step),
    ]
    for net, batch in STEPS:
        cells = [
            f"{row['images_per_s']:,.0f}{_ratio(row, 'ratio_to_torch')}"
            for row in (rows[net][str(batch)] for rows in step.values())
        ]
        label = f"{net}, batch {batch}"
        lines.append(f"  {label:22}" + "".join(f"{cell:>{STEP_CELL}}" for cell in cells))
    return lines


def _gemm_lines(result: dict) -> list[str]:
    gemm, notes = result["gemm_peak"], result.get("libraries", {})
    n = gemm["n"]
    lines = [f"float32 GEMM peak, ({n}, {n}) @ ({n}, {n}), {result['threads']} threads: GFLOP/s"]
    for impl, peaks in gemm["gflops"].items():
        cells = ", ".join(f"{GEMM_LABELS[how]} {value:.1f}" for how, value in peaks.items())
        lines.append(f"  {impl + ' worker':14}{cells}")
    if notes.get("kernel_note"):
        lines.append(f"  {notes['kernel_note']}")
    return lines


def _layer_cell(row: dict, kind: str) -> str:
    percent = row.get(f"{kind}_percent_of_peak")
    share = f" {percent:3.0f}%" if percent is not None else ""
    return (
        f"{row[f'{kind}_ms']:.3f} ms {row[f'{kind}_gflops']:5.1f}{share}"
        f"{_ratio(row, f'{kind}_ratio_to_torch')}"
    )


def _layer_lines(result: dict) -> list[str]:
    layers, ceiling = result["layers"], result["gemm_peak"]["ceiling"]
    peaks = ", ".join(f"{impl} {GEMM_LABELS[case.split('/')[1]]}" for impl, case in ceiling.items())
    lines = [
        f"Conv layers, batch {LAYER_BATCH}: ms, GFLOP/s, % of the worker's GEMM peak ({peaks}) "
        "(ratio to PyTorch); conv1's backward is dW and db only"
    ]
    for kind in KINDS:
        lines.append(f"{KIND_LABELS[kind]:24}" + "".join(f"{i:>{LAYER_CELL}}" for i in layers))
        for name in LAYERS:
            cells = [_layer_cell(rows[name], kind) for rows in layers.values()]
            lines.append(f"  {name:22}" + "".join(f"{cell:>{LAYER_CELL}}" for cell in cells))
    return lines


def _compile_lines(result: dict) -> list[str]:
    compile_ = result.get("numba_compile")
    if not compile_:
        return []
    child = " (dW's kernels compiled meanwhile by a second process)"
    lines = [
        f"Numba first LeNet step, compile time: {compile_['cold_compile_s']:.1f} s "
        f"with an empty cache{child if compile_.get('cold_precompile_child') else ''}, "
        f"{compile_['warm_compile_s']:.2f} s with the cache "
        f"({compile_['warm_cache_misses']} cache misses)"
    ]
    if compile_.get("warm_numba_setup_s") is not None:
        scipy = {  # absent from the JSON of a bench before cnnrun dropped scikit-learn
            True: "; with SciPy's BLAS for np.dot, imported where SciPy is installed, as here",
            False: "; SciPy is not installed here, so it imports no BLAS for np.dot",
        }.get(compile_.get("warm_scipy_blas_imported"), "")
        lines.append(
            f"  with the cache, apart: Numba's own start-up {compile_['warm_numba_setup_s']:.2f} s "
            f"(once per process, for any Numba program: its registries{scipy}), "
            f"then cnnrun's kernels {compile_['warm_kernels_s']:.2f} s"
        )
    return lines


def _run_lines(result: dict) -> list[str]:
    runs = result.get("run_versus_step")
    if not runs:
        return []
    rounds = next(iter(runs.values()))["rounds"]
    lines = [
        "The default run (python -m cnnrun: LeNet-5 on the digits, the dashboard on), "
        f"{result['threads']} threads, best of {rounds}, start-up excluded: images/s",
        f"{'':10}{'run (wall clock)':>18}{'steps alone':>14}{'run / steps':>14}",
    ]
    for backend, got in runs.items():
        lines.append(
            f"  {backend:8}{got['images_per_s']:>18,.0f}{got['step_images_per_s']:>14,.0f}"
            f"{got['ratio']:>14.3f}"
        )
    return lines


def _pool_text(pool: dict) -> str:
    words = [pool.get(k) for k in ("internal_api", "version", "architecture") if pool.get(k)]
    return f"{' '.join(words)}, {pool.get('num_threads')} threads ({pool.get('library')})"


def _torch_text(torch: dict) -> str:
    onednn = torch.get("onednn") or {}
    convs = sorted(set(onednn.get("convolution", {}).values()))
    conv = f"oneDNN {'/'.join(convs)}" if convs else "not oneDNN (no oneDNN convolution logged)"
    return (
        f"PyTorch {torch['version']}: BLAS {torch['blas']}, conv by {conv}, oneDNN ISA "
        f"{onednn.get('isa')}, ATen CPU capability {torch['cpu_capability']}"
    )


def _library_lines(result: dict) -> list[str]:
    found = result.get("libraries")
    if not found:
        return []
    lines = ["Libraries (thread pools as each worker set them up):"]
    for impl, pools in found["thread_pools"].items():
        lines.append(f"  {impl + ' worker':14}" + "; ".join(_pool_text(p) for p in pools))
    for impl, work in found.get("small_products", {}).items():
        how = "one BLAS call each"
        if work:
            how = f"in blocks of <= {work:,} multiply-adds for OpenBLAS's small-product path"
        lines.append(f"  {impl + ' worker':14}short, wide products (few filters by taps): {how}")
    if found.get("torch"):
        lines.append(f"  {_torch_text(found['torch'])}")
    env = ", ".join(f"{k}={v}" for k, v in found["environment"].items())
    return lines + textwrap.wrap(f"Environment: {env}", 100, subsequent_indent="  ")


def format_table(result: dict) -> str:
    """The report as text, in blocks separated by blank lines."""
    blocks = [
        _step_lines(result),
        _gemm_lines(result),
        _layer_lines(result),
        _compile_lines(result),
        _run_lines(result),
        _library_lines(result),
    ]
    lines = _load_lines(result)
    for block in (b for b in blocks if b):
        lines += [*block, ""]
    return "\n".join(lines[:-1])
