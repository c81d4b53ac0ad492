"""Build a :class:`~cnnrun.nn.Sequential` from a model config: a list of layers in YAML.

Each layer is a mapping: ``type`` is the class name in lower case, ``name`` optional (layers
without one are named by their index, as in ``torch.nn.Sequential``), every other key is a
constructor argument. Input channels, ``BatchNorm2d`` features and ``Linear`` input sizes are
inferred by a shape pass over the data's (C, H, W); a conv layer without ``padding`` takes the
run's ``conv.padding``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import numpy as np

from . import nn
from .errors import CnnrunError, ConfigError

LAYERS = nn.LAYERS  # every class decorated with @register_layer, by lower-case name
# the argument each layer type takes from the shape of its input
INFERRED = {"conv2d": "in_channels", "batchnorm2d": "num_features", "linear": "in_features"}


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


def build_layer(
    spec: Mapping,
    index: int,
    in_shape: tuple[int, ...],
    *,
    default_padding: str,
    rng: np.random.Generator,
    init: str,
    model_name: str,
) -> tuple[str, nn.Module]:
    """One layer from its config, its inferred sizes taken from ``in_shape`` (N, C, H, W) or
    (N, F)."""
    spec = _layer_spec(spec)
    kind = str(spec.pop("type", "")).lower()
    name = str(spec.pop("name", index))
    where = f"layer {name} of model {model_name}"
    if kind not in LAYERS:
        raise ConfigError(
            f"unknown layer type {kind!r} ({where}): expected one of {', '.join(sorted(LAYERS))}"
        )
    cls = LAYERS[kind]
    accepted = _arguments(cls)
    _check_arguments(kind, spec, accepted, where)
    if kind in INFERRED:
        spec[INFERRED[kind]] = _inferred_size(kind, spec.get(INFERRED[kind]), in_shape, where)
    if kind == "conv2d":
        spec.setdefault("padding", default_padding)
    if "rng" in accepted:
        spec["rng"] = rng
    if "init" in accepted:
        spec["init"] = init
    try:
        layer = cls(**spec)
    except CnnrunError as err:
        raise type(err)(f"{where}: {err}") from None
    except (TypeError, ValueError) as err:  # e.g. p: "abc" for a dropout layer
        raise ConfigError(f"{where}: {err}") from None
    return name, layer


def _check_arguments(kind: str, spec: dict, accepted: list[str], where: str) -> None:
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


def takes_default_padding(model_cfg) -> bool:
    """Whether some conv layer of the config leaves ``padding`` to ``conv.padding``."""
    return any(
        str(spec.get("type", "")).lower() == "conv2d" and "padding" not in spec
        for spec in model_cfg["layers"]
    )


def build_model(
    model_cfg,
    input_shape: Sequence[int],
    *,
    default_padding: str = "valid",
    rng: np.random.Generator | None = None,
) -> nn.Sequential:
    """The model of ``model_cfg`` (``name``, ``init``, ``layers``) for inputs of shape (C, H, W).

    Raises a :class:`~cnnrun.errors.ShapeError` naming the layer and the shapes when the data
    does not fit (a 'valid' stack that shrinks the image below a kernel).
    """
    rng = np.random.default_rng() if rng is None else rng
    model_name = str(model_cfg.get("name", "model"))
    init = str(model_cfg.get("init", "default") or "default")
    probe = np.zeros((1, *input_shape), dtype=np.float32)  # a one-image shape pass
    named: list[tuple[str, nn.Module]] = []
    for index, spec in enumerate(model_cfg["layers"]):
        name, layer = build_layer(
            spec,
            index,
            probe.shape,
            default_padding=default_padding,
            rng=rng,
            init=init,
            model_name=model_name,
        )
        layer.name = name
        if any(name == n for n, _ in named):
            raise ConfigError(f"duplicate layer name {name!r} in model {model_name}")
        layer.eval()  # the probe must not move batch-norm statistics
        try:
            probe = layer.forward(probe)
        except CnnrunError as err:
            image = "x".join(str(s) for s in input_shape)
            raise type(err)(f"model {model_name} on {image} (C x H x W) inputs: {err}") from None
        layer.train()
        named.append((name, layer))
    return nn.Sequential(named)
