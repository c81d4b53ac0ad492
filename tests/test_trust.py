"""No silent wrong results: each case where a reliability test found a run that *looked* fine and
was not (a number from another run, a folder shared by two runs, a diverged state saved over a
good one). Each test failed on the code before the fix.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from runner_helpers import (
    TINY,
    arrays,
    assert_same_arrays,
    event_accumulator,
    last_line,
    run_cnnrun,
    run_config,
    sha256,
    snapshot,
    start_run,
    wait_for_training,
)

from cnnrun.errors import CheckpointError
from cnnrun.run import checkpoint as ckpt
from cnnrun.run import logger as tags
from cnnrun.run.folder import FolderInUse, lock_folder
from cnnrun.run.train import NonFiniteError, train


def last_of(folder):
    return folder / "checkpoints" / "last.npz"


def log_of(folder) -> str:
    return (folder / "cnnrun.log").read_text()


# -- 1. a resume continues only its own run --------------------------------------------------
@pytest.mark.slow  # four runs
def test_resume_last_never_continues_another_run(tmp_path):
    """It took the newest last.npz anywhere under paths.runs_dir: another run's."""
    runs = tmp_path / "runs"
    other = runs / "other"
    train(run_config(other, ["seed=1", "trainer.max_epochs=2"]))
    before = snapshot(other)
    mine = runs / "mine"
    train(run_config(mine, ["trainer.resume=last", f"paths.runs_dir={runs}"]))
    fresh = tmp_path / "fresh"
    train(run_config(fresh))
    assert_same_arrays(arrays(last_of(mine)), arrays(last_of(fresh)))
    assert "no checkpoint of its own" in log_of(mine)
    assert "starting from scratch" in log_of(mine)
    assert json.loads((mine / "metrics.json").read_text())["step"] == 3  # one epoch, from 0
    assert snapshot(other) == before


@pytest.mark.parametrize(
    "changed, named",
    [
        (["seed=1"], "seed 0 there, 1 here"),
        (["model=mlp"], "model.name 'lenet' there, 'mlp' here"),
        pytest.param(
            *(["data.image_size=10"], "data.image_size (12, 12) there, (10, 10) here"),
            marks=pytest.mark.slow,
        ),
        pytest.param(
            *(["conv.padding=valid"], "conv.padding 'same' there, 'valid' here"),
            marks=pytest.mark.slow,
        ),
        pytest.param(
            *(["optim=adam"], "optim.name 'sgd' there, 'adam' here"), marks=pytest.mark.slow
        ),
    ],
)
def test_a_checkpoint_of_another_experiment_is_refused(tmp_path, changed, named):
    first = tmp_path / "first"
    train(run_config(first))
    checkpoint = last_of(first)
    digest = sha256(checkpoint)
    with pytest.raises(CheckpointError, match="is from another run") as info:
        train(run_config(tmp_path / "second", [*changed, f"trainer.resume={checkpoint}"]))
    assert named in str(info.value)
    assert sha256(checkpoint) == digest


@pytest.mark.slow  # three `python -m cnnrun` processes
def test_optimiser_changes_need_the_command_line_and_are_recorded(tmp_path):
    """Resuming a run started with optim.lr=0.2 without repeating it continued silently with
    the default 0.05. Now that is refused; said on the command line, it is recorded."""
    run = ["hydra.run.dir=run"]
    first = run_cnnrun([*TINY, *run, "optim.lr=0.2"], tmp_path)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "run"
    before = snapshot(folder)
    forgot = run_cnnrun([*TINY, *run, "trainer.resume=last", "trainer.max_epochs=2"], tmp_path)
    assert forgot.returncode != 0 and "Traceback" not in forgot.stderr
    line = last_line(forgot.stderr)
    assert "optim.lr 0.2 there, 0.05 here" in line and "pass optim.lr=0.2 to continue" in line
    assert snapshot(folder) == before
    said = run_cnnrun(
        [*TINY, *run, "trainer.resume=last", "trainer.max_epochs=2", "optim.lr=0.1"], tmp_path
    )
    assert said.returncode == 0, said.stderr
    record = json.loads((folder / "metrics.json").read_text())["changes_on_resume"]
    assert record == [
        {"step": 3, "checkpoint": str(last_of(folder)), "changed": {"optim.lr": [0.2, 0.1]}}
    ]
    assert ckpt.load_checkpoint(last_of(folder))["meta"]["changes_on_resume"] == record
    assert "resume: optim.lr is 0.1, the checkpoint's was 0.2" in log_of(folder)


@pytest.mark.slow  # numba's kernels: loaded from its cache, compiled on a fresh machine
def test_a_change_of_backend_on_resume_is_warned_and_recorded(tmp_path):
    out = tmp_path / "run"
    train(run_config(out))
    train(run_config(out, ["trainer.resume=last", "trainer.max_epochs=2", "backend=numba"]))
    assert "not bit for bit" in log_of(out)
    changes = json.loads((out / "metrics.json").read_text())["changes_on_resume"]
    assert changes[0]["changed"] == {"backend.name": ["numpy", "numba"]}
    meta = ckpt.load_checkpoint(last_of(out))["meta"]
    assert meta["process"]["backend"] == "numba" and meta["process"]["threads"] >= 1


def test_a_fresh_run_into_a_folder_that_holds_a_run_is_refused(tmp_path):
    """It overwrote the checkpoints and metrics and mixed three runs' curves in tb/."""
    out = tmp_path / "run"
    train(run_config(out))
    before = snapshot(out)
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(run_config(out, ["seed=1"]))
    assert snapshot(out) == before


def test_a_job_that_started_from_a_checkpoint_continues_its_own(tmp_path):
    """A sweep job given trainer.resume=<path> and interrupted went back to <path> when the
    sweep ran again, and threw its own progress away."""
    from cnnrun.run.resume import resolve_resume

    given = tmp_path / "given.npz"
    own = tmp_path / "job" / "checkpoints" / "last.npz"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"the job's own")
    assert resolve_resume(str(given), own.parent.parent, continue_own=True) == own
    assert resolve_resume(str(given), own.parent.parent, continue_own=False) == given


def test_an_equal_size_written_otherwise_resumes(tmp_path):
    out = tmp_path / "run"
    train(run_config(out))
    train(
        run_config(out, ["trainer.resume=last", "trainer.max_epochs=2", "data.image_size=[12,12]"])
    )
    assert json.loads((out / "metrics.json").read_text())["epoch"] == 2


def test_a_failed_start_leaves_no_new_folder_behind(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(CheckpointError, match="not found"):
        train(run_config(out, [f"trainer.resume={tmp_path / 'nope.npz'}"]))
    assert not out.exists()


@pytest.mark.slow  # about 1 s: the quick loop stays under a minute
def test_resume_from_a_run_folder_takes_its_last_checkpoint(tmp_path):
    first = tmp_path / "first"
    train(run_config(first))
    second = tmp_path / "second"
    train(run_config(second, [f"trainer.resume={first}", "trainer.max_epochs=2"]))
    assert f"resumed from {last_of(first)}" in log_of(second)
    with pytest.raises(CheckpointError, match="has no checkpoints/last.npz"):
        train(run_config(tmp_path / "third", [f"trainer.resume={tmp_path / 'third'}"]))


# -- 3. the same numbers at any thread count --------------------------------------------------
def test_thread_count_does_not_change_a_run(tmp_path):
    """The numpy backend's BLAS products gave other bits with other thread counts, so a
    sweep's ranking depended on its launcher."""
    one, two = tmp_path / "one", tmp_path / "two"
    train(run_config(one, ["backend.threads=1", "trainer.max_epochs=2"]))
    train(run_config(two, ["backend.threads=2", "trainer.max_epochs=2"]))
    assert_same_arrays(arrays(last_of(one)), arrays(last_of(two)))


# -- 4. one run per folder --------------------------------------------------------------------
def test_a_locked_folder_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "run"
    train(run_config(out))
    stale = out / "checkpoints" / ".last.npz.otherrun.tmp"  # another run's write in progress
    stale.write_bytes(b"half a checkpoint")
    before = snapshot(out)
    fd = lock_folder(out)  # this process plays the live run
    try:
        with pytest.raises(FolderInUse, match=f"in use by another run \\(PID {os.getpid()}\\)"):
            train(run_config(out, ["trainer.resume=last", "trainer.max_epochs=2"]))
    finally:
        os.close(fd)
    assert snapshot(out) == before


HOLD_LOCKF = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_without_flock_a_lock_file_is_used_and_its_holder_named(tmp_path, monkeypatch):
    """NFS cannot flock a folder opened read-only, Lustre with noflock not at all (ENOSYS):
    that was a traceback, or no lock. Now a POSIX lock on .cnnrun.lock stands in."""
    import errno
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCKF, str(out / ".cnnrun.lock")], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"held"

        def no_flock(fd, op):
            raise OSError(errno.ENOSYS, "Function not implemented")

        monkeypatch.setattr(fcntl, "flock", no_flock)
        with pytest.raises(FolderInUse, match=f"PID {holder.pid}"):
            train(run_config(out))
    finally:
        holder.kill()
        holder.wait()
    train(run_config(out))  # the holder gone, the lock file serves this run
    assert (out / "metrics.json").is_file()


@pytest.mark.slow  # two `python -m cnnrun` processes at once
def test_a_second_run_in_a_live_folder_stops_naming_the_first(tmp_path):
    """Both ran and exited 0, leaving a config that said seed=5 beside seed=1's numbers."""
    folder = tmp_path / "shared"
    # long enough to outlast the second process's start-up: with LONG's 3 epochs the first
    # run, faster since the run's logging got cheaper, sometimes ended before the second asked
    proc = start_run(folder, ["trainer.max_epochs=20"])
    wait_for_training(folder, proc)
    config = (folder / ".hydra" / "config.yaml").read_text()
    second = run_cnnrun([*TINY, f"hydra.run.dir={folder}", "seed=1"], tmp_path)
    assert second.returncode != 0 and "Traceback" not in second.stderr
    assert f"PID {proc.pid}" in last_line(second.stderr)
    assert (folder / ".hydra" / "config.yaml").read_text() == config
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    meta = ckpt.load_checkpoint(last_of(folder))["meta"]
    assert meta["rng"] and "seed: 5" in meta["config"]


# -- 5. best.npz never stale ------------------------------------------------------------------
KILL_AFTER = """
import os, signal, sys
from cnnrun.run.train import Trainer
real, aim, at_epoch = Trainer.save, sys.argv[1], int(sys.argv[2])
def save_then_die(self, name="last.npz"):
    path = real(self, name)
    if name == aim and self.state.epoch == at_epoch:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9, at exactly this moment
    return path
Trainer.save = save_then_die
from cnnrun.__main__ import main
sys.argv = [sys.argv[0], *sys.argv[3:]]
main()
"""


def kill_after_writing(tmp_path, name: str, epoch: int, args: list[str]) -> None:
    """A real process killed with SIGKILL right after it wrote ``name`` at ``epoch``."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    done = subprocess.run(
        [sys.executable, "-c", KILL_AFTER, name, str(epoch), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


@pytest.mark.slow  # real processes killed with SIGKILL
def test_a_kill_between_the_two_checkpoints_leaves_them_consistent(tmp_path):
    schedule = [*TINY, "trainer.max_epochs=3", "optim.lr=0.02", "data.num_samples=256"]
    straight = tmp_path / "straight"
    assert run_cnnrun([*schedule, f"hydra.run.dir={straight}"], tmp_path).returncode == 0
    folder = tmp_path / "killed"
    kill_after_writing(tmp_path, "best.npz", 2, [*schedule, f"hydra.run.dir={folder}"])
    best = ckpt.load_checkpoint(folder / "checkpoints" / "best.npz")["meta"]
    last = ckpt.load_checkpoint(last_of(folder))["meta"]
    assert best["step"] > last["step"]  # best first: never behind last
    resumed = run_cnnrun([*schedule, f"hydra.run.dir={folder}", "trainer.resume=last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("best.npz", "last.npz"):
        assert_same_arrays(
            arrays(folder / "checkpoints" / name), arrays(straight / "checkpoints" / name)
        )


def test_a_stale_best_is_repaired_from_last_on_resume(tmp_path):
    """A kill between last.npz and best.npz (the order before) left best.npz behind for good."""
    out = tmp_path / "run"
    improving = ["optim.lr=0.02", "data.num_samples=256"]  # validation improves in epoch 2
    resumed = [*improving, "trainer.resume=last", "trainer.max_epochs=2"]
    train(run_config(out, improving))
    stale = tmp_path / "best-after-epoch-1.npz"
    stale.write_bytes((out / "checkpoints" / "best.npz").read_bytes())
    train(run_config(out, resumed))
    meta = ckpt.load_checkpoint(last_of(out))["meta"]
    assert meta["val_loss"] == meta["best_val_loss"]  # epoch 2 was the best: best.npz is it
    (out / "checkpoints" / "best.npz").write_bytes(stale.read_bytes())  # as the kill left it
    train(run_config(out, resumed))
    assert "repaired" in log_of(out)
    assert sha256(out / "checkpoints" / "best.npz") == sha256(last_of(out))


# -- 6. TensorBoard keeps every point over a kill and a resume -----------------------------------
@pytest.mark.slow  # a real process killed with SIGKILL
def test_no_event_is_lost_to_a_kill_after_a_checkpoint(tmp_path):
    schedule = [*TINY, "trainer.max_epochs=3"]
    folder = tmp_path / "run"
    kill_after_writing(tmp_path, "last.npz", 2, [*schedule, f"hydra.run.dir={folder}"])
    resumed = run_cnnrun([*schedule, f"hydra.run.dir={folder}", "trainer.resume=last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    val = event_accumulator(folder / "tb" / "validation")
    assert [e.step for e in val.Scalars(tags.LOSS)] == [2, 5, 8]
    steps = event_accumulator(folder / "tb" / "train")
    assert [e.step for e in steps.Scalars(tags.STEP_LOSS)] == list(range(9))


# -- 7, 8. a diverged state never passes, nor replaces a good one -----------------------------
def test_non_finite_batch_norm_statistics_stop_the_run(tmp_path, monkeypatch):
    """Inputs so large that a batch variance overflows float32: the normalised output, and so
    the loss, stay finite, while running_var becomes inf. The run used to exit 0 at chance."""
    import cnnrun.run.train as train_module

    real = train_module.load_run_data

    def huge(cfg):
        data = real(cfg)
        data.x_train = data.x_train * np.float32(1e20)
        return data

    monkeypatch.setattr(train_module, "load_run_data", huge)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match="non-finite batch-norm statistics") as info:
        train(run_config(out, ["model=vgg_small", "data.image_size=8"]))
    assert "bn1_1.running_var" in str(info.value)
    assert not list((out / "checkpoints").glob("*.npz"))


def test_skipping_stops_after_a_run_of_bad_batches_and_keeps_the_good_checkpoint(
    tmp_path, monkeypatch
):
    import cnnrun.run.train as train_module

    out = tmp_path / "run"
    train(run_config(out))
    good = sha256(last_of(out))
    real = train_module.train_step

    def diverged(model, loss_fn, optimizer, x, y, *rest):  # every batch from now on is NaN
        return real(model, loss_fn, optimizer, x * np.nan, y, *rest)

    monkeypatch.setattr(train_module, "train_step", diverged)
    resume = ["trainer.resume=last", "trainer.max_epochs=3", "trainer.on_nan=skip"]
    with pytest.raises(NonFiniteError, match="after 2 batches skipped in a row"):
        train(run_config(out, [*resume, "trainer.max_consecutive_skips=2"]))
    assert sha256(last_of(out)) == good
    with pytest.raises(NonFiniteError, match="every batch skipped"):  # a limit above an epoch
        train(run_config(out, [*resume, "trainer.max_consecutive_skips=50"]))
    assert sha256(last_of(out)) == good


# -- 9. a run that fails to start leaves the folder as it was ----------------------------------
@pytest.mark.slow  # three `python -m cnnrun` processes
@pytest.mark.parametrize("mistake", [["model=mlp"], ["optim.lr=-1"], ["data.image_size=2"]])
def test_a_failed_restart_leaves_the_folder_exactly_as_it_was(tmp_path, mistake):
    """It rewrote .hydra/config.yaml to say mlp beside LeNet's checkpoints."""
    first = run_cnnrun([*TINY, "hydra.run.dir=run"], tmp_path)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "run"
    before = snapshot(folder)
    again = run_cnnrun([*TINY, "hydra.run.dir=run", "trainer.resume=last", *mistake], tmp_path)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert last_line(again.stderr).startswith("cnnrun: error:")
    assert snapshot(folder) == before


# -- 10. checkpoints that were changed, and hints that can be pasted ----------------------------
def test_a_changed_array_in_a_rezipped_checkpoint_is_named(tmp_path):
    """np.load checks only the zip's CRCs, which a re-zip makes right again."""
    out = tmp_path / "run"
    train(run_config(out))
    with np.load(last_of(out), allow_pickle=False) as data:
        items = {k: data[k] for k in data.files}
    items["model/fc2.weight"] = items["model/fc2.weight"] + np.float32(1e-3)
    changed = tmp_path / "changed.npz"
    np.savez(changed, **items)
    with zipfile.ZipFile(changed) as z:
        assert z.testzip() is None  # a valid zip
    with pytest.raises(CheckpointError, match="changed model/fc2.weight"):
        ckpt.load_checkpoint(changed)
    del items["model/fc3.bias"]
    np.savez(changed, **items)
    with pytest.raises(CheckpointError, match="missing model/fc3.bias"):
        ckpt.load_checkpoint(changed)


@pytest.mark.parametrize(
    "path", ["runs/multirun/2026/0_optim.lr=0.1,conv.padding=same", "my runs/o'brien", "plain/x"]
)
def test_the_resume_hint_pastes_into_a_shell_and_hydra(path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from cnnrun.run.signals import override

    words = shlex.split(override("hydra.run.dir", path))
    assert len(words) == 1
    parsed = OverridesParser.create().parse_overrides(words)[0]
    assert parsed.key_or_group == "hydra.run.dir" and parsed.value() == path


@pytest.mark.slow  # `python -m cnnrun` processes on a full and a read-only disk
def test_start_up_faults_are_one_line(small_mount, tmp_path):
    filler = small_mount / "filler"
    with open(filler, "wb") as f:  # fill the disk to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    for place in ("full", "full/deeper/run"):
        result = run_cnnrun([*TINY, f"hydra.run.dir={small_mount / place}"], tmp_path)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert last_line(result.stderr).startswith("cnnrun: error:")
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    result = run_cnnrun([*TINY, f"hydra.run.dir={small_mount / 'ro'}"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_changed_meta_entry_is_named(tmp_path):
    """The seed, config and RNG states live in the meta entry: they are checked too."""
    out = tmp_path / "run"
    train(run_config(out))
    with np.load(last_of(out), allow_pickle=False) as data:
        items = {k: data[k] for k in data.files}
    meta = json.loads(str(items["meta"]))
    meta["epoch"] = 7
    items["meta"] = np.array(json.dumps(meta))
    changed = tmp_path / "changed.npz"
    np.savez(changed, **items)
    with pytest.raises(CheckpointError, match="changed meta"):
        ckpt.load_checkpoint(changed)


def test_results_are_readable_by_others_as_the_rest_of_the_folder_is(tmp_path):
    """mkstemp made every atomically written file 0600: metrics, checkpoints, .hydra/."""
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        train(run_config(out))
    finally:
        os.umask(old)
    for name in ("metrics.json", "shape_trace.md", "checkpoints/last.npz"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


def test_a_flush_leaves_no_event_behind(tmp_path):
    """A flush before a checkpoint must leave every event on disk: tensorboardX's flush() did
    not wait for its writer thread's queue, and the epoch's validation point could be lost."""
    from runner_helpers import event_accumulator

    from cnnrun.run import events

    writer = events.EventFile(tmp_path / "tb")
    try:
        for step in range(500):
            writer.summary(step, [events.scalar("val/loss", float(step))])
        writer.flush()  # no close: what a kill -9 right now would leave
        steps = [e.step for e in event_accumulator(tmp_path / "tb").Scalars("val/loss")]
        assert steps == list(range(500))
    finally:
        writer.close()
