"""Shared fixtures of the tests (the engine's oracles live in helpers.py, the runner's pieces in
runner_helpers.py)."""

import subprocess

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def products_as_before():
    """gemm's process-wide settings (the pool's threads, the small-product blocks) as they were
    before each test: a test that configures the process, or a run inside it, leaves the next
    test's products as a fresh process has them, whatever the order the tests run in."""
    from cnnrun.backends import gemm

    workers, small = gemm.workers(), gemm.small_products()
    yield
    gemm.set_workers(workers)
    gemm.set_small_products(small)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator: every test draws the same numbers on every run."""
    return np.random.default_rng(20240607)


@pytest.fixture
def torch():
    """PyTorch as a second oracle; the test is skipped where it is not installed."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # the same summation order run to run
    return torch


@pytest.fixture
def small_mount(tmp_path):
    """A 1.5 MiB tmpfs of our own (root only; skipped where mounting is not allowed)."""
    point = tmp_path / "mnt"
    point.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(point)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
