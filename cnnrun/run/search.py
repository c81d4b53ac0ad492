"""An Optuna search that outlives its process: ``hparams_search=...`` with a study in a database.

Hydra's Optuna sweeper keeps its study in memory unless ``hydra.sweeper.storage`` names a
database, and runs ``n_trials`` more trials every time it starts. Here:

* the study is kept in ``optuna.db`` (SQLite) in the sweep folder unless ``storage`` names
  another database; a PostgreSQL URL (``postgresql://user@host/db``) shares one study between
  the processes of many machines or SLURM jobs, each with a sweep folder of its own;
* ``n_trials`` is the study's total: a process starts trials while fewer than that are
  finished or running, in this process or any other (processes starting one at the same
  moment may each start one, so the study can end a trial or two over);
* the sampler's seed (``seed: ${seed}``) is mixed with the number of trials the study has and
  this sweep folder's path, so that a resumed search and the other processes of a shared study
  draw trials of their own instead of replaying the same start-up trials; a fresh search in
  its own database (the default) keeps the seed as given, and so the same trials for a seed;
* a trial left running by an interrupted run of this sweep folder (the folder's lock says no
  live process has it) runs again in its own job folder, from its checkpoint, and is told to
  the study: re-running the interrupted command finishes the same number of trials.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path

import optuna
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import OmegaConf
from optuna.trial import TrialState

from ..errors import ConfigError

log = logging.getLogger(__name__)

DB_FILE = "optuna.db"
STUDY_NAME = "cnnrun"  # where the config names none: a random name would not be found again
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def default_storage(sweep_dir: str | Path) -> str:
    """SQLite in the sweep folder (made if missing)."""
    folder = Path(sweep_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / DB_FILE}"


class PersistentSearch(OptunaSweeperImpl):
    """Hydra's Optuna sweeper with the study in a database, ``n_trials`` as its total, and the
    trials an interrupted run of this sweep folder left behind run again."""

    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        space, fixed = create_params_from_overrides(
            [*self._parse_sweeper_params_config(), *arguments]
        )
        for name in fixed:
            space.pop(name, None)
        self.folder = str(Path(self.sweep_dir).resolve())
        storage = self.storage or default_storage(self.sweep_dir)
        study = self._open_study(storage)
        self._reseed(study)
        log.info("study %s in %s: %d trials so far", study.study_name, storage, _count(study))
        left_behind = self._left_behind(study)
        self.job_idx = 1 + max((_job(t) for t in self._ours(study)), default=-1)
        for trial in left_behind:
            log.info("trial %d was left running: it runs again in its folder", trial.number)
            overrides = tuple(f"{k}={v}" for k, v in {**trial.params, **fixed}.items())
            self._launch(study, [trial.number], [overrides], _job(trial))
        while (left := self.n_trials - _count(study)) > 0:
            trials = [study.ask() for _ in range(min(self.n_jobs, left))]
            for i, trial in enumerate(trials):
                trial.set_user_attr("sweep_dir", self.folder)
                trial.set_user_attr("job", self.job_idx + i)
            overrides = self._configure_trials(trials, space, fixed)
            self._launch(study, [t.number for t in trials], overrides, self.job_idx)
            self.job_idx += len(trials)
        self._save_best(study)

    def _open_study(self, storage: str):
        """The study, made if it is not there yet. Processes starting together (a SLURM job
        array) may race to create the database's tables: the loser tries again."""
        from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

        check_storage(storage)
        for attempt in range(5):
            try:
                return optuna.create_study(
                    study_name=self.study_name or STUDY_NAME,
                    storage=storage,
                    sampler=self.sampler,
                    directions=self._get_directions(),
                    load_if_exists=True,
                )
            except OperationalError as err:  # no server there, refused, a file it cannot open
                reason = "; ".join(ln.strip() for ln in str(err.orig).splitlines() if ln.strip())
                raise ConfigError(storage_message(storage, f"cannot connect ({reason})")) from err
            except (IntegrityError, ProgrammingError):
                if attempt == 4:
                    raise
                time.sleep(0.5 + attempt)
        raise AssertionError("unreachable")

    def _reseed(self, study) -> None:
        """The sampler again, its seed mixed with the study's progress and this folder (see the
        module's notes); as it was for a fresh study in its own database, or without a seed."""
        spec = OmegaConf.select(self.config, "hydra.sweeper.sampler")
        if spec is None or spec.get("seed") is None or "_target_" not in spec:
            return
        so_far = _count(study)
        if so_far == 0 and not self.storage:
            return
        seed = mixed_seed(spec.seed, so_far, self.folder)
        log.info("sampler seed %d: seed %s, %d trials so far, this folder", seed, spec.seed, so_far)
        study.sampler = self.sampler = instantiate(spec, seed=seed)

    def _ours(self, study) -> list:
        return [
            t
            for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("sweep_dir") == self.folder
        ]

    def _left_behind(self, study) -> list:
        """This folder's trials still marked running: the sweep holds the folder's lock, so
        no live process runs them."""
        return [t for t in self._ours(study) if t.state == TrialState.RUNNING]

    def _launch(self, study, numbers: list[int], overrides, first_job: int) -> None:
        returns = self.launcher.launch(overrides, initial_job_idx=first_job)
        for number, ret in zip(numbers, returns):
            value = _value(ret)
            if value is None:
                study.tell(number, state=TrialState.FAIL)
            else:
                study.tell(number, value)

    def _save_best(self, study) -> None:
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not done or len(self._get_directions()) > 1:
            return
        best = study.best_trial
        log.info("best trial %d: %s, value %s", best.number, best.params, best.value)
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        OmegaConf.save(
            OmegaConf.create(results), Path(self.sweep_dir) / "optimization_results.yaml"
        )


ACCEPTED = "expected sqlite:///path.db or postgresql://user@host:port/db"
# the module a storage's driver imports, and the package that has it
DRIVERS = {"psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient", "pymysql": "PyMySQL"}


def storage_message(url: str, reason: str) -> str:
    return f"cannot use hydra.sweeper.storage {url!r}: {reason}; {ACCEPTED}"


def check_storage(url: str) -> None:
    """Refuse, in one line, a storage URL that cannot be opened (an unknown scheme, a driver
    not installed, an SQLite file in a folder that is not there) before Optuna tries it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise ConfigError(storage_message(url, "unknown scheme")) from None
    try:
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()
    except ImportError as err:
        package = DRIVERS.get(str(err.name), err.name)
        reason = f"driver not installed (no module {err.name}): pip install {package}"
        raise ConfigError(storage_message(url, reason)) from None
    folder = Path(parsed.database or "").parent
    if parsed.get_backend_name() == "sqlite" and parsed.database and not folder.is_dir():
        raise ConfigError(storage_message(url, f"folder {folder} does not exist"))


def mixed_seed(seed, trials_so_far: int, folder: str) -> int:
    """A seed of its own for each (seed, study progress, sweep folder), in [0, 2**32)."""
    text = f"{seed}|{trials_so_far}|{folder}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little")


def _count(study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def _job(trial) -> int:
    return int(trial.user_attrs.get("job", -1))


def _value(ret) -> float | None:
    """A job's final validation loss, or None where it failed (no value, NaN)."""
    try:
        value = float(ret.return_value)
    except Exception:  # noqa: BLE001 - the job's own error is in its folder and the summary
        return None
    return value if math.isfinite(value) else None
