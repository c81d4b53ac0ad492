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
    layers = list(model) if isinstance(model, Sequential) else [model]
    return [layer for layer in layers if hasattr(layer, "rng")]


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
    differenced with ``eps / 2``; if the two estimates disagree by more than 1e-3 relative, it
    is left out and counted in ``skipped`` instead of judged."""
    model = copy.deepcopy(model).to(np.float64)
    x = np.array(x, dtype=np.float64)
    loss = CrossEntropyLoss() if loss is None else loss
    rng = np.random.default_rng(0) if rng is None else rng
    # dropout masks must be the same in every evaluation: rewind their generators each time
    rng_states = [
        (layer, copy.deepcopy(layer.rng.bit_generator.state)) for layer in _rng_layers(model)
    ]

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
        picks = (
            np.arange(flat.size)
            if count == flat.size
            else rng.choice(flat.size, count, replace=False)
        )

        def difference(i, h, flat=flat):
            return central_difference(evaluate, x, flat, i, h)

        numeric = np.array([difference(i, eps) for i in picks])
        keep = np.ones(count, bool)
        if skip_kinks:
            for k, i in enumerate(picks):
                half = difference(i, eps / 2)
                keep[k] = abs(half - numeric[k]) <= 1e-3 * max(abs(half), abs(numeric[k])) + 1e-9
        pairs[name] = (grad[picks][keep], numeric[keep])
        result.checked[name] = int(keep.sum())
        result.skipped[name] = int(count - keep.sum())
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


# the command's defaults: a batch of 2, 24 sampled elements of every tensor (0 = all of them)
CLI_OPTIONS = {"batch": 2, "max_checks": 24}
CLI_TOL = 1e-6


def main(argv: list[str] | None = None) -> None:
    """``python -m cnnrun.gradcheck [--batch N] [--max-checks N] [overrides]``: every layer of
    a config's model against finite differences in float64; exit status 1 if any error reaches
    the tolerance or a tensor could not be checked at all (every sampled element at a kink)."""
    import sys

    from .cli import compose_from_argv, run_cli
    from .config import validate
    from .shapes import example_batch, model_for
    from .trace import padding_summary

    def entry():
        cfg, opts = compose_from_argv(
            sys.argv[1:] if argv is None else argv, "cnnrun.gradcheck", CLI_OPTIONS
        )
        validate(cfg)
        rng = np.random.default_rng(cfg.seed)
        model = model_for(cfg, rng)
        x, y = example_batch(cfg, rng, batch=max(opts["batch"], 1), dtype=np.float64)
        max_checks = opts["max_checks"] or None
        result = gradcheck(model, x, y, max_checks=max_checks, rng=rng, skip_kinks=True)
        print(
            f"# {cfg.model.name}, padding {padding_summary(model)}, batch {tuple(x.shape)}, "
            f"float64, eps 1e-5, {max_checks or 'all'} elements per tensor"
        )
        print(f"{'layer':<12} {'max rel. error':>15} {'checked':>8} {'at kinks':>9}")
        unchecked = [n for n, c in result.checked.items() if c == 0]
        for layer, err in result.layers.items():
            names = [n for n in result.checked if n == layer or n.startswith(layer + ".")]
            checked = sum(result.checked[n] for n in names)
            skipped = sum(result.skipped[n] for n in names)
            flag = "" if err < CLI_TOL else "  FAIL"
            flag += (
                "  NOT CHECKED: " + ", ".join(set(names) & set(unchecked))
                if any(n in unchecked for n in names)
                else ""
            )
            print(f"{layer:<12} {err:>15.3e} {checked:>8} {skipped:>9}{flag}")
        ok = result.passed(CLI_TOL) and not unchecked
        print(
            f"{'ok' if ok else 'FAILED'}: largest relative error {result.max_error:.3e} "
            f"(tolerance {CLI_TOL:g})"
            + (f"; not checked: {', '.join(unchecked)}" if unchecked else "")
        )
        if not ok:
            sys.exit(1)

    run_cli(entry)


if __name__ == "__main__":
    main()
