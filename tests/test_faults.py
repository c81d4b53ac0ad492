"""Faults that real runs meet: signals, kill -9, NaN losses, damaged checkpoints, full disks.

Nothing may be lost: the last complete checkpoint always loads, and a resumed run ends with
the weights of an uninterrupted one.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from runner_helpers import (
    LONG,
    STEPS_PER_EPOCH,
    arrays,
    assert_same_arrays,
    event_accumulator,
    last_line,
    run_cnnrun,
    run_config,
    sha256,
    start_run,
    wait_for_training,
)

from cnnrun.errors import CheckpointError, CnnrunError
from cnnrun.run import checkpoint as ckpt
from cnnrun.run import logger as tags
from cnnrun.run.train import NonFiniteError, train


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run's final checkpoint arrays."""
    out = tmp_path_factory.mktemp("straight")
    train(run_config(out, LONG))
    return arrays(out / "checkpoints" / "last.npz")


@pytest.mark.slow  # real processes, real signals, mid-training: 5-30 s
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_and_resume_matches(tmp_path, straight, sig):
    folder = tmp_path / "interrupted"
    proc = start_run(folder)
    wait_for_training(folder, proc)
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in out + err
    line = last_line(err)
    assert line.startswith("cnnrun: error:") and signal.Signals(sig).name in line
    last = folder / "checkpoints" / "last.npz"
    assert f"trainer.resume={last}" in line
    assert (folder / "cnnrun.log").read_text().count("checkpoint written to") == 1  # once
    meta = ckpt.load_checkpoint(last)["meta"]
    stopped_at = meta["step"]
    assert 0 < stopped_at < 3 * STEPS_PER_EPOCH
    # TensorBoard was flushed: the curve reaches the step where the run stopped
    steps = [e.step for e in event_accumulator(folder / "tb" / "train").Scalars(tags.STEP_LOSS)]
    assert steps and max(steps) == stopped_at - 1

    resumed = tmp_path / "resumed"
    train(run_config(resumed, [*LONG, f"trainer.resume={last}"]))
    assert_same_arrays(arrays(resumed / "checkpoints" / "last.npz"), straight)


def test_a_signal_after_the_last_step_lets_the_run_complete(tmp_path, monkeypatch):
    from cnnrun.run.train import Trainer

    real_end = Trainer._end_epoch

    def end_then_signal(self):  # SIGTERM while the last epoch is being validated
        if self.state.epoch == self.cfg.trainer.max_epochs - 1:
            os.kill(os.getpid(), signal.SIGTERM)
        real_end(self)

    monkeypatch.setattr(Trainer, "_end_epoch", end_then_signal)
    out = tmp_path / "run"
    metrics = train(run_config(out, ["trainer.max_epochs=2"]))
    assert metrics is not None and (out / "checkpoints" / "last.npz").is_file()
    assert ckpt.load_checkpoint(out / "checkpoints" / "last.npz")["meta"]["epoch"] == 2
    assert "SIGTERM arrived after the last training step" in (out / "cnnrun.log").read_text()


@pytest.mark.slow
def test_kill_9_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL at random moments, many epochs (a checkpoint write every few steps): each time
    the last checkpoint loads and a resumed run completes."""
    rng = np.random.default_rng(0)
    short_epochs = ["data.num_samples=100", "trainer.max_epochs=40"]
    for trial in range(3):
        folder = tmp_path / f"run{trial}"
        proc = start_run(folder, short_epochs)
        wait_for_training(folder, proc)
        time.sleep(float(rng.uniform(0.1, 1.5)))
        proc.kill()
        proc.communicate(timeout=30)
        last = folder / "checkpoints" / "last.npz"
        if last.exists():
            meta = ckpt.load_checkpoint(last)["meta"]
            assert meta["epoch"] >= 1
        out = tmp_path / f"resumed{trial}"
        resume = [f"trainer.resume={last}"] if last.exists() else []
        train(run_config(out, [*LONG, *short_epochs, *resume]))
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["epoch"] == 40
        assert not list((out / "checkpoints").glob("*.tmp"))


def test_resume_last_continues_the_same_folder_without_duplicate_steps(tmp_path):
    out = tmp_path / "run"
    train(run_config(out, ["trainer.max_epochs=1"]))
    train(run_config(out, ["trainer.max_epochs=2", "trainer.resume=last"]))
    steps = [e.step for e in event_accumulator(out / "tb" / "train").Scalars(tags.STEP_LOSS)]
    assert steps == list(range(6))  # 3 steps an epoch, none twice
    assert "resumed from" in (out / "cnnrun.log").read_text()
    assert json.loads((out / "metrics.json").read_text())["epoch"] == 2


def test_nan_stops_with_step_and_layer_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    train(run_config(out, ["model=mlp"]))
    last = out / "checkpoints" / "last.npz"
    digest = sha256(last)
    with pytest.raises(NonFiniteError) as info:
        train(
            run_config(
                out, ["model=mlp", "optim.lr=1e6", "trainer.max_epochs=3", "trainer.resume=last"]
            )
        )
    message = str(info.value)
    assert "non-finite" in message and "at step" in message and "first in" in message
    assert "intact" in message
    assert sha256(last) == digest
    ckpt.load_checkpoint(last)


def test_nan_skip_drops_batches_and_counts_them(tmp_path, monkeypatch):
    """Every third training batch holds a NaN: each is skipped and counted, the run goes on."""
    import cnnrun.run.train as train_module

    real, calls = train_module.train_step, []

    def nan_every_third_batch(model, loss_fn, optimizer, x, y, *rest):
        calls.append(len(y))
        return real(model, loss_fn, optimizer, x * np.nan if len(calls) % 3 == 0 else x, y, *rest)

    monkeypatch.setattr(train_module, "train_step", nan_every_third_batch)
    out = tmp_path / "run"
    train(run_config(out, ["trainer.max_epochs=2", "trainer.on_nan=skip"]))  # 3 batches an epoch
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train/skipped_batches"] == 2 and metrics["step"] == 4
    skipped = event_accumulator(out / "tb" / "train").Scalars(tags.SKIPPED)
    assert skipped[-1].value == metrics["train/skipped_batches"]
    assert "batch skipped" in (out / "cnnrun.log").read_text()


@pytest.mark.slow  # a whole `python -m cnnrun` process
def test_nan_from_the_command_line_is_one_line(tmp_path):
    from runner_helpers import TINY

    result = run_cnnrun([*TINY, "model=mlp", "optim.lr=1e6", "hydra.run.dir=run"], tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert "RuntimeWarning" not in result.stderr
    assert last_line(result.stderr).startswith("cnnrun: error: non-finite")


def _rewrite_meta(src, dst, **changes) -> None:
    with np.load(src, allow_pickle=False) as data:
        items = {k: data[k] for k in data.files}
    meta = json.loads(str(items["meta"]))
    meta.update(changes)
    items["meta"] = np.array(json.dumps(meta))
    np.savez(dst, **items)


@pytest.mark.slow  # about 1 s: the quick loop stays under a minute
def test_checkpoint_of_another_version_or_not_ours(tmp_path):
    out = tmp_path / "run"
    train(run_config(out))
    good = out / "checkpoints" / "last.npz"
    future = tmp_path / "future.npz"
    _rewrite_meta(good, future, version=99)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    for path, expected in ((future, "format version 99"), (foreign, "not a cnnrun checkpoint")):
        digest = sha256(path)
        with pytest.raises(CheckpointError, match=expected):
            train(run_config(tmp_path / f"resume-{path.stem}", [f"trainer.resume={path}"]))
        assert sha256(path) == digest


def test_disk_full_at_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(run_config(out))
    last = out / "checkpoints" / "last.npz"
    digest = sha256(last)
    real_savez = np.savez

    def savez_then_fail(f, **arrays):
        real_savez(f, **arrays)  # a partly written temporary file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.np, "savez", savez_then_fail)
    with pytest.raises(CnnrunError, match="could not write checkpoint .*No space left"):
        train(run_config(out, ["trainer.max_epochs=2", "trainer.resume=last"]))
    assert sha256(last) == digest
    assert not list((out / "checkpoints").glob(".*.tmp"))


@pytest.mark.slow  # about 1 s: the quick loop stays under a minute
def test_run_folder_that_cannot_be_made(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(CnnrunError, match="cannot be written"):
        train(run_config(blocker / "run"))
    result = run_cnnrun(["data=synthetic", f"hydra.run.dir={blocker}/run"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert last_line(result.stderr).startswith("cnnrun: error:")
    assert blocker.read_text() == "not a folder"


@pytest.mark.slow  # about 1 s: the quick loop stays under a minute
def test_read_only_and_full_disks_for_real(small_mount):
    out = small_mount / "run"
    train(run_config(out))  # fits: one small run
    last = out / "checkpoints" / "last.npz"
    digest = sha256(last)
    # a bigger model on the same small disk: the checkpoint write fails for want of space
    with pytest.raises(CnnrunError, match="No space left"):
        train(run_config(small_mount / "big", ["model=mlp", "data.image_size=32"]))
    assert not list((small_mount / "big" / "checkpoints").glob("*.npz*"))
    # the same disk made read-only: the run says so at the start
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    with pytest.raises(CnnrunError, match="cannot be written"):
        train(run_config(small_mount / "another"))
    with pytest.raises(CnnrunError, match="cannot be written"):
        train(run_config(out, ["trainer.resume=last", "trainer.max_epochs=2"]))
    assert sha256(last) == digest


def test_huge_gradients_are_reported_not_crashed_on(tmp_path):
    """A float32 sum of squares overflows long before the gradients themselves do: the norms
    are taken in float64, and the run ends with the one-line NaN message, not a traceback."""
    with pytest.raises(NonFiniteError, match="non-finite .* at step"):
        train(run_config(tmp_path / "run", ["model=mlp", "optim.lr=1e10"]))


def test_skipped_batch_leaves_no_trace_in_the_model(tmp_path, monkeypatch):
    """A skipped batch must not move batch-norm statistics or the dropout RNG."""
    from cnnrun.nn import CrossEntropyLoss

    real = CrossEntropyLoss.forward
    calls = []

    def nan_on_second_batch(self, logits, targets):
        loss = real(self, logits, targets)
        if len(targets) != 16:  # not a training batch: the dashboard's probe images
            return loss
        calls.append(len(targets))
        return float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(CrossEntropyLoss, "forward", nan_on_second_batch)
    out = tmp_path / "run"
    train(run_config(out, ["model=vgg_small", "trainer.on_nan=skip", "data.image_size=8"]))
    metrics_text = (out / "metrics.json").read_text()
    metrics = json.loads(metrics_text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert metrics["train/skipped_batches"] == 1 and metrics["step"] == 2
    state = ckpt.load_checkpoint(out / "checkpoints" / "last.npz")["model"]
    tracked = {k: int(v) for k, v in state.items() if k.endswith("num_batches_tracked")}
    assert len(tracked) == 4 and set(tracked.values()) == {2}, tracked
    for key, value in state.items():
        assert np.all(np.isfinite(value)), key


def test_resume_keeps_the_validation_points(tmp_path):
    out = tmp_path / "run"
    train(run_config(out, ["trainer.max_epochs=1"]))
    train(run_config(out, ["trainer.max_epochs=2", "trainer.resume=last"]))
    acc = event_accumulator(out / "tb" / "validation")
    assert [e.step for e in acc.Scalars(tags.LOSS)] == [2, 5]
    assert [e.step for e in acc.Scalars(tags.ACC)] == [2, 5]


@pytest.mark.slow  # two `python -m cnnrun` processes
def test_resume_hint_continues_in_the_same_folder(tmp_path):
    """The Ctrl-C message names the run folder, so that the resumed run continues its curves
    and checkpoints there instead of starting a new folder."""
    folder = tmp_path / "interrupted"
    proc = start_run(folder)
    wait_for_training(folder, proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    line = last_line(err)
    assert f"hydra.run.dir={folder}" in line and "trainer.resume=last" in line


def test_a_finishing_guard_ignores_a_further_ctrl_c_until_the_process_exits():
    """A sweep that a signal stopped has only its message and its exit left: a Ctrl-C then
    (50 ms after the first, once the sweep stopped that fast) died by SIGINT (status -2) in
    place of the sweep's 130. After finish(), neither the guard nor the handler left behind
    raises; before it, a second Ctrl-C raises KeyboardInterrupt, as it did."""
    from cnnrun.run.signals import SignalGuard

    before = signal.getsignal(signal.SIGINT)
    try:
        with SignalGuard() as guard:
            os.kill(os.getpid(), signal.SIGINT)
            assert guard.received == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C, still running
                os.kill(os.getpid(), signal.SIGINT)
            guard.finish()
            os.kill(os.getpid(), signal.SIGINT)  # ignored
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # ignored too, until the exit
        with SignalGuard():  # a guard that did not finish puts the handler back as it was
            pass
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
