"""A sweep survives any one job, continues when run again, and ranks the same under any launcher.

Real sweeps (``python -m cnnrun -m``), real processes and real signals: a job of the parallel
launcher (``hydra/launcher=joblib``) killed with SIGKILL used to take the whole sweep down
(loky's TerminatedWorkerError, no summary.csv), and a job's numbers depended on how many
threads its launcher gave it.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runner_helpers import (
    LONG,
    TINY,
    arrays,
    assert_same_arrays,
    last_line,
    live_holder,
    run_cnnrun,
    run_config,
    snapshot,
)

from cnnrun.run.train import train

pytestmark = pytest.mark.slow  # whole sweeps: 20-60 s each

# four jobs of LONG's schedule (a few seconds each), two at a time
SWEPT = ["optim.lr=0.05,0.1", "seed=5,6"]


def sweep_args(folder: Path, launcher: str = "joblib") -> list[str]:
    chosen = [f"hydra/launcher={launcher}", "hydra.launcher.n_jobs=2"] if launcher else []
    return ["-m", *TINY, *LONG, *chosen, *SWEPT, f"hydra.sweep.dir={folder}"]


def start_sweep(folder: Path, cwd: Path, launcher: str = "joblib") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen(
        [sys.executable, "-m", "cnnrun", *sweep_args(folder, launcher)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rows(folder: Path) -> dict[str, dict]:
    with open(folder / "summary.csv") as f:
        return {r["job"]: r for r in csv.DictReader(f)}


def running_job(folder: Path, proc: subprocess.Popen, timeout: float = 90) -> tuple[Path, int]:
    """A job that has written its first checkpoint, and the PID holding its folder's lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for last in sorted(folder.glob("*/checkpoints/last.npz")):
            job = last.parent.parent
            if (job / "status.json").exists():
                continue
            pid = live_holder(job)
            if pid is not None:
                return job, pid
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended early: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no job started training in time")


def job_overrides(job: Path) -> list[str]:
    """The swept values of a job folder named ``<num>_optim.lr=0.05,seed=5,...``."""
    name = job.name.split("_", 1)[1]
    return [kv for kv in name.split(",") if kv.split("=")[0] in ("optim.lr", "seed")]


def hparams_rows(tb: Path):
    from runner_helpers import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = event_accumulator(tb).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    return plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams


def test_kill_9_of_a_job_fails_only_it_and_the_rerun_continues(tmp_path):
    sweep = tmp_path / "sweep"
    proc = start_sweep(sweep, tmp_path)
    victim, pid = running_job(sweep, proc)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "Traceback" not in out + err
    assert last_line(err).startswith("cnnrun: error: 1 of 4 jobs failed")
    table = rows(sweep)
    assert len(table) == 4
    assert table[victim.name]["status"] == "failed"
    assert table[victim.name]["reason"] == "killed by SIGKILL"
    assert [r["status"] for j, r in table.items() if j != victim.name] == ["ok"] * 3
    # the dashboard keeps a row for it too, saying why
    hparams = hparams_rows(sweep / victim.name / "tb")
    assert hparams["status"].string_value == "failed: killed by SIGKILL"
    finished = {j: snapshot(sweep / j) for j in table if j != victim.name}

    again = run_cnnrun(sweep_args(sweep), tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    assert {j: snapshot(sweep / j) for j in finished} == finished  # kept as they were
    assert {r["status"] for r in rows(sweep).values()} == {"ok"}
    assert "resumed from" in (victim / "cnnrun.log").read_text()
    # the resumed job ends exactly as the same run on its own (with other threads) ends
    alone = tmp_path / "alone"
    train(run_config(alone, [*LONG, *job_overrides(victim)]))
    assert_same_arrays(
        arrays(victim / "checkpoints" / "last.npz"), arrays(alone / "checkpoints" / "last.npz")
    )


def test_a_signal_to_the_sweep_stops_its_jobs_with_checkpoints_and_says_how_to_go_on(tmp_path):
    sweep = tmp_path / "sweep"
    proc = start_sweep(sweep, tmp_path)
    running_job(sweep, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in out + err
    line = last_line(err)
    assert "SIGTERM: the sweep stopped" in line and f"hydra.sweep.dir={sweep}" in line
    assert (out + err).count("to continue") == 1, out + err  # once, on the last line
    assert len(list(sweep.glob("*/checkpoints/last.npz"))) >= 1
    again = run_cnnrun(sweep_args(sweep), tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    table = rows(sweep)
    assert len(table) == 4 and {r["status"] for r in table.values()} == {"ok"}


def test_the_launcher_does_not_change_the_numbers(tmp_path):
    """The same job gave val/loss 0.1062 under the basic launcher (all cores) and 0.1319
    under joblib (half of them), which changed the sweep's winner."""
    small = ["-m", *TINY, "trainer.max_epochs=2", "optim.lr=0.05,0.2"]
    found = {}
    for launcher in ("basic", "joblib"):
        folder = tmp_path / launcher
        chosen = (
            [f"hydra/launcher={launcher}", "hydra.launcher.n_jobs=2"]
            if launcher == "joblib"
            else []
        )
        done = run_cnnrun([*small, *chosen, f"hydra.sweep.dir={folder}"], tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr
        found[launcher] = {
            j.name: arrays(j / "checkpoints" / "last.npz") for j in sorted(folder.glob("*_*"))
        }
    assert sorted(found["basic"]) == sorted(found["joblib"]) and len(found["basic"]) == 2
    for job in found["basic"]:
        assert_same_arrays(found["basic"][job], found["joblib"][job])


def test_a_killed_submitit_job_is_recorded_and_the_summary_written(tmp_path):
    """submitit's results() raised for the killed job: the sweep ended before its summary."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    args = ["-m", *TINY, *LONG, "hydra/launcher=submitit_local", "optim.lr=0.05,0.1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnrun", *args, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim, pid = running_job(sweep, proc, timeout=180)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "Traceback" not in out + err
    table = rows(sweep)
    assert len(table) == 2
    assert table[victim.name]["status"] == "failed"
    assert "ended without a result" in table[victim.name]["reason"]
    assert [r["status"] for j, r in table.items() if j != victim.name] == ["ok"]


def test_the_same_sweep_started_twice_at_once_is_refused(tmp_path):
    """The second one ran no job, exited 0, and overwrote the first one's multirun.yaml."""
    sweep = tmp_path / "sweep"
    first = start_sweep(sweep, tmp_path)
    running_job(sweep, first)
    plan = (sweep / "multirun.yaml").read_text()
    second = run_cnnrun(sweep_args(sweep), tmp_path, timeout=120)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    line = last_line(second.stderr)
    assert f"sweep folder {sweep} is in use by another sweep (PID {first.pid})" in line
    assert (sweep / "multirun.yaml").read_text() == plan
    first.communicate(timeout=300)
    assert first.returncode == 0


def test_a_signal_stops_a_sweep_of_the_basic_launcher_after_its_current_job(tmp_path):
    """Only the job in progress stopped; the next jobs started one after another."""
    sweep = tmp_path / "sweep"
    proc = start_sweep(sweep, tmp_path, launcher="")
    job, _ = running_job(sweep, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in out + err
    assert f"hydra.sweep.dir={sweep}" in last_line(err)
    assert [p.name for p in sweep.glob("*_*") if p.is_dir()] == [job.name]  # none after it
    assert (out + err).count("to continue") == 1, out + err  # once, on the last line
    assert f"job {job.name} interrupted by SIGTERM" in out
    again = run_cnnrun(sweep_args(sweep, launcher=""), tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in (job / "cnnrun.log").read_text()
    assert {r["status"] for r in rows(sweep).values()} == {"ok"} and len(rows(sweep)) == 4


def test_a_second_ctrl_c_stops_a_parallel_sweep_at_once_and_says_so(tmp_path):
    sweep = tmp_path / "sweep"
    proc = start_sweep(sweep, tmp_path)
    running_job(sweep, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in out + err
    assert "SIGINT: the sweep stopped" in last_line(err)
