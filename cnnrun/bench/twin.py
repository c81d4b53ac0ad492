"""The PyTorch twin of a cnnrun model: the same tree of modules under the same names, so that
``state_dict`` keys (``<layer name>.weight``, ``block1_1.branch.conv1.weight``) match and the
weights and buffers are copied over as they are. Each module's training mode is copied too.

The rule, which the bench's step cases and the parity tests (``tests/torch_twins.py``) share:

* a :class:`~cnnrun.nn.Sequential` is a ``torch.nn.Sequential`` of its layers' twins, under
  the layers' names;
* a :class:`~cnnrun.nn.Residual` is a ``TorchResidual`` (:func:`residual_class`), a module
  whose attributes ``branch`` and ``shortcut`` are the twins of its two paths
  (``torch.nn.Identity`` for the identity shortcut) and whose forward is
  ``branch(x) + shortcut(x)``;
* a :class:`~cnnrun.nn.GlobalAvgPool2d` is ``AdaptiveAvgPool2d(1)`` then ``Flatten()``;
* every other layer is its PyTorch counterpart (:func:`torch_layer`).

Keys, shapes and order then match, and either state dict loads into the other model as it is.
PyTorch is imported only here, only inside the functions, and only when a twin is made: the
package never depends on it.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from .. import nn

if TYPE_CHECKING:
    import torch


def conv_padding(layer: nn.Conv2d) -> int | str | tuple[int, int]:
    """``layer``'s padding as ``torch.nn.Conv2d`` takes it; a ``ValueError`` where PyTorch has
    none that pads the same pixels ('same' with a stride, uneven 4-tuples)."""
    padding = layer.padding
    if padding == "valid":
        return 0
    if padding == "same" and layer.stride == (1, 1):
        return "same"  # the odd pixel of an even kernel at the bottom/right, as cnnrun pads
    if padding == "full":
        return tuple(d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size))
    if isinstance(padding, tuple) and padding[0] == padding[1] and padding[2] == padding[3]:
        return (padding[0], padding[2])
    raise ValueError(f"{layer.label}: padding {padding!r} has no torch.nn.Conv2d twin")


def torch_layer(layer: nn.Module) -> torch.nn.Module:
    """The PyTorch module computing what ``layer`` computes, with PyTorch's initial weights."""
    import torch

    t = torch.nn
    if isinstance(layer, nn.Conv2d):
        return t.Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=conv_padding(layer),
            dilation=layer.dilation,
            bias=layer.bias is not None,
        )
    if isinstance(layer, nn.Linear):
        return t.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        pool = t.MaxPool2d if isinstance(layer, nn.MaxPool2d) else t.AvgPool2d
        return pool(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, nn.BatchNorm2d):
        return t.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    if isinstance(layer, nn.Dropout):
        return t.Dropout(layer.p)
    if isinstance(layer, nn.LeakyReLU):
        return t.LeakyReLU(layer.negative_slope)
    plain = {nn.ReLU: t.ReLU, nn.Tanh: t.Tanh, nn.Sigmoid: t.Sigmoid, nn.Flatten: t.Flatten}
    for cls, twin in plain.items():
        if isinstance(layer, cls):
            return twin()
    raise TypeError(f"no PyTorch twin for {type(layer).__name__} {layer.name!r}")


@functools.cache
def residual_class() -> type[torch.nn.Module]:
    """``TorchResidual``, the twin of :class:`cnnrun.nn.Residual`: made on first use, so that
    importing this module does not import PyTorch."""
    import torch

    class TorchResidual(torch.nn.Module):
        """``branch(x) + shortcut(x)``, the shortcut ``Identity`` where none is given."""

        def __init__(self, branch: torch.nn.Module, shortcut: torch.nn.Module | None = None):
            super().__init__()
            self.branch = branch
            self.shortcut = torch.nn.Identity() if shortcut is None else shortcut

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.branch(x) + self.shortcut(x)

    return TorchResidual


def torch_module(module: nn.Module) -> torch.nn.Module:
    """The twin of ``module`` (see the module's notes), with PyTorch's initial weights."""
    import torch

    if isinstance(module, nn.Sequential):
        return torch.nn.Sequential(OrderedDict((n, torch_module(m)) for n, m in module.layers))
    if isinstance(module, nn.Residual):
        shortcut = None if module.shortcut is None else torch_module(module.shortcut)
        return residual_class()(torch_module(module.branch), shortcut)
    if isinstance(module, nn.GlobalAvgPool2d):
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    return torch_layer(module)


def to_torch(state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A cnnrun ``state_dict`` as tensors (copies), for ``load_state_dict``."""
    import torch

    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}


def torch_twin(model: nn.Module) -> torch.nn.Module:
    """``model`` (a network or a single layer) in PyTorch, in the dtype of its parameters, its
    weights and buffers loaded from ``model.state_dict()`` (strictly: the keys match by the
    rule) and every module's training mode copied (a dropout layer in eval inside a network in
    training stays so)."""
    import torch

    twin = torch_module(model)
    dtype = next((p.data.dtype for p in model.parameters()), np.dtype(np.float32))
    twin.to(torch.from_numpy(np.zeros(0, dtype)).dtype)
    twin.load_state_dict(to_torch(model.state_dict()))
    # a container before what it holds: each module's own mode wins over its container's
    for name, module in model.named_modules():
        twin.get_submodule(name).train(module.training)
    return twin
