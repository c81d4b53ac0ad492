"""Every bad input a new user tried (issue 16), as a table: each ends with one line
``cnnrun: error: ...`` naming the value (and what would be accepted), a non-zero exit status,
no traceback, and every file of an existing run folder as it was.

The commands run in this process (``main()`` with the user's arguments, in a folder of their
own); Ctrl-C while the first imports run needs a process of its own, and is marked slow.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from runner_helpers import last_line, snapshot

from cnnrun.errors import ConfigError
from cnnrun.run import main as cli_main
from cnnrun.run import tools

BROKEN_YAML = "name: mynet\nlayers:\n  - {type: flatten\n  - {type: linear, out_features: 10}\n"
LEAKY = "name: leaky\nlayers:\n  - {type: flatten}\n  - {type: leakyrelu, negative_slope: abc}\n"
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.progress=false"]
SEARCH = ["hparams_search=lenet_optuna", "hydra.sweeper.n_trials=1", *FAST]
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/x"
ACCEPTED = ["sqlite:///path.db", "postgresql://user@host:port/db"]


@dataclass
class Case:
    args: list[str]  # as the shell hands them over, after `python -m <module>`
    names: list[str]  # each must be in the one line
    module: str = "cnnrun"
    into_old: bool = True  # also point hydra.run.dir at the existing run folder
    needs: str = ""  # a module the case needs (skipped without it)
    skip: bool = False  # the case does not apply here


CASES = {
    "yaml-syntax": Case(
        ["--config-dir", "user", "model=mynet"], ["YAML", "mynet.yaml", "line 4", "expected ','"]
    ),
    "config-dir-missing": Case(["--config-dir", "nowhere"], ["--config-dir", "nowhere"]),
    "no-equal": Case(["lenet"], ["'lenet'", "missing EQUAL", "model=lenet"]),
    "space-in-path": Case(
        ["data.root=my", "data"], ["'data'", "missing EQUAL", "quoted", "'data.root=\"my data\"'"]
    ),
    "non-ascii-path": Case(["data.root=donn\u00e9es"], ["donn\u00e9es", "quote"]),
    "misspelt-key": Case(
        ["optim.lrr=0.1"], ["optim.lrr", "did you mean optim.lr?", "momentum"], into_old=False
    ),
    "misspelt-group": Case(
        ["model=lenett"], ["'lenett'", "lenet, mlp", "did you mean model=lenet"]
    ),
    "padding-float": Case(["conv.padding=3.5"], ["conv.padding", "3.5", "same, valid, full"]),
    "padding-misspelt": Case(["conv.padding=smae"], ["'smae'", "did you mean same"]),
    "leaky-slope": Case(
        ["--config-dir", "user", "model=leaky", *FAST], ["negative_slope", "'abc'", "a float"]
    ),
    "resume-folder": Case(
        ["trainer.resume=empty_run", *FAST], ["empty_run", "checkpoints/last.npz"], into_old=False
    ),
    "added-misspelt-key": Case(
        ["+optim.momentm=0.5", *FAST], ["optim.momentm", "did you mean optim.momentum?"]
    ),
    "model-name": Case(["model.name=vgg_small"], ["model.name=vgg_small", "model=vgg_small"]),
    "optim-name": Case(["optim.name=adam", *FAST], ["optim.name=adam", "optim=adam"]),
    "data-name": Case(["data.name=synthetic", *FAST], ["data.name=synthetic", "data=synthetic"]),
    "delete-key": Case(["~optim.lr"], ["cannot delete optim.lr", "optim.lr=..."]),
    "delete-group": Case(["~model"], ["cannot delete model", "model=..."]),
    "empty-run-dir": Case(["hydra.run.dir=", *FAST], ["hydra.run.dir", "empty"], into_old=False),
    "gradcheck-batch": Case(
        ["--batch", "0", "model=mlp"], ["--batch 0", ">= 1"], module="cnnrun.gradcheck"
    ),
    **{
        f"gradcheck-batch-{kind}": Case(
            args, [">= 1", "images in the batch"], module="cnnrun.gradcheck", into_old=False
        )
        for kind, args in (
            ("negative", ["--batch", "-3", "model=mlp"]),
            ("abc", ["--batch", "abc", "model=mlp"]),
            ("missing", ["model=mlp", "--batch"]),
        )
    },
    "gradcheck-max-checks": Case(
        ["--max-checks", "x", "model=mlp"], ["--max-checks x", ">= 0"], module="cnnrun.gradcheck"
    ),
    "slurm-without-srun": Case(
        ["-m", "hydra/launcher=slurm", "seed=0,1", *FAST], ["hydra/launcher=slurm", "srun"]
    ),
    "storage-unreachable": Case(
        [*SEARCH, f"hydra.sweeper.storage={UNREACHABLE}"],
        [repr(UNREACHABLE), "cannot connect", "Connection refused", *ACCEPTED],
        needs="psycopg2",
    ),
    "storage-unknown-scheme": Case(
        [*SEARCH, "hydra.sweeper.storage=foo"],
        ["'foo'", "unknown scheme", *ACCEPTED],
        needs="optuna",
    ),
    "storage-no-driver": Case(
        [*SEARCH, "hydra.sweeper.storage=mysql://u@localhost/x"],
        ["'mysql://u@localhost/x'", "driver not installed", "pip install", *ACCEPTED],
        needs="optuna",
        skip=importlib.util.find_spec("MySQLdb") is not None,
    ),
    "storage-no-folder": Case(
        [*SEARCH, "hydra.sweeper.storage=sqlite:////nonexistent_dir/x.db"],
        ["'sqlite:////nonexistent_dir/x.db'", "/nonexistent_dir does not exist", *ACCEPTED],
        needs="optuna",
    ),
    "ambiguous-sweep": Case(
        ["model=lenet,vgg_small"], ["'model=lenet,vgg_small'", "key=[value1,value2]", "--multirun"]
    ),
    "added-existing-key": Case(
        ["+optim.momentum=0.5", *FAST],
        ["'optim.momentum'", "remove + prefix: 'optim.momentum=0.5'", "'++optim.momentum=0.5'"],
    ),
    "interval-without-optuna": Case(
        ["-m", "optim.lr=interval(0.1,0.2)", *FAST],
        ["'optim.lr=interval(0.1,0.2)'", "Optuna", "hparams_search=lenet_optuna", "choice("],
        into_old=False,
    ),
    "misspelt-search": Case(
        ["hparams_search=lenet_optna", *FAST],
        [
            "'lenet_optna'",
            "expected one of lenet_optuna",
            "did you mean hparams_search=lenet_optuna?",
        ],
    ),
}


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A folder with a user's configs, an existing run folder, and a folder without a
    checkpoint; the command runs in it."""
    (tmp_path / "user" / "model").mkdir(parents=True)
    (tmp_path / "user" / "model" / "mynet.yaml").write_text(BROKEN_YAML)
    (tmp_path / "user" / "model" / "leaky.yaml").write_text(LEAKY)
    old = tmp_path / "runs" / "old"
    (old / "tb").mkdir(parents=True)
    (old / "metrics.json").write_text('{"val/loss": 0.5}\n')
    (old / "cnnrun.log").write_text("an earlier run\n")
    (old / "tb" / "events.out.tfevents.1").write_bytes(b"\0" * 64)
    (tmp_path / "empty_run").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_in_process(module: str, args: list[str], monkeypatch) -> int:
    """The command's exit status; Hydra's logging set up by the command is undone after it."""
    root, ours = logging.getLogger(), logging.getLogger("cnnrun")
    kept = (list(root.handlers), root.level, list(ours.handlers), ours.level)
    monkeypatch.setattr(sys, "argv", [module, *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    try:
        if module == "cnnrun.gradcheck":
            tools.gradcheck_main(args)
        else:
            cli_main.main()
        return 0
    except SystemExit as end:
        return end.code if isinstance(end.code, int) else 1
    finally:
        root.handlers[:], ours.handlers[:] = kept[0], kept[2]
        root.setLevel(kept[1])
        ours.setLevel(kept[3])


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line(name, workdir, monkeypatch, capsys):
    case = CASES[name]
    if case.skip:
        pytest.skip("does not apply here")
    if case.needs:
        pytest.importorskip(case.needs, reason="needs the 'sweep' extra")
    args = [*case.args, "hydra.run.dir=runs/old"] if case.into_old else case.args
    before = snapshot(workdir)
    code = run_in_process(case.module, args, monkeypatch)
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    line = last_line(err)
    assert line.startswith("cnnrun: error: "), err
    assert "\n" not in line.strip()
    assert ".;" not in line and "\\'" not in line  # Hydra's lines joined cleanly
    for part in case.names:
        assert part in line, (part, line)
    assert "Traceback" not in out + err
    after = snapshot(workdir)
    assert {k: after.get(k) for k in before} == before  # nothing already there changed
    assert not list(workdir.rglob("*.npz"))  # nothing trained


def test_version_is_cnnrun_s(monkeypatch, capsys):
    from cnnrun import __version__

    assert run_in_process("cnnrun", ["--version"], monkeypatch) == 0
    assert capsys.readouterr().out.strip() == f"cnnrun {__version__}"


def test_help_opens_with_cnnrun_s_page_then_hydra_s(workdir, monkeypatch, capsys):
    assert run_in_process("cnnrun", ["--help", "model=mlp"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert out.startswith("cnnrun ")
    for entry in ("cnnrun.shapes", "cnnrun.gradcheck", "cnnrun.bench", "model: lenet, mlp"):
        assert entry in out
    page, hydra = out.split("== Flags ==", 1)  # Hydra's own page after ours
    assert "optim_schema" not in page  # the schemas are no group a user chooses
    config = page.split("The config of this command", 1)[1]
    assert "model:" in config and "lr: 0.05" in config
    assert "num_samples" not in config and "padding" not in config  # digits, an MLP: no use
    assert "Show cnnrun's version" in hydra and "Hydra's version" not in hydra
    assert 'eval "$(python -m cnnrun -sc install=bash)"' in hydra and "__main__.py" not in hydra


def seconds_to(code: str) -> float:
    """The wall time of a Python process that runs ``code``, its start-up included: the
    shorter of two, the first may read files the disk cache does not hold yet."""
    times = []
    for _ in range(2):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.mark.slow
def test_ctrl_c_while_importing_is_one_line(tmp_path):
    """A KeyboardInterrupt raised inside the imports once surfaced as OmegaConf's
    AttributeError with a traceback, or as a kill by SIGINT (status -2) after the line, about
    one interrupt in seven: ten interrupts, spread over the imports as timed here."""
    from cnnrun.__main__ import STARTING

    up = seconds_to("import cnnrun.__main__")  # Python up, the handler about to be set
    done = seconds_to("import cnnrun.__main__, cnnrun.run.main")
    endings = []
    for delay in np.linspace(up + 0.15 * (done - up), up + 0.75 * (done - up), 10):
        proc = subprocess.Popen(
            [sys.executable, "-m", "cnnrun", "trainer.max_epochs=1"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        endings.append((round(delay, 2), proc.returncode, "Traceback" in out + err, last_line(err)))
    for _delay, status, traceback, _line in endings:
        assert status == 130 and not traceback, endings
    # a loaded machine can shift a few past the imports: "interrupted before training started"
    assert sum(line == STARTING for *_, line in endings) >= 7, endings


def test_the_interrupt_advice_goes_to_the_log_file_only(tmp_path):
    """The terminal gets the advice once, on the last line; cnnrun.log keeps it too."""
    from cnnrun.run.signals import log_to_file_only

    log = logging.getLogger("cnnrun.test_advice")
    to_file = logging.FileHandler(tmp_path / "cnnrun.log")
    on_screen = logging.StreamHandler(open(tmp_path / "terminal.txt", "w"))  # noqa: SIM115
    log.addHandler(to_file)
    log.addHandler(on_screen)
    try:
        log_to_file_only(log, logging.WARNING, "SIGINT at step 3: to continue, ...")
    finally:
        for handler in (to_file, on_screen):
            log.removeHandler(handler)
            handler.close()
    assert (tmp_path / "cnnrun.log").read_text() == "SIGINT at step 3: to continue, ...\n"
    assert (tmp_path / "terminal.txt").read_text() == ""


class ClosedPipe:
    """stdout after the reader went away (``python -m cnnrun --help | head``)."""

    def __init__(self, fd: int, after: int = 0):
        self.fd, self.left = fd, after  # characters the reader takes before it goes

    def write(self, text: str) -> int:
        if len(text) > self.left:
            raise BrokenPipeError(32, "Broken pipe")
        self.left -= len(text)
        return len(text)

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.fd


@pytest.mark.parametrize(
    "after",
    [0, pytest.param(4000, marks=pytest.mark.slow)],
    ids=["in-cnnrun-s-page", "in-hydra-s-page"],
)
def test_help_into_a_closed_pipe_exits_quietly(workdir, monkeypatch, capsys, after):
    """``--help | head``: the reader may go in cnnrun's page or in Hydra's, printed after it
    (a traceback once came from the second)."""
    with open(workdir / "stdout.txt", "w") as file:
        monkeypatch.setattr(sys, "stdout", ClosedPipe(file.fileno(), after))
        code = run_in_process("cnnrun", ["--help"], monkeypatch)
    assert code == 128 + signal.SIGPIPE
    assert capsys.readouterr().err == ""  # no traceback, no word


def test_a_log_line_under_the_progress_bars_prints_once(capsys):
    """Hydra's console handler is root's; cnnrun's logger has none and propagates to it. Only
    root's handler goes through tqdm: a handler added to cnnrun's logger would print it twice."""
    from cnnrun.run.signals import progress_logging

    root, ours = logging.getLogger(), logging.getLogger("cnnrun")
    kept = (list(root.handlers), root.level, list(ours.handlers), ours.level)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    root.handlers[:], ours.handlers[:] = [console], []
    root.setLevel(logging.INFO)
    try:
        with progress_logging(True):
            ours.info("epoch 1 of 3")
    finally:
        root.handlers[:], ours.handlers[:] = kept[0], kept[2]
        root.setLevel(kept[1])
        ours.setLevel(kept[3])
    err = capsys.readouterr().err
    assert err.count("epoch 1 of 3") == 1, err
    assert "[cnnrun] epoch 1 of 3" in err  # root's format kept


def test_a_flag_s_value_is_no_override():
    """``--config-dir '~/conf'`` is a folder: it was refused as a deletion of '/conf'."""
    from cnnrun.run.checks import check_overrides

    check_overrides(["--config-dir", "~/conf", "-cd", "~/more", "~hydra", "~hydra.job"])
    with pytest.raises(ConfigError, match="cannot delete seed"):
        check_overrides(["--config-dir", "~/conf", "~seed"])
