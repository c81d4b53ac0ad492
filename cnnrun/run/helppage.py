"""cnnrun's own ``--help`` page, ``--version``, and tab completion of ``python -m cnnrun``.

Hydra's page follows cnnrun's, tidied: its flags name cnnrun's version and the completion
commands as a user types them. Completion is Hydra's (``-sc query=bash`` lists the groups,
options and keys), with what it gets wrong for cnnrun mended: an enum key offers its choices
(``conv.padding=same``, not the current ``conv.padding=Padding.valid``), and the keys that
cannot be set apart from their group (``optim.name``) are not offered.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Callable

from .cli import _quiet_exit, compose_from_argv, run_cli

HELP = """\
cnnrun {version}: experiments on a hand-written backprop engine for convolutional networks

usage: python -m cnnrun [-m] [--config-dir DIR] [key=value ...]    (or: cnnrun ...)

A short tour:
  python -m cnnrun                                  LeNet-5 on digits, 'valid' padding, NumPy
  python -m cnnrun model=lenet conv.padding=same    every conv layer pads 'same'
  python -m cnnrun model=vgg_small data=synthetic optim=adam optim.lr=3e-3
  python -m cnnrun -m optim.lr=0.01,0.1 conv.padding=same,valid    a sweep, summary.csv
  python -m cnnrun hparams_search=lenet_optuna      an Optuna search, kept in a database

The other entry points take the same overrides:
  python -m cnnrun.shapes model=...      the shape trace, forward and backward, no training
  python -m cnnrun.gradcheck model=...   every gradient against finite differences, float64
  python -m cnnrun.bench                 the backends timed (and PyTorch, where installed)

Config groups (group=option):
{groups}

The config of this command (override any key with key=value):
{config}
Hydra's own page follows: its flags (--multirun, --cfg job, --config-dir, shell completion).
"""


# Tab completion for `python -m cnnrun ...` and `cnnrun ...`: Hydra answers the query (`-sc
# query=bash`) once the line is put as `cnnrun <overrides>`; any other python command gets the
# completion it had before (bash-completion's loaded first), or the shell's file names. The
# first install keeps what it replaces (python's and python3's specs, COMP_WORDBREAKS), a second
# keeps the first's; uninstall=bash puts it back, and does nothing where none is installed.
COMPLETION = r"""
if ! declare -F _cnnrun_complete >/dev/null; then
    if declare -F _completion_loader >/dev/null; then
        _completion_loader python >/dev/null 2>&1; _completion_loader python3 >/dev/null 2>&1
    fi
    _cnnrun_saved=$(complete -p python python3 2>/dev/null)
    _cnnrun_wordbreaks=$COMP_WORDBREAKS
fi
_cnnrun_complete() {
    local words=($COMP_LINE) run line earlier
    if [[ "${words[0]}" == python* && "${words[1]}" == "-m" && "${words[2]}" == "cnnrun" ]]; then
        run="${words[0]} -m cnnrun"; line="cnnrun ${COMP_LINE#*-m cnnrun}"
    elif [[ "${words[0]}" == "cnnrun" ]]; then
        run="cnnrun"; line="$COMP_LINE"
    else
        local spec
        while read -r spec; do  # `complete -F <function> ... <command>`, one line a command
            [[ "$spec" == *" $1" && "$spec" == *"-F "* ]] && earlier=${spec#*-F }
        done <<< "$_cnnrun_saved"
        earlier=${earlier%% *}; COMPREPLY=()
        if [[ -n "$earlier" ]]; then
            [[ "$_cnnrun_saved" == *"-o nospace"* ]] || compopt +o nospace 2>/dev/null
            "$earlier" "$@"
        fi
        return
    fi
    local choices=$(COMP_LINE="$line" $run -sc query=bash 2>/dev/null)
    COMPREPLY=($(compgen -o nospace -o default -W "$choices" -- "${COMP_WORDS[COMP_CWORD]}"))
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o nospace -o default -F _cnnrun_complete python python3 cnnrun
"""

UNINSTALL = r"""
if declare -F _cnnrun_complete >/dev/null; then
    complete -r python python3 cnnrun 2>/dev/null
    [[ -n "$_cnnrun_saved" ]] && eval "$_cnnrun_saved"
    COMP_WORDBREAKS=$_cnnrun_wordbreaks
    unset -f _cnnrun_complete; unset _cnnrun_saved _cnnrun_wordbreaks
fi
"""

# Hydra's flags, as cnnrun's user types them: its completion block names `python <file>` and
# shells cnnrun's completion does not cover
SHELL_FLAGS = """--shell-completion,-sc : Install or uninstall tab completion (bash) of
    python -m cnnrun and cnnrun: eval "$(python -m cnnrun -sc install=bash)" (uninstall=bash)
"""


def intercept(argv: list[str]) -> Callable[[str], str] | None:
    """``--version`` prints cnnrun's; ``-sc install=bash`` and ``uninstall=bash`` print
    cnnrun's scripts; ``--help`` prints cnnrun's page, then lets Hydra print its own
    (``--hydra-help``) in place of Hydra's generic application page. Returns how to tidy what
    Hydra prints next (its page, or its completion answer), or None."""
    if "--version" in argv:
        from .. import __version__

        print(f"cnnrun {__version__}")
        sys.exit(0)
    if any(a in ("-sc", "--shell-completion") for a in argv):
        for script, word in ((COMPLETION, "install=bash"), (UNINSTALL, "uninstall=bash")):
            if word in argv:  # Hydra's own complete `python file.py`, not `python -m cnnrun`
                print(script)
                sys.exit(0)
        return tidy_query if "query=bash" in argv else None
    if not any(a in ("--help", "-h") for a in argv):
        return None
    run_cli(lambda: print(help_page(argv)))
    sys.argv[1:] = ["--hydra-help"]  # Hydra's page composes no config of ours
    return tidy_hydra_page


@contextlib.contextmanager
def tidied_stdout(tidy: Callable[[str], str] | None):
    """What is printed inside, through ``tidy`` (None: untouched), even when it exits."""
    if tidy is None:
        yield
        return
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        try:
            sys.stdout.write(tidy(buffer.getvalue()))
            sys.stdout.flush()
        except BrokenPipeError:  # `python -m cnnrun --help | head`: the reader went away
            _quiet_exit()


def tidy_hydra_page(text: str) -> str:
    text = text.replace("Show Hydra's version and exit", "Show cnnrun's version and exit")
    start, end = text.find("--shell-completion,-sc"), text.find("--config-path,-cp")
    if 0 <= start < end:
        text = text[:start] + SHELL_FLAGS + text[end:]
    return re.sub(r"python \S*cnnrun[/\\]__main__\.py", "python -m cnnrun", text)


def tidy_query(text: str) -> str:
    """Hydra's completion words without the keys that cannot be set apart from their group;
    for an enum key being typed (``conv.padding=`` or ``conv.padding=sa``, from the shell's
    ``COMP_LINE``) its choices that start so: Hydra offers the current value as OmegaConf
    prints it (``conv.padding=Padding.valid``), and nothing once a letter is typed."""
    from .checks import GROUP_NAMES
    from .config import enum_keys

    line = os.environ.get("COMP_LINE", "")
    typed = "" if not line or line.endswith(" ") else line.split()[-1]
    key, sep, start = typed.partition("=")
    enums = enum_keys()
    if sep and key in enums and key not in GROUP_NAMES:
        words = [f"{key}={m.value}" for m in enums[key] if m.value.startswith(start)]
    else:
        words = [w for w in text.split() if w.partition("=")[0] not in GROUP_NAMES]
    return " ".join(words) + "\n"


def help_page(argv: list[str]) -> str:
    from omegaconf import OmegaConf

    from .. import __version__
    from .checks import applicable, group_options

    kept, args = [], iter(argv)
    for arg in args:  # the overrides and --config-dir; Hydra's other flags are its own
        if arg in ("--config-dir", "-cd"):
            kept += [arg, next(args, "")]
        elif not arg.startswith("-"):
            kept.append(arg)
    cfg = compose_from_argv(kept, "cnnrun")
    groups = "\n".join(
        f"  {g}: {', '.join(names)}" for g, names in group_options().items() if names
    )
    config = OmegaConf.to_yaml(applicable(cfg))
    config = "".join(f"  {line}\n" for line in config.splitlines())
    return HELP.format(version=__version__, groups=groups, config=config)
