"""What the benchmark times: its networks, built from ``conf/model`` as a run builds them, and
single conv layers; every case as a callable, on a cnnrun backend or in PyTorch.

A step case trains the network of :data:`STEP_NET` (``model=lenet data=mnist``, 32x32 images,
'valid' convolutions) one batch at a time; the PyTorch case trains its twin, the same layers
with the same weights (:mod:`cnnrun.bench.twin`). Case names: ``step/<batch>``,
``forward/<layer>`` and ``forward_backward/<layer>``.
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

STEP_BATCHES = (64, 256)
LAYER_BATCH = 64
# name: (in channels, out channels, kernel, image size, padding, input is data)
LAYERS = {
    "lenet_conv1": (1, 6, 5, 32, "valid", True),
    "lenet_conv2": (6, 16, 5, 14, "valid", False),
    "same3x3_16to32": (16, 32, 3, 32, "same", False),
    "same3x3_32to64": (32, 64, 3, 16, "same", False),
}
LR, MOMENTUM = 0.01, 0.9
KINDS = ("forward", "forward_backward")

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


def case_names() -> list[str]:
    """Every case, in the order the parent asks for them."""
    steps = [f"step/{batch}" for batch in STEP_BATCHES]
    return steps + [f"{kind}/{name}" for name in LAYERS for kind in KINDS]


def conv_flops(name: str, batch: int = LAYER_BATCH) -> tuple[float, float]:
    """(forward, forward+backward) floating-point operations of a conv layer, bias left out:
    ``2 N F Ho Wo C kh kw`` per product; the backward has dW and, unless the input is data, dX."""
    c, f, k, size, padding, first = LAYERS[name]
    out = size if padding == "same" else size - k + 1
    forward = 2.0 * batch * f * out * out * c * k * k
    return forward, forward * (2 if first else 3)


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


def _data(shape: Sequence[int], classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(np.float32), rng.integers(0, classes, shape[0]))


def step_setup(batch: int) -> tuple[nn.Sequential, np.ndarray, np.ndarray]:
    """A fresh :data:`STEP_NET` (weights from seed 0) and a batch of images and labels."""
    model, shape, classes = build_net(STEP_NET, np.random.default_rng(0))
    x, y = _data((batch, *shape), classes=classes)
    return model, x, y


def conv_setup(name: str) -> tuple[nn.Conv2d, np.ndarray, np.ndarray, bool]:
    """A conv case's layer (weights from seed 1), its x and dY (NCHW, C order), and whether
    its input is data (then its backward is dW and db only)."""
    c, f, k, size, padding, first = LAYERS[name]
    layer = nn.Conv2d(c, f, k, padding=padding, rng=np.random.default_rng(1))
    x, _ = _data((LAYER_BATCH, c, size, size))
    dy, _ = _data(layer.output_shape(x.shape), seed=2)
    return layer, x, dy, first


# -- cnnrun --------------------------------------------------------------------------------------


def cnnrun_step(backend: str, batch: int) -> Case:
    """One training step of :data:`STEP_NET`: forward, cross-entropy, backward without the
    input's gradient, an SGD step with momentum."""
    model, x, y = step_setup(batch)
    model.set_backend(backend)
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        model.zero_grad()
        loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()

    return step


def cnnrun_conv(backend: str, name: str) -> dict[str, Case]:
    """``forward/<name>`` and ``forward_backward/<name>`` of a conv case on ``backend``."""
    layer, x, dy, first = conv_setup(name)
    layer.set_backend(backend)
    # laid out as inside a network: dY always, and x unless it is the data, come from the
    # layers around it, in the backend's own layout (batch-last on numpy)
    dy = layer.kernels.native(dy)
    if not first:
        x = layer.kernels.native(x)

    def forward_backward() -> None:
        layer.forward(x)
        if first:
            layer.backward_params(dy)
        else:
            layer.backward(dy)

    return {
        f"forward/{name}": lambda: layer.forward(x),
        f"forward_backward/{name}": forward_backward,
    }


def cnnrun_cases(backend: str) -> dict[str, Case]:
    """Callables for every case, on a cnnrun backend."""
    cases = {f"step/{batch}": cnnrun_step(backend, batch) for batch in STEP_BATCHES}
    for name in LAYERS:
        cases.update(cnnrun_conv(backend, name))
    return cases


# -- PyTorch -------------------------------------------------------------------------------------


def torch_step(batch: int) -> Case:
    """The step case in PyTorch: the twin of the same network, the same batch, loss and
    optimiser."""
    import torch

    from .twin import torch_twin

    model, x, y = step_setup(batch)
    twin = torch_twin(model)
    opt = torch.optim.SGD(twin.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> None:
        opt.zero_grad()
        loss_fn(twin(xt), yt).backward()
        opt.step()

    return step


def torch_conv(name: str) -> dict[str, Case]:
    """A conv case in PyTorch: the twin of the same layer, the same x and dY; x wants its
    gradient unless it is the data."""
    import torch

    from .twin import torch_twin

    layer, x, dy, first = conv_setup(name)
    twin = torch_twin(layer)
    xt = torch.from_numpy(x).requires_grad_(not first)
    dyt = torch.from_numpy(dy)

    def forward() -> None:
        with torch.no_grad():
            twin(xt)

    def forward_backward() -> None:
        xt.grad = None
        twin(xt).backward(dyt)

    return {f"forward/{name}": forward, f"forward_backward/{name}": forward_backward}


def torch_cases() -> dict[str, Case]:
    """The same cases in PyTorch."""
    cases = {f"step/{batch}": torch_step(batch) for batch in STEP_BATCHES}
    for name in LAYERS:
        cases.update(torch_conv(name))
    return cases
