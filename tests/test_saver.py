"""The run's checkpoint writer: one serialisation per position of the run, never a stale one,
and the folder fsynced when the run ends."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from runner_helpers import run_config, sha256

from cnnrun.errors import CnnrunError
from cnnrun.run import checkpoint as ckpt
from cnnrun.run import saver
from cnnrun.run.train import Trainer


@pytest.fixture
def trainer(tmp_path):
    return Trainer(run_config(tmp_path / "run"), tmp_path / "run")


def counting(monkeypatch) -> list[int]:
    """The calls to checkpoint_bytes, counted."""
    calls, real = [], saver.checkpoint_bytes

    def count(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(saver, "checkpoint_bytes", count)
    return calls


def test_best_and_last_of_one_position_are_one_serialisation(trainer, monkeypatch):
    calls = counting(monkeypatch)
    best, last = trainer.save("best.npz"), trainer.save("last.npz")
    assert len(calls) == 1 and sha256(best) == sha256(last)
    meta = ckpt.load_checkpoint(last)["meta"]
    assert meta["config"] == trainer.checkpoints.fixed["config"] and meta["step"] == 0


def test_a_new_position_is_written_anew(trainer, monkeypatch):
    calls = counting(monkeypatch)
    first = ckpt.load_checkpoint(trainer.save())
    p = trainer.model.parameters()[0]
    p.data += 1.0  # as a step would change it, with the step it records
    trainer.state.step += 1
    second = ckpt.load_checkpoint(trainer.save())
    assert len(calls) == 2 and second["meta"]["step"] == 1
    np.testing.assert_array_equal(second["model"][p.name], first["model"][p.name] + 1.0)


def test_a_full_disk_while_serialising_is_a_failed_write(trainer, monkeypatch):
    real_savez = np.savez

    def savez_then_fail(f, **arrays):
        real_savez(f, **arrays)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.np, "savez", savez_then_fail)
    with pytest.raises(CnnrunError, match="could not write checkpoint .*No space left"):
        trainer.save()
    monkeypatch.undo()  # the next attempt serialises again, and succeeds
    assert ckpt.load_checkpoint(trainer.save())["meta"]["step"] == 0


def test_the_folder_is_fsynced_once_at_the_end(trainer, monkeypatch):
    synced, real = [], ckpt._fsync_dir
    monkeypatch.setattr(ckpt, "_fsync_dir", lambda folder: (synced.append(folder), real(folder)))
    trainer.fit()
    folder = trainer.out / "checkpoints"
    assert synced.count(folder) == 1
