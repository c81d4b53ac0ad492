"""The ``python -m cnnrun`` task: Hydra hands the composed config to :func:`train`.

A single run's bad input ends as one line (:mod:`cnnrun.run.cli`); a sweep job's failure is
recorded in its folder and the other jobs go on (:mod:`cnnrun.run.sweep`).
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ..errors import CnnrunError
from .checks import check_overrides, empty_folder
from .cli import describe, fail, run_cli, trace_wanted
from .config import config_dir
from .folder import HYDRA_FILES, FolderInUse, write_hydra_files
from .helppage import intercept, tidied_stdout
from .signals import Interrupted, StopSweep
from .sweep import finished, in_sweep_process, job_folder_names, pending_failure, write_status


def _register_launcher() -> None:
    """cnnrun's launchers (:mod:`cnnrun.run.launcher`). Hydra finds plugins by scanning
    ``hydra_plugins`` with pkgutil, which cannot see into a setuptools editable install
    (``pip install -e .``); Hydra's own register() finds ours."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.cnnrun_launcher import optuna_search, submitit_launchers
    from hydra_plugins.cnnrun_launcher.process_launcher import ProcessLauncher

    plugins = Plugins.instance()  # Hydra scans its plugins here, once per process
    plugins.register(ProcessLauncher)
    submitit_launchers.register(plugins)  # after the scan: over the submitit plugin's configs
    optuna_search.register(plugins)  # the same for the Optuna sweeper: a study in a database


_register_launcher()


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _task(cfg: DictConfig) -> float:
    from .train import train  # here: a bad override is reported before this import's cost

    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return _sweep_job(cfg, train)
    if not str(HydraConfig.get().run.dir).strip():  # Hydra would run in the current folder
        fail(empty_folder("hydra.run.dir"))
    try:
        return train(cfg)
    except Exception as err:
        message = describe(err)
        if message is None:
            raise
        if trace_wanted():
            raise
        fail(message, getattr(err, "exit_code", 2))
        raise  # unreachable: fail() exits


def _sweep_job(cfg: DictConfig, train) -> float:
    """One job of a sweep: its failure is recorded in its folder (status.json, cnnrun.log) and
    returned as NaN, so that the other jobs still run; the sweep's summary reports it. A job
    that finished in an earlier run of the same sweep command is kept as it is. A signal to
    the sweep's own process (Hydra's basic launcher runs the jobs in it) stops the sweep."""
    out = Path(HydraConfig.get().runtime.output_dir)
    log = logging.getLogger("cnnrun")
    done = finished(out)
    if done is not None:
        log.info("job %s finished in an earlier run of this sweep: kept as it is", out.name)
        return done
    try:
        loss = train(cfg)
    except FolderInUse:  # another live process runs this very job: its folder is not ours
        raise
    except Exception as err:
        reason = describe(err)
        if reason is None:  # a bug, not a bad value: its traceback is in the job's log
            reason = f"{type(err).__name__}: {err}"
        if not isinstance(err, Interrupted):
            log.error("job failed: %s", reason)
            _record_failure(out, cfg, reason)
            from .dashboard import record_failure  # TensorBoard's protos: only when needed

            record_failure(out, cfg, reason)  # the command line's overrides: HydraConfig
            return math.nan
        # its log has the advice and its HParams row its own status; the last line says it once
        name = signal.Signals(err.signum).name
        log.error("job %s interrupted by %s: its checkpoint is in its folder", out.name, name)
        _record_failure(out, cfg, reason)
        if in_sweep_process():
            raise StopSweep(str(err), err.exit_code) from None
        return math.nan
    write_status(out, "ok")
    return loss


def _record_failure(out: Path, cfg: DictConfig, reason: str) -> None:
    try:
        if not (out / HYDRA_FILES).exists():  # failed before its start: the summary's overrides
            write_hydra_files(out, cfg)
        write_status(out, "failed", reason)
    except CnnrunError as err:  # a full disk: the sweep goes on, the summary lacks this row
        logging.getLogger("cnnrun").error("could not record the failure: %s", err)


def _entry() -> None:
    check_overrides(sys.argv[1:])
    sys.argv[1:] = job_folder_names(sys.argv[1:])
    _task()


def main() -> None:
    tidy = intercept(sys.argv[1:])  # --version, --help, completion: cnnrun's own first
    with tidied_stdout(tidy):
        run_cli(_entry)
    message = pending_failure()
    if message is not None:  # a sweep ran and some of its jobs failed
        fail(message, 1)
