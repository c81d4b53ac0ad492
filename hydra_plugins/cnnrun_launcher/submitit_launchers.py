"""``hydra/launcher=slurm`` and ``submitit_local`` in cnnrun: Hydra's submitit launchers, except
that a job killed on the cluster is recorded as failed instead of ending the sweep early.

:func:`register` (called by ``python -m cnnrun`` after Hydra has scanned its plugins) puts
these classes behind the ``submitit_local`` and ``submitit_slurm`` configs. Without the
``sweep`` extra there is nothing to extend, and nothing is defined.
"""

import shutil
from dataclasses import dataclass

try:
    from hydra_plugins.hydra_submitit_launcher import config as _conf
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _theirs
except ImportError:  # the sweep extra is not installed
    _theirs = None

if _theirs is not None:

    class LocalLauncher(_theirs.LocalLauncher):
        def launch(self, job_overrides, initial_job_idx):
            from cnnrun.run.launcher import submit

            return submit(self, job_overrides, initial_job_idx)

    class SlurmLauncher(_theirs.SlurmLauncher):
        def launch(self, job_overrides, initial_job_idx):
            from cnnrun.errors import ConfigError
            from cnnrun.run.launcher import submit

            if shutil.which("srun") is None:  # submitit's own check ends in a traceback
                raise ConfigError(
                    "hydra/launcher=slurm needs SLURM (no srun on PATH): run it on the "
                    "cluster's login node, or use hydra/launcher=submitit_local (the same "
                    "path on this machine) or hydra/launcher=joblib"
                )

            return submit(self, job_overrides, initial_job_idx)

    @dataclass
    class LocalConf(_conf.LocalQueueConf):
        _target_: str = f"{__name__}.LocalLauncher"

    @dataclass
    class SlurmConf(_conf.SlurmQueueConf):
        _target_: str = f"{__name__}.SlurmLauncher"


def register(plugins) -> None:
    """Our classes into Hydra's plugin registry, our configs over the submitit plugin's."""
    if _theirs is None:
        return
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, cls, node in (
        ("submitit_local", LocalLauncher, LocalConf),
        ("submitit_slurm", SlurmLauncher, SlurmConf),
    ):
        plugins.register(cls)
        store.store(group="hydra/launcher", name=name, node=node, provider="cnnrun")
