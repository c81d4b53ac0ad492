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

    try:
        return train(cfg)
    except Exception as err:
        message = describe(err)
        # in a sweep, Hydra records the failed job; alone, the run ends with one clear line
        if message is None or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        log_to_files(message)
        if trace_wanted():
            raise
        fail(message, getattr(err, "exit_code", 2))
        raise  # unreachable: fail() exits


def main() -> None:
    run_cli(_task)


if __name__ == "__main__":
    main()
