"""A run's folder: where it is, that it can be written, its log file, and which checkpoint a
run continues from."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from ..errors import CheckpointError, CnnrunError, ConfigError

log = logging.getLogger("cnnrun")


def output_dir(cfg: DictConfig) -> Path:
    """The run's folder: ``paths.output_dir`` (Hydra's run folder under ``python -m cnnrun``)."""
    try:
        out = cfg.paths.output_dir
    except Exception:  # ${hydra:...} outside a Hydra run
        out = None
    if not out:
        raise ConfigError(
            "paths.output_dir is not set: run through `python -m cnnrun`, or "
            "pass paths.output_dir=<folder> when calling train(cfg)"
        )
    return Path(out)


def absolute(path: str) -> str:
    """A path from the config, relative to the folder the command was started in."""
    from hydra.utils import to_absolute_path

    return to_absolute_path(str(path))


def check_writable(out: Path) -> None:
    """Fail at the start, not at the first checkpoint, if the run folder cannot be written.
    Temporary files left by a run killed mid-write (``kill -9``) are cleared away."""
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out / "checkpoints"):
            pass
        for stale in (out / "checkpoints").glob(".*.npz.*.tmp"):
            stale.unlink()
    except OSError as err:
        raise CnnrunError(
            f"run folder {out} cannot be written ({err.strerror}): choose "
            "another with hydra.run.dir=... or paths.runs_dir=..."
        ) from None


def log_file(out: Path) -> logging.Handler | None:
    """Outside Hydra (tests, notebooks) nobody writes ``cnnrun.log``: add a handler that does.
    Returns it (the caller removes it at the end), or None where one is there already."""
    target = (out / "cnnrun.log").resolve()
    for h in logging.getLogger().handlers + log.handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() == target:
            return None
    handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return handler


def resolve_resume(resume: str | None, out: Path, runs_dir: str) -> Path | None:
    """The checkpoint to continue from. ``last``: this run folder's ``last.npz``, else the newest
    ``last.npz`` under ``paths.runs_dir``. A job requeued by a cluster (submitit) that finds its
    own ``last.npz`` continues from it without being told."""
    own = out / "checkpoints" / "last.npz"
    if resume is None:
        return own if os.environ.get("SUBMITIT_EXECUTOR") and own.is_file() else None
    if str(resume) != "last":
        return Path(absolute(resume))
    if own.is_file():
        return own
    root = Path(absolute(runs_dir))
    found = sorted(root.glob("**/checkpoints/last.npz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CheckpointError(
            f"trainer.resume=last: no checkpoints/last.npz in {out} or under "
            f"{root}; give the path of a checkpoint instead"
        )
    return found[-1]
