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
    text = str(err).splitlines()[0].strip() if str(err) else type(err).__name__
    key = getattr(err, "full_key", None)
    m = re.match(r"Invalid value '(.*)', expected one of \[(.*)\]", text)
    if m and key:
        return f"invalid {key} '{m.group(1)}': expected one of {m.group(2)}"
    m = re.match(r"Value '(.*)' of type '.*' could not be converted to (\w+)", text)
    if m and key:
        return f"invalid {key} '{m.group(1)}': expected {m.group(2).lower()}"
    return f"{text} (at {key})" if key else text


def describe(err: BaseException) -> str | None:
    """One line for an error the user can fix; None for anything else (a bug: keep the trace)."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, CnnrunError):
        return str(err)
    if isinstance(err, OSError) and err.filename:  # e.g. Hydra making a run folder
        return f"cannot use {err.filename}: {err.strerror}"
    if isinstance(err, MissingConfigException):
        missing = getattr(err, "missing_cfg_file", "") or ""
        options = getattr(err, "options", None)
        if "/" in missing and options:
            group, name = missing.rsplit("/", 1)
            return f"unknown {group} {name!r}: expected one of {', '.join(sorted(options))}"
        return str(err).splitlines()[0]
    if isinstance(err, OverrideParseException):
        return str(err).splitlines()[0]
    if isinstance(err, ConfigCompositionException):
        cause = err.__cause__
        if isinstance(cause, OmegaConfBaseException):
            return _omegaconf_message(cause)
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        return "; ".join(lines[:2]) if lines else type(err).__name__
    if isinstance(err, OmegaConfBaseException):
        return _omegaconf_message(err)
    return None


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


def compose_from_argv(argv: list[str], prog: str, options: dict[str, int] | None = None):
    """Hydra's config from ``overrides`` (and ``--config-dir DIR``) without a run folder: for
    the commands that only look (``cnnrun.shapes``, ``cnnrun.gradcheck``). ``options`` are
    the command's own integer options (``--max-checks``) with their defaults; they are
    returned beside the config when given."""
    from hydra import compose, initialize_config_dir

    from .config import config_dir

    values = dict(options or {})
    overrides, user_dir = _parse_argv(argv, prog, values)
    if user_dir is not None:
        path = os.path.abspath(user_dir)
        if not os.path.isdir(path):
            fail(f"--config-dir {user_dir!r} is not a folder")
        overrides.append(f"hydra.searchpath=[file://{path}]")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return (cfg, values) if options is not None else cfg


def _parse_argv(argv: list[str], prog: str, values: dict[str, int]) -> tuple[list, str | None]:
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
            text = inline or next(args, "")
            if not text.isdigit():
                fail(f"invalid {name} {text!r}: expected an int >= 0")
            values[name[2:].replace("-", "_")] = int(text)
        elif arg.startswith("-"):
            accepted = ", ".join(["--config-dir DIR", *flags])
            fail(f"unknown option {arg!r} for {prog}: expected {accepted} or key=value overrides")
        else:
            overrides.append(arg)
    return overrides, user_dir
