"""The shape trace: one real forward and backward pass, a row per layer.

For every layer: input, output and parameter shapes; for a conv layer also its padding, the
padded input and each backward product with the shapes it read and gave, e.g.::

    dW = corr_valid(x_pad (64,1,36,36), dY (64,6,32,32)) -> (6,1,5,5)
    dX = conv_full(dY (64,6,32,32), W (6,1,5,5)) -> (64,1,36,36), cropped to (64,1,32,32)

Every gradient's shape is checked against its parameter's (and dX's against the input's) as
the trace is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .nn import CrossEntropyLoss, Product, Sequential
from .nn.module import fmt_shape


class TraceError(AssertionError):
    """A gradient whose shape differs from its parameter's: a bug in a layer's backward."""


@dataclass
class TraceRow:
    name: str
    type: str
    input: tuple[int, ...]
    output: tuple[int, ...]
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    padding: tuple[int, int, int, int] | None = None  # (top, bottom, left, right)
    padding_mode: str | None = None
    padded_input: tuple[int, ...] | None = None
    products: list[Product] = field(default_factory=list)


def _shape(a) -> tuple[int, ...]:
    return tuple(int(s) for s in a.shape)


def shape_trace(model: Sequential, x: np.ndarray, targets: np.ndarray, loss=None) -> list[TraceRow]:
    """Run one forward and backward pass of ``model`` on ``(x, targets)``; a :class:`TraceRow`
    per layer. The model's parameters, gradients and running statistics are left as they were."""
    loss = CrossEntropyLoss() if loss is None else loss
    saved_state = model.state_dict()
    saved_grads = [p.grad.copy() for p in model.parameters()]
    rows, inputs = [], []
    try:
        for layer in model:
            layer.tracing, layer.products = True, []
        for name, layer in model.layers:
            inputs.append(x)
            y = layer.forward(x)
            rows.append(_forward_row(name, layer, x, y))
            x = y
        loss.forward(x, targets)
        dy = loss.backward()
        for (name, layer), row, x_in in zip(
            reversed(model.layers), reversed(rows), reversed(inputs)
        ):
            dy = layer.backward(dy)
            if _shape(dy) != _shape(x_in):
                raise TraceError(f"{name}: dX has shape {_shape(dy)}, its input {_shape(x_in)}")
            row.products = list(layer.products)
            _check_products(name, layer, row.products)
    finally:
        for layer in model:
            layer.tracing, layer.products = False, []
        model.load_state_dict(saved_state)
        for p, g in zip(model.parameters(), saved_grads):
            p.grad[...] = g
    return rows


def _forward_row(name: str, layer, x: np.ndarray, y: np.ndarray) -> TraceRow:
    """A layer's row from its forward pass: shapes, and a conv's padding and padded input."""
    params = {pn: _shape(p.data) for pn, p in layer.named_parameters()}
    row = TraceRow(name, type(layer).__name__, _shape(x), _shape(y), params)
    if hasattr(layer, "pads"):
        row.padding = tuple(int(p) for p in layer.pads(x.shape[2:]))
        row.padding_mode = layer.padding if isinstance(layer.padding, str) else None
        top, bottom, left, right = row.padding
        n, c, h, w = row.input
        row.padded_input = (n, c, h + top + bottom, w + left + right)  # (N, C, Hp, Wp)
    return row


def _check_products(name: str, layer, products: list[Product]) -> None:
    params = dict(layer.named_parameters())
    for prod in products:
        target = {"dW": "weight", "db": "bias"}.get(prod.grad)
        if target is not None and tuple(prod.shape) != _shape(params[target].data):
            raise TraceError(
                f"{name}: {prod.grad} has shape {tuple(prod.shape)}, "
                f"{target} {_shape(params[target].data)}"
            )


def padding_summary(model: Sequential) -> str:
    """The padding the conv layers actually use: ``same``, or ``mixed (conv1 same, ...)``."""
    modes = [
        (name, layer.padding) for name, layer in model.layers if type(layer).__name__ == "Conv2d"
    ]
    kinds = {str(m) for _, m in modes}
    if not modes:
        return "none (no conv layer)"
    if len(kinds) == 1:
        return kinds.pop()
    return "mixed (" + ", ".join(f"{n} {m}" for n, m in modes) + ")"


def _padding_text(row: TraceRow) -> str:
    if row.padding is None:
        return ""
    mode = f"{row.padding_mode} " if row.padding_mode else ""
    return f"{mode}{row.padding} -> x_pad {fmt_shape(row.padded_input)}"


def format_markdown(rows: list[TraceRow]) -> str:
    """The trace as a Markdown table (``shape_trace.md``, TensorBoard's ``shapes/trace``)."""
    lines = [
        "| layer | type | input | output | parameters | padding (t, b, l, r) | backward |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        params = ", ".join(f"{k} {fmt_shape(v)}" for k, v in r.params.items())
        backward = "<br>".join(f"`{p}`" for p in r.products)
        lines.append(
            f"| {r.name} | {r.type} | {fmt_shape(r.input)} | {fmt_shape(r.output)} | "
            f"{params} | {_padding_text(r)} | {backward} |"
        )
    return "\n".join(lines) + "\n"


def format_text(rows: list[TraceRow]) -> str:
    """The trace for a terminal: a header line per layer, then its padding and products."""
    width = max(len(r.name) for r in rows) if rows else 0
    out = []
    for r in rows:
        params = "  ".join(f"{k} {fmt_shape(v)}" for k, v in r.params.items())
        out.append(
            f"{r.name:<{width}}  {r.type:<11} {fmt_shape(r.input)} -> {fmt_shape(r.output)}"
            + (f"   {params}" if params else "")
        )
        pad = " " * (width + 2)
        if r.padding is not None:
            out.append(f"{pad}padding {_padding_text(r)}")
        out.extend(f"{pad}{p}" for p in r.products)
    return "\n".join(out) + "\n"
