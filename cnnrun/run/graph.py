"""The model as a TensorBoard graph (the Graphs tab), built from the shape trace.

One node per layer, named by its dotted name with dots as TensorBoard's scopes (a residual
block is a box that opens onto its branch, its shortcut and the add that merges them); each
node's ``op`` is the layer type, its attributes the parameters' shapes and the input and
output shapes, and ``_output_shapes`` labels the edges. Written with TensorBoard's own graph
protos.
"""

from __future__ import annotations

from tensorboard.compat.proto import attr_value_pb2, graph_pb2, node_def_pb2, tensor_shape_pb2

from ..nn.module import fmt_shape
from .probe import layer_label


def _shape_attr(shape: tuple[int, ...]) -> attr_value_pb2.AttrValue:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=int(s)) for s in shape]
    shapes = attr_value_pb2.AttrValue.ListValue(shape=[tensor_shape_pb2.TensorShapeProto(dim=dims)])
    return attr_value_pb2.AttrValue(list=shapes)


def _text(value: str) -> attr_value_pb2.AttrValue:
    return attr_value_pb2.AttrValue(s=value.encode("utf-8"))


class _Builder:
    def __init__(self, rows):
        self.rows = {r.name: r for r in rows}
        self.nodes: list[node_def_pb2.NodeDef] = []

    def node(self, name: str, op: str, inputs: list[str], shape, attrs=None) -> str:
        attrs = attrs or {}
        scoped = name.replace(".", "/")
        attr = {"_output_shapes": _shape_attr(shape), **{k: _text(v) for k, v in attrs.items()}}
        self.nodes.append(node_def_pb2.NodeDef(name=scoped, op=op, input=inputs, attr=attr))
        return scoped

    def layer(self, name: str, layer, src: str) -> tuple[str, tuple]:
        """The node (or nodes, for a container) of one layer fed by ``src``; returns the last
        node and its output shape."""
        branch = getattr(layer, "branch", None)
        if branch is not None:  # a residual block: y = branch(x) + shortcut(x)
            b_out, shape = self.chain(branch, f"{name}.branch", src)
            shortcut = getattr(layer, "shortcut", None)
            s_out = self.chain(shortcut, f"{name}.shortcut", src)[0] if shortcut else src
            return self.node(f"{name}.add", "Add", [b_out, s_out], shape), shape
        if hasattr(layer, "layers"):  # a nested Sequential
            return self.chain(layer, name, src)
        row = self.rows.get(name)
        shape = row.output if row is not None else ()
        attrs = {"input shape": fmt_shape(row.input)} if row is not None else {}
        if row is not None:
            attrs["output shape"] = fmt_shape(row.output)
            attrs.update({pn: fmt_shape(s) for pn, s in row.params.items()})
            if row.padding is not None:
                attrs["padding (t, b, l, r)"] = str(row.padding)
        label = layer_label(name, layer)  # an unnamed layer: "1_tanh"
        return self.node(label, type(layer).__name__, [src], shape, attrs), shape

    def chain(self, seq, prefix: str, src: str) -> tuple[str, tuple]:
        shape: tuple = ()
        for name, layer in seq.layers:
            src, shape = self.layer(f"{prefix}.{name}" if prefix else name, layer, src)
        return src, shape


def graph_def(model, rows, loss_name: str = "CrossEntropyLoss") -> bytes:
    """The serialised ``GraphDef`` of ``model``, shapes from its trace ``rows``."""
    b = _Builder(rows)
    first = rows[0].input if rows else ()
    src = b.node("input", "Input", [], first, {"shape": fmt_shape(first)})
    src, shape = b.chain(model, "", src)
    b.node("loss", loss_name, [src], (), {"input shape": fmt_shape(shape)})
    return graph_pb2.GraphDef(node=b.nodes).SerializeToString(deterministic=True)
