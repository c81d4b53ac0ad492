"""What the dashboard shows of the inside of a network: the outputs of chosen layers during a
pass, the share of dead or saturated units, and a probe pass over a fixed handful of
validation images (activation maps, the input's gradient, the first conv layer's dW).

Nothing here changes the model: the probe runs in eval mode (running statistics kept, no
dropout draw) and puts every gradient back as it found it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .. import nn

# LeakyReLU is left out: its negative side still passes negative_slope * dy
ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid)
SATURATED = 0.99  # |tanh| above this (tanh' < 0.02), sigmoid within 0.005 of 0 or 1 (< 0.005)


def named_layers(model) -> list[tuple[str, nn.Module]]:
    """Every layer of ``model`` with its dotted name, containers' insides included, in
    network order (the containers themselves left out)."""
    return [(n, m) for n, m in model.named_modules() if n and not isinstance(m, nn.Sequential)]


def layer_label(name: str, layer) -> str:
    """A layer's name for the dashboard: an unnamed layer (named by its index, ``"1"``) gets
    its type after it (``"1_tanh"``)."""
    last = name.rsplit(".", 1)[-1]
    return f"{name}_{type(layer).__name__.lower()}" if last.isdigit() else name


@contextmanager
def recording(model, kinds: tuple[type, ...]) -> Iterator[dict[str, np.ndarray]]:
    """Within the block, the forward output of every layer of one of ``kinds`` lands in the
    yielded dict under its name (the last pass's, if several run)."""
    seen: dict[str, np.ndarray] = {}
    wrapped = []
    for name, layer in named_layers(model):
        if isinstance(layer, kinds):
            plain = layer.forward

            def keep(x, _name=name, _plain=plain):
                y = _plain(x)
                seen[_name] = y
                return y

            layer.forward = keep  # an instance attribute: the class's method is untouched
            wrapped.append(layer)
    try:
        yield seen
    finally:
        for layer in wrapped:
            del layer.forward


def inactive_fraction(layer, y: np.ndarray) -> float:
    """ReLU: the fraction of units (channel and position) that are off for every example of
    the batch, so no gradient reaches their inputs from any of them. Tanh and Sigmoid: the
    fraction of outputs in the flat tails (|tanh| > 0.99, sigmoid within 0.005 of 0 or 1),
    where the derivative is below 0.02 and 0.005."""
    if isinstance(layer, nn.ReLU):
        return float(np.all(y <= 0, axis=0).mean())
    if isinstance(layer, nn.Tanh):
        return float((np.abs(y) > SATURATED).mean())
    return float((np.abs(2 * y - 1) > SATURATED).mean())  # sigmoid


@dataclass
class Probe:
    """One probe pass: each conv layer's output, ``dL/dx`` of the images, the first conv
    layer's weight and its gradient on these images."""

    images: np.ndarray
    conv_maps: dict[str, np.ndarray]
    input_grad: np.ndarray
    first_conv: str | None
    weight: np.ndarray | None
    weight_grad: np.ndarray | None


def probe(model, loss_fn, x: np.ndarray, y: np.ndarray) -> Probe:
    """Forward and backward over ``(x, y)`` in eval mode; the model's gradients and mode are
    restored afterwards."""
    params = model.parameters()
    grads = [p.grad.copy() for p in params]
    was_training = getattr(model, "training", True)
    convs = [(n, m) for n, m in named_layers(model) if isinstance(m, nn.Conv2d)]
    try:
        model.eval()
        model.zero_grad()
        with recording(model, (nn.Conv2d,)) as maps:
            logits = model.forward(x)
        loss_fn.forward(logits, y)
        dx = model.backward(loss_fn.backward())
        first = convs[0] if convs else None
        weight = first[1].weight.data.copy() if first else None
        weight_grad = first[1].weight.grad.copy() if first else None
    finally:
        for p, g in zip(params, grads):
            p.grad[...] = g
        model.train(was_training)
    return Probe(x, dict(maps), dx, first[0] if first else None, weight, weight_grad)
