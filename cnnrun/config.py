"""Structured configs: the schema Hydra checks every value against before anything runs.

Enums give the accepted values of a field (``conv.padding=smae`` is refused by name); ranges
that a type cannot say (a learning rate > 0) are checked by :func:`validate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from .errors import ConfigError


class Padding(Enum):
    same = "same"
    valid = "valid"
    full = "full"


class Backend(Enum):
    numpy = "numpy"
    numba = "numba"


class DataName(Enum):
    digits = "digits"
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"
    synthetic = "synthetic"


class OptimName(Enum):
    sgd = "sgd"
    adam = "adam"


class Schedule(Enum):
    none = "none"
    step = "step"
    cosine = "cosine"


class OnNan(Enum):
    stop = "stop"
    skip = "skip"


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
    name: DataName = DataName.digits
    root: str = "data"
    image_size: Any = 32  # an int, or [H, W]
    channels: int | None = None
    num_classes: int = 10
    batch_size: int = 32
    val_fraction: float = 0.2
    num_samples: int = 1000  # synthetic only
    verify_checksums: bool = True


@dataclass
class OptimConfig:
    name: OptimName = OptimName.sgd
    lr: float = 0.05
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    schedule: Schedule = Schedule.none
    step_size: int = 10  # schedule=step: epochs between decays
    gamma: float = 0.1  # schedule=step: decay factor
    min_lr: float = 0.0  # schedule=cosine: the floor


@dataclass
class BackendConfig:
    name: Backend = Backend.numpy
    threads: int | None = None


@dataclass
class TrainerConfig:
    max_epochs: int = 12
    log_every_n_steps: int = 1
    histogram_every_n_steps: int = 100
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    resume: str | None = None
    progress: bool | None = None
    on_nan: OnNan = OnNan.stop


@dataclass
class PathsConfig:
    runs_dir: str = "runs"
    output_dir: str | None = None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    conv: ConvConfig = field(default_factory=ConvConfig)
    seed: int = 0


def register_configs() -> None:
    ConfigStore.instance().store(name="base_config", node=Config)


register_configs()


def config_dir() -> Path:
    """``conf/``: beside the package in a checkout, inside it in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"cnnrun's conf/ folder is missing (looked beside {here})")


def value(node) -> Any:
    """An enum member's value, or the value itself."""
    return node.value if isinstance(node, Enum) else node


def _check(ok: bool, key: str, got, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"invalid {key} {got!r}: expected {accepted}")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate(cfg: DictConfig) -> None:
    """Ranges the schema's types cannot express; a :class:`ConfigError` naming the first bad one."""
    o, d, t = cfg.optim, cfg.data, cfg.trainer
    _check(_number(o.lr) and o.lr > 0, "optim.lr", o.lr, "a float > 0")
    _check(_number(o.momentum) and o.momentum >= 0, "optim.momentum", o.momentum, "a float >= 0")
    _check(
        _number(o.weight_decay) and o.weight_decay >= 0,
        "optim.weight_decay",
        o.weight_decay,
        "a float >= 0",
    )
    _check(
        len(o.betas) == 2 and all(_number(b) and 0 <= b < 1 for b in o.betas),
        "optim.betas",
        list(o.betas),
        "two floats in [0, 1)",
    )
    _check(o.step_size >= 1, "optim.step_size", o.step_size, "an int >= 1")
    _check(_number(o.gamma) and o.gamma > 0, "optim.gamma", o.gamma, "a float > 0")
    _check(
        _number(o.min_lr) and 0 <= o.min_lr <= o.lr,
        "optim.min_lr",
        o.min_lr,
        f"a float in [0, optim.lr={o.lr}]",
    )
    _check(_number(o.eps) and o.eps >= 0, "optim.eps", o.eps, "a float >= 0")
    _check(_number(o.dampening), "optim.dampening", o.dampening, "a finite float")
    _check(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", cfg.seed, "an int >= 0")
    _check(d.num_samples >= 2, "data.num_samples", d.num_samples, "an int >= 2")
    _check(
        d.channels is None or d.channels >= 1, "data.channels", d.channels, "null or an int >= 1"
    )
    _check(d.num_classes >= 2, "data.num_classes", d.num_classes, "an int >= 2")
    _check(d.batch_size >= 1, "data.batch_size", d.batch_size, "an int >= 1")
    _check(0 < d.val_fraction < 1, "data.val_fraction", d.val_fraction, "a float in (0, 1)")
    image_hw(cfg)
    _check(t.max_epochs >= 1, "trainer.max_epochs", t.max_epochs, "an int >= 1")
    _check(
        t.log_every_n_steps >= 1, "trainer.log_every_n_steps", t.log_every_n_steps, "an int >= 1"
    )
    _check(
        t.histogram_every_n_steps >= 1,
        "trainer.histogram_every_n_steps",
        t.histogram_every_n_steps,
        "an int >= 1",
    )
    for key in ("limit_train_batches", "limit_val_batches"):
        v = t[key]
        _check(v is None or v >= 1, f"trainer.{key}", v, "null or an int >= 1")
    th = cfg.backend.threads
    _check(th is None or th >= 1, "backend.threads", th, "null or an int >= 1")
    _check(
        OmegaConf.is_list(cfg.model.layers) and len(cfg.model.layers) > 0,
        "model.layers",
        cfg.model.layers,
        "a non-empty list of layers",
    )


def image_hw(cfg: DictConfig) -> tuple[int, int]:
    """``data.image_size`` as (H, W); a :class:`ConfigError` naming the key if it is not one."""
    from .data import parse_image_size
    from .errors import DataError

    size = cfg.data.image_size
    try:
        return parse_image_size(list(size) if OmegaConf.is_list(size) else size)
    except DataError:
        raise ConfigError(
            f"invalid data.image_size {size!r}: expected an int >= 1 or a pair [H, W] of them"
        ) from None
