"""Shared fixtures of the engine tests (the oracles themselves live in helpers.py)."""

import numpy as np
import pytest


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
