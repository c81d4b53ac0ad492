"""Build a :class:`~cnnrun.nn.Sequential` from a model config: a list of layers in YAML.

Each layer is a mapping: ``type`` is the class name in lower case, ``name`` optional (layers
without one are named by their index, as in ``torch.nn.Sequential``), every other key is a
constructor argument. Input channels, ``BatchNorm2d`` features and ``Linear`` input sizes are
inferred by a shape pass over the data's (C, H, W); a conv layer without ``padding`` takes the
run's ``conv.padding``.

Containers hold lists of layers written the same way, their sizes inferred by the same pass:

* ``{type: residual, branch: [...], shortcut: [...]}``: :class:`~cnnrun.nn.Residual`, the sum
  of the two paths; without ``shortcut`` the identity;
* ``{type: sequential, layers: [...]}``: a :class:`~cnnrun.nn.Sequential` inside the model;
* blocks, written out into those (:data:`BLOCKS`): ``{type: basic, out_channels: 32,
  stride: 2}`` is He et al.'s basic residual block, ``{type: plain, ...}`` its branch alone.

A layer inside a container is named by its path, ``block1_1.branch.conv1``, as its parameters
are (``block1_1.branch.conv1.weight``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import nn
from .errors import CnnrunError, ConfigError
from .nn.geometry import pair

LAYERS = nn.LAYERS  # every class decorated with @register_layer, by lower-case name
# the argument each layer type takes from the shape of its input
INFERRED = {"conv2d": "in_channels", "batchnorm2d": "num_features", "linear": "in_features"}
# container types and the keys that hold their lists of layers
CONTAINERS = {"residual": ("branch", "shortcut"), "sequential": ("layers",)}


@dataclass(frozen=True)
class _Context:
    """What every layer of one model is built with."""

    model_name: str
    image: str  # the input, "1x32x32" (C x H x W), for the shape pass's messages
    default_padding: str
    rng: np.random.Generator
    init: str

    def where(self, path: str) -> str:
        return f"layer {path} of model {self.model_name}"


def _arguments(cls) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def _plain(value):
    """Mappings and lists (a YAML config's DictConfig and ListConfig too) as dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _layer_spec(spec) -> dict:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"invalid layer {spec!r}: expected a mapping with a 'type' key")
    return _plain(spec)


def _known_types() -> str:
    return ", ".join(sorted({*LAYERS, *CONTAINERS, *BLOCKS}))


def build_layer(
    kind: str, spec: dict, path: str, in_shape: tuple[int, ...], ctx: _Context
) -> nn.Module:
    """One layer of type ``kind`` from the rest of its config, its inferred sizes taken from
    ``in_shape`` (N, C, H, W) or (N, F)."""
    where = ctx.where(path)
    if kind not in LAYERS or kind in CONTAINERS:
        raise ConfigError(
            f"unknown layer type {kind!r} ({where}): expected one of {_known_types()}"
        )
    cls = LAYERS[kind]
    accepted = _arguments(cls)
    _check_arguments(kind, spec, accepted, where)
    if kind in INFERRED:
        spec[INFERRED[kind]] = _inferred_size(kind, spec.get(INFERRED[kind]), in_shape, where)
    if kind == "conv2d":
        spec.setdefault("padding", ctx.default_padding)
    if "rng" in accepted:
        spec["rng"] = ctx.rng
    if "init" in accepted:
        spec["init"] = ctx.init
    try:
        return cls(**spec)
    except CnnrunError as err:
        raise type(err)(f"{where}: {err}") from None
    except (TypeError, ValueError) as err:  # e.g. p: "abc" for a dropout layer
        raise ConfigError(f"{where}: {err}") from None


def _check_arguments(kind: str, spec: dict, accepted: Sequence[str], where: str) -> None:
    """Every key of a layer's config is one of its constructor's arguments (but those the
    builder passes itself)."""
    own = ("rng", "dtype", "init")
    unknown = [k for k in spec if k not in accepted or k in own]
    if unknown:
        raise ConfigError(
            f"unknown argument {unknown[0]!r} for {kind} ({where}): expected "
            f"{', '.join(a for a in accepted if a not in own)}"
        )


def _inferred_size(kind: str, given, in_shape: tuple[int, ...], where: str) -> int:
    """The size a layer takes from its input (N, C, H, W) or (N, F): channels, or features."""
    key = INFERRED[kind]
    inferred = int(np.prod(in_shape[1:])) if kind == "linear" else in_shape[1]
    if given is not None and given != inferred:
        raise ConfigError(
            f"{key} {given!r} ({where}) does not match its input "
            f"{tuple(in_shape)}: leave it out and it is inferred ({inferred})"
        )
    if kind != "linear" and len(in_shape) != 4:
        raise ConfigError(
            f"{kind} ({where}) needs an (N, C, H, W) input, got {in_shape}: "
            "put it before the flatten layer"
        )
    if kind == "linear" and len(in_shape) != 2:
        raise ConfigError(
            f"linear ({where}) needs an (N, F) input, got {in_shape}: put a flatten layer before it"
        )
    return inferred


# -- containers ---------------------------------------------------------------------------


def build_layers(
    specs, probe: np.ndarray, prefix: str, ctx: _Context
) -> list[tuple[str, nn.Module]]:
    """The layers of a list of configs, by name, each built for the output of the one before:
    the shape pass runs ``probe`` (one image) through each as it is made. ``prefix`` is the
    path of the container they go into ("" for the model itself)."""
    inside = f"{prefix} of model {ctx.model_name}" if prefix else f"model {ctx.model_name}"
    if not isinstance(specs, Sequence) or isinstance(specs, str) or not specs:
        raise ConfigError(f"invalid layers {specs!r} ({inside}): expected a non-empty list")
    named: list[tuple[str, nn.Module]] = []
    for index, spec in enumerate(specs):
        spec = _layer_spec(spec)
        name = str(spec.pop("name", index))
        path = f"{prefix}.{name}" if prefix else name
        if not name or "." in name:
            raise ConfigError(
                f"invalid layer name {name!r} in {inside}: expected a name without '.' "
                "(a dot separates the names of nested layers)"
            )
        if any(name == n for n, _ in named):
            raise ConfigError(f"duplicate layer name {name!r} in {inside}")
        layer = _build_any(spec, path, probe, ctx)
        layer._set_names(path)  # messages of the shape pass name the layer by its path
        probe = _probe(layer, probe, ctx)
        named.append((name, layer))
    return named


def _probe(layer: nn.Module, probe: np.ndarray, ctx: _Context) -> np.ndarray:
    """``layer`` on the shape pass's image, in eval mode (batch-norm statistics stay put)."""
    layer.eval()
    try:
        out = layer.forward(probe)
    except CnnrunError as err:
        raise type(err)(
            f"model {ctx.model_name} on {ctx.image} (C x H x W) inputs: {err}"
        ) from None
    layer.train()
    return out


def _build_any(spec: dict, path: str, probe: np.ndarray, ctx: _Context) -> nn.Module:
    """A layer, a container or a block, from its config (its ``name`` already taken out)."""
    kind = str(spec.pop("type", "")).lower()
    if kind in BLOCKS:
        spec = BLOCKS[kind](spec, probe.shape, ctx.where(path))
        kind = spec.pop("type")
    if kind in CONTAINERS:
        where = ctx.where(path)
        _check_arguments(kind, spec, CONTAINERS[kind], where)
        parts = {
            key: nn.Sequential(build_layers(spec[key], probe, f"{path}.{key}", ctx))
            for key in CONTAINERS[kind]
            if key in spec and (spec[key] or key != "shortcut")  # shortcut: [] is the identity
        }
        if kind == "residual":
            if "branch" not in parts:
                raise ConfigError(f"residual ({where}) needs a branch: a list of layers")
            return nn.Residual(parts["branch"], parts.get("shortcut"))
        if "layers" not in parts:
            raise ConfigError(f"sequential ({where}) needs layers: a list of layers")
        return parts["layers"]
    return build_layer(kind, spec, path, probe.shape, ctx)


# -- blocks: configs written out into residual and sequential ones -------------------------


def _block_branch(spec: dict, in_shape: tuple[int, ...], where: str) -> tuple[list, int, tuple]:
    """The two 3x3 convolutions of He et al.'s basic block, each with batch norm, a ReLU
    between: ``conv3x3(stride) - bn - relu - conv3x3 - bn``, padded by 1 as in the paper (and
    torchvision), so a stride s gives ceil(H / s). Returns (branch, out_channels, stride)."""
    kind = spec.pop("type")
    _check_arguments(kind, spec, ("out_channels", "stride"), where)
    if "out_channels" not in spec:
        raise ConfigError(f"{kind} ({where}) needs out_channels (an int >= 1)")
    if len(in_shape) != 4:
        raise ConfigError(
            f"{kind} ({where}) needs an (N, C, H, W) input, got {tuple(in_shape)}: put it "
            "before the flatten or global pooling layer"
        )
    try:
        stride = pair(spec.get("stride", 1), "stride")
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    out = spec["out_channels"]
    conv = {"type": "conv2d", "out_channels": out, "kernel_size": 3, "padding": 1, "bias": False}
    branch = [
        {**conv, "name": "conv1", "stride": list(stride)},
        {"type": "batchnorm2d", "name": "bn1"},
        {"type": "relu", "name": "relu1"},
        {**conv, "name": "conv2"},
        {"type": "batchnorm2d", "name": "bn2"},
    ]
    return branch, out, stride


def basic_block(spec: dict, in_shape: tuple[int, ...], where: str) -> dict:
    """``{type: basic, out_channels: F, stride: s}``: a residual block whose branch is
    :func:`_block_branch` and whose shortcut is the identity where the shape stays, else a
    projection (He et al.'s option B): ``conv1x1(stride s, F filters) - bn``. The ReLU after
    the sum is the next layer of the model, written out in its YAML."""
    branch, out, stride = _block_branch({**spec, "type": "basic"}, in_shape, where)
    block = {"type": "residual", "branch": branch}
    if stride != (1, 1) or out != in_shape[1]:
        block["shortcut"] = [
            {"type": "conv2d", "name": "conv", "out_channels": out, "kernel_size": 1},
            {"type": "batchnorm2d", "name": "bn"},
        ]
        block["shortcut"][0].update(stride=list(stride), padding=0, bias=False)
    return block


def plain_block(spec: dict, in_shape: tuple[int, ...], where: str) -> dict:
    """``{type: plain, out_channels: F, stride: s}``: the branch of :func:`basic_block`
    without the shortcut, as a container holding it under the name ``branch``: its layers
    keep the basic block's names (``block1_1.branch.conv1``), so the gradients of a plain and a
    residual network share their TensorBoard tags, layer by layer."""
    branch, _, _ = _block_branch({**spec, "type": "plain"}, in_shape, where)
    return {
        "type": "sequential",
        "layers": [{"type": "sequential", "name": "branch", "layers": branch}],
    }


BLOCKS = {"basic": basic_block, "plain": plain_block}


# -- the model ----------------------------------------------------------------------------


def _conv_specs(specs):
    """Every conv layer's config in a list of layer configs, those inside containers too."""
    for spec in specs if isinstance(specs, Sequence) and not isinstance(specs, str) else ():
        if not isinstance(spec, Mapping):
            continue
        kind = str(spec.get("type", "")).lower()
        if kind == "conv2d":
            yield spec
        for key in CONTAINERS.get(kind, ()):
            yield from _conv_specs(spec.get(key))


def takes_default_padding(model_cfg) -> bool:
    """Whether some conv layer of the config leaves ``padding`` to ``conv.padding`` (blocks
    set their own)."""
    return any("padding" not in spec for spec in _conv_specs(model_cfg["layers"]))


def build_model(
    model_cfg,
    input_shape: Sequence[int],
    *,
    default_padding: str = "valid",
    rng: np.random.Generator | None = None,
) -> nn.Sequential:
    """The model of ``model_cfg`` (``name``, ``init``, ``layers``) for inputs of shape (C, H, W).

    Raises a :class:`~cnnrun.errors.ShapeError` naming the layer and the shapes when the data
    does not fit (a 'valid' stack that shrinks the image below a kernel, a residual block whose
    branch and shortcut give different shapes).
    """
    ctx = _Context(
        model_name=str(model_cfg.get("name", "model")),
        image="x".join(str(s) for s in input_shape),
        default_padding=default_padding,
        rng=np.random.default_rng() if rng is None else rng,
        init=str(model_cfg.get("init", "default") or "default"),
    )
    probe = np.zeros((1, *input_shape), dtype=np.float32)  # a one-image shape pass
    return nn.Sequential(build_layers(model_cfg["layers"], probe, "", ctx))
