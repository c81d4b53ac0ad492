"""The layers a model config can name: ``{type: <name>}`` is the class registered as ``name``.

A layer class joins with ``@register_layer`` (its name: the class name in lower case), and
:func:`cnnrun.models.build_model` finds it here; its constructor's arguments are the keys the
YAML may give.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T", bound=type)

LAYERS: dict[str, type] = {}


def register_layer(cls: T) -> T:
    """Class decorator: ``{type: <class name in lower case>}`` in a model config builds it."""
    name = cls.__name__.lower()
    if name in LAYERS and LAYERS[name] is not cls:
        raise ValueError(f"layer type {name!r} is registered twice")
    LAYERS[name] = cls
    return cls
