"""What the command-line entry points share: Hydra's config, and bad input as one clear line.

A mistake by the user (an unknown model, a value outside its enum, a negative learning rate, a
missing data file) ends with one line on stderr naming the value and what would be accepted,
and exit status 2: no traceback, unless ``HYDRA_FULL_ERROR=1`` asks for one.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

from ..errors import CnnrunError
from .signals import StopSweep

EXIT_USAGE = 2


def _omegaconf_message(err) -> str:
    """One line from OmegaConf's error: the key, the value, and what the schema accepts."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    from .checks import close_match, unknown_key
    from .config import ENUMS

    text = str(err).splitlines()[0].strip() if str(err) else type(err).__name__
    key = getattr(err, "full_key", None)
    parent = getattr(err, "parent_node", None)
    if isinstance(err, (ConfigAttributeError, ConfigKeyError)) and key and parent is not None:
        return unknown_key(key, list(parent.keys()))
    m = re.match(r"Invalid value '(.*)', expected one of \[(.*)\]", text)
    if m and key:
        guess = close_match(m.group(1), m.group(2).split(", "))
        mean = f"; did you mean {guess}?" if guess else ""
        return f"invalid {key} '{m.group(1)}': expected one of {m.group(2)}{mean}"
    m = re.match(r"Value (.*) \(\w+\) is not a valid input for <enum '(\w+)'>", text)
    if m and key and m.group(2) in ENUMS:
        options = ", ".join(e.name for e in ENUMS[m.group(2)])
        return f"invalid {key} {m.group(1)}: expected one of {options}"
    m = re.match(r"Value '(.*)' of type '.*' could not be converted to (\w+)", text)
    if m and key:
        return f"invalid {key} '{m.group(1)}': expected {m.group(2).lower()}"
    return f"{text} (at {key})" if key else text


def _missing_config(err) -> str:
    missing = getattr(err, "missing_cfg_file", "") or ""
    options = getattr(err, "options", None)
    if "/" in missing and options:
        from .checks import close_match

        group, name = missing.rsplit("/", 1)
        guess = close_match(name, options)
        mean = f"; did you mean {group}={guess}?" if guess else ""
        return f"unknown {group} {name!r}: expected one of {', '.join(sorted(options))}{mean}"
    return str(err).splitlines()[0]


def _yaml_error(err: BaseException):
    """The YAML syntax error behind ``err`` (a user's own config file), if there is one."""
    import yaml

    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, yaml.MarkedYAMLError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _yaml_message(err) -> str:
    mark = err.problem_mark or err.context_mark
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a file"
    context = f" ({err.context})" if err.context else ""
    return f"YAML syntax error in {where}: {err.problem}{context}"


def describe(err: BaseException) -> str | None:
    """One line for an error the user can fix; None for anything else (a bug: keep the trace)."""
    from hydra.errors import (
        ConfigCompositionException,
        HydraException,
        MissingConfigException,
        OverrideParseException,
        SearchPathException,
    )
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, CnnrunError):
        return str(err)
    if _yaml_error(err) is not None:
        return _yaml_message(_yaml_error(err))
    if isinstance(err, OSError) and err.filename:  # e.g. Hydra making a run folder
        return f"cannot use {err.filename}: {err.strerror}"
    if isinstance(err, SearchPathException):  # --config-dir to a folder that is not there
        return _search_path_message(str(err))
    if isinstance(err, MissingConfigException):
        return _missing_config(err)
    if isinstance(err, OverrideParseException):
        return parse_message(str(err), sys.argv[1:])
    if isinstance(err, ConfigCompositionException):
        cause = err.__cause__
        if isinstance(cause, OmegaConfBaseException):
            return _omegaconf_message(cause)
        return hydra_lines(str(err)) or type(err).__name__
    if isinstance(err, OmegaConfBaseException):
        return _omegaconf_message(err)
    if isinstance(err, HydraException) and "does not support sweep type" in str(err):
        return sweep_type_message(sys.argv[1:])
    return None


def sweep_type_message(argv: list[str]) -> str:
    """``interval()`` and ``tag()`` are the Optuna sweeper's: the basic sweeper takes lists."""
    from .checks import group_options

    given = [a for a in argv if re.search(r"=\s*(interval|tag)\(", a)]
    what = repr(given[0]) if given else "an interval() or tag() sweep"
    searches = ", ".join(f"hparams_search={n}" for n in group_options().get("hparams_search", []))
    return (
        f"cannot sweep {what} with Hydra's basic sweeper: an interval(), bare or in a tag(), "
        f"needs an Optuna search ({searches or 'hydra/sweeper=optuna'}); the basic sweeper takes "
        "key=a,b,c, choice(...) or range(...)"
    )


def hydra_lines(text: str) -> str:
    """Hydra's message on one line, every hint kept (``add --multirun``, ``++key=value``)."""
    lines = [ln.strip().rstrip(".").replace("\\'", "'") for ln in text.splitlines()]
    return "; ".join(ln for ln in lines if ln)


def _search_path_message(text: str) -> str:
    m = re.search(r"directory '(.*)' not found", text)
    folder = m.group(1) if m else text
    return (
        f"--config-dir {folder!r} is not a folder: expected a folder of your own configs, "
        "e.g. my_conf/model/mynet.yaml with --config-dir my_conf"
    )


def parse_message(text: str, argv: list[str]) -> str:
    """Hydra's override parse error as one line, its hint kept (``missing EQUAL``), with ours:
    quote a value that has spaces or non-ASCII letters; ``model=lenet`` for a bare ``lenet``."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "hydra.cc" not in ln]
    m = re.match(r"Error parsing override '(.*)'", lines[0]) if lines else None
    bad = m.group(1) if m else lines[0].split(": ", 1)[-1]
    message = "cannot parse override " + repr(bad) + (f": {lines[1]}" if len(lines) > 1 else "")
    if "LexerNoViableAlt" in text:
        message = f"cannot parse override {bad!r}: the grammar reads only ASCII letters unquoted"
    return message + _parse_hint(bad, argv)


def _parse_hint(bad: str, argv: list[str]) -> str:
    key, sep, val = bad.partition("=")
    if sep:  # a value the grammar cannot read bare: quote it, inside the shell's quotes
        return f"; quote the value: '{key}=\"{val}\"'"
    at = argv.index(bad) if bad in argv else -1
    if at > 0 and "=" in argv[at - 1]:  # the shell split a value at a space
        joined = f"{argv[at - 1]} {bad}"
        key, _, val = joined.partition("=")
        return f"; a value with a space must be quoted: '{key}=\"{val}\"'"
    from .checks import group_of

    group = group_of(bad)
    if group:
        return f"; overrides are key=value: did you mean {group}={bad}?"
    return "; overrides are key=value, e.g. model=lenet conv.padding=same"


def fail(message: str, code: int = EXIT_USAGE) -> None:
    print(f"cnnrun: error: {message}", file=sys.stderr)
    sys.exit(code)


_wants_trace = False


def trace_wanted() -> bool:
    """Whether the user set ``HYDRA_FULL_ERROR=1`` (run_cli sets it for Hydra in any case)."""
    return _wants_trace


def run_cli(entry: Callable[[], object]) -> None:
    """Run a Hydra entry point; user errors become one line and exit status 2."""
    global _wants_trace
    wants_trace = _wants_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
    # Hydra prints its own multi-line report unless this is set; we print one line instead
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        entry()
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
    except BrokenPipeError:  # `python -m cnnrun --help | head`: the reader has what it wanted
        _quiet_exit()
    except StopSweep as stop:  # a signal to a sweep: its job in progress has its checkpoint
        if wants_trace:
            raise
        fail(str(stop), stop.exit_code)
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing to save
        if wants_trace:
            raise
        fail("interrupted before training started; nothing was written but the run folder", 130)
    except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs just below
        message = describe(err)
        if message is None or wants_trace:
            raise
        fail(message, getattr(err, "exit_code", EXIT_USAGE))
    finally:
        if not wants_trace:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def _quiet_exit() -> None:
    """Exit as a command killed by SIGPIPE would, without a word: what is still buffered for
    the closed pipe goes nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(128 + 13)  # SIGPIPE


def compose_from_argv(
    argv: list[str], prog: str, options: dict[str, int] | None = None, limits=None
):
    """Hydra's config from ``overrides`` (and ``--config-dir DIR``) without a run folder: for
    the commands that only look (``cnnrun.shapes``, ``cnnrun.gradcheck``). ``options`` are
    the command's own integer options (``--max-checks``) with their defaults, ``limits`` each
    one's least value and its meaning (``{"batch": (1, "images in the batch")}``, else 0);
    they are returned beside the config when given."""
    from hydra import compose, initialize_config_dir

    from .checks import check_overrides
    from .config import config_dir

    values = dict(options or {})
    overrides, user_dir = _parse_argv(argv, prog, values, limits or {})
    check_overrides(overrides)
    if user_dir is not None:
        path = os.path.abspath(user_dir)
        if not os.path.isdir(path):
            fail(f"--config-dir {user_dir!r} is not a folder")
        overrides.append(f"hydra.searchpath=[file://{path}]")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return (cfg, values) if options is not None else cfg


def _parse_argv(argv: list[str], prog: str, values: dict, limits: dict) -> tuple[list, str | None]:
    """The overrides and ``--config-dir``; the command's own options are set in ``values``."""
    overrides, user_dir = [], None
    flags = [f"--{k.replace('_', '-')} N" for k in values]
    args = iter(argv)
    for arg in args:
        name, _, inline = arg.partition("=")
        if arg in ("-h", "--help"):
            own = "".join(f" [{f}]" for f in flags)
            print(
                f"usage: python -m {prog} [--config-dir DIR]{own} [key=value ...]\n"
                "  the same overrides as `python -m cnnrun`, e.g. model=lenet conv.padding=same"
            )
            sys.exit(0)
        if name in ("--config-dir", "-cd"):
            user_dir = inline or next(args, None)
        elif name.startswith("--") and name[2:].replace("-", "_") in values:
            key = name[2:].replace("-", "_")
            values[key] = _int_option(name, inline or next(args, ""), *limits.get(key, (0, "")))
        elif arg.startswith("-"):
            accepted = ", ".join(["--config-dir DIR", *flags])
            fail(f"unknown option {arg!r} for {prog}: expected {accepted} or key=value overrides")
        else:
            overrides.append(arg)
    return overrides, user_dir


def _int_option(name: str, text: str, least: int, meaning: str) -> int:
    if not text.isdigit() or int(text) < least:
        given = f"{name} {text}" if text else f"{name} (no value)"
        fail(f"invalid {given}: expected an int >= {least}" + (f" ({meaning})" if meaning else ""))
    return int(text)
