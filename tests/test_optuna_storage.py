"""The Optuna search keeps its study in a database: SQLite in the sweep folder by default, so an
interrupted search re-run with the same command finishes the trials it was asked for, no more;
a PostgreSQL URL in ``hydra.sweeper.storage`` lets several processes add trials to one study.

The PostgreSQL test starts a server of its own (Debian's ``postgresql`` package) on 127.0.0.1
on a free port, and stops it; it skips, saying why, where there is none.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from runner_helpers import run_cnnrun

optuna = pytest.importorskip("optuna", reason="the Optuna search needs the 'sweep' extra")
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs the 'sweep' extra")

# lenet under 'same' padding on 12x12 synthetic images: a trial of about a second
TRIAL = [
    "hparams_search=lenet_optuna",
    "data=synthetic",
    "data.image_size=12",
    "data.num_samples=1200",
    "data.batch_size=16",
    "conv.padding=same",
    "trainer.max_epochs=2",
    "trainer.progress=false",
    "backend.threads=1",
]


def search(sweep: Path, n_trials: int, *more: str) -> list[str]:
    return [*TRIAL, f"hydra.sweep.dir={sweep}", f"hydra.sweeper.n_trials={n_trials}", *more]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen(
        [sys.executable, "-m", "cnnrun", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def trials(storage: str, name: str = "lenet") -> list:
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def assert_distinct(done: list) -> None:
    """No trial repeats another's params: a resumed search and a second process draw trials
    of their own, not the first process's start-up trials again."""
    params = [tuple(sorted(t.params.items())) for t in done if t.state.name == "COMPLETE"]
    assert len(set(params)) == len(params), params


@pytest.mark.slow
def test_an_interrupted_search_rerun_finishes_its_trials_not_twice_as_many(tmp_path):
    sweep = tmp_path / "search"
    longer = "trainer.max_epochs=3"  # time to interrupt the third trial between its checkpoints
    proc = start(search(sweep, 6, longer), tmp_path)
    deadline = time.time() + 240
    # the third trial has trained an epoch: its signal guard is up and it has a checkpoint to
    # resume from (its checkpoints/ folder exists before that, while the model is being built)
    while not list(sweep.glob("2_*/checkpoints/last.npz")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the search never reached its third trial"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in out + err
    db = f"sqlite:///{sweep / 'optuna.db'}"
    assert [t.state.name for t in trials(db)][-1] == "RUNNING"  # the one interrupted

    again = run_cnnrun(search(sweep, 6, longer), tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    done = trials(db)
    assert len(done) == 6 and {t.state.name for t in done} == {"COMPLETE"}
    assert_distinct(done)
    jobs = sorted(p.name.split("_", 1)[0] for p in sweep.iterdir() if p.is_dir())
    assert jobs == [str(i) for i in range(6)]  # the interrupted trial in its own folder
    third = next(sweep.glob("2_*"))
    assert "resumed from" in (third / "cnnrun.log").read_text()
    # run a third time: the study has its 6 trials, nothing more runs
    third_run = run_cnnrun(search(sweep, 6, longer), tmp_path, timeout=300)
    assert third_run.returncode == 0, third_run.stderr
    assert len(trials(db)) == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found and shutil.which("postgres") is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return Path(found[-1]).parent if found else Path(shutil.which("postgres")).parent


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of this test's own on 127.0.0.1, stopped at the end. As root the
    server runs as ``nobody`` (PostgreSQL refuses to run as root)."""
    pytest.importorskip("psycopg2", reason="PostgreSQL storage needs psycopg2 (the 'sweep' extra)")
    bin_dir = _postgres_binaries()
    as_root = os.geteuid() == 0
    user = "nobody" if as_root else None
    data = Path(tempfile.mkdtemp(prefix="cnnrun-pg-"))
    if as_root:
        shutil.chown(data, user="nobody")
    port = _free_port()
    init = subprocess.run(
        [bin_dir / "initdb", "-D", data / "db", "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        user=user,
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        pytest.skip(f"initdb failed, no server to test with: {init.stderr.strip()[-200:]}")
    server = subprocess.Popen(
        [bin_dir / "postgres", "-D", data / "db", "-h", "127.0.0.1", "-p", str(port), "-k", ""],
        user=user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        _wait_for(url, server)
        yield url
    finally:
        server.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(data, ignore_errors=True)


def _wait_for(url: str, server: subprocess.Popen) -> None:
    import psycopg2

    deadline = time.time() + 60
    while True:
        try:
            psycopg2.connect(url).close()
            return
        except psycopg2.OperationalError:
            assert server.poll() is None, "the PostgreSQL server ended while starting"
            assert time.time() < deadline, "the PostgreSQL server did not start in 60 s"
            time.sleep(0.2)


@pytest.mark.slow
def test_two_processes_add_trials_to_one_postgresql_study(tmp_path, postgres_url):
    storage = f"hydra.sweeper.storage={postgres_url}"
    procs = [start(search(tmp_path / f"search{i}", 6, storage), tmp_path) for i in (0, 1)]
    for proc in procs:
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err
        assert "Traceback" not in out + err
    done = trials(postgres_url)
    complete = [t for t in done if t.state.name == "COMPLETE"]
    # n_trials is the study's total: both processes stop at 6, one more where both started a
    # trial at the same moment
    assert 6 <= len(complete) == len(done) <= 7
    assert_distinct(done)
    folders = {t.user_attrs["sweep_dir"] for t in done}
    assert folders == {str((tmp_path / f"search{i}").resolve()) for i in (0, 1)}
    assert_best_files_agree([tmp_path / f"search{i}" for i in (0, 1)], complete)
    # the best trial is the same whichever process reads it
    reads = [
        subprocess.run(
            [sys.executable, "-c", READ_BEST, postgres_url], capture_output=True, text=True
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in reads] == [0, 0], [r.stderr for r in reads]
    number, value = reads[0].stdout.split()
    assert reads[1].stdout == reads[0].stdout
    assert float(value) == min(t.value for t in complete)
    assert done[int(number)].value == float(value)


def assert_best_files_agree(sweeps: list[Path], complete: list) -> None:
    """Each process writes the best it saw when it ended; the one that wrote last had seen
    every trial told (each tells its own before writing): that is the study's best."""
    from omegaconf import OmegaConf

    best = min(complete, key=lambda t: t.value)
    files = sorted(
        (p for p in (s / "optimization_results.yaml" for s in sweeps) if p.exists()),
        key=lambda p: p.stat().st_mtime_ns,
    )
    assert files, "no process wrote optimization_results.yaml"
    values = {t.value for t in complete}
    for path in files:
        seen = OmegaConf.load(path)
        assert seen.best_value in values and seen.best_value >= best.value, path
    last = OmegaConf.load(files[-1])
    assert last.best_value == best.value and dict(last.best_params) == best.params


READ_BEST = """
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
best = optuna.load_study(study_name="lenet", storage=sys.argv[1]).best_trial
print(best.number, repr(best.value))
"""


def test_the_sampler_seed_is_its_own_per_study_progress_and_folder():
    from cnnrun.run.search import mixed_seed

    seeds = {mixed_seed(0, n, f) for n in (0, 3) for f in ("/runs/a", "/runs/b")}
    assert len(seeds) == 4 and all(0 <= s < 2**32 for s in seeds)
    assert mixed_seed(0, 3, "/runs/a") == mixed_seed(0, 3, "/runs/a")  # the same for a rerun
