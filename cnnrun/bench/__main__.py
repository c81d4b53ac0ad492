"""``python -m cnnrun.bench``: parse the options, time, print the table, write the JSON file.
The same command, with hidden options, runs the workers and the compile probe."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from . import libraries
from .report import library_report, machine, report, settings
from .table import format_table
from .worker import IMPLS, compile_probe, measure, measure_compile, worker

RUN_BACKENDS = ("numpy", "numba")  # the implementations a run can use


DESCRIPTION = (
    "Time the cnnrun backends against PyTorch on the CPU, each implementation in its own "
    "process: training steps of LeNet-5, vgg_small and resnet20, eight conv layers beside the "
    "float32 GEMM peak of the same process, Numba's compile times, and a whole default run "
    "against its steps alone; with the BLAS kernels, PyTorch's conv library, the environment "
    "variables that change them and the machine's load. Prints a table and writes it as JSON."
)


def parser() -> argparse.ArgumentParser:
    """The command's options; ``--worker``, ``--block`` and ``--compile-probe`` are the
    parent's, for the processes it starts."""
    p = argparse.ArgumentParser(prog="python -m cnnrun.bench", description=DESCRIPTION)
    p.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for every implementation (default: the machine's cores)",
    )
    p.add_argument(
        "--json",
        default=None,
        help="where to write the results (default: runs/bench/<date>_<time>.json, beside the "
        "runs and ignored by git)",
    )
    p.add_argument(
        "--impls",
        default=",".join(IMPLS),
        help="comma-separated, from numpy, numba, torch (default: all)",
    )
    p.add_argument(
        "--logging",
        nargs="*",
        metavar="OVERRIDE",
        default=None,
        help="instead: time a whole run (the default one, or these config overrides) with the "
        "TensorBoard dashboard on and off",
    )
    p.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--block", type=float, default=0.2, help=argparse.SUPPRESS)
    p.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--numba-setup-first", action="store_true", help=argparse.SUPPRESS)
    return p


def _impls(text: str, p: argparse.ArgumentParser) -> list[str]:
    """The implementations named in ``--impls``, less PyTorch where it is not installed."""
    impls = [i.strip() for i in text.split(",") if i.strip()]
    unknown = [i for i in impls if i not in IMPLS]
    if unknown or not impls:
        p.error(f"invalid --impls {text!r}: expected names from {', '.join(IMPLS)}")
    if "torch" in impls and importlib.util.find_spec("torch") is None:
        print("PyTorch is not installed: timing the cnnrun backends only", file=sys.stderr)
        impls.remove("torch")
    return impls


def run_speeds(backends: list[str], threads: int, quick: bool) -> dict[str, dict]:
    """:func:`~cnnrun.run.logging_cost.run_versus_step` of the default run on each backend,
    on ``threads`` threads, cnnrun's log quiet meanwhile."""
    import logging

    from ..run.logging_cost import run_versus_step

    log = logging.getLogger("cnnrun")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        return {
            backend: run_versus_step(
                [f"backend={backend}", f"backend.threads={threads}"], rounds=1 if quick else 3
            )
            for backend in backends
        }
    finally:
        log.setLevel(level)


def run(args: argparse.Namespace, threads: int, impls: list[str]) -> dict:
    """Time ``impls`` (and Numba's first compile when numba is one of them, and a whole run on
    each cnnrun backend among them): the results."""
    load_start = libraries.load()
    rounds, block_s = (2, 0.05) if args.quick else (7, 0.2)
    best, info = measure(impls, threads, rounds, block_s)
    result = report(best, threads)
    result["numba_compile"] = measure_compile(threads) if "numba" in impls else None
    backends = [impl for impl in impls if impl in RUN_BACKENDS]
    result["run_versus_step"] = run_speeds(backends, threads, args.quick)
    result["libraries"] = library_report(info)
    versions = {k: v for said in info.values() for k, v in said.get("versions", {}).items()}
    result["machine"] = machine(threads, versions)
    result["settings"] = settings(args.quick, rounds, block_s, impls)
    result["load"] = {"start": load_start, "end": libraries.load()}
    return result


def default_json() -> Path:
    """``runs/bench/<date>_<time>.json``: with the run folders, not in the repository's tree."""
    import time

    return Path("runs") / "bench" / time.strftime("%Y-%m-%d_%H-%M-%S.json")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    from ..backends import machine_cores

    if args.threads is not None and args.threads < 1:
        p.error(f"invalid --threads {args.threads}: expected an int >= 1")
    threads = args.threads or machine_cores()
    if args.worker:
        worker(args.worker, threads, args.block)
        return 0
    if args.compile_probe:
        compile_probe(threads, args.numba_setup_first)
        return 0
    if args.logging is not None:
        import logging

        from ..run.logging_cost import format_logging, logging_cost

        logging.getLogger("cnnrun").setLevel(logging.WARNING)
        result = logging_cost(args.logging, rounds=2 if args.quick else 5)
        print(format_logging(result))
    else:
        result = run(args, threads, _impls(args.impls, p))
        print(format_table(result))
    path = Path(args.json) if args.json else default_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
