"""The ``python -m cnnrun`` task: Hydra hands the composed config to :func:`train`.

A single run's bad input ends as one line (:mod:`cnnrun.run.cli`); a sweep job's failure is
recorded in its folder and the other jobs go on (:mod:`cnnrun.run.sweep`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .cli import describe, fail, log_to_files, run_cli, trace_wanted
from .config import config_dir
from .sweep import pending_failure, write_status


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _task(cfg: DictConfig) -> float:
    from .train import train  # here: a bad override is reported before this import's cost

    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return _sweep_job(cfg, train)
    try:
        return train(cfg)
    except Exception as err:
        message = describe(err)
        if message is None:
            raise
        log_to_files(message)
        if trace_wanted():
            raise
        fail(message, getattr(err, "exit_code", 2))
        raise  # unreachable: fail() exits


def _sweep_job(cfg: DictConfig, train) -> float:
    """One job of a sweep: its failure is recorded in its folder (status.json, cnnrun.log) and
    returned as NaN, so that the other jobs still run; the sweep's summary reports it."""
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        loss = train(cfg)
    except Exception as err:
        reason = describe(err)
        if reason is None:  # a bug, not a bad value: keep its traceback in the job's log
            reason = f"{type(err).__name__}: {err}"
            logging.getLogger("cnnrun").exception("job failed: %s", reason)
        else:
            logging.getLogger("cnnrun").error("job failed: %s", reason)
        write_status(out, "failed", reason)
        return math.nan
    write_status(out, "ok")
    return loss


def main() -> None:
    run_cli(_task)
    message = pending_failure()
    if message is not None:  # a sweep ran and some of its jobs failed
        fail(message, 1)
