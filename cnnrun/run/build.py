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


def hyperparameters(cfg: DictConfig, model: nn.Module | None = None) -> dict:
    """The values that tell runs apart, for the HParams dashboard (with the padding the conv
    layers use when the model is given)."""
    o = cfg.optim
    used = {"padding used": padding_summary(model)} if model is not None else {}
    return {
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
    if padding_unused(cfg):
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
