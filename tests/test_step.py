"""The training step as a pure function: what it returns, and that it never updates on a
non-finite loss or gradient."""

from __future__ import annotations

import numpy as np
import pytest

from cnnrun import nn, optim
from cnnrun.run.step import train_step


def small_net(rng) -> nn.Sequential:
    return nn.Sequential(
        [
            ("conv1", nn.Conv2d(1, 3, (2, 3), rng=rng)),
            ("act", nn.Tanh()),
            ("flat", nn.Flatten()),
            ("fc", nn.Linear(3 * 4 * 3, 4, rng=rng)),
        ]
    )


def test_a_finite_step_updates_and_reports(rng):
    model = small_net(rng)
    opt = optim.SGD(model.parameters(), lr=0.1)
    x, y = rng.standard_normal((6, 1, 5, 5)), rng.integers(0, 4, 6)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    result = train_step(model, nn.CrossEntropyLoss(), opt, x, y)
    assert result.updated and result.problem is None
    assert set(result.grad_norms) == {p.name for p in model.parameters()}
    expected = np.sqrt(sum(np.sum(p.grad.astype(np.float64) ** 2) for p in model.parameters()))
    assert result.global_norm == pytest.approx(expected, rel=1e-12)
    assert 0.0 <= result.acc <= 1.0
    assert any(not np.array_equal(before[k], v) for k, v in model.state_dict().items())


def test_a_nan_in_the_data_stops_before_the_update_and_names_the_layer(rng):
    model = small_net(rng)
    opt = optim.SGD(model.parameters(), lr=0.1)
    x, y = rng.standard_normal((6, 1, 5, 5)), rng.integers(0, 4, 6)
    x[2, 0, 1, 1] = np.nan
    before = {k: v.copy() for k, v in model.state_dict().items()}
    result = train_step(model, nn.CrossEntropyLoss(), opt, x, y)
    assert not result.updated and result.problem.startswith("loss (")
    assert result.where == "layer conv1"
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
