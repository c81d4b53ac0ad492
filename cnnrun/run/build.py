"""A run's pieces from its config: the data, the model, the optimiser and its schedule, and the
hyperparameters that tell runs apart."""

from __future__ import annotations

import logging
import math

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .. import nn, optim
from ..data import DataSplit, load_data
from ..models import build_model
from ..trace import padding_summary
from .checks import padding_unused
from .config import image_hw, model_spec, optimizer_hyper, value
from .folder import absolute
from .resume import explicit_keys

log = logging.getLogger("cnnrun")


def load_run_data(cfg: DictConfig) -> DataSplit:
    """The data set of ``cfg.data``, split and normalised, with the run's seed."""
    d = cfg.data
    return load_data(
        value(d.name),
        root=absolute(d.root),
        image_size=image_hw(cfg),
        channels=d.channels,
        num_classes=d.num_classes,
        num_samples=d.num_samples,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=cfg.seed,
        verify_checksums=d.verify_checksums,
    )


def build_run_model(cfg: DictConfig, in_shape: tuple[int, ...], rng: np.random.Generator):
    """The model of ``cfg.model`` for (C, H, W) inputs, its weights drawn from ``rng``, on the
    config's backend."""
    model = build_model(model_spec(cfg), in_shape, default_padding=value(cfg.conv.padding), rng=rng)
    return model.set_backend(value(cfg.backend.name))


def build_optimizer(cfg: DictConfig, params) -> optim.Optimizer:
    """The optimiser of ``cfg.optim`` (its registry name and constructor arguments)."""
    return optim.create(value(cfg.optim.name), params, optimizer_hyper(cfg.optim))


def learning_rate(cfg: DictConfig, epoch: int, max_epochs: int) -> float:
    """The schedule, per epoch (0-based): ``none``; ``step``: ``lr * gamma^(epoch // step_size)``;
    ``cosine``: ``min_lr + (lr - min_lr) (1 + cos(pi epoch / max_epochs)) / 2``."""
    kind = value(cfg.schedule)
    if kind == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_size)
    if kind == "cosine":
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * epoch / max_epochs)) / 2
    return float(cfg.lr)


def task_overrides() -> list[str]:
    """The command line's overrides of this run or sweep job (Hydra's task overrides), or
    none outside Hydra (``train(cfg)`` called from Python)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _overridden(cfg: DictConfig, overrides: list[str]) -> dict:
    """``key: value`` for each config value the overrides set (``optim.betas=[0.8,0.99]``,
    ``+model.layers.1.p=0.3``), as the run's config has it; groups (``model=mlp``) and
    Hydra's own keys are left out (the group's choice is a column already)."""
    found = {}
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~")
        if "." not in key or key.startswith("hydra.") or "=" not in text:
            continue
        v = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.is_config(v):
            v = str(OmegaConf.to_container(v, resolve=True))
        found[key] = v.value if hasattr(v, "value") and not isinstance(v, (int, float)) else v
    return found


def hyperparameters(
    cfg: DictConfig, model: nn.Module | None = None, overrides: list[str] | None = None
) -> dict:
    """The values that tell runs apart, for the HParams dashboard: a fixed list, every value
    the command line's overrides set (so that a sweep over any key gets its column), and the
    padding the conv layers use when the model is given."""
    o = cfg.optim
    used = {"padding used": padding_summary(model)} if model is not None else {}
    fixed = {
        "model": cfg.model.name,
        "conv.padding": value(cfg.conv.padding),
        **used,
        "backend": value(cfg.backend.name),
        "data": value(cfg.data.name),
        "data.image_size": str(OmegaConf.to_container(cfg.data, resolve=True)["image_size"]),
        "data.batch_size": cfg.data.batch_size,
        "optim": value(o.name),
        "optim.lr": o.lr,
        "optim.momentum": o.get("momentum", 0.0),
        "optim.weight_decay": o.get("weight_decay", 0.0),
        "optim.schedule": value(o.schedule),
        "trainer.max_epochs": cfg.trainer.max_epochs,
        "seed": cfg.seed,
    }
    # the fixed list's own spelling wins, so that a column keeps one type across runs
    return {**_overridden(cfg, task_overrides() if overrides is None else overrides), **fixed}


def describe_run(cfg: DictConfig, model, data: DataSplit, process) -> None:
    """The run's first log lines: the model, its padding and backend, the process settings,
    and the three splits' sizes."""
    log.info(
        "model %s: %d parameters, input %s, padding %s, backend %s, %s",
        cfg.model.name,
        sum(p.data.size for p in model.parameters()),
        (data.channels, *data.image_size),
        value(cfg.conv.padding),
        value(cfg.backend.name),
        process,
    )
    explicit = explicit_keys()  # None outside Hydra: the caller's whole config is explicit
    if padding_unused(cfg) and (explicit is None or "conv.padding" in explicit):
        log.warning(
            "conv.padding=%s is not used: every conv layer of %s sets its own padding (%s)",
            value(cfg.conv.padding),
            cfg.model.name,
            padding_summary(model),
        )
    log.info(
        "data %s: %d train, %d validation, %d test images%s",
        data.name,
        len(data.y_train),
        len(data.y_val),
        len(data.y_test),
        " (training images augmented: random crop, horizontal flip)" if cfg.data.augment else "",
    )
