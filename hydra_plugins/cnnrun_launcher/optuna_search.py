"""``hydra/sweeper=optuna`` in cnnrun: Hydra's Optuna sweeper with its study in a database, so
that a search survives an interruption and spreads over machines (:mod:`cnnrun.run.search`).

:func:`register` (called by ``python -m cnnrun`` after Hydra has scanned its plugins) puts this
class behind the ``optuna`` sweeper config. Without the ``sweep`` extra nothing is defined.
"""

from dataclasses import dataclass

try:  # neither imports optuna itself: that waits for a search to start
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # the sweep extra is not installed
    OptunaSweeper = None

if OptunaSweeper is not None:

    class PersistentOptunaSweeper(OptunaSweeper):
        def __init__(self, **config) -> None:
            from cnnrun.run.search import PersistentSearch

            self.sweeper = PersistentSearch(**config)

    @dataclass
    class PersistentOptunaConf(OptunaSweeperConf):
        _target_: str = f"{__name__}.PersistentOptunaSweeper"
        n_jobs: int = 1  # trials launched together


def register(plugins) -> None:
    """Our sweeper into Hydra's plugin registry, its config over the Optuna plugin's."""
    if OptunaSweeper is None:
        return
    from hydra.core.config_store import ConfigStore

    plugins.register(PersistentOptunaSweeper)
    ConfigStore.instance().store(
        group="hydra/sweeper", name="optuna", node=PersistentOptunaConf, provider="cnnrun"
    )
