"""A run's ``checkpoints/`` folder: what goes into a checkpoint, written at the least cost.

A checkpoint is written at the end of every epoch (``best.npz`` first when validation improved,
then ``last.npz``) and at a signal. Measured on the default run (LeNet-5 on digits, 12 epochs,
21 checkpoints, about 1.0 s of steps) they took about 105 ms of its 1.4 s ``fit()``: 46 ms
turning the same config into YAML for every one of them, 17 ms in ``np.savez``, 21 ms of
fsyncs and the rest hashing and copying the arrays. Here the YAML is made once per run, the
file's bytes once per position of the run (``best.npz`` and ``last.npz`` of an epoch are the
same file), and the folder is fsynced once when the run ends: until then a power cut leaves
each name on its previous complete file (:mod:`cnnrun.run.checkpoint`). What is left, about
45 ms a run, is each file's own fsync before its rename, the renames, and 1.5 ms an epoch of
hashing and ``np.savez``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .. import __version__
from .checkpoint import atomic_write, checkpoint_bytes, fsync_folder
from .config import value
from .state import RunState


class CheckpointSaver:
    """The checkpoints of the run of ``cfg`` in ``folder``. ``threads``: the process's
    thread count, ``changes``: what each resume changed (both recorded in every checkpoint)."""

    def __init__(self, folder: Path, cfg: DictConfig, threads: int, changes: list[dict]):
        self.folder = folder
        self.fixed = {  # the same in every checkpoint of the run
            "model_name": cfg.model.name,
            "config": OmegaConf.to_yaml(cfg),
            "cnnrun_version": __version__,
            "process": {"backend": value(cfg.backend.name), "threads": threads},
            "changes_on_resume": changes,
        }
        self._meta: dict | None = None  # the meta of the bytes below
        self._bytes: bytes | None = None

    def meta(self, state: RunState) -> dict:
        return {"model_name": self.fixed["model_name"], **state.to_meta(), **self.fixed}

    def save(self, name: str, model, optimizer, state: RunState) -> Path:
        """``name`` in the folder, atomically. The weights change only at a step, which the
        meta records: a second file at the same meta is the same bytes."""
        meta = self.meta(state)
        if meta != self._meta:
            self._meta, self._bytes = meta, None

        def write(f) -> None:
            if self._bytes is None:  # made here: a full disk is reported as a failed write
                self._bytes = checkpoint_bytes(model, optimizer, meta)
            f.write(self._bytes)

        return atomic_write(self.folder / name, write, what="checkpoint", sync_folder=False)

    def sync(self) -> None:
        """The renames of the run's checkpoints made durable: once, when the run ends."""
        if self.folder.is_dir():
            fsync_folder(self.folder)
