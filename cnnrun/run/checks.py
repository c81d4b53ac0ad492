"""What the schema cannot refuse by itself: keys no part of cnnrun reads, overrides that cannot
do what they seem to, layer arguments of the wrong type; and the words of those refusals
(close matches by difflib), shared with :mod:`cnnrun.run.cli`'s messages for Hydra's errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing

from omegaconf import DictConfig, OmegaConf

from .. import optim
from ..errors import ConfigError
from ..nn.registry import LAYERS
from .config import Config, config_dir, model_spec, optimizer_schema, value


def close_match(word: str, options) -> str | None:
    """The option closest to a misspelt ``word`` (difflib), or None where none is close."""
    found = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_key(full_key: str, keys) -> str:
    """``unknown key optim.lrr: did you mean optim.lr? optim has lr, momentum, ...``."""
    parent, _, key = full_key.rpartition(".")
    keys = [str(k) for k in keys if k != "hydra"]
    where = f"{parent} has" if parent else "the config has"
    guess = close_match(key, keys)
    mean = f" did you mean {parent + '.' if parent else ''}{guess}?" if guess else ""
    return f"unknown key {full_key}:{mean} {where} {', '.join(keys)}"


def _section_schemas(cfg: DictConfig) -> dict[str, type]:
    """Each section of the config and the dataclass its keys must come from."""
    hints = typing.get_type_hints(Config)
    schemas = {k: t for k, t in hints.items() if dataclasses.is_dataclass(t)}
    name = value(cfg.optim.name) if "name" in cfg.optim else None
    if name in optim.OPTIMIZERS:
        schemas["optim"] = optimizer_schema(name, optim.OPTIMIZERS[name])
    return schemas


def check_known_keys(cfg: DictConfig) -> None:
    """Refuse a key no part of cnnrun reads (``+optim.momentm=0.5``: Hydra adds a ``+`` key to
    any config without asking the schema), naming the close match."""
    top = [f.name for f in dataclasses.fields(Config)]
    for key in cfg:
        if key not in top and key != "hydra":
            raise ConfigError(unknown_key(str(key), top))
    for section, schema in _section_schemas(cfg).items():
        known = [f.name for f in dataclasses.fields(schema)]
        for key in cfg[section]:
            if key not in known:
                raise ConfigError(unknown_key(f"{section}.{key}", known))


# the keys that name what a config group chose: set apart from the group, they would label
# (model.name) or half-build (optim.name: Adam with SGD's lr and schedule) another choice
GROUP_NAMES = {"model.name": "model", "optim.name": "optim", "data.name": "data"}


# Hydra's flags followed by a value of their own (a folder, a name), not an override
FLAGS_WITH_VALUES = {"--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn"}
FLAGS_WITH_VALUES |= {"--package", "-p", "--info", "-i", "--experimental-rerun"}


def check_overrides(overrides: list[str]) -> None:
    """Refuse command-line overrides that cannot do what they seem to: ``model.name=vgg_small``
    (choose the model with ``model=vgg_small``), ``optim.name=adam``, an empty
    ``hydra.run.dir=`` or ``hydra.sweep.dir=``, a deletion (``~optim.lr``) of cnnrun's keys."""
    values = {i + 1 for i, a in enumerate(overrides) if a in FLAGS_WITH_VALUES}
    for i, text in enumerate(overrides):
        if i in values:  # --config-dir ~/conf: a folder, not an override
            continue
        key, sep, val = str(text).partition("=")
        name = key.lstrip("~")
        if key.startswith("~") and name != "hydra" and not name.startswith(("hydra.", "hydra/")):
            raise ConfigError(
                f"cannot delete {name}: every key and group of cnnrun's config is used; set it "
                f"({name}=...) or leave it out for its default"
            )
        key = key.lstrip("+~")
        if not sep or key.startswith("-"):
            continue
        if key in GROUP_NAMES:
            group = GROUP_NAMES[key]
            raise ConfigError(
                f"{key}={val} cannot be set apart from its group: choose the {group} with "
                f"{group}={val} (its own settings come with it)"
            )
        if key in ("hydra.run.dir", "hydra.sweep.dir") and not val.strip(" '\""):
            raise ConfigError(empty_folder(key))


def empty_folder(key: str) -> str:
    default = "runs/<date>/<time>" if key == "hydra.run.dir" else "runs/multirun/<date>/<time>"
    return f"{key} is empty: give a folder ({key}=runs/mine), or leave it out for {default}"


def _expected_type(hint) -> tuple[type, ...] | None:
    """The Python types a plain ``int``, ``float`` or ``bool`` argument accepts from YAML."""
    if hint is float:
        return (int, float)
    if hint in (int, bool):
        return (hint,)
    return None


def check_layer_arguments(layers, where: str = "model.layers") -> None:
    """A layer argument of the wrong type (``{type: leakyrelu, negative_slope: abc}``) named
    by its key, before NumPy meets it; nested layer lists (a residual's branch) too."""
    for i, spec in enumerate(layers):
        if not isinstance(spec, dict):
            continue
        cls = LAYERS.get(str(spec.get("type", "")).lower())
        hints = typing.get_type_hints(cls.__init__) if cls is not None else {}
        for key, got in spec.items():
            if isinstance(got, list) and got and all(isinstance(x, dict) for x in got):
                check_layer_arguments(got, f"{where}.{i}.{key}")
            accepted = _expected_type(hints.get(key))
            if accepted is None or got is None:
                continue
            if isinstance(got, bool) != (bool in accepted) or not isinstance(got, accepted):
                kind = accepted[-1].__name__
                raise ConfigError(
                    f"invalid {where}.{i}.{key} {got!r} for {spec['type']}: expected a {kind}"
                )


def group_options() -> dict[str, list[str]]:
    """The config groups a user chooses from, ``conf/<group>/<option>.yaml``, by group."""
    root = config_dir()
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(root.iterdir())
        if d.is_dir() and d.name != "hydra"
    }


def group_of(option: str) -> str | None:
    """The group that has ``option`` (``lenet``: ``model``), or None."""
    return next((g for g, names in group_options().items() if option in names), None)


# the keys that apply only to some choices: the help page shows them only where they do
APPLIES = {
    "data.num_samples": lambda cfg: value(cfg.data.name) == "synthetic",
    "optim.step_size": lambda cfg: value(cfg.optim.schedule) == "step",
    "optim.gamma": lambda cfg: value(cfg.optim.schedule) == "step",
    "optim.min_lr": lambda cfg: value(cfg.optim.schedule) == "cosine",
    "conv.padding": lambda cfg: not _without_default_padding(cfg),
}


def _without_default_padding(cfg: DictConfig) -> bool:
    from ..models import takes_default_padding

    return not takes_default_padding(model_spec(cfg))


def padding_unused(cfg: DictConfig) -> bool:
    """Whether ``conv.padding`` is worth a warning: the model has conv layers and every one
    sets its own padding (an MLP has none, and nothing to warn about)."""
    convs = [s for s in model_spec(cfg)["layers"] if str(s.get("type", "")).lower() == "conv2d"]
    return bool(convs) and _without_default_padding(cfg)


def applicable(cfg: DictConfig) -> DictConfig:
    """A plain copy of ``cfg`` without the keys that do nothing under its choices."""
    plain = OmegaConf.create(OmegaConf.to_container(cfg, enum_to_str=True))
    for key, applies in APPLIES.items():
        section, name = key.split(".")
        if not applies(cfg):
            plain[section].pop(name, None)
            if not plain[section]:
                plain.pop(section)
    return plain
