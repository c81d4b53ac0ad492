"""``python -m cnnrun [overrides]`` and the ``cnnrun`` command: train with Hydra's config."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .cli import describe, fail, log_to_files, run_cli, trace_wanted
from .config import config_dir


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _task(cfg: DictConfig) -> float:
    from .train import train

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
    import logging
    import math
    from pathlib import Path

    from .sweep import write_status

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
    from .sweep import pending_failure

    run_cli(_task)
    message = pending_failure()
    if message is not None:  # a sweep ran and some of its jobs failed
        fail(message, 1)


if __name__ == "__main__":
    main()
