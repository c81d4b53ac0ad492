"""Sweeps with Hydra's multirun: the basic, joblib and submitit_local launchers, an Optuna
search, a sweep with a failing job, and the requeue path of a cluster job."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from runner_helpers import event_accumulator, last_line, run_cnnrun, run_config

from cnnrun.run import checkpoint as ckpt
from cnnrun.run import logger as tags
from cnnrun.run.sweep import job_threads
from cnnrun.run.train import Interrupted, Trainer, train

pytestmark = pytest.mark.slow  # each sweep starts several Python processes

TINY_SWEEP = [
    "data=synthetic",
    "data.image_size=16",
    "data.num_samples=64",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "trainer.progress=false",
]


def needs(plugin: str):
    return pytest.importorskip(
        f"hydra_plugins.{plugin}", reason=f"{plugin} is not installed (pip install -e '.[sweep]')"
    )


def sweep_root(cwd: Path) -> Path:
    roots = sorted((cwd / "runs" / "multirun").glob("*/*"))
    assert len(roots) == 1, roots
    return roots[0]


def summary(root: Path) -> list[dict]:
    with open(root / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_jobs(root: Path, expected: int) -> list[Path]:
    """Every job folder has its events (with an HParams entry), metrics and status."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    jobs = sorted(p for p in root.iterdir() if p.is_dir() and (p / "status.json").exists())
    assert len(jobs) == expected
    for job in jobs:
        assert re.match(r"\d+_", job.name)  # named from the job's number and overrides
        status = json.loads((job / "status.json").read_text())
        if status["status"] != "ok":
            continue
        metrics = json.loads((job / "metrics.json").read_text())
        val = event_accumulator(job / "tb" / "validation")
        assert [e.value for e in val.Scalars(tags.LOSS)][-1] == pytest.approx(metrics["val/loss"])
        acc = event_accumulator(job / "tb")
        content = acc.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]
        ).session_start_info
        assert start.hparams["optim.lr"].number_value > 0
    return jobs


def check_summary(root: Path, jobs: list[Path]) -> list[dict]:
    rows = summary(root)
    assert sorted(r["job"] for r in rows) == sorted(j.name for j in jobs)
    ok = [float(r["val/loss"]) for r in rows if r["status"] == "ok"]
    assert ok == sorted(ok)  # best first
    return rows


def test_basic_sweep_with_a_failing_job_keeps_the_others(tmp_path):
    result = run_cnnrun(["-m", *TINY_SWEEP, "optim.lr=0.05,-1,0.1"], tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    line = last_line(result.stderr)
    assert line.startswith("cnnrun: error: 1 of 3 jobs failed") and "optim.lr" in line
    root = sweep_root(tmp_path)
    jobs = check_jobs(root, 3)
    rows = check_summary(root, jobs)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert "invalid optim.lr -1.0" in rows[-1]["reason"]
    assert "optim.lr=-1" in rows[-1]["overrides"]
    assert "best first" in result.stdout  # the table is printed too


def test_nan_job_is_recorded_as_failed(tmp_path):
    result = run_cnnrun(["-m", *TINY_SWEEP, "model=mlp", "optim.lr=0.05,1e6"], tmp_path)
    assert result.returncode == 1
    rows = summary(sweep_root(tmp_path))
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert "non-finite" in rows[1]["reason"]


def test_joblib_sweep_of_four_jobs(tmp_path):
    result = run_cnnrun(
        [
            "-m",
            *TINY_SWEEP,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "optim.lr=0.05,0.1",
            "conv.padding=same,valid",
        ],
        tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    root = sweep_root(tmp_path)
    rows = check_summary(root, check_jobs(root, 4))
    assert {r["overrides"].split()[-1] for r in rows} == {"conv.padding=same", "conv.padding=valid"}
    # two workers share the cores: each job was given cores // 2 threads (at least one)
    expected = max((os.cpu_count() or 1) // 2, 1)
    logs = [(root / r["job"] / "cnnrun.log").read_text() for r in rows]
    assert all(f"threads {expected}" in log for log in logs)


def test_submitit_local_sweep_of_two_jobs(tmp_path):
    needs("hydra_submitit_launcher")
    result = run_cnnrun(
        ["-m", *TINY_SWEEP, "hydra/launcher=submitit_local", "optim.lr=0.05,0.1"],
        tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    root = sweep_root(tmp_path)
    check_summary(root, check_jobs(root, 2))
    assert (root / ".submitit").is_dir()


def test_optuna_search_of_three_trials(tmp_path):
    needs("hydra_optuna_sweeper")
    result = run_cnnrun(
        ["hparams_search=lenet_optuna", *TINY_SWEEP, "hydra.sweeper.n_trials=3"],
        tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    root = sweep_root(tmp_path)
    rows = check_summary(root, check_jobs(root, 3))
    best = (root / "optimization_results.yaml").read_text()
    assert f"best_value: {rows[0]['val/loss']}"[:20] in best
    for r in rows:  # every trial chose its own values
        assert "optim.lr=" in r["overrides"] and "conv.padding=" in r["overrides"]


def test_slurm_launcher_config_composes():
    needs("hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from cnnrun.run.config import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.cpus_per_task == 4 and launcher.max_num_timeout == 3


def test_job_threads_divide_the_cores(monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr("cnnrun.run.sweep.cores", lambda: 8)
    joblib = "hydra_plugins.cnnrun_launcher.process_launcher.ProcessLauncher"
    assert job_threads(OmegaConf.create({"_target_": joblib, "n_jobs": 2})) == 4
    assert job_threads(OmegaConf.create({"_target_": joblib, "n_jobs": -1})) == 1
    assert job_threads(OmegaConf.create({"_target_": joblib, "n_jobs": 16})) == 1
    assert job_threads(None) is None
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert job_threads(None) == 6


def test_requeued_job_resumes_from_its_own_checkpoint(tmp_path, monkeypatch):
    """A cluster's pre-emption signal: the step finishes, a checkpoint is written, the launcher's
    own handler (submitit's requeue) is called; the requeued job, started again in the same
    folder, continues from that checkpoint and ends where an uninterrupted job ends."""
    long = ["data.num_samples=800", "data.batch_size=8", "trainer.max_epochs=2"]
    straight = tmp_path / "straight"
    train(run_config(straight, long))

    out = tmp_path / "job"
    requeued = []
    real_step = Trainer._train_step

    def step_then_preempt(self, *args):  # the scheduler's signal arrives during step 40
        real_step(self, *args)
        if self.state.step == 40:
            os.kill(os.getpid(), signal.SIGUSR2)

    monkeypatch.setattr(Trainer, "_train_step", step_then_preempt)
    previous = signal.signal(signal.SIGUSR2, lambda s, f: requeued.append(s))
    try:
        with pytest.raises(Interrupted) as info:
            train(run_config(out, long))
    finally:
        signal.signal(signal.SIGUSR2, previous)
        monkeypatch.setattr(Trainer, "_train_step", real_step)
    assert requeued == [signal.SIGUSR2]  # the launcher's handler ran after the save
    assert info.value.exit_code == 128 + signal.SIGUSR2
    stopped = ckpt.load_checkpoint(out / "checkpoints" / "last.npz")["meta"]
    assert (stopped["epoch"], stopped["batch"], stopped["step"]) == (0, 40, 40)

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # what submitit sets in a job
    time.sleep(0.01)
    train(run_config(out, long))
    assert "resumed from" in (out / "cnnrun.log").read_text()
    with (
        np.load(out / "checkpoints" / "last.npz") as a,
        np.load(straight / "checkpoints" / "last.npz") as b,
    ):
        for key in a.files:
            if key != "meta":
                assert np.array_equal(a[key], b[key]), key


def _submitit_job_pid(sweep_root_dir: Path) -> int | None:
    """The process of a submitit_local job of this sweep (``python -m submitit.core._submit``)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in args and any(
            str(sweep_root_dir).encode() in a for a in args
        ):
            return int(cmdline.parent.name)
    return None


def test_submitit_preempted_job_is_requeued_and_resumes(tmp_path):
    """The real path: submitit_local's job gets the scheduler's SIGUSR2 mid-run, writes its
    checkpoint, submitit requeues it, and the requeued job resumes in the same folder and ends
    with the weights of an uninterrupted run."""
    needs("hydra_submitit_launcher")
    import subprocess
    import sys

    # 3 epochs of 450 steps: a few seconds of training, so that the signal lands mid-run
    long = ["data.num_samples=4800", "data.batch_size=8", "trainer.max_epochs=3", "seed=5"]
    straight = tmp_path / "straight"
    train(run_config(straight, ["data.image_size=16", *long]))

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    args = [
        "data=synthetic",
        "data.image_size=16",
        "trainer.progress=false",
        "conv.padding=same",
        *long,
        "hydra/launcher=submitit_local",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnrun", "-m", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        traces = []
        while not traces and time.monotonic() < deadline and proc.poll() is None:
            # the only job: named "0", no override differing
            traces = list((tmp_path / "runs").glob("multirun/*/*/0/shape_trace.md"))
            time.sleep(0.1)
        assert traces, "the job did not start training"
        job = traces[0].parent
        time.sleep(0.5)
        pid = _submitit_job_pid(job.parent)
        assert pid is not None
        os.kill(pid, signal.SIGUSR2)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    log = (job / "cnnrun.log").read_text()
    assert "SIGUSR2 at step" in log and "resumed from" in log
    assert json.loads((job / "status.json").read_text())["status"] == "ok"
    with (
        np.load(job / "checkpoints" / "last.npz") as a,
        np.load(straight / "checkpoints" / "last.npz") as b,
    ):
        for key in a.files:
            if key != "meta":
                assert np.array_equal(a[key], b[key]), key
