"""Kill one job of a parallel sweep with SIGKILL at a random moment, many times over.

    python tests/kill_loop.py --trials 20

Each trial starts the same 4-job sweep (``hydra/launcher=joblib``, 2 jobs at a time), kills a
random running job at a random moment with SIGKILL, checks that the sweep recorded it as failed
(and finished the others), runs the same command again into the same folder, and compares every
job's final checkpoint with an uninterrupted sweep's, array by array. It prints the figures:
jobs recorded, jobs resumed (from their own checkpoint, or run again from the start when killed
before their first one) bit-identically, sweeps completed. Everything is written under a
temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from runner_helpers import TINY, live_holder  # noqa: E402

# 12 short epochs of 75 steps: a checkpoint every few tenths of a second, so that the kills
# land before a job's first checkpoint, between two, and mid-epoch
SCHEDULE = [
    "data.num_samples=800",
    "data.batch_size=8",
    "trainer.max_epochs=12",
    "trainer.histogram_every_n_steps=1000",
]
SWEEP = ["-m", *TINY, *SCHEDULE, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
SWEPT = ["optim.lr=0.05,0.1", "seed=5,6"]


def command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "cnnrun", *SWEEP, *SWEPT, f"hydra.sweep.dir={folder}"]


def env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}


def final_arrays(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    found = {}
    for last in sorted(folder.glob("*/checkpoints/last.npz")):
        with np.load(last, allow_pickle=False) as data:
            found[last.parent.parent.name] = {k: data[k] for k in data.files if k != "meta"}
    return found


def holders(folder: Path) -> dict[str, int]:
    """Job folder name -> PID of the live job holding its lock."""
    found = {}
    for job in folder.glob("*_*"):
        if not job.is_dir() or (job / "status.json").exists():
            continue
        pid = live_holder(job)
        if pid is not None:
            found[job.name] = pid
    return found


def summary(folder: Path) -> dict[str, dict]:
    with open(folder / "summary.csv") as f:
        return {r["job"]: r for r in csv.DictReader(f)}


def trial(folder: Path, rng: random.Random, reference: dict) -> dict:
    proc = subprocess.Popen(
        command(folder),
        cwd=folder.parent,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait = rng.uniform(0.0, 6.0)  # after the first job holds its folder
    started = None
    victim = None
    while proc.poll() is None and victim is None:
        running = holders(folder) if folder.exists() else {}
        if running and started is None:
            started = time.monotonic()
        if started is not None and time.monotonic() - started >= wait and running:
            victim = rng.choice(sorted(running))
            had_checkpoint = (folder / victim / "checkpoints" / "last.npz").exists()
            os.kill(running[victim], signal.SIGKILL)
        time.sleep(0.02)
    _, err = proc.communicate(timeout=600)
    result = {"killed": victim is not None, "recorded": False, "identical": False}
    if victim is None:
        return result
    table = summary(folder)
    result["recorded"] = (
        proc.returncode == 1
        and "Traceback" not in err
        and table[victim]["reason"] == "killed by SIGKILL"
        and sorted(r["status"] for r in table.values()) == ["failed", "ok", "ok", "ok"]
    )
    again = subprocess.run(command(folder), cwd=folder.parent, env=env(), capture_output=True)
    result["completed"] = again.returncode == 0 and all(
        r["status"] == "ok" for r in summary(folder).values()
    )
    result["resumed"] = had_checkpoint
    final = final_arrays(folder)
    result["identical"] = sorted(final) == sorted(reference) and all(
        np.array_equal(final[j][k], reference[j][k]) for j in reference for k in reference[j]
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        straight = root / "straight"
        done = subprocess.run(command(straight), cwd=root, env=env(), capture_output=True)
        assert done.returncode == 0, done.stderr
        reference = final_arrays(straight)
        results = []
        for i in range(args.trials):
            r = trial(root / f"trial{i}", rng, reference)
            results.append(r)
            print(f"trial {i + 1}: {r}", flush=True)
    killed = [r for r in results if r["killed"]]
    count = lambda key, rows=killed: sum(bool(r.get(key)) for r in rows)  # noqa: E731
    resumed = [r for r in killed if r["resumed"]]
    print(
        f"{len(killed)} of {len(results)} trials killed a running job; "
        f"recorded as failed (SIGKILL) with the other 3 jobs ok: {count('recorded')}; "
        f"sweeps completed by the re-run: {count('completed')}; "
        f"every job's final checkpoint bit-identical to the uninterrupted sweep: "
        f"{count('identical')} (of which the killed job resumed from its own checkpoint: "
        f"{count('identical', resumed)} of {len(resumed)}; run again from the start: "
        f"{count('identical', [r for r in killed if not r['resumed']])} of "
        f"{len(killed) - len(resumed)})"
    )


if __name__ == "__main__":
    main()
