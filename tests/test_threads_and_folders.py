"""The threads a run takes on a shared machine, the names of a sweep's job folders, and where
the bench writes its results.

* threads: by default the cores this process may use (its CPU affinity, its cgroup's quota,
  SLURM's allocation); a thread count the user set (``NUMBA_NUM_THREADS``, ``OMP_NUM_THREADS``,
  ``OPENBLAS_NUM_THREADS``) wins and is logged with its name. BLAS keeps one thread whatever
  is set (the same bits at any count: ``tests/test_determinism.py``).
* job folders: the job's number and the overrides that differ between jobs, cut with a hash.
"""

from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from cnnrun.backends import process
from cnnrun.backends.process import cgroup_cpus, configure_process, machine_cores, user_threads
from cnnrun.run.sweep import JOB_NAME_CHARS, job_dir, job_folder_names, job_threads


@pytest.fixture
def no_thread_variables(monkeypatch):
    for name in (*process.THREAD_VARIABLES, "SLURM_CPUS_PER_TASK"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    monkeypatch.undo()
    configure_process(None, "numpy")  # as the other tests expect the process


@pytest.mark.parametrize(
    "cpu_max, cpus", [("max 100000", None), ("150000 100000", 2), ("50000 100000", 1)]
)
def test_cgroup_quota_in_cpus(tmp_path, cpu_max, cpus):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert cgroup_cpus(str(tmp_path)) == cpus


def test_cgroup_v1_quota_and_none(tmp_path):
    assert cgroup_cpus(str(tmp_path)) is None  # no cgroup files: no quota
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpus(str(tmp_path)) == 3


def test_slurm_allocation_and_quota_bound_the_cores(no_thread_variables):
    no_thread_variables.setenv("SLURM_CPUS_PER_TASK", "1")
    assert machine_cores() == 1
    no_thread_variables.setattr(process, "cgroup_cpus", lambda: 1)
    no_thread_variables.delenv("SLURM_CPUS_PER_TASK")
    assert machine_cores() == 1


def test_the_user_s_thread_variable_sets_the_threads_and_is_logged(no_thread_variables):
    no_thread_variables.setenv("OPENBLAS_NUM_THREADS", "3")
    no_thread_variables.setenv("OMP_NUM_THREADS", "1")
    assert user_threads() == (1, "OMP_NUM_THREADS")  # the order of THREAD_VARIABLES
    settings = configure_process(None, "numpy")
    assert (settings.threads, settings.gemm_workers, settings.blas_threads) == (1, 1, 1)
    assert "from OMP_NUM_THREADS" in str(settings)
    assert job_threads(OmegaConf.create({"n_jobs": 2})) is None  # not a sweep's share either
    explicit = configure_process(2, "numpy")
    assert explicit.threads == 2 and "from backend.threads" in str(explicit)


def test_default_threads_are_the_usable_cores(no_thread_variables):
    settings = configure_process(None, "numpy")
    assert settings.threads == machine_cores() and settings.blas_threads == 1
    assert "from the cores this process may use" in str(settings)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_a_process_held_to_one_core_takes_one_thread(no_thread_variables):
    """As under ``taskset -c 0`` or a cluster's cpuset: the cores this process may use, not
    the machine's (os.cpu_count())."""
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        settings = configure_process(None, "numba")
    finally:
        os.sched_setaffinity(0, cores)
    assert (settings.threads, settings.gemm_workers, settings.numba_threads) == (1, 1, 1)
    assert "threads 1 " in str(settings) and "from the cores this process may use" in str(settings)


def test_a_word_before_numba_compiles_only_with_a_cold_cache(no_thread_variables, tmp_path):
    no_thread_variables.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    note = process.compile_note("numba")
    assert note.startswith("compiling the numba kernels once, about") and str(tmp_path) in note
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "conv.conv_forward-130.py311.nbi").write_bytes(b"")
    assert process.compile_note("numba") == "" and process.compile_note("numpy") == ""


def test_job_folders_are_short_whatever_the_overrides():
    assert job_dir(3, "") == "3"
    assert job_dir(0, "optim.lr=0.1,seed=1") == "0_optim.lr=0.1,seed=1"
    long = ",".join(f"data.root{i}=/some/where/far/away" for i in range(20))
    name = job_dir(12, long)
    assert len(name) <= len("12_") + JOB_NAME_CHARS and name.startswith("12_data.root0=")
    assert job_dir(12, long) == name != job_dir(12, long + "x")  # the hash tells them apart


def test_overrides_every_job_shares_are_left_out_of_the_names():
    argv = ["-m", "optim.lr=0.01,0.1", "trainer.max_epochs=3", "hydra/launcher=joblib"]
    *same, added = job_folder_names(argv)
    assert same == argv
    key, keys = added.split("=", 1)
    assert key == "hydra.job.config.override_dirname.exclude_keys"
    assert "trainer.max_epochs" in keys and "optim.lr" not in keys and "data.root" in keys
    assert job_folder_names(["-sc", "query=bash"]) == ["-sc", "query=bash"]


def test_the_bench_writes_beside_the_runs_not_into_the_repository():
    from cnnrun.bench.__main__ import default_json

    path = default_json()
    assert path.parts[:2] == ("runs", "bench") and path.suffix == ".json"  # runs/ is ignored


def test_each_source_of_the_thread_count_is_named(no_thread_variables):
    from cnnrun.run import sweep

    no_thread_variables.setenv("SLURM_CPUS_PER_TASK", "1")
    slurm = configure_process(job_threads(None), "numpy")
    assert slurm.threads == 1 and "from SLURM_CPUS_PER_TASK" in str(slurm), str(slurm)
    no_thread_variables.delenv("SLURM_CPUS_PER_TASK")
    no_thread_variables.setattr(sweep, "cores", lambda: 8)
    share = configure_process(job_threads(OmegaConf.create({"n_jobs": 4})), "numpy")
    assert share.threads == 2 and "from hydra.launcher.n_jobs=4's share of 8 cores" in str(share)
    local = job_threads(OmegaConf.create({"_target_": "LocalLauncher", "cpus_per_task": 3}))
    assert "from hydra.launcher.cpus_per_task" in str(configure_process(local, "numpy"))
    assert "from backend.threads" in str(configure_process(2, "numpy"))
