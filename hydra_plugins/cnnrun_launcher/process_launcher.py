"""``hydra/launcher=joblib`` in cnnrun: one process per job, a killed job recorded as failed.

The plugin only holds what Hydra's plugin discovery needs; the launcher is
:mod:`cnnrun.run.launcher` (imported when a sweep launches, not when Hydra scans plugins).
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ProcessLauncher(Launcher):
    def __init__(self, n_jobs: int = -1, **unused) -> None:
        # joblib's other keys (backend, prefer, ...) are accepted and have no use here
        self.n_jobs = n_jobs
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from cnnrun.run.launcher import launch

        return launch(self, job_overrides, initial_job_idx)
