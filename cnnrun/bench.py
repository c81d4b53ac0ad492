"""``python -m cnnrun.bench``: the backends timed against PyTorch on the CPU.

What is timed, in float32:

* a LeNet-5 training step (tanh, average pooling, 1x32x32 inputs, 'valid' convolutions; forward,
  cross-entropy, backward without the input's gradient, an SGD step with momentum) in images/s at
  batch 64 and 256;
* four conv layers at batch 64, forward and forward+backward, in ms and GFLOP/s: LeNet's conv1
  (whose backward is dW and db only, as in training: its input is the data) and conv2, and two
  3x3 'same' layers of a VGG-style net. Their x (except conv1's, the data) and dY are laid out
  as the layers around them would hand them over in a network, in the backend's own layout;
* Numba's first-call compile time for a LeNet step, with an empty cache and again (a second
  process, same cache folder) with the cache that the first one wrote.

Each implementation (numpy, numba, and torch when it is installed) runs in its own worker
process with the same number of threads. The parent asks the workers for one timing block at a
time, in turn, for several rounds, and keeps each one's best block: on a machine shared with
other work the rounds spread the noise evenly over the implementations, and the best block is
the one least disturbed. Ratios are to PyTorch: above 1 is faster than PyTorch.

Options: ``--quick`` (fewer and shorter rounds), ``--threads N`` (default: the machine's cores),
``--json PATH`` (default ``bench.json``), ``--impls numpy,numba,torch``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

IMPLS = ("numpy", "numba", "torch")
STEP_BATCHES = (64, 256)
LAYER_BATCH = 64
# name: (in channels, out channels, kernel, image size, padding, input is data)
LAYERS = {
    "lenet_conv1": (1, 6, 5, 32, "valid", True),
    "lenet_conv2": (6, 16, 5, 14, "valid", False),
    "same3x3_16to32": (16, 32, 3, 32, "same", False),
    "same3x3_32to64": (32, 64, 3, 16, "same", False),
}
LR, MOMENTUM = 0.01, 0.9
SETTLE_S = 0.5  # pause between two workers' turns


# -- what a worker runs -------------------------------------------------------------------------


def conv_flops(name: str, batch: int = LAYER_BATCH) -> tuple[float, float]:
    """(forward, forward+backward) floating-point operations of a conv layer, bias left out:
    ``2 N F Ho Wo C kh kw`` per product; the backward has dW and, unless the input is data, dX."""
    c, f, k, size, padding, first = LAYERS[name]
    out = size if padding == "same" else size - k + 1
    forward = 2.0 * batch * f * out * out * c * k * k
    return forward, forward * (2 if first else 3)


def _data(shape, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(np.float32), rng.integers(0, classes, shape[0]))


def _cnnrun_cases(backend: str) -> dict:
    """Callables for every case, on a cnnrun backend."""
    from . import nn, optim

    cases = {}
    for batch in STEP_BATCHES:
        rng = np.random.default_rng(0)
        model = nn.Sequential(
            [
                ("conv1", nn.Conv2d(1, 6, 5, rng=rng)),
                ("tanh1", nn.Tanh()),
                ("pool1", nn.AvgPool2d(2)),
                ("conv2", nn.Conv2d(6, 16, 5, rng=rng)),
                ("tanh2", nn.Tanh()),
                ("pool2", nn.AvgPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(400, 120, rng=rng)),
                ("tanh3", nn.Tanh()),
                ("fc2", nn.Linear(120, 84, rng=rng)),
                ("tanh4", nn.Tanh()),
                ("fc3", nn.Linear(84, 10, rng=rng)),
            ]
        ).set_backend(backend)
        opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        loss_fn = nn.CrossEntropyLoss()
        x, y = _data((batch, 1, 32, 32))

        def step(model=model, opt=opt, loss_fn=loss_fn, x=x, y=y):
            model.zero_grad()
            loss_fn.forward(model.forward(x), y)
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()

        cases[f"step/{batch}"] = step
    for name, (c, f, k, size, padding, first) in LAYERS.items():
        layer = nn.Conv2d(c, f, k, padding=padding, rng=np.random.default_rng(1))
        layer.set_backend(backend)
        x, _ = _data((LAYER_BATCH, c, size, size))
        dy, _ = _data(layer.output_shape(x.shape), seed=2)
        # laid out as inside a network: dY always, and x unless it is the data, come from the
        # layers around it, in the backend's own layout (batch-last on numpy)
        dy = layer.kernels.native(dy)
        if not first:
            x = layer.kernels.native(x)

        def forward_backward(layer=layer, x=x, dy=dy, first=first):
            layer.forward(x)
            if first:
                layer.backward_params(dy)
            else:
                layer.backward(dy)

        cases[f"forward/{name}"] = lambda layer=layer, x=x: layer.forward(x)
        cases[f"forward_backward/{name}"] = forward_backward
    return cases


def _torch_cases() -> dict:
    """The same cases in PyTorch: the same shapes, loss and optimiser."""
    import torch

    tnn = torch.nn
    cases = {}
    for batch in STEP_BATCHES:
        torch.manual_seed(0)
        model = tnn.Sequential(
            tnn.Conv2d(1, 6, 5),
            tnn.Tanh(),
            tnn.AvgPool2d(2),
            tnn.Conv2d(6, 16, 5),
            tnn.Tanh(),
            tnn.AvgPool2d(2),
            tnn.Flatten(),
            tnn.Linear(400, 120),
            tnn.Tanh(),
            tnn.Linear(120, 84),
            tnn.Tanh(),
            tnn.Linear(84, 10),
        )
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        loss_fn = tnn.CrossEntropyLoss()
        x, y = (torch.from_numpy(a) for a in _data((batch, 1, 32, 32)))

        def step(model=model, opt=opt, loss_fn=loss_fn, x=x, y=y):
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()

        cases[f"step/{batch}"] = step
    for name, (c, f, k, size, padding, first) in LAYERS.items():
        torch.manual_seed(1)
        layer = tnn.Conv2d(c, f, k, padding="same" if padding == "same" else 0)
        x = torch.from_numpy(_data((LAYER_BATCH, c, size, size))[0]).requires_grad_(not first)
        with torch.no_grad():
            dy = torch.from_numpy(_data(tuple(layer(x).shape), seed=2)[0])

        def forward(layer=layer, x=x):
            with torch.no_grad():
                layer(x)

        def forward_backward(layer=layer, x=x, dy=dy):
            x.grad = None
            layer(x).backward(dy)

        cases[f"forward/{name}"] = forward
        cases[f"forward_backward/{name}"] = forward_backward
    return cases


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def worker(impl: str, threads: int, block_s: float) -> None:
    """Build every case, warm it up, then answer ``<case>`` lines on stdin with one timing
    block each: ``{"case": ..., "seconds": <per call>}``. An empty line or EOF ends it."""
    if impl == "torch":
        import torch

        torch.set_num_threads(threads)
        cases = _torch_cases()
        versions = {"torch": torch.__version__}
    else:
        from .backends import configure_process, get_backend

        get_backend(impl)
        configure_process(threads, impl if impl in ("numpy", "numba") else "numpy")
        cases = _cnnrun_cases(impl)
        versions = {}
    calls = {}
    for name, fn in cases.items():
        fn()  # first call: compiles, allocates
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-6)
        calls[name] = max(1, min(1000, math.ceil(block_s / once)))
    _say({"ready": impl, "versions": versions})
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        fn, n = cases[name], calls[name]
        start = time.perf_counter()
        for _ in range(n):
            fn()
        _say({"case": name, "seconds": (time.perf_counter() - start) / n})


def compile_probe() -> None:
    """One LeNet training step at batch 64 on the numba backend in a fresh process: its time,
    the steady time of the next steps, and Numba's cache hits and misses."""
    started = time.perf_counter()
    from .backends import get_backend

    module = get_backend("numba")
    imported = time.perf_counter() - started
    step = _cnnrun_cases("numba")["step/64"]
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    steady = math.inf
    for _ in range(5):
        start = time.perf_counter()
        step()
        steady = min(steady, time.perf_counter() - start)
    hits = misses = 0
    for value in vars(module).values():
        stats = getattr(value, "stats", None)
        if stats is not None and hasattr(stats, "cache_hits"):
            hits += sum(stats.cache_hits.values())
            misses += sum(stats.cache_misses.values())
    _say(
        {
            "import_s": imported,
            "first_step_s": first,
            "steady_step_s": steady,
            "cache_hits": hits,
            "cache_misses": misses,
        }
    )


# -- the parent ----------------------------------------------------------------------------------


def _start(impl: str, threads: int, block_s: float) -> subprocess.Popen:
    # stderr goes to a file: a worker's warnings cannot fill a pipe nobody reads and stall it
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cnnrun.bench",
            "--worker",
            impl,
            "--threads",
            str(threads),
            "--block",
            str(block_s),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    proc.errors_file = errors
    return proc


def _read(proc: subprocess.Popen, impl: str) -> dict:
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        proc.errors_file.seek(0)
        error = proc.errors_file.read().decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"the {impl} worker stopped (exit status {proc.returncode}): {error}")
    return json.loads(line)


def measure(impls, threads: int, rounds: int, block_s: float) -> tuple[dict, dict]:
    """Best seconds per call, ``{impl: {case: s}}``, and each worker's reported versions."""
    procs = {impl: _start(impl, threads, block_s) for impl in impls}
    versions = {}
    try:
        for impl, proc in procs.items():
            versions.update(_read(proc, impl)["versions"])
        names = [f"step/{b}" for b in STEP_BATCHES] + [
            f"{kind}/{name}" for name in LAYERS for kind in ("forward", "forward_backward")
        ]
        best = {impl: {name: math.inf for name in names} for impl in impls}
        order = list(impls)
        for r in range(rounds):
            for impl in order[r % len(order) :] + order[: r % len(order)]:
                # the previous worker's idle BLAS and OpenMP threads spin for a while before
                # they sleep, on the cores this one needs: let them settle first
                time.sleep(SETTLE_S)
                for name in names:
                    procs[impl].stdin.write(name + "\n")
                    procs[impl].stdin.flush()
                    seconds = _read(procs[impl], impl)["seconds"]
                    best[impl][name] = min(best[impl][name], seconds)
        return best, versions
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.stdin.close()
                proc.wait(timeout=60)
            proc.errors_file.close()


def measure_compile() -> dict:
    """The numba compile probe twice, sharing a fresh cache folder: cold, then warm."""
    with tempfile.TemporaryDirectory(prefix="cnnrun-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = {}
        for label in ("cold", "warm"):
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "cnnrun.bench", "--compile-probe"],
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
            runs[label] = probe
    return {
        "cold_compile_s": runs["cold"]["compile_s"],
        "warm_compile_s": runs["warm"]["compile_s"],
        "warm_cache_misses": runs["warm"]["cache_misses"],
        "cold": runs["cold"],
        "warm": runs["warm"],
    }


def report(best: dict, threads: int) -> dict:
    """Images/s, ms, GFLOP/s and ratios to PyTorch from the best seconds per call."""
    torch_best = best.get("torch")
    step, layers = {}, {}
    for impl, cases in best.items():
        step[impl] = {}
        for batch in STEP_BATCHES:
            seconds = cases[f"step/{batch}"]
            row = {"images_per_s": batch / seconds, "ms": seconds * 1e3}
            if torch_best:
                row["ratio_to_torch"] = torch_best[f"step/{batch}"] / seconds
            step[impl][str(batch)] = row
        layers[impl] = {}
        for name in LAYERS:
            flops = dict(zip(("forward", "forward_backward"), conv_flops(name)))
            row = {}
            for kind, count in flops.items():
                seconds = cases[f"{kind}/{name}"]
                row[f"{kind}_ms"] = seconds * 1e3
                row[f"{kind}_gflops"] = count / seconds / 1e9
                if torch_best:
                    row[f"{kind}_ratio_to_torch"] = torch_best[f"{kind}/{name}"] / seconds
            layers[impl][name] = row
    return {"step": step, "layers": layers, "threads": threads}


def _ratio(row: dict, key: str) -> str:
    return f" ({row[key]:.2f}x)" if key in row else ""


def format_table(result: dict) -> str:
    """The report as text: the LeNet step, the conv layers, Numba's compile times."""
    step, layers = result["step"], result["layers"]
    impls = list(step)
    lines = [
        f"LeNet-5 training step, float32, {result['threads']} threads: images/s (ratio to PyTorch)"
    ]
    lines.append(f"{'':8}" + "".join(f"{'batch ' + str(b):>22}" for b in STEP_BATCHES))
    for impl in impls:
        cells = [
            f"{row['images_per_s']:,.0f}{_ratio(row, 'ratio_to_torch')}"
            for row in (step[impl][str(b)] for b in STEP_BATCHES)
        ]
        lines.append(f"{impl:8}" + "".join(f"{cell:>22}" for cell in cells))
    lines.append("")
    lines.append(
        f"Conv layers, batch {LAYER_BATCH}: ms, GFLOP/s (ratio to PyTorch); conv1's "
        "backward is dW and db only"
    )
    for kind, label in (("forward", "forward"), ("forward_backward", "forward+backward")):
        lines.append(f"{label:24}" + "".join(f"{impl:>28}" for impl in impls))
        for name in LAYERS:
            cells = []
            for impl in impls:
                row = layers[impl][name]
                cells.append(
                    f"{row[f'{kind}_ms']:.3f} ms {row[f'{kind}_gflops']:5.1f}"
                    f"{_ratio(row, f'{kind}_ratio_to_torch')}"
                )
            lines.append(f"  {name:22}" + "".join(f"{cell:>28}" for cell in cells))
    compile_ = result.get("numba_compile")
    if compile_:
        lines.append("")
        lines.append(
            f"Numba first LeNet step, compile time: {compile_['cold_compile_s']:.1f} s "
            f"with an empty cache, {compile_['warm_compile_s']:.2f} s with the cache "
            f"({compile_['warm_cache_misses']} cache misses)"
        )
    return "\n".join(lines)


def machine(threads: int, versions: dict) -> dict:
    import numba

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from .backends import machine_cores

    return {
        "cpu": cpu,
        "cores": machine_cores(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": versions.get("torch"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnnrun.bench",
        description="Time the cnnrun backends against PyTorch on the CPU: a LeNet-5 training step "
        "and four conv layers, each implementation in its own process; prints a "
        "table and writes it as JSON.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for every implementation (default: the machine's cores)",
    )
    parser.add_argument("--json", default="bench.json", help="where to write the results")
    parser.add_argument(
        "--impls",
        default=",".join(IMPLS),
        help="comma-separated, from numpy, numba, torch (default: all)",
    )
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--block", type=float, default=0.2, help=argparse.SUPPRESS)
    parser.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from .backends import machine_cores

    threads = args.threads or machine_cores()
    if args.threads is not None and args.threads < 1:
        parser.error(f"invalid --threads {args.threads}: expected an int >= 1")
    if args.worker:
        worker(args.worker, threads, args.block)
        return 0
    if args.compile_probe:
        compile_probe()
        return 0

    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    unknown = [i for i in impls if i not in IMPLS]
    if unknown or not impls:
        parser.error(f"invalid --impls {args.impls!r}: expected names from {', '.join(IMPLS)}")
    if "torch" in impls and importlib.util.find_spec("torch") is None:
        print("PyTorch is not installed: timing the cnnrun backends only", file=sys.stderr)
        impls.remove("torch")
    rounds, block_s = (2, 0.05) if args.quick else (7, 0.2)
    best, versions = measure(impls, threads, rounds, block_s)
    result = report(best, threads)
    result["numba_compile"] = measure_compile() if "numba" in impls else None
    result["machine"] = machine(threads, versions)
    result["settings"] = {
        "quick": args.quick,
        "rounds": rounds,
        "block_s": block_s,
        "dtype": "float32",
        "step_batches": list(STEP_BATCHES),
        "layer_batch": LAYER_BATCH,
        "impls": impls,
        "layers": {
            name: dict(zip(("in", "out", "kernel", "size", "padding", "input_is_data"), spec))
            for name, spec in LAYERS.items()
        },
    }
    print(format_table(result))
    path = Path(args.json)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
