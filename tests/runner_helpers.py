"""Shared pieces of the runner tests: composing configs, tiny runs, the command line.

Every run writes under a pytest ``tmp_path`` and every subprocess starts there, so nothing is
written into the repository.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cnnrun.run import logger as tags
from cnnrun.run.config import config_dir

# The smallest run that still goes through every part of a run: lenet under 'same' padding on
# 12x12 synthetic images, 48 train and 16 validation images in batches of 16 (about 0.1 s).
TINY = [
    "model=lenet",
    "conv.padding=same",
    "data=synthetic",
    "data.image_size=12",
    "data.num_samples=64",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "trainer.progress=false",
]

# the scalar tags every run writes, besides one grad_norm/<param> per parameter: the logger's
SCALAR_TAGS = list(tags.SCALARS)
LENET_PARAMS = [
    f"{layer}.{kind}"
    for layer in ("conv1", "conv2", "fc1", "fc2", "fc3")
    for kind in ("weight", "bias")
]


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config ``python -m cnnrun <overrides>`` would run with, from the package's conf/."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run_config(out: Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """A tiny run's config writing into ``out`` (``train(cfg)`` outside Hydra needs it)."""
    return compose_config([*TINY, *overrides, f"paths.output_dir={out}"])


def run_cnnrun(
    args: list[str],
    cwd: Path,
    *,
    module: str = "cnnrun",
    env: dict | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` as a user types it, started in ``cwd``."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its hash: to show that a failed run damaged nothing."""
    return {
        str(p.relative_to(folder)): sha256(p)
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def event_accumulator(logdir: Path):
    """TensorBoard's own reader over a run's ``tb/``, keeping every event."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    kinds = ("scalars", "histograms", "compressedHistograms", "images", "audio", "tensors")
    acc = EventAccumulator(str(logdir), size_guidance={k: 0 for k in kinds})
    acc.Reload()
    return acc
