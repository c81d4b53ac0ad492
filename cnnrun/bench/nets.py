"""The benchmark's networks and their training-step cases: each network is a ``conf/model``
file, built as a run builds it, and trained one batch at a time (forward, cross-entropy,
backward without the input's gradient, an SGD step with momentum), in training mode as in a
run: batch norm on the batch's statistics, dropout on. The PyTorch case trains the twin, the
same modules with the same weights (:mod:`cnnrun.bench.twin`); its dropout masks are its own,
so its numbers differ from cnnrun's while its work is the same.

=========  ===========================================  =======================  =======
network    config                                       input                    batches
=========  ===========================================  =======================  =======
lenet      ``model=lenet data=mnist data.image_size=32  1x32x32, 'valid' convs   64, 256
           conv.padding=valid``
vgg_small  ``model=vgg_small data=cifar10``             3x32x32, 'same' 3x3      64
resnet20   ``model=resnet20 data=cifar10``              3x32x32, residual        64
=========  ===========================================  =======================  =======

No data is read: the networks are built from the config files, and the batches are random.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .. import nn, optim
from ..models import build_model
from ..run.config import config_dir, image_hw, model_spec

LR, MOMENTUM = 0.01, 0.9

Case = Callable[[], object]


@dataclass(frozen=True)
class Net:
    """A network as a run configures it: ``model=<model> data=<data>`` and ``overrides`` (in
    the command line's dotted form) on ``conf/config.yaml``."""

    model: str
    data: str
    overrides: tuple[str, ...] = ()


# LeNet-5 on LeCun's 32x32 digits: the padding is given, not left to conf/config.yaml's default
STEP_NET = Net("lenet", "mnist", ("data.image_size=32", "conv.padding=valid"))
STEP_NETS = {
    "lenet": STEP_NET,
    "vgg_small": Net("vgg_small", "cifar10"),  # its 3x3 convs pad 'same' in the YAML file
    "resnet20": Net("resnet20", "cifar10"),  # its paddings are given in the YAML file
}
# (network, batch) of every step case, in the order they are timed and printed
STEPS = (("lenet", 64), ("lenet", 256), ("vgg_small", 64), ("resnet20", 64))


def step_name(net: str, batch: int) -> str:
    """A step case's name: ``step/<network>/<batch>``."""
    return f"step/{net}/{batch}"


def net_config(net: Net, conf: str | Path | None = None) -> DictConfig:
    """``conv``, ``model`` and ``data`` of a run of ``net``, from the YAML files of ``conf``
    (default: cnnrun's ``conf/``); interpolations such as ``${data.num_classes}`` resolve
    against the data config."""
    folder = config_dir() if conf is None else Path(conf)
    root = OmegaConf.load(folder / "config.yaml")
    cfg = OmegaConf.create(
        {
            "conv": root.conv,
            "model": OmegaConf.load(folder / "model" / f"{net.model}.yaml"),
            "data": OmegaConf.load(folder / "data" / f"{net.data}.yaml"),
        }
    )
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(net.overrides)))


def input_shape(cfg: DictConfig) -> tuple[int, int, int]:
    """(C, H, W) of one image of the config's data."""
    return (int(cfg.data.channels), *image_hw(cfg))


class Built(NamedTuple):
    """A network as :func:`build_net` makes it, with what its data looks like."""

    model: nn.Sequential
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int


def build_net(net: Net, rng: np.random.Generator, conf: str | Path | None = None) -> Built:
    """The model of ``net`` (float32, numpy backend), its weights drawn from ``rng``."""
    cfg = net_config(net, conf)
    shape = input_shape(cfg)
    model = build_model(model_spec(cfg), shape, default_padding=str(cfg.conv.padding), rng=rng)
    return Built(model, shape, int(cfg.data.num_classes))


def random_data(
    shape: Sequence[int], classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal float32 values of ``shape`` and ``shape[0]`` labels below ``classes``."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(np.float32), rng.integers(0, classes, shape[0]))


def step_setup(batch: int, net: str = "lenet") -> tuple[nn.Sequential, np.ndarray, np.ndarray]:
    """A fresh network of :data:`STEP_NETS` (weights from seed 0) and a batch of images and
    labels."""
    model, shape, classes = build_net(STEP_NETS[net], np.random.default_rng(0))
    x, y = random_data((batch, *shape), classes=classes)
    return model, x, y


def cnnrun_step(backend: str, batch: int, net: str = "lenet") -> Case:
    """One training step of a network of :data:`STEP_NETS` on ``backend``: forward,
    cross-entropy, backward without the input's gradient, an SGD step with momentum."""
    model, x, y = step_setup(batch, net)
    model.set_backend(backend)
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        model.zero_grad()
        loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()

    return step


def torch_step(batch: int, net: str = "lenet") -> Case:
    """The step case in PyTorch: the twin of the same network, the same batch, loss and
    optimiser."""
    import torch

    from .twin import torch_twin

    model, x, y = step_setup(batch, net)
    twin = torch_twin(model)
    opt = torch.optim.SGD(twin.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> None:
        opt.zero_grad()
        loss_fn(twin(xt), yt).backward()
        opt.step()

    return step
