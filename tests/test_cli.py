"""Bad input as a user meets it: ``python -m cnnrun ...`` in a subprocess ends with one line
``cnnrun: error: ...`` naming the value (and what is accepted), exit status 2, no traceback,
and every file that was already there unchanged. Also the ``shapes`` and ``gradcheck``
commands.

Every command of this module is started once, in its own folder, by the ``ran`` fixture, a
few at a time (most of each one's time is spent importing), and the tests read the results.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from runner_helpers import TINY, last_line, run_cnnrun, run_config, sha256, snapshot

from cnnrun.run.train import train

# about 17 processes, 14 s of imports even three at a time: with the slow tests. The quick
# loop keeps the same mistakes in-process (tests/test_bad_input.py's table)
pytestmark = pytest.mark.slow


@dataclass
class Command:
    """``python -m <module> <args>``; ``prepare(folder, checkpoint)`` writes what the command
    is given and returns its arguments."""

    prepare: Callable[[Path, Path], list[str]]
    module: str = "cnnrun"
    env: dict = field(default_factory=dict)


@dataclass
class Ran:
    folder: Path  # the command's working folder, all it was given inside it
    before: dict  # every file in it, hashed, before the command ran
    result: object  # subprocess.CompletedProcess


def fixed(*args: str) -> Callable[[Path, Path], list[str]]:
    return lambda folder, checkpoint: [*args]


def bad_root(folder, checkpoint):
    (folder / "no_data").mkdir()
    return ["data=mnist", f"data.root={folder / 'no_data'}", "trainer.max_epochs=1"]


def resume_from(kind: str, model: str = "lenet"):
    """Resume the tiny run from a bad checkpoint in ``folder/given``."""

    def prepare(folder, checkpoint):
        given = folder / "given"
        given.mkdir()
        path = given / f"{kind}.npz"
        if kind == "text":
            path = given / "notes.txt"
            path.write_text("not a checkpoint\n")
        elif kind == "truncated":
            data = checkpoint.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        elif kind == "other-model":
            shutil.copyfile(checkpoint, path)
        return [*TINY, f"model={model}", f"trainer.resume={path}"]

    return prepare


BAD_CONFIGS = {
    "unknown-model": (
        ["model=resnet"],
        ["unknown model 'resnet'", "lenet, mlp, plain20, resnet20, vgg_small"],
    ),
    "padding": (["conv.padding=smae"], ["conv.padding", "'smae'", "same, valid, full"]),
    "backend": (["backend=tpu"], ["backend", "'tpu'", "numba, numpy"]),
    "negative-lr": (["optim.lr=-0.1"], ["optim.lr", "-0.1", "> 0"]),
    "zero-batch": (["data.batch_size=0"], ["data.batch_size", "0", ">= 1"]),
    "optim-schedule": (
        ["optim.schedule=linear"],
        ["optim.schedule", "'linear'", "none, step, cosine"],
    ),
    # lenet under the default 'valid' padding: 8 -> conv1 -> 4 -> pool -> 2, below conv2's 5x5
    "image-below-kernel": (
        ["data=synthetic", "data.image_size=8"],
        ["lenet", "conv2", "1x8x8", "2x2", "5x5"],
    ),
}
BAD_CHECKPOINTS = {
    "missing": resume_from("missing"),  # no file at that path
    "text": resume_from("text"),  # a text file, not an .npz
    "truncated": resume_from("truncated"),  # the first half of a real checkpoint
    "other-model": resume_from("other-model", model="mlp"),  # lenet's, resumed by the mlp
}
FULL_ERROR = {
    "composing": ["conv.padding=smae"],  # refused by the schema, before any run
    "train": ["optim.lr=-0.1"],  # refused by train(cfg), inside the Hydra task
}

COMMANDS: dict[str, Command] = {
    **{
        f"bad-{name}": Command(fixed(*args, "trainer.max_epochs=1"))
        for name, (args, _) in BAD_CONFIGS.items()
    },
    "bad-data-root": Command(bad_root),
    **{f"resume-{name}": Command(prepare) for name, prepare in BAD_CHECKPOINTS.items()},
    **{
        f"full-error-{name}": Command(
            fixed(*args, "trainer.max_epochs=1"), env={"HYDRA_FULL_ERROR": "1"}
        )
        for name, args in FULL_ERROR.items()
    },
    "shapes-same": Command(
        fixed("model=lenet", "conv.padding=same", "data.batch_size=64"), module="cnnrun.shapes"
    ),
    "shapes-valid": Command(
        fixed("model=lenet", "conv.padding=valid", "data.batch_size=8"), module="cnnrun.shapes"
    ),
    "shapes-bad": Command(
        fixed("model=lenet", "data=synthetic", "data.image_size=8"), module="cnnrun.shapes"
    ),
    "gradcheck-lenet": Command(fixed("model=lenet"), module="cnnrun.gradcheck"),
}


@pytest.fixture(scope="module")
def lenet_checkpoint(tmp_path_factory):
    """A real checkpoint of the tiny lenet run (12x12 synthetic images, 'same' padding)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(run_config(out))
    return out / "checkpoints" / "last.npz"


@pytest.fixture(scope="module")
def ran(tmp_path_factory, lenet_checkpoint) -> dict[str, Ran]:
    """Every command of COMMANDS, each started in a folder of its own, three at a time."""
    prepared = {}
    for name, command in COMMANDS.items():
        folder = tmp_path_factory.mktemp(name)
        (folder / "keep.txt").write_text("written before the command ran\n")
        args = command.prepare(folder, lenet_checkpoint)
        prepared[name] = (folder, args, snapshot(folder))
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            name: pool.submit(
                run_cnnrun, args, cwd=folder, module=COMMANDS[name].module, env=COMMANDS[name].env
            )
            for name, (folder, args, _) in prepared.items()
        }
        return {
            name: Ran(prepared[name][0], prepared[name][2], future.result())
            for name, future in futures.items()
        }


def assert_one_line_error(result, *names: str) -> str:
    """Exit status 2, the last line of stderr ``cnnrun: error: ...`` holding every one of
    ``names``, and no traceback on either stream; returns that line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    line = last_line(result.stderr)
    assert line.startswith("cnnrun: error: "), result.stderr
    for name in names:
        assert name in line, (name, line)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    return line


def assert_untouched(run: Ran) -> None:
    """Every file that was in the folder before the command is there, byte for byte."""
    after = snapshot(run.folder)
    assert {k: after.get(k) for k in run.before} == run.before


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_one_line(ran, case):
    run = ran[f"bad-{case}"]
    assert_one_line_error(run.result, *BAD_CONFIGS[case][1])
    assert_untouched(run)
    assert not list(run.folder.rglob("*.npz"))  # no checkpoint came of it


def test_missing_data_files_named_with_folder(ran):
    run = ran["bad-data-root"]
    empty = run.folder / "no_data"
    assert_one_line_error(
        run.result,
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        str(empty),
    )
    assert_untouched(run)
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_one_line_and_untouched(ran, lenet_checkpoint, kind):
    run = ran[f"resume-{kind}"]
    path = next((run.folder / "given").iterdir(), run.folder / "given" / "missing.npz")
    line = assert_one_line_error(run.result, str(path))
    if kind == "missing":
        assert "not found" in line
    elif kind in ("text", "truncated"):
        assert "unreadable" in line or "not a cnnrun checkpoint" in line
    else:  # another experiment's: names what differs, the model's name first
        assert "is from another run: model.name 'lenet' there, 'mlp' here" in line, line
    assert_untouched(run)  # the bad checkpoint byte for byte
    if kind == "other-model":
        assert sha256(path) == sha256(lenet_checkpoint)
    # the failed run did not train: no checkpoint written next to the bad one or anywhere else
    npz = sorted(p.relative_to(run.folder) for p in run.folder.rglob("*.npz"))
    assert npz == ([] if kind in ("missing", "text") else [path.relative_to(run.folder)])


@pytest.mark.parametrize("where", list(FULL_ERROR))
def test_hydra_full_error_shows_the_traceback(ran, where):
    result = ran[f"full-error-{where}"].result
    assert result.returncode != 0
    assert "Traceback" in result.stderr, (where, result.stderr)
    assert FULL_ERROR[where][0].split("=", 1)[1] in result.stderr


# -- python -m cnnrun.shapes and python -m cnnrun.gradcheck ---------------------------------


def test_shapes_prints_the_design_example(ran):
    run = ran["shapes-same"]
    assert run.result.returncode == 0, run.result.stderr
    stdout = run.result.stdout
    lines = [ln.strip() for ln in stdout.splitlines()]
    assert "dW = corr_valid(x_pad (64,1,36,36), dY (64,6,32,32)) -> (6,1,5,5)" in lines
    assert (
        "dX = conv_full(dY (64,6,32,32), W (6,1,5,5)) -> (64,1,36,36), cropped to (64,1,32,32)"
    ) in lines
    # conv2 after the first 2x2 pool: 16x16 maps padded to 20x20
    assert "dW = corr_valid(x_pad (64,6,20,20), dY (64,16,16,16)) -> (16,6,5,5)" in lines
    # a row per layer, in order
    names = [ln.split()[0] for ln in stdout.splitlines() if ln and not ln.startswith((" ", "#"))]
    assert names == ["conv1", "1", "2", "conv2", "4", "5", "6", "fc1", "8", "fc2", "10", "fc3"]
    assert not (run.folder / "runs").exists()  # it only looks: no run folder


def test_shapes_valid_padding_changes_the_shapes(ran):
    result = ran["shapes-valid"].result
    assert result.returncode == 0, result.stderr
    lines = [ln.strip() for ln in result.stdout.splitlines()]
    assert "dW = corr_valid(x_pad (8,1,32,32), dY (8,6,28,28)) -> (6,1,5,5)" in lines
    assert any(
        ln.startswith("dX = conv_full(dY (8,6,28,28), W (6,1,5,5)) -> (8,1,32,32)") for ln in lines
    ), result.stdout


def test_shapes_bad_input_is_one_line(ran):
    assert_one_line_error(ran["shapes-bad"].result, "conv2", "1x8x8", "5x5")


def test_gradcheck_lenet_passes_with_a_row_per_layer(ran):
    result = ran["gradcheck-lenet"].result
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {ln.split()[0]: ln.split() for ln in result.stdout.splitlines() if ln.strip()}
    for layer in ("conv1", "conv2", "fc1", "fc2", "fc3", "input"):
        assert layer in rows, result.stdout
        error = float(rows[layer][1])
        assert 0 <= error < 1e-6, rows[layer]
        assert int(rows[layer][2]) > 0  # elements checked
    assert last_line(result.stdout).startswith("ok: largest relative error")


COMPLETE = r"""
_earlier() { COMPREPLY=(earlier); }
_earlier3() { COMPREPLY=(earlier3); }
complete -o filenames -F _earlier python
complete -F _earlier3 python3
breaks=$COMP_WORDBREAKS
eval "$(python -m cnnrun -sc uninstall=bash)"  # nothing installed: nothing removed
complete -p python
eval "$(python -m cnnrun -sc install=bash)"
eval "$(python -m cnnrun -sc install=bash)"  # .bashrc read twice
ask() {  # what Tab offers after the line $1, as bash would call the function
    COMP_LINE="$1"; COMP_POINT=${#1}; read -ra COMP_WORDS <<< "$1"
    [[ "$1" == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()
    _cnnrun_complete "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}"; echo "${COMPREPLY[*]}"
}
ask "python -m cnnrun model="
ask "cnnrun conv.padding="
ask "python -m cnnrun conv.padding=sa"
ask "python -m cnnrun optim."
ask "python other.py "
ask "python3 other.py "
eval "$(python -m cnnrun -sc uninstall=bash)"
complete -p python python3
[[ "$COMP_WORDBREAKS" == "$breaks" ]] && echo "word breaks as they were"
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_tab_completion_offers_what_cnnrun_takes_and_keeps_other_completions(tmp_path):
    """The README's install line in a real bash: groups' options, an enum key's choices (not
    its current value as OmegaConf prints it), no key that is refused, and another python
    command keeps its completion, given back by uninstall."""
    import os
    import subprocess
    import sys

    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(
        ["bash", "-c", COMPLETE],
        cwd=tmp_path,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    untouched, models, padding, partial, optim, other, other3, *restored, breaks = lines
    assert untouched == "complete -o filenames -F _earlier python"
    assert {"model=lenet", "model=resnet20", "model=vgg_small"} <= set(models.split())
    assert padding.split() == ["conv.padding=same", "conv.padding=valid", "conv.padding=full"]
    assert partial == "conv.padding=same"  # a letter typed: Hydra offered nothing
    assert "optim.lr=" in optim.split() and "optim.name=" not in optim.split()
    assert (other, other3) == ("earlier", "earlier3")  # each command its own, installed twice
    assert restored == [untouched, "complete -F _earlier3 python3"]
    assert breaks == "word breaks as they were"
