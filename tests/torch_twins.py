"""PyTorch twins of cnnrun models with containers, for the parity tests (not a test file).

The rule that maps a cnnrun ``state_dict`` onto PyTorch's: the twin has the same tree of
modules under the same names. A :class:`~cnnrun.nn.Sequential` is a ``torch.nn.Sequential``
of its layers' twins; a :class:`~cnnrun.nn.Residual` is a :class:`TorchResidual`, a module
whose attributes ``branch`` and ``shortcut`` are the twins of its two paths (``nn.Identity``
for the identity shortcut) and whose forward is ``branch(x) + shortcut(x)``; a
``GlobalAvgPool2d`` is ``AdaptiveAvgPool2d(1)`` then ``Flatten()``; every other layer is the
bench's twin of it (:func:`cnnrun.bench.twin.torch_layer`). Keys, shapes and order then match,
and either state dict loads into the other model as it is.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from cnnrun import nn as cn
from cnnrun.bench.twin import torch_layer

torch = pytest.importorskip("torch")


class TorchResidual(torch.nn.Module):
    """``branch(x) + shortcut(x)``, the twin of :class:`cnnrun.nn.Residual`."""

    def __init__(self, branch: torch.nn.Module, shortcut: torch.nn.Module | None = None):
        super().__init__()
        self.branch = branch
        self.shortcut = torch.nn.Identity() if shortcut is None else shortcut

    def forward(self, x):
        return self.branch(x) + self.shortcut(x)


def torch_module(module: cn.Module) -> torch.nn.Module:
    """The twin of ``module``, with PyTorch's initial weights (see the module's notes)."""
    if isinstance(module, cn.Sequential):
        return torch.nn.Sequential(OrderedDict((n, torch_module(m)) for n, m in module.layers))
    if isinstance(module, cn.Residual):
        shortcut = None if module.shortcut is None else torch_module(module.shortcut)
        return TorchResidual(torch_module(module.branch), shortcut)
    if isinstance(module, cn.GlobalAvgPool2d):
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    return torch_layer(module)


def to_torch(state: dict) -> dict:
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}


def torch_twin(model: cn.Module) -> torch.nn.Module:
    """The twin of ``model`` in its parameters' dtype, its weights and buffers loaded from
    ``model.state_dict()`` (strictly: the keys must match), each module's mode copied."""
    twin = torch_module(model)
    dtype = next((p.data.dtype for p in model.parameters()), np.dtype(np.float32))
    twin.to(torch.from_numpy(np.zeros(0, dtype)).dtype)
    twin.load_state_dict(to_torch(model.state_dict()))
    twin.train(model.training)
    return twin
