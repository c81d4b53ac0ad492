"""``python -m cnnrun.shapes [overrides]``: the shape trace of a config's model, no training.

One real forward and backward pass over a batch of the data's shape (random pixels and labels,
so no data set is read), printed a row per layer with every backward product.
"""

from __future__ import annotations

import sys

import numpy as np

from .cli import compose_from_argv, run_cli
from .config import image_hw, validate, value
from .models import build_model
from .trace import format_text, padding_summary, shape_trace


def example_batch(cfg, rng: np.random.Generator, batch: int | None = None, dtype=np.float32):
    """Random (N, C, H, W) images and labels of the shape the config's data set has."""
    n = batch or cfg.data.batch_size
    channels = cfg.data.channels or 1
    x = rng.standard_normal((n, channels, *image_hw(cfg))).astype(dtype)
    y = rng.integers(0, cfg.data.num_classes, n)
    return x, y


def model_for(cfg, rng: np.random.Generator):
    channels = cfg.data.channels or 1
    model = build_model(
        cfg.model, (channels, *image_hw(cfg)), default_padding=value(cfg.conv.padding), rng=rng
    )
    return model.set_backend(value(cfg.backend.name))


def main(argv: list[str] | None = None) -> None:
    def entry():
        cfg = compose_from_argv(sys.argv[1:] if argv is None else argv, "cnnrun.shapes")
        validate(cfg)
        rng = np.random.default_rng(cfg.seed)
        model = model_for(cfg, rng)
        x, y = example_batch(cfg, rng)
        print(f"# {cfg.model.name}, padding {padding_summary(model)}, batch {tuple(x.shape)}")
        print(format_text(shape_trace(model, x, y)), end="")

    run_cli(entry)


if __name__ == "__main__":
    main()
