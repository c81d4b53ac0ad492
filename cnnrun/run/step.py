"""One training step, as a pure function of (model, loss, optimiser, batch), and evaluation.

The step does forward, loss, backward and the update, and returns what happened. Skipping a
batch, timing, logging and the progress bar happen around it (:mod:`cnnrun.run.train`).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import iterate_batches
from .checkpoint import load_checkpoint
from .probe import ACTIVATIONS, inactive_fraction, named_layers, recording


@dataclass
class StepResult:
    """What one step did. ``problem`` is None when every value was finite; otherwise it says
    what was not (``"loss (nan)"``, ``"batch-norm statistics"``, ``"gradient"``,
    ``"weights"``) and ``where`` names the first layer, buffer or parameter it appeared in.
    ``updated``: the optimiser stepped. ``update_ratios`` (per parameter,
    ``||w_after - w_before|| / ||w_before||``) and ``inactive`` (per activation layer, see
    :func:`cnnrun.run.probe.inactive_fraction`) are filled when the step was asked to measure
    them."""

    loss: float
    acc: float = math.nan
    grad_norms: dict[str, float] = field(default_factory=dict)
    global_norm: float = math.nan
    problem: str | None = None
    where: str = ""
    updated: bool = False
    update_ratios: dict[str, float] = field(default_factory=dict)
    inactive: dict[str, float] = field(default_factory=dict)


def train_step(
    model, loss_fn, optimizer, x: np.ndarray, y: np.ndarray, measure: bool = False
) -> StepResult:
    """Forward, loss, backward, update. Stops before the update at a non-finite loss or
    gradient, so the weights stay those of the last good step. ``measure``: also the update
    ratios and the inactive units (a copy of the weights and a pass over the activations)."""
    model.zero_grad()
    outputs: list[tuple[str, np.ndarray]] = []
    with recording(model, ACTIVATIONS) if measure else nullcontext({}) as acts:
        logits = model.forward(x, outputs=outputs)  # (N, classes)
    loss = loss_fn.forward(logits, y)
    if not math.isfinite(loss):
        return StepResult(loss, problem=f"loss ({loss})", where=_first_bad_output(outputs))
    buffer = next((n for n, b in model.named_buffers() if not np.isfinite(b).all()), None)
    if buffer is not None:  # batch-norm statistics: updated by the forward pass
        what = "batch-norm statistics" if "running_" in buffer else "buffer"
        return StepResult(loss, problem=what, where=buffer)
    model.backward(loss_fn.backward(), input_grad=False)  # no dX for the data
    norms = grad_norms(model)
    global_norm = math.sqrt(sum(v * v for v in norms.values()))
    if not math.isfinite(global_norm):
        return StepResult(loss, problem="gradient", where=_first_bad_grad(model))
    before = [p.data.copy() for p in model.parameters()] if measure else []
    optimizer.step()
    acc = float((logits.argmax(axis=1) == y).mean())
    result = StepResult(loss, acc, norms, global_norm, updated=True)
    if measure:
        result.update_ratios = update_ratios(model, before)
        layers = dict(named_layers(model))
        result.inactive = {n: inactive_fraction(layers[n], a) for n, a in acts.items()}
    bad = next((p.name for p in model.parameters() if not np.all(np.isfinite(p.data))), None)
    if bad is not None:  # the update itself overflowed
        result.problem, result.where = "weights", bad
    return result


def grad_norms(model) -> dict[str, float]:
    """Each parameter's gradient norm. In float64: a float32 sum of squares overflows long
    before the gradients do, so a non-finite norm means a NaN or infinite gradient entry."""
    return {
        p.name: float(np.linalg.norm(p.grad.ravel().astype(np.float64))) for p in model.parameters()
    }


def update_ratios(model, before: list[np.ndarray]) -> dict[str, float]:
    """``||w_after - w_before|| / ||w_before||`` per parameter, in float64; a parameter that
    was all zeros (a batch-norm shift at the start) has no ratio and is left out."""
    ratios = {}
    for p, old in zip(model.parameters(), before):
        old64 = old.ravel().astype(np.float64)
        size = float(np.linalg.norm(old64))
        if size > 0:
            ratios[p.name] = float(np.linalg.norm(p.data.ravel() - old64)) / size
    return ratios


def _first_bad_output(outputs: list[tuple[str, np.ndarray]]) -> str:
    """The first layer whose forward output holds a NaN or infinity."""
    name = next((n for n, out in outputs if not np.isfinite(out).all()), None)
    return f"layer {name}" if name is not None else "the loss (every layer's output is finite)"


def _first_bad_grad(model) -> str:
    """The first parameter, in backward order, whose gradient holds a NaN or infinity."""
    bad = (p.name for p in reversed(model.parameters()) if not np.isfinite(p.grad).all())
    name = next(bad, None)
    if name is None:
        return "the gradient norm (every entry is finite; their norm overflows)"
    return f"the gradient of {name}"


# evaluation runs in batches of up to this many input elements (1 MiB of float32: 256 digits
# of 32x32, 85 CIFAR images), never fewer images than a training batch, at most EVAL_IMAGES
EVAL_ELEMENTS = 1 << 18
EVAL_IMAGES = 256


def eval_batch_size(batch_size: int, sample_shape: tuple[int, ...]) -> int:
    """The batch size evaluation runs in. A forward pass alone in eval mode gives each image
    the same outputs, to float rounding, whatever batch it is in (a matrix product's bits may
    depend on its row count: logits about 4e-8 apart on LeNet), and larger batches cost fewer
    kernel calls: the default run's 288 validation digits took 4.1 ms in batches of 32 on the
    numba backend, 2.5 ms in batches of 256, twelve times a run. Bounded by the input's size,
    so that layers that keep their input for a backward pass hold little more than in
    training."""
    per_image = max(1, math.prod(sample_shape))
    return max(batch_size, min(EVAL_IMAGES, EVAL_ELEMENTS // per_image))


def evaluate(
    model, loss_fn, x, y, batch_size: int, limit: int | None, confusion: np.ndarray | None = None
) -> tuple[float, float]:
    """Mean loss and accuracy over a split (its first ``limit`` training batches' worth of
    images, if ``limit`` is given), in eval mode, in batches of :func:`eval_batch_size`.
    ``confusion``, a (classes, classes) integer array, receives the counts of (true class,
    predicted class)."""
    if limit is not None:
        x, y = x[: limit * batch_size], y[: limit * batch_size]
    model.eval()
    total = correct = 0
    loss_sum = 0.0
    for xb, yb in iterate_batches(x, y, eval_batch_size(batch_size, x.shape[1:]), shuffle=False):
        logits = model.forward(xb)
        loss_sum += loss_fn.forward(logits, yb) * len(yb)
        predicted = logits.argmax(axis=1)
        correct += int((predicted == yb).sum())
        total += len(yb)
        if confusion is not None:
            np.add.at(confusion, (yb, predicted), 1)
    model.train()
    return loss_sum / max(total, 1), correct / max(total, 1)


def test_metrics(model, loss_fn, data, batch_size: int, best: Path) -> dict[str, float]:
    """The test split, once at the end: with the last weights, then with ``best``'s (the
    model keeps those). Nothing is chosen on it."""
    last = evaluate(model, loss_fn, data.x_test, data.y_test, batch_size, None)
    loss = acc = math.nan  # no best.npz (resumed from a folder without it): not the last's
    if best.is_file():
        model.load_state_dict(load_checkpoint(best)["model"])
        loss, acc = evaluate(model, loss_fn, data.x_test, data.y_test, batch_size, None)
    return {"test/loss": loss, "test/acc": acc, "test/loss_last": last[0], "test/acc_last": last[1]}
