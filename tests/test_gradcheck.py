"""cnnrun.gradcheck: passes a correct network, catches a 1% error in one layer's dW."""

import numpy as np
import pytest
from helpers import Projection, small_net

from cnnrun.gradcheck import gradcheck, relative_error
from cnnrun.nn import Conv2d, Flatten, Linear, MaxPool2d, Sequential, Tanh


def conv_net(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(
        [
            ("conv1", Conv2d(2, 3, (2, 3), padding="same", rng=rng)),
            ("tanh1", Tanh()),
            ("pool1", MaxPool2d(2)),
            ("conv2", Conv2d(3, 4, 3, stride=2, padding=1, rng=rng)),
            ("tanh2", Tanh()),
            ("flat", Flatten()),
            ("fc", Linear(4 * 2 * 2, 5, rng=rng)),
        ]
    )


def data(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, 2, 6, 9)).astype(np.float32), rng.integers(0, 5, 3)


def test_relative_error_known_values():
    assert relative_error(np.array([1.0, -2.0]), np.array([1.0, -2.02])) == pytest.approx(
        0.02 / 2.02, rel=1e-12
    )
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.array([0.0, 1e-3]), np.array([0.0, 2e-3]), scale=1.0) == (
        pytest.approx(1e-3, rel=1e-12)
    )


def test_small_conv_net_passes_with_max_checks():
    net = conv_net()
    x, labels = data()
    before = [p.data.copy() for p in net.parameters()]
    result = gradcheck(net, x, labels, max_checks=15)
    assert set(result.layers) == {"conv1", "conv2", "fc", "input"}
    assert result.checked == {
        "conv1.weight": 15,
        "conv1.bias": 3,
        "conv2.weight": 15,
        "conv2.bias": 4,
        "fc.weight": 15,
        "fc.bias": 5,
        "input": 15,
    }
    assert result.max_error < 1e-6, result.errors
    assert result.passed()
    # the model checked is a float64 copy: the user's float32 model is untouched
    for p, b in zip(net.parameters(), before):
        assert p.data.dtype == np.float32
        np.testing.assert_array_equal(p.data, b)
        assert not p.grad.any()


def test_every_layer_type_with_a_random_projection_and_dropout():
    net = small_net(np.random.default_rng(2))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 7, 9))
    G = rng.standard_normal((3, 3))  # random upstream gradient, not a sum
    result = gradcheck(net, x, G, loss=Projection())
    assert result.checked["conv1.weight"] == 3 * 2 * 2 * 3  # every element (no max_checks)
    assert result.max_error < 1e-6, result.errors


def test_a_one_percent_error_in_dw_is_reported(monkeypatch):
    right = Conv2d.backward

    def scaled_dw(self, dy):  # adds 1.01 * dW instead of dW
        before = self.weight.grad.copy()
        dx = right(self, dy)
        self.weight.grad[...] = before + 1.01 * (self.weight.grad - before)
        return dx

    monkeypatch.setattr(Conv2d, "backward", scaled_dw)
    x, labels = data()
    result = gradcheck(conv_net(), x, labels, max_checks=15)
    assert not result.passed()
    for name in ("conv1.weight", "conv2.weight"):
        assert result.errors[name] > 1e-3, result.errors  # ~1e-2 relative
    for name in ("conv1.bias", "conv2.bias", "fc.weight", "fc.bias", "input"):
        assert result.errors[name] < 1e-6, result.errors  # only dW is wrong
    assert result.layers["conv1"] > 1e-3 and result.layers["fc"] < 1e-6
