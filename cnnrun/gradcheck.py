"""Gradient check: analytic gradients against central finite differences in float64.

``numeric = (L(w + eps) - L(w - eps)) / (2 eps)`` for each checked element. The error of a
tensor is relative to the scale of its layer's gradients::

    error = max |analytic - numeric| / max(|analytic|, |numeric|)
                 (over the tensor)          (over every tensor of the layer)

so that a tensor whose true gradient is zero (a conv bias before batch norm) is judged against
the layer's scale, not against its own finite-difference noise. Each layer reports the largest
error of its tensors; ``"input"`` is the gradient with respect to the batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .nn import CrossEntropyLoss, Module, Sequential


@dataclass
class GradcheckResult:
    errors: dict[str, float] = field(default_factory=dict)       # "<layer>.<param>" -> error
    layers: dict[str, float] = field(default_factory=dict)       # layer -> largest error
    checked: dict[str, int] = field(default_factory=dict)        # "<layer>.<param>" -> count

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    def passed(self, tol: float = 1e-6) -> bool:
        return self.max_error < tol


def relative_error(analytic: np.ndarray, numeric: np.ndarray, scale: float | None = None) -> float:
    """``max |analytic - numeric| / scale``; ``scale`` defaults to the largest entry of either."""
    if scale is None:
        scale = max(float(np.max(np.abs(analytic), initial=0)),
                    float(np.max(np.abs(numeric), initial=0)))
    diff = float(np.max(np.abs(analytic - numeric), initial=0))
    return 0.0 if diff == 0 else diff / max(scale, np.finfo(np.float64).tiny)


def _rng_layers(model: Module) -> list[Module]:
    layers = list(model) if isinstance(model, Sequential) else [model]
    return [layer for layer in layers if hasattr(layer, "rng")]


def gradcheck(model: Module, x: np.ndarray, targets, loss=None, *, eps: float = 1e-5,
              max_checks: int | None = None, rng: np.random.Generator | None = None,
              ) -> GradcheckResult:
    """Check every parameter of ``model`` (a float64 copy; the model is not touched) and the
    input. ``max_checks`` samples that many elements per tensor (all when None or larger)."""
    model = copy.deepcopy(model).to(np.float64)
    x = np.array(x, dtype=np.float64)
    loss = CrossEntropyLoss() if loss is None else loss
    rng = np.random.default_rng(0) if rng is None else rng
    # dropout masks must be the same in every evaluation: rewind their generators each time
    rng_states = [(layer, copy.deepcopy(layer.rng.bit_generator.state))
                  for layer in _rng_layers(model)]

    def evaluate(inp: np.ndarray) -> float:
        for layer, state in rng_states:
            layer.rng.bit_generator.state = copy.deepcopy(state)
        return loss.forward(model.forward(inp), targets)

    model.zero_grad()
    evaluate(x)
    dx = model.backward(loss.backward())
    tensors = [(p.name or "param", p.data, p.grad.copy()) for p in model.parameters()]
    tensors.append(("input", x, dx))

    result = GradcheckResult()
    pairs = {}
    for name, array, analytic in tensors:
        flat, grad = array.reshape(-1), analytic.reshape(-1)
        count = flat.size if max_checks is None else min(max_checks, flat.size)
        picks = np.arange(flat.size) if count == flat.size else rng.choice(flat.size, count,
                                                                          replace=False)
        numeric = np.empty(count)
        for k, i in enumerate(picks):
            old = flat[i]
            flat[i] = old + eps
            up = evaluate(x)
            flat[i] = old - eps
            down = evaluate(x)
            flat[i] = old
            numeric[k] = (up - down) / (2 * eps)
        pairs[name] = (grad[picks], numeric)
        result.checked[name] = count
    layer_of = {name: name.rsplit(".", 1)[0] if "." in name else name for name in pairs}
    scales: dict[str, float] = {}
    for name, (a, n) in pairs.items():
        top = max(float(np.max(np.abs(a), initial=0)), float(np.max(np.abs(n), initial=0)))
        scales[layer_of[name]] = max(scales.get(layer_of[name], 0.0), top)
    for name, (a, n) in pairs.items():
        layer = layer_of[name]
        result.errors[name] = relative_error(a, n, scales[layer])
        result.layers[layer] = max(result.layers.get(layer, 0.0), result.errors[name])
    return result
