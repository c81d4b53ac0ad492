"""Sweeps with Hydra's multirun: each job's status, the threads it may use, ``summary.csv``.

Every job of a sweep writes ``status.json`` into its own folder (``ok``, or ``failed`` with
the reason) instead of stopping the sweep: the other jobs still run and keep their results.
When the sweep ends, :class:`SweepSummary` (a Hydra callback, see ``conf/hydra/default.yaml``)
gathers the jobs into ``summary.csv`` at the sweep's root, prints the same table best first,
and fails the command if any job failed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..errors import CnnrunError
from . import seeds
from .checkpoint import atomic_write_text

STATUS_FILE = "status.json"
JOB_NAME_CHARS = 64  # a job folder's name past its number: what differs, cut with a hash
METRICS = (
    "val/loss",
    "val/acc",
    "test/loss",
    "test/acc",
    "train/loss",
    "train/acc",
    "epoch",
    "seconds",
)


def job_dir(num: object, differing: object) -> str:
    """A job folder's name (``hydra.sweep.subdir``): its number and the overrides that differ
    between the sweep's jobs, cut with a hash of them past :data:`JOB_NAME_CHARS` characters
    (a file name has 255 at most); every override is in the job's ``.hydra/overrides.yaml``."""
    text = str(differing or "")
    if len(text) > JOB_NAME_CHARS:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        text = f"{text[: JOB_NAME_CHARS - 9].rstrip(',')}-{digest}"
    return f"{num}_{text}" if text else str(num)


OmegaConf.register_new_resolver("cnnrun_job_dir", job_dir, replace=True)


def job_folder_names(argv: list[str]) -> list[str]:
    """``argv`` with the overrides that every job of a sweep shares (``trainer.max_epochs=3``
    beside ``optim.lr=0.01,0.1``) left out of the job folders' names, by adding their keys to
    Hydra's ``override_dirname.exclude_keys``; unchanged where the user sets that list."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .config import config_dir

    key = "hydra.job.config.override_dirname.exclude_keys"
    if any(a.lstrip("+").startswith(key) or a in ("-sc", "--shell-completion") for a in argv):
        return argv
    parser, fixed = OverridesParser.create(), []
    for arg in argv:
        try:
            (o,) = parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001 - not an override, or a bad one Hydra will report
            continue
        if not o.is_sweep_override() and not o.is_hydra_override():
            fixed.append(o.key_or_group)
    if not fixed:
        return argv
    default = OmegaConf.load(config_dir() / "hydra" / "default.yaml")
    keys = [*default.job.config.override_dirname.exclude_keys, *fixed]
    return [*argv, f"{key}=[{','.join(keys)}]"]


def cores() -> int:
    from ..backends import machine_cores

    return machine_cores()


def job_threads(launcher: DictConfig | None) -> int | None:
    """Threads for one job when ``backend.threads`` is unset, so that the jobs running at once
    do not ask for more threads than there are cores: a SLURM job takes its CPUs; a joblib
    worker its share of the cores; a single run, or another launcher, the library defaults.
    A thread count the user set (``OMP_NUM_THREADS``, ...) wins: None leaves it to
    :func:`cnnrun.backends.process.default_threads`. The count says where it came from."""
    from ..backends.process import ThreadCount, user_threads

    if user_threads() is not None:
        return None
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return ThreadCount(int(os.environ["SLURM_CPUS_PER_TASK"]), "SLURM_CPUS_PER_TASK")
    if launcher is None:
        return None
    target = str(launcher.get("_target_", ""))
    n = cores()
    if "n_jobs" in launcher:  # cnnrun's process launcher (hydra/launcher=joblib), or joblib's
        jobs = int(launcher.get("n_jobs", -1) or -1)
        workers = jobs if jobs > 0 else max(n + 1 + jobs, 1)  # joblib: -1 all, -2 all but one
        share = f"hydra.launcher.n_jobs={jobs}'s share of {n} cores"
        return ThreadCount(max(n // min(workers, n), 1), share)
    if "Local" in target and launcher.get("cpus_per_task"):
        return ThreadCount(int(launcher.cpus_per_task), "hydra.launcher.cpus_per_task")
    return None


def run_threads(configured: int | None) -> int | None:
    """``backend.threads`` if set, else this job's share of the cores (:func:`job_threads`)
    under the launcher running it."""
    if configured:
        return configured
    from hydra.core.hydra_config import HydraConfig

    return job_threads(HydraConfig.get().launcher if HydraConfig.initialized() else None)


def write_status(folder: Path, status: str, reason: str = "") -> None:
    atomic_write_text(
        Path(folder) / STATUS_FILE, json.dumps({"status": status, "reason": reason}) + "\n"
    )


def finished(job: Path) -> float | None:
    """The final validation loss of a job that finished (``status.json`` says ok, and its
    ``metrics.json`` is there), else None: a sweep run again into its folder keeps it."""
    try:
        status = json.loads((job / STATUS_FILE).read_text())
        metrics = json.loads((job / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if status.get("status") != "ok":
        return None
    loss = metrics.get("val/loss")
    return float(loss) if isinstance(loss, (int, float)) else math.nan


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """A row per job folder under ``sweep_dir``: job, status, reason, overrides, metrics."""
    rows = []
    # any depth: an override value with a '/' in it nests the job's folder
    for status_file in sorted(Path(sweep_dir).rglob(STATUS_FILE)):
        job = status_file.parent
        status = json.loads(status_file.read_text())
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_file) if overrides_file.is_file() else []
        metrics_file = job / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        rows.append(
            {
                "job": str(job.relative_to(sweep_dir)),
                "status": status["status"],
                "reason": status["reason"],
                "overrides": " ".join(str(o) for o in overrides),
                **{m: metrics.get(m, "") for m in METRICS},
            }
        )
    return sorted(rows, key=_rank)


def _rank(row: dict) -> tuple:
    loss = row["val/loss"]
    finite = isinstance(loss, (int, float)) and math.isfinite(loss)
    return (row["status"] != "ok", not finite, loss if finite else 0.0, row["job"])


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=["job", "status", "reason", "overrides", *METRICS], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_table(rows: list[dict]) -> str:
    """The jobs as a text table; the overrides column shows only what differs between jobs."""

    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    shared = set.intersection(*(set(r["overrides"].split()) for r in rows))

    def differing(r):
        return " ".join(o for o in r["overrides"].split() if o not in shared)

    head = ["#", "status", "val/loss", "val/acc", "seconds", "overrides"]
    body = [
        [
            str(i + 1),
            r["status"],
            cell(r["val/loss"]),
            cell(r["val/acc"]),
            cell(r["seconds"]),
            differing(r) + (f"  ({r['reason']})" if r["reason"] else ""),
        ]
        for i, r in enumerate(rows)
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body]]
    return "\n".join(lines)


_failure: str | None = None


def pending_failure() -> str | None:
    """The failed-jobs message of the sweep that just ended in this process (Hydra turns an
    exception from a callback into a warning, so the entry point asks for it instead)."""
    return _failure


_sweep_pid: int | None = None


def in_sweep_process() -> bool:
    """Whether this is the process that runs the sweep (and, under Hydra's basic launcher,
    its jobs), rather than a job's process of its own."""
    return _sweep_pid == os.getpid()


class SweepSummary(Callback):
    """At the start of a multirun, a lock on the sweep's folder (a second sweep into it, run
    again while the first is still running, stops at once); at the end, ``summary.csv`` and
    the table, best first."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from .folder import FolderInUse, lock_folder
        from .signals import StopSweep

        global _sweep_pid
        _sweep_pid = os.getpid()
        try:  # held to the end of the process; job processes forked from it share it
            self.lock = lock_folder(Path(config.hydra.sweep.dir), what="sweep")
        except (FolderInUse, CnnrunError) as err:
            raise StopSweep(str(err), 2) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        if not rows:
            return
        atomic_write_text(sweep_dir / "summary.csv", to_csv(rows))
        print(
            f"\nsweep {sweep_dir}: {len(rows)} jobs, best first (summary.csv)\n" + to_table(rows),
            flush=True,
        )
        if seeds.varies_seed(rows):
            settings = seeds.by_setting(rows)
            atomic_write_text(sweep_dir / seeds.FILE, seeds.to_csv(settings))
            print(
                f"\nper setting, over its seeds: mean ± sample std, best val/loss first "
                f"({seeds.FILE})\n" + seeds.to_table(settings),
                flush=True,
            )
        global _failure
        failed = [r for r in rows if r["status"] != "ok"]
        if failed:
            first = failed[0]
            _failure = (
                f"{len(failed)} of {len(rows)} jobs failed (first: job "
                f"{first['job'].split('_', 1)[0]}: {first['reason']}); see "
                f"{sweep_dir / 'summary.csv'}"
            )
