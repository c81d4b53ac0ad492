"""Shared pieces of the runner tests: composing configs, tiny runs, the command line.

Every run writes under a pytest ``tmp_path`` and every subprocess starts there, so nothing is
written into the repository.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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

# the scalars of every run's tb/train
TRAIN_TAGS = [tags.LOSS, tags.ACC, tags.STEP_LOSS, tags.STEP_ACC, tags.LR]
LENET_PARAMS = [
    f"{layer}.{kind}"
    for layer in ("conv1", "conv2", "fc1", "fc2", "fc3")
    for kind in ("weight", "bias")
]
# where each of them sits in LeNet's 12 layers (conv, tanh, pool, conv, tanh, pool, flatten,
# linear, tanh, linear, tanh, linear): the dashboard's tags start with it
LENET_PLACES = [place for place in ("01", "04", "08", "10", "12") for _ in range(2)]


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


# long enough that a signal 0.3 s into training lands in the middle of it: 3 epochs of
# STEPS_PER_EPOCH steps (2400 training images of the synthetic 3200 at batch 8), over a second
# of training even with the batch-last NumPy kernels
STEPS_PER_EPOCH = 300
LONG = [
    "data.num_samples=3200",
    "data.batch_size=8",
    "trainer.max_epochs=3",
    "trainer.histogram_every_n_steps=1000",
    "seed=5",
]


def arrays(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files if k != "meta"}


def assert_same_arrays(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def start_run(folder, extra=()) -> subprocess.Popen:
    """``python -m cnnrun`` on the tiny model with LONG's schedule, writing into ``folder``."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    args = [*TINY, *LONG, *extra, f"hydra.run.dir={folder}"]
    return subprocess.Popen(
        [sys.executable, "-m", "cnnrun", *args],
        cwd=folder.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_training(folder, proc, timeout=60.0) -> None:
    """Until the run has written its shape trace, i.e. is in the training loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / "shape_trace.md").exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("run did not start training in time")


def live_holder(job: Path) -> int | None:
    """The PID of the live run holding ``job``'s folder lock (None when no run holds it)."""
    from cnnrun.run.folder import lock_holder

    fd = os.open(job, os.O_RDONLY)
    try:
        return lock_holder(fd)
    finally:
        os.close(fd)
