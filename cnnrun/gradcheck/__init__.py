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

from ..nn import CrossEntropyLoss, Module

# Where the estimates with eps and eps / 2 differ by more than this (relative), a kink lies
# within eps. On a smooth stretch they differ by O(eps^2) (about 1e-10 relative); one ReLU of a
# deep network crossing its kink under one of the two steps leaves them 1e-5 to 1e-3 apart, and a
# looser bound (1e-3) let such a difference be judged against the 1e-6 tolerance as an error.
KINK_AGREEMENT = 1e-7


@dataclass
class GradcheckResult:
    errors: dict[str, float] = field(default_factory=dict)  # "<layer>.<param>" -> error
    layers: dict[str, float] = field(default_factory=dict)  # layer -> largest error
    checked: dict[str, int] = field(default_factory=dict)  # "<layer>.<param>" -> count
    skipped: dict[str, int] = field(default_factory=dict)  # elements at a kink (skip_kinks)

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    def passed(self, tol: float = 1e-6) -> bool:
        return self.max_error < tol


def relative_error(analytic: np.ndarray, numeric: np.ndarray, scale: float | None = None) -> float:
    """``max |analytic - numeric| / scale``; ``scale`` defaults to the largest entry of either."""
    if scale is None:
        scale = max(
            float(np.max(np.abs(analytic), initial=0)), float(np.max(np.abs(numeric), initial=0))
        )
    diff = float(np.max(np.abs(analytic - numeric), initial=0))
    return 0.0 if diff == 0 else diff / max(scale, np.finfo(np.float64).tiny)


def central_difference(evaluate, x, flat: np.ndarray, i: int, h: float) -> float:
    """``(L(w_i + h) - L(w_i - h)) / 2h`` for element ``i`` of ``flat`` (a view of a parameter
    or of the input ``x``), which is left as it was."""
    old = flat[i]
    flat[i] = old + h
    up = evaluate(x)
    flat[i] = old - h
    down = evaluate(x)
    flat[i] = old
    return (up - down) / (2 * h)


def _rng_layers(model: Module) -> list[Module]:
    """The layers that draw random numbers (dropout), those inside containers too."""
    return [layer for _, layer in model.named_modules() if hasattr(layer, "rng")]


def gradcheck(
    model: Module,
    x: np.ndarray,
    targets,
    loss=None,
    *,
    eps: float = 1e-5,
    max_checks: int | None = None,
    rng: np.random.Generator | None = None,
    skip_kinks: bool = False,
) -> GradcheckResult:
    """Check every parameter of ``model`` (a float64 copy; the model is not touched) and the
    input. ``max_checks`` samples that many elements per tensor (all when None or larger).

    ``skip_kinks``: where a perturbation of ``eps`` crosses a kink (a ReLU at 0, a max-pool
    switching its winner), a finite difference is no derivative. The element is then also
    differenced with ``eps / 2``; if the two estimates disagree by more than
    :data:`KINK_AGREEMENT` relative (plus 1e-9 for float64 rounding), it is left out and counted
    in ``skipped`` instead of judged."""
    model = copy.deepcopy(model).to(np.float64)
    x = np.array(x, dtype=np.float64)
    loss = CrossEntropyLoss() if loss is None else loss
    rng = np.random.default_rng(0) if rng is None else rng
    evaluate = _repeatable_loss(model, loss, targets)
    model.zero_grad()
    evaluate(x)
    dx = model.backward(loss.backward())
    tensors = [(p.name or "param", p.data, p.grad.copy()) for p in model.parameters()]
    tensors.append(("input", x, dx))

    result = GradcheckResult()
    pairs = {}
    options = {"eps": eps, "max_checks": max_checks, "rng": rng, "skip_kinks": skip_kinks}
    for name, array, analytic in tensors:
        a, n, skipped = _compare(evaluate, x, array, analytic, **options)
        pairs[name] = (a, n)
        result.checked[name], result.skipped[name] = a.size, skipped
    _judge(pairs, result)
    return result


def _repeatable_loss(model: Module, loss, targets):
    """``evaluate(x) -> loss``, with the same dropout masks at every call: each call rewinds the
    layers' generators to where they stand now."""
    rng_states = [
        (layer, copy.deepcopy(layer.rng.bit_generator.state)) for layer in _rng_layers(model)
    ]

    def evaluate(inp: np.ndarray) -> float:
        for layer, state in rng_states:
            layer.rng.bit_generator.state = copy.deepcopy(state)
        return loss.forward(model.forward(inp), targets)

    return evaluate


def _compare(evaluate, x, array, analytic, *, eps, max_checks, rng, skip_kinks):
    """The analytic and numeric gradients of (a sample of) one tensor's elements, those at a
    kink left out (see :func:`gradcheck`); returns (analytic, numeric, number left out)."""
    flat, grad = array.reshape(-1), analytic.reshape(-1)  # views: perturbing flat moves array
    count = flat.size if max_checks is None else min(max_checks, flat.size)
    if count == flat.size:
        picks = np.arange(flat.size)
    else:
        picks = rng.choice(flat.size, count, replace=False)
    numeric = np.array([central_difference(evaluate, x, flat, i, eps) for i in picks])
    keep = np.ones(count, bool)
    if skip_kinks:
        for k, i in enumerate(picks):
            half = central_difference(evaluate, x, flat, i, eps / 2)
            scale = max(abs(half), abs(numeric[k]))
            keep[k] = abs(half - numeric[k]) <= KINK_AGREEMENT * scale + 1e-9
    return grad[picks][keep], numeric[keep], int(count - keep.sum())


def _judge(pairs: dict[str, tuple[np.ndarray, np.ndarray]], result: GradcheckResult) -> None:
    """Each tensor's error relative to its layer's scale; each layer's largest error."""
    layer_of = {name: name.rsplit(".", 1)[0] if "." in name else name for name in pairs}
    scales: dict[str, float] = {}
    for name, (a, n) in pairs.items():
        top = max(float(np.max(np.abs(a), initial=0)), float(np.max(np.abs(n), initial=0)))
        scales[layer_of[name]] = max(scales.get(layer_of[name], 0.0), top)
    for name, (a, n) in pairs.items():
        layer = layer_of[name]
        result.errors[name] = relative_error(a, n, scales[layer])
        result.layers[layer] = max(result.layers.get(layer, 0.0), result.errors[name])
