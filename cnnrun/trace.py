"""The shape trace: one real forward and backward pass, a row per layer.

For every layer: input, output and parameter shapes; for a conv layer also its padding, the
padded input and each backward product with the shapes it read and gave, e.g.::

    dW = corr_valid(x_pad (64,1,36,36), dY (64,6,32,32)) -> (6,1,5,5)
    dX = conv_full(dY (64,6,32,32), W (6,1,5,5)) -> (64,1,36,36), cropped to (64,1,32,32)

Every gradient's shape is checked against its parameter's (and dX's against the input's) as
the trace is recorded. A residual block has a row of its own, the rows of its layers under it,
and the merge of its backward pass as its product::

    dX = dX_branch (64,16,32,32) + dX_shortcut (64,16,32,32)

:func:`format_markdown` (``shape_trace.md``), :func:`format_text` (a terminal) and
:func:`format_report` (plain text, forward then backward in the order each runs) render it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .nn import CrossEntropyLoss, Module, Product, Residual, Sequential
from .nn.module import fmt_shape


class TraceError(AssertionError):
    """A gradient whose shape differs from its parameter's: a bug in a layer's backward."""


@dataclass
class TraceRow:
    """One layer (or residual block) of the trace. ``name`` is its path in the model
    (``block1_1.branch.conv1``), ``depth`` the number of residual blocks around it, and
    ``order`` when its backward pass ended (0 first: the last layer's)."""

    name: str
    type: str
    input: tuple[int, ...]
    output: tuple[int, ...]
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    padding: tuple[int, int, int, int] | None = None  # (top, bottom, left, right)
    padding_mode: str | None = None
    padded_input: tuple[int, ...] | None = None
    products: list[Product] = field(default_factory=list)
    depth: int = 0
    order: int = -1


def _shape(a) -> tuple[int, ...]:
    return tuple(int(s) for s in a.shape)


def shape_trace(model: Module, x: np.ndarray, targets: np.ndarray, loss=None) -> list[TraceRow]:
    """Run one forward and backward pass of ``model`` on ``(x, targets)``; a :class:`TraceRow`
    per layer and per residual block, in forward order (a block's row before its layers'; an
    identity shortcut has a row too). The model's parameters, gradients and running
    statistics are left as they were."""
    loss = CrossEntropyLoss() if loss is None else loss
    saved_state = model.state_dict()
    saved_grads = [p.grad.copy() for p in model.parameters()]
    recorder = _Recorder(model)
    try:
        recorder.attach()
        loss.forward(model.forward(x), targets)
        model.backward(loss.backward())
    finally:
        recorder.detach()
        model.load_state_dict(saved_state)
        for p, g in zip(model.parameters(), saved_grads):
            p.grad[...] = g
    return recorder.rows


class _Recorder:
    """Records a real pass: for that pass only, the ``forward`` and ``backward`` of every
    layer and residual block are wrapped on the instance (any the instance had are put back
    after), so each call adds its shapes to its row and checks dX against the input."""

    def __init__(self, model: Module):
        blocks = [n for n, m in model.named_modules() if isinstance(m, Residual)]
        self.modules = [
            (name or type(m).__name__, m, sum(name.startswith(b + ".") for b in blocks))
            for name, m in model.named_modules()
            if not isinstance(m, Sequential)
        ]
        self.rows: list[TraceRow] = []
        self.row_of: dict[int, TraceRow] = {}
        self.identity_of: dict[int, TraceRow] = {}
        self.ended = 0  # backward passes finished so far
        self.saved: list[tuple[Module, dict]] = []

    def attach(self) -> None:
        for name, m, depth in self.modules:
            self.saved.append((m, {k: v for k, v in vars(m).items() if k in _WRAPPED}))
            m.tracing, m.products = True, []
            m.forward = self._forward(name, m, depth, m.forward)
            m.backward = self._backward(name, m, m.backward)

    def detach(self) -> None:
        for m, own in self.saved:
            for key in _WRAPPED:
                vars(m).pop(key, None)
            vars(m).update(own)
            m.tracing, m.products = False, []

    def _forward(self, name: str, m: Module, depth: int, forward):
        def traced(x):
            row = TraceRow(name, type(m).__name__, _shape(x), (), depth=depth)
            row.params = {pn: _shape(p.data) for pn, p in m._own_parameters()}
            self.rows.append(row)  # before the rows of the layers inside a block
            self.row_of[id(m)] = row
            y = forward(x)
            row.output = _shape(y)
            _add_padding(row, m, x)
            if isinstance(m, Residual) and m.shortcut is None:
                identity = TraceRow(f"{name}.shortcut", "Identity", row.input, row.input)
                identity.depth = depth + 1
                self.rows.append(identity)  # after the branch's rows
                self.identity_of[id(m)] = identity
            return y

        return traced

    def _backward(self, name: str, m: Module, backward):
        def traced(dy):
            dx = backward(dy)
            row = self.row_of[id(m)]
            if _shape(dx) != row.input:
                raise TraceError(f"{name}: dX has shape {_shape(dx)}, its input {row.input}")
            if id(m) in self.identity_of:  # dY went down the shortcut as it is
                identity = self.identity_of[id(m)]
                identity.products = [Product("dX", "identity", [("dY", dy.shape)], dy.shape)]
                identity.order, self.ended = self.ended, self.ended + 1
            row.products = list(m.products)
            _check_products(name, m, row.products)
            row.order, self.ended = self.ended, self.ended + 1
            return dx

        return traced


_WRAPPED = ("forward", "backward")


def _add_padding(row: TraceRow, layer, x: np.ndarray) -> None:
    """A conv or pool layer's padding and padded input, on its row."""
    if not hasattr(layer, "pads"):
        return
    row.padding = tuple(int(p) for p in layer.pads(x.shape[2:]))
    row.padding_mode = layer.padding if isinstance(layer.padding, str) else None
    top, bottom, left, right = row.padding
    n, c, h, w = row.input
    row.padded_input = (n, c, h + top + bottom, w + left + right)  # (N, C, Hp, Wp)


def _check_products(name: str, layer, products: list[Product]) -> None:
    params = dict(layer.named_parameters())
    for prod in products:
        target = {"dW": "weight", "db": "bias"}.get(prod.grad)
        if target is not None and tuple(prod.shape) != _shape(params[target].data):
            raise TraceError(
                f"{name}: {prod.grad} has shape {tuple(prod.shape)}, "
                f"{target} {_shape(params[target].data)}"
            )


def padding_summary(model: Module) -> str:
    """The padding the conv layers actually use: ``same``; ``mixed (conv1 same, conv2 valid)``;
    with more than four convs, how many use each: ``mixed ((1, 1, 1, 1) x19, (0, 0, 0, 0) x2)``."""
    modes = [(n, str(m.padding)) for n, m in model.named_modules() if type(m).__name__ == "Conv2d"]
    kinds = list(dict.fromkeys(m for _, m in modes))  # in network order
    if not modes:
        return "none (no conv layer)"
    if len(kinds) == 1:
        return kinds[0]
    if len(modes) <= 4:
        return "mixed (" + ", ".join(f"{n} {m}" for n, m in modes) + ")"
    counts = [f"{k} x{sum(m == k for _, m in modes)}" for k in kinds]
    return "mixed (" + ", ".join(counts) + ")"


def _padding_text(row: TraceRow) -> str:
    if row.padding is None:
        return ""
    mode = f"{row.padding_mode} " if row.padding_mode else ""
    return f"{mode}{row.padding} -> x_pad {fmt_shape(row.padded_input)}"


def _params_text(row: TraceRow, sep: str = "  ") -> str:
    return sep.join(f"{k} {fmt_shape(v)}" for k, v in row.params.items())


def format_markdown(rows: list[TraceRow]) -> str:
    """The trace as a Markdown table (``shape_trace.md``, TensorBoard's ``shapes/trace``); the
    layers of a residual block indented under its row."""
    lines = [
        "| layer | type | input | output | parameters | padding (t, b, l, r) | backward |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        backward = "<br>".join(f"`{p}`" for p in r.products)
        lines.append(
            f"| {'&nbsp;' * 4 * r.depth}{r.name} | {r.type} | {fmt_shape(r.input)} | "
            f"{fmt_shape(r.output)} | {_params_text(r, ', ')} | {_padding_text(r)} | {backward} |"
        )
    return "\n".join(lines) + "\n"


def _indented(row: TraceRow) -> str:
    return "  " * row.depth + row.name


def format_text(rows: list[TraceRow]) -> str:
    """The trace for a terminal: a header line per layer, then its padding and products; the
    layers of a residual block indented under its row, whose product is the merge."""
    width = max(len(_indented(r)) for r in rows) if rows else 0
    kind = max([11, *(len(r.type) for r in rows)])
    out = []
    for r in rows:
        params = _params_text(r)
        out.append(
            f"{_indented(r):<{width}}  {r.type:<{kind}} {fmt_shape(r.input)} -> "
            f"{fmt_shape(r.output)}" + (f"   {params}" if params else "")
        )
        pad = " " * (width + 2)
        if r.padding is not None:
            out.append(f"{pad}padding {_padding_text(r)}")
        out.extend(f"{pad}{p}" for p in r.products)
    return "\n".join(out) + "\n"


def _table(cells: list[list[str]]) -> list[str]:
    """Rows of cells as lines, each column as wide as its widest cell."""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


def format_report(rows: list[TraceRow]) -> str:
    """The trace as plain text for a preformatted block, in two sections.

    *Forward*: a line per layer in the order the forward pass runs them: name, type,
    ``input -> output``, parameter shapes, padding. *Backward*: each layer's backward products
    in the order the backward pass computes them, the last layer first; a residual block's
    branch, then its shortcut, then the merge ``dX = dX_branch + dX_shortcut``. A layer that
    records no product (an activation, a flatten) shows the shape of the dX it hands on."""
    header = [["layer", "type", "input -> output", "parameters", "padding (t, b, l, r)"]]
    forward = header + [
        [
            _indented(r),
            r.type,
            f"{fmt_shape(r.input)} -> {fmt_shape(r.output)}",
            _params_text(r),
            _padding_text(r),
        ]
        for r in rows
    ]
    backward = [["layer", "backward product"]]
    for r in sorted(rows, key=lambda row: row.order):
        texts = [str(p) for p in r.products] or [f"dX -> {fmt_shape(r.input)}"]
        backward += [[_indented(r) if i == 0 else "", t] for i, t in enumerate(texts)]
    lines = ["Forward (in the order it runs)", *_table(forward), ""]
    lines += ["Backward (in the order it runs: the last layer first)", *_table(backward)]
    return "\n".join(lines) + "\n"
