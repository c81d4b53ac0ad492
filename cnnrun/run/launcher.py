"""Sweep jobs in parallel on one machine, each in a process of its own (``hydra/launcher=joblib``).

Hydra's joblib launcher hands the jobs to a pool of loky workers; when one of them is killed
(``kill -9``, the out-of-memory killer) the pool breaks, the job in the other worker dies with
it, the remaining jobs never run and no summary is written. This launcher keeps joblib's
``n_jobs`` but starts one process per job, forked from the sweep's process (which has composed
the configs and run no kernel), at most ``n_jobs`` at once. A job that ends without a result,
killed by a signal or crashed, is recorded as failed in its own folder (``status.json``, with
the signal's name), and the other jobs run on; the sweep's summary lists it and the command
exits non-zero. Re-running the same command into the same sweep folder continues the sweep
(:func:`cnnrun.run.main._sweep_job`).

A signal to the sweep itself (Ctrl-C, SIGTERM) is passed to the running jobs, which stop at a
step boundary with a checkpoint; no new job starts, and the command ends with how to continue.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job
from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import ConfigError
from .folder import HYDRA_FILES, write_hydra_files
from .signals import Interrupted, SignalGuard, override
from .sweep import cores, finished, write_status

log = logging.getLogger(__name__)


def workers(n_jobs: int | None) -> int:
    """Jobs at once, as joblib reads ``n_jobs``: -1 every core, -2 all but one, k exactly k."""
    n = int(n_jobs or -1)
    return n if n > 0 else max(cores() + 1 + n, 1)


def _job_config(launcher, idx: int, overrides: Sequence[str]) -> DictConfig:
    """The job's whole config (its ``hydra`` node included), made current for HydraConfig."""
    cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.id = f"{cfg.hydra.job.name}_{idx}"
        cfg.hydra.job.num = idx
    HydraConfig.instance().set_config(cfg)
    return cfg


def _child(conn, launcher, idx: int, overrides: Sequence[str]) -> None:
    """In the job's process: run it and send its JobReturn back. The job has a process group
    of its own, so that a Ctrl-C in the terminal reaches the sweep, which passes it on once.
    A Ctrl-C that ends the job before its checkpoint guard is up (or a second one) ends the
    process quietly: the sweep records it."""
    os.setpgid(0, 0)
    for s in SignalGuard.SIGNALS:  # the sweep's handlers are not the job's
        signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SignalGuard.SIGNALS)  # blocked by the fork
        cfg = _job_config(launcher, idx, overrides)
        ret = run_job(
            hydra_context=launcher.hydra_context,
            task_function=launcher.task_function,
            config=cfg,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the result is what is left to do
        conn.send(_plain(ret))
        conn.close()
    except KeyboardInterrupt:
        os._exit(128 + signal.SIGINT)


def _plain(ret: JobReturn) -> JobReturn:
    """The JobReturn with plain configs: the schema's classes are made at run time and cannot
    be pickled back to the sweep."""
    for key in ("cfg", "hydra_cfg"):
        node = getattr(ret, key)
        if node is not None:
            setattr(ret, key, OmegaConf.create(OmegaConf.to_container(node, enum_to_str=True)))
    return ret


def ended(exitcode: int | None) -> str:
    """Why a job's process left no result, from its exit status."""
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"its process ended with status {exitcode} without a result"


def _lost(launcher, idx: int, overrides: Sequence[str], reason: str) -> JobReturn:
    """A job that ended without a result: recorded as failed in its folder, NaN for the
    sweeper, so that the other jobs and the summary go on."""
    cfg = _job_config(launcher, idx, overrides)
    folder = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    ret = JobReturn(
        overrides=list(overrides),
        cfg=task_cfg,
        hydra_cfg=cfg,
        working_dir=os.getcwd(),
        task_name=str(cfg.hydra.job.name),
        status=JobStatus.COMPLETED,
        _return_value=math.nan,
    )
    done = finished(folder)
    if done is not None:  # killed after it had recorded its result
        ret.return_value = done
        return ret
    log.error("job %d (%s) %s: recorded as failed", idx, " ".join(overrides), reason)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / HYDRA_FILES).exists():
        write_hydra_files(folder, task_cfg)
    write_status(folder, "failed", reason)
    from .dashboard import record_failure  # TensorBoard's protos: only when a job failed

    record_failure(folder, task_cfg, reason, list(cfg.hydra.overrides.task))
    return ret


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """Run the jobs, ``n_jobs`` at a time; the JobReturns in the jobs' order."""
    if "fork" not in multiprocessing.get_all_start_methods():
        raise ConfigError(
            "hydra/launcher=joblib needs fork() (Linux, macOS): drop it to run "
            "the jobs one after another"
        )
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    at_once = workers(launcher.n_jobs)
    log.info("launching %d jobs, %d at a time, into %s", len(job_overrides), at_once, sweep_dir)
    for i, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", initial_job_idx + i, " ".join(filter_overrides(overrides)))
    jobs = [(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
    with SignalGuard() as guard:
        sweep = _Jobs(launcher, jobs, guard)
        try:
            results = sweep.run(at_once)
            stopped = sweep.stopped or any(r is None for r in results)
            if guard.received is not None and stopped:
                guard.finish()  # the message and the exit are left: no Ctrl-C cuts them short
        except KeyboardInterrupt:  # a second Ctrl-C: the jobs stop at once too
            guard.finish()
            sweep.pass_on(signal.SIGINT)
            sweep.wait(timeout=10.0)
            results = sweep.results
            stopped = sweep.stopped or any(r is None for r in results)
    if guard.received is not None and stopped:
        name = signal.Signals(guard.received).name
        done = sum(r is not None for r in results)
        raise Interrupted(
            f"{name}: the sweep stopped ({done} of {len(jobs)} jobs ended, the running ones "
            f"with a checkpoint); to continue it, run the same command with "
            f"{override('hydra.sweep.dir', sweep_dir)}",
            guard.received,
        )
    return results


class _Jobs:
    """The jobs of one launch: which run, what each left, and signals passed on to them."""

    def __init__(self, launcher, jobs: list, guard: SignalGuard):
        self.launcher, self.jobs, self.guard = launcher, jobs, guard
        self.results: list[JobReturn | None] = [None] * len(jobs)
        self.running: dict = {}  # the read end of a job's pipe -> (position, process)
        self.passed_on = False
        self.stopped = False

    def run(self, at_once: int) -> list:
        context = multiprocessing.get_context("fork")
        following = iter(range(len(self.jobs)))
        while True:
            while self.guard.received is None and len(self.running) < at_once:
                k = next(following, None)
                if k is None:
                    break
                receive, send = context.Pipe(duplex=False)
                proc = context.Process(target=_child, args=(send, self.launcher, *self.jobs[k]))
                # a signal between the fork and the job's own handlers waits for the latter
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SignalGuard.SIGNALS)
                try:
                    proc.start()
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                send.close()  # the job holds the only write end: its end is our EOF
                self.running[receive] = (k, proc)
            if not self.running:
                return self.results
            self._collect()

    def pass_on(self, signum: int) -> None:
        for _, proc in self.running.values():
            if proc.is_alive():
                self.stopped = True  # a job in progress was stopped by the signal
                os.kill(proc.pid, signum)

    def wait(self, timeout: float) -> None:
        """Collect what the running jobs leave, for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            self._collect()

    def _collect(self) -> None:
        """Wait for a job to send its result or end, and record what it left."""
        ready = wait(list(self.running), timeout=0.5)
        if self.guard.received is not None and not self.passed_on:
            self.passed_on = True
            self.pass_on(self.guard.received)
        for receive in ready:
            k, proc = self.running.pop(receive)
            try:
                ret = receive.recv()
            except Exception:  # noqa: BLE001 - nothing sent (EOF), or nothing readable
                ret = None
            receive.close()
            proc.join()
            self.results[k] = (
                ret
                if ret is not None
                else _lost(self.launcher, *self.jobs[k], ended(proc.exitcode))
            )


def submit(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """The submitit launchers' launch (``hydra/launcher=slurm`` and ``submitit_local``), except
    that a job that ends without a result (killed, cancelled, out of memory) is recorded as
    failed in its folder instead of ending the sweep before its summary."""
    import submitit
    from hydra.core.singleton import Singleton
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cluster, params = launcher._EXECUTOR, dict(launcher.params)
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init[f"{cluster}_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster=cluster, **init)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{k if k in shared else f"{cluster}_{k}": v for k, v in params.items()}
    )
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info("submitit %r: %d jobs into %s", cluster, len(job_overrides), sweep_dir)
    state = Singleton.get_state()
    args = [
        (
            list(o),
            "hydra.sweep.dir",
            initial_job_idx + i,
            f"job_id_for_{initial_job_idx + i}",
            state,
        )
        for i, o in enumerate(job_overrides)
    ]
    jobs = executor.map_array(launcher, *zip(*args))
    results = []
    for (overrides, _, idx, _, _), job in zip(args, jobs):
        try:
            results.append(job.results()[0])
        except submitit.core.utils.UncompletedJobError:
            why = f"ended without a result (submitit state {job.state}; see {job.paths.stderr})"
            results.append(_lost(launcher, idx, overrides, why))
    return results
