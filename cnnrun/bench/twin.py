"""The PyTorch twin of a cnnrun model: the same layers from the same specs, in the same order and
under the same names, so that ``state_dict`` keys (``<layer name>.weight``) match and the
weights and buffers are copied over as they are. Each layer's training mode is copied too.

PyTorch is imported only here, and only when a twin is made.
"""

from __future__ import annotations

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


def torch_twin(model: nn.Module) -> torch.nn.Module:
    """``model`` (a :class:`~cnnrun.nn.Sequential` or a single layer) in PyTorch, in the dtype
    of its parameters, with copies of its parameters and buffers and its layers' modes."""
    import torch

    if isinstance(model, nn.Sequential):
        layers = list(model.layers)
        twin = torch.nn.Sequential(OrderedDict((n, torch_layer(layer)) for n, layer in layers))
        modes = [(twin.get_submodule(n), layer.training) for n, layer in layers]
    else:
        twin = torch_layer(model)
        modes = [(twin, model.training)]
    dtype = next((p.data.dtype for p in model.parameters()), np.dtype(np.float32))
    twin.to(torch.from_numpy(np.zeros(0, dtype)).dtype)
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in model.state_dict().items()}
    twin.load_state_dict(state)  # strict: the keys match by design
    for module, training in modes:
        module.train(training)
    return twin
