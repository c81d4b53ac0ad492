"""Structured configs: the schema Hydra checks every value against before anything runs.

Enums give the accepted values of a field (``conv.padding=smae`` is refused by name); ranges
that a type cannot say (a learning rate > 0) are checked by :func:`validate`. The accepted data
set and optimiser names come from their registries (:mod:`cnnrun.data`, :mod:`cnnrun.optim`),
and each optimiser's schema is made from its constructor's typed arguments: a new optimiser or
data set needs no edit here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from .. import data, optim
from ..errors import ConfigError
from ..nn import Parameter


class Padding(Enum):
    same = "same"
    valid = "valid"
    full = "full"


class Backend(Enum):
    numpy = "numpy"
    numba = "numba"


class Schedule(Enum):
    none = "none"
    step = "step"
    cosine = "cosine"


class OnNan(Enum):
    stop = "stop"
    skip = "skip"


def enum_keys() -> dict[str, type[Enum]]:
    """The schema's keys whose values are enum members (``conv.padding``: Padding, and so on),
    for tab completion to offer their choices."""
    schemas = [
        (k, t) for k, t in typing.get_type_hints(Config).items() if dataclasses.is_dataclass(t)
    ]
    schemas += [("optim", optimizer_schema(n, c)) for n, c in optim.OPTIMIZERS.items()]
    keys = {}
    for section, schema in schemas:
        for name, hint in typing.get_type_hints(schema).items():
            if isinstance(hint, type) and issubclass(hint, Enum):
                keys[f"{section}.{name}"] = hint
    return keys


# the registries' names, as enums: a misspelt name is refused with the list of accepted ones
DataName = Enum("DataName", {name: name for name in data.names()})
OptimName = Enum("OptimName", {name: name for name in optim.OPTIMIZERS})


@dataclass
class ConvConfig:
    padding: Padding = Padding.valid


@dataclass
class ModelConfig:
    name: str = MISSING
    init: str = "default"
    layers: list[Any] = MISSING


@dataclass
class DataConfig:
    name: DataName = DataName["digits"]
    root: str = "data"
    image_size: Any = 32  # an int, or [H, W]
    channels: int | None = None
    num_classes: int = 10
    batch_size: int = 32
    val_fraction: float = 0.2  # of the training files, held out for validation
    test_fraction: float = 0.2  # held out for testing where there are no test files
    augment: bool = False  # random crop (4 px padding) and horizontal flip, training only
    num_samples: int = 1000  # synthetic only
    verify_checksums: bool = True


@dataclass
class ScheduleConfig:
    """The learning-rate schedule, stepped once per epoch; every optimiser's config has it."""

    schedule: Schedule = Schedule.none
    step_size: int = 10  # schedule=step: epochs between decays
    gamma: float = 0.1  # schedule=step: decay factor
    min_lr: float = 0.0  # schedule=cosine: the floor


SCHEDULE_KEYS = tuple(f.name for f in dataclasses.fields(ScheduleConfig))


def _schema_type(hint) -> Any:
    """A constructor's type hint as OmegaConf takes it: tuples become lists."""
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]]
    return hint


@functools.cache
def optimizer_schema(name: str, cls: type[optim.Optimizer]) -> type:
    """The structured config of ``optim=<name>``: ``name``, the constructor's typed arguments
    with their defaults, and the schedule (:class:`ScheduleConfig`)."""
    hints = typing.get_type_hints(cls.__init__)
    fields: list[tuple[str, Any, Any]] = [("name", OptimName, field(default=OptimName[name]))]
    for p in optim.hyperparameters(cls):
        default = MISSING if p.default is p.empty else p.default
        if isinstance(default, tuple):
            default = field(default_factory=lambda d=default: list(d))
        else:
            default = field(default=default)
        fields.append((p.name, _schema_type(hints[p.name]), default))
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields, bases=(ScheduleConfig,))


@dataclass
class BackendConfig:
    name: Backend = Backend.numpy
    threads: int | None = None


@dataclass
class TrainerConfig:
    max_epochs: int = 12
    log_every_n_steps: int = 1
    flow_every_n_steps: int = 10
    histogram_every_n_steps: int = 100
    pictures_every_n_epochs: int | None = None
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    resume: str | None = None
    progress: bool | None = None
    on_nan: OnNan = OnNan.stop
    max_consecutive_skips: int = 10


@dataclass
class PathsConfig:
    runs_dir: str = "runs"
    output_dir: str | None = None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: Any = MISSING  # an optimiser's schema, from conf/optim/<name>.yaml's defaults
    backend: BackendConfig = field(default_factory=BackendConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    conv: ConvConfig = field(default_factory=ConvConfig)
    seed: int = 0


# the schema's enums by class name: a message naming one (``<enum 'Padding'>``) lists its values
ENUMS = {e.__name__: e for e in (Padding, Backend, Schedule, OnNan, DataName, OptimName)}


def register_configs() -> None:
    """``base_config`` (conf/config.yaml's first default) and ``optim_schema/<name>`` for each
    optimiser (the first default of ``conf/optim/<name>.yaml``)."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for name, cls in optim.OPTIMIZERS.items():
        store.store(group="optim_schema", name=name, node=optimizer_schema(name, cls))


register_configs()


def config_dir() -> Path:
    """``conf/``: beside the package in a checkout, inside it in an installed wheel."""
    package = Path(__file__).resolve().parent.parent  # cnnrun/
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"cnnrun's conf/ folder is missing (looked beside {package})")


def value(node) -> Any:
    """An enum member's value, or the value itself."""
    return node.value if isinstance(node, Enum) else node


def model_spec(cfg: DictConfig) -> dict:
    """``cfg.model`` as plain, resolved Python values (``${data.num_classes}`` filled in), what
    :func:`cnnrun.models.build_model` takes."""
    return OmegaConf.to_container(cfg.model, resolve=True)


def optimizer_hyper(optim_cfg: DictConfig) -> dict:
    """``cfg.optim`` without ``name`` and the schedule: the optimiser's constructor arguments."""
    plain = OmegaConf.to_container(optim_cfg, resolve=True, enum_to_str=True)
    return {k: v for k, v in plain.items() if k != "name" and k not in SCHEDULE_KEYS}


def _check(ok: bool, key: str, got, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"invalid {key} {got!r}: expected {accepted}")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate(cfg: DictConfig) -> None:
    """Ranges the schema's types cannot express; a :class:`ConfigError` naming the first bad one."""
    from .checks import check_known_keys, check_layer_arguments

    check_known_keys(cfg)
    _validate_optim(cfg.optim)
    _check(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", cfg.seed, "an int >= 0")
    _validate_data(cfg.data)
    image_hw(cfg)
    _validate_trainer(cfg.trainer)
    th = cfg.backend.threads
    _check(th is None or th >= 1, "backend.threads", th, "null or an int >= 1")
    layers = cfg.model.layers
    _check(
        OmegaConf.is_list(layers) and len(layers) > 0,
        "model.layers",
        layers,
        "a non-empty list of layers",
    )
    check_layer_arguments(model_spec(cfg)["layers"])


def _validate_optim(o: DictConfig) -> None:
    """The learning rate and its schedule here; every other value by the optimiser's own
    constructor, tried on a dummy parameter, its message naming the key as ``optim.<key>``."""
    _check(_number(o.lr) and o.lr > 0, "optim.lr", o.lr, "a float > 0")
    _check(o.step_size >= 1, "optim.step_size", o.step_size, "an int >= 1")
    _check(_number(o.gamma) and o.gamma > 0, "optim.gamma", o.gamma, "a float > 0")
    _check(
        _number(o.min_lr) and 0 <= o.min_lr <= o.lr,
        "optim.min_lr",
        o.min_lr,
        f"a float in [0, optim.lr={o.lr}]",
    )
    probe = [Parameter(np.zeros(1), "probe")]
    try:
        optim.create(value(o.name), probe, optimizer_hyper(o))
    except ConfigError as err:
        text = str(err)
        raise ConfigError(text.replace("invalid ", "invalid optim.", 1)) from None


def _validate_data(d: DictConfig) -> None:
    _check(d.num_samples >= 2, "data.num_samples", d.num_samples, "an int >= 2")
    _check(
        d.channels is None or d.channels >= 1, "data.channels", d.channels, "null or an int >= 1"
    )
    _check(d.num_classes >= 2, "data.num_classes", d.num_classes, "an int >= 2")
    _check(d.batch_size >= 1, "data.batch_size", d.batch_size, "an int >= 1")
    for key in ("val_fraction", "test_fraction"):
        _check(0 < d[key] < 1, f"data.{key}", d[key], "a float in (0, 1)")


def _validate_trainer(t: DictConfig) -> None:
    _check(t.max_epochs >= 1, "trainer.max_epochs", t.max_epochs, "an int >= 1")
    for key in (
        "log_every_n_steps",
        "flow_every_n_steps",
        "histogram_every_n_steps",
        "max_consecutive_skips",
    ):
        _check(t[key] >= 1, f"trainer.{key}", t[key], "an int >= 1")
    for key in ("limit_train_batches", "limit_val_batches", "pictures_every_n_epochs"):
        v = t[key]
        _check(v is None or v >= 1, f"trainer.{key}", v, "null or an int >= 1")


def image_hw(cfg: DictConfig) -> tuple[int, int]:
    """``data.image_size`` as (H, W); a :class:`ConfigError` naming the key if it is not one."""
    from ..errors import DataError

    size = cfg.data.image_size
    try:
        return data.parse_image_size(list(size) if OmegaConf.is_list(size) else size)
    except DataError:
        raise ConfigError(
            f"invalid data.image_size {size!r}: expected an int >= 1 or a pair [H, W] of them"
        ) from None
