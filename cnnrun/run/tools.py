"""The commands that only look, without training: ``python -m cnnrun.shapes`` and
``python -m cnnrun.gradcheck``.

Both build a config's model and run one real forward and backward pass over a batch of the
data's shape (random pixels and labels, so no data set is read).
"""

from __future__ import annotations

import sys

import numpy as np

from ..gradcheck import gradcheck
from ..trace import format_text, padding_summary, shape_trace
from .build import build_run_model
from .cli import compose_from_argv, run_cli
from .config import image_hw, validate

GRADCHECK_OPTIONS = {"batch": 2, "max_checks": 24}
GRADCHECK_LIMITS = {"batch": (1, "images in the batch"), "max_checks": (0, "0: every element")}
GRADCHECK_TOL = 1e-6


def example_batch(cfg, rng: np.random.Generator, batch: int | None = None, dtype=np.float32):
    """Random (N, C, H, W) images and (N,) labels of the shape the config's data set has."""
    n = batch or cfg.data.batch_size
    channels = cfg.data.channels or 1
    x = rng.standard_normal((n, channels, *image_hw(cfg))).astype(dtype)
    y = rng.integers(0, cfg.data.num_classes, n)
    return x, y


def model_for(cfg, rng: np.random.Generator):
    """The config's model for its data's (C, H, W), on its backend, as a run builds it."""
    return build_run_model(cfg, (cfg.data.channels or 1, *image_hw(cfg)), rng)


def shapes_main(argv: list[str] | None = None) -> None:
    """``python -m cnnrun.shapes [overrides]``: the shape trace, a row per layer."""

    def entry():
        cfg = compose_from_argv(sys.argv[1:] if argv is None else argv, "cnnrun.shapes")
        validate(cfg)
        rng = np.random.default_rng(cfg.seed)
        model = model_for(cfg, rng)
        x, y = example_batch(cfg, rng)
        print(f"# {cfg.model.name}, padding {padding_summary(model)}, batch {tuple(x.shape)}")
        print(format_text(shape_trace(model, x, y)), end="")

    run_cli(entry)


def gradcheck_main(argv: list[str] | None = None) -> None:
    """``python -m cnnrun.gradcheck [--batch N] [--max-checks N] [overrides]``: every layer of
    a config's model against finite differences in float64; exit status 1 if any error reaches
    the tolerance or a tensor could not be checked at all (every sampled element at a kink)."""

    def entry():
        cfg, opts = compose_from_argv(
            sys.argv[1:] if argv is None else argv,
            "cnnrun.gradcheck",
            GRADCHECK_OPTIONS,
            GRADCHECK_LIMITS,
        )
        validate(cfg)
        rng = np.random.default_rng(cfg.seed)
        model = model_for(cfg, rng)
        x, y = example_batch(cfg, rng, batch=opts["batch"], dtype=np.float64)
        max_checks = opts["max_checks"] or None
        result = gradcheck(model, x, y, max_checks=max_checks, rng=rng, skip_kinks=True)
        print(
            f"# {cfg.model.name}, padding {padding_summary(model)}, batch {tuple(x.shape)}, "
            f"float64, eps 1e-5, {max_checks or 'all'} elements per tensor"
        )
        if not _print_gradcheck(result):
            sys.exit(1)

    run_cli(entry)


def _print_gradcheck(result) -> bool:
    """The table of :func:`gradcheck_main`, a row per layer (by its path in the model, so as
    wide as the longest); whether every tensor passed."""
    width = max([12, *(len(layer) for layer in result.layers)])
    print(f"{'layer':<{width}} {'max rel. error':>15} {'checked':>8} {'at kinks':>9}")
    unchecked = [n for n, c in result.checked.items() if c == 0]
    for layer, err in result.layers.items():
        names = [n for n in result.checked if n == layer or n.startswith(layer + ".")]
        checked = sum(result.checked[n] for n in names)
        skipped = sum(result.skipped[n] for n in names)
        flag = "" if err < GRADCHECK_TOL else "  FAIL"
        if any(n in unchecked for n in names):
            flag += "  NOT CHECKED: " + ", ".join(sorted(set(names) & set(unchecked)))
        print(f"{layer:<{width}} {err:>15.3e} {checked:>8} {skipped:>9}{flag}")
    ok = result.passed(GRADCHECK_TOL) and not unchecked
    print(
        f"{'ok' if ok else 'FAILED'}: largest relative error {result.max_error:.3e} "
        f"(tolerance {GRADCHECK_TOL:g})"
        + (f"; not checked: {', '.join(unchecked)}" if unchecked else "")
    )
    return ok
