"""Every layer and loss but Conv2d (see test_conv.py): forward and backward against central
finite differences in float64, with random upstream gradients, input and every parameter."""

import numpy as np
import pytest
from helpers import GRAD_TOL, finite_diff, layer_grad_errors, rel_err, small_net, spaced_values
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnrun.nn import (
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    CrossEntropyLoss,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    MaxPool2d,
    MSELoss,
    ReLU,
    Sigmoid,
    Tanh,
)


def away_from_zero(x, margin=0.05):
    """Keep |x| >= margin so that no finite-difference step crosses a ReLU kink."""
    return np.where(x >= 0, x + margin, x - margin)


def assert_grads_ok(errors):
    assert max(errors.values()) < GRAD_TOL, errors


# --- activations and reshapes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [ReLU(), LeakyReLU(0.2), LeakyReLU(), Tanh(), Sigmoid()],
    ids=["relu", "leaky_relu_0.2", "leaky_relu_default", "tanh", "sigmoid"],
)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 7)])
def test_activation_gradients(layer, shape, rng):
    x = away_from_zero(rng.standard_normal(shape) * 2)
    assert_grads_ok(layer_grad_errors(layer, x, rng))


@pytest.mark.parametrize("cls", [Tanh, Sigmoid])
@pytest.mark.parametrize(
    "layouts",
    [("C", "C"), ("batch_last", "batch_last"), ("C", "batch_last"), ("batch_last", "C")],
    ids=lambda v: "-".join(v),
)
def test_activation_backward_in_any_layout(cls, layouts, rng):
    # more than one block of elements, so the blocked in-place path runs over several blocks;
    # x and dY laid out the same way or not
    def lay(a, layout):
        return (
            a
            if layout == "C"
            else np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
        )

    shape = (7, 3, 61, 59)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    layer = cls()
    y = layer.forward(lay(x, layouts[0]))
    dx = layer.backward(lay(dy, layouts[1]))
    want = dy * (1 - np.tanh(x) ** 2) if cls is Tanh else dy * y * (1 - y)
    assert dx.shape == shape and dx.dtype == x.dtype
    assert rel_err(dx, want) < 1e-14


def test_relu_passes_nan_forward_and_stops_non_finite_gradients_of_off_units():
    # as PyTorch: relu(NaN) is NaN, and the gradient of a unit that was off is 0 even where dY
    # is inf or NaN (a product with the mask would give NaN there)
    x = np.array([[np.nan, -1.0, 2.0, 0.0, -3.0, 4.0]])
    relu = ReLU()
    np.testing.assert_array_equal(relu.forward(x), [[np.nan, 0.0, 2.0, 0.0, 0.0, 4.0]])
    dy = np.array([[1.0, np.inf, 3.0, np.nan, -np.inf, np.inf]])
    np.testing.assert_array_equal(relu.backward(dy), [[0.0, 0.0, 3.0, 0.0, 0.0, np.inf]])
    np.testing.assert_array_equal(relu.backward(np.ones_like(x)), [[0, 0, 1, 0, 0, 1]])


@pytest.mark.parametrize("slope", [0.01, 0.2, 1.0, 1.5, -0.3, 0.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_relu_is_exact_for_any_slope(slope, dtype, rng):
    x = rng.standard_normal((4, 3, 5, 6)).astype(dtype)
    x[0, 0, 0, :3] = [0.0, -0.0, np.nan]
    layer = LeakyReLU(slope)
    y = layer.forward(x)
    a = dtype(slope)
    np.testing.assert_array_equal(y, np.where(x > 0, x, x * a))  # NaN stays NaN
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx = layer.backward(dy)
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, dy * a))  # 1 or a, no rounding
    assert y.dtype == dx.dtype == dtype


def test_padding_keeps_the_layout_and_the_values(rng):
    from cnnrun.nn.conv import crop2d, pad2d

    x = rng.standard_normal((3, 2, 5, 4))
    pads = (1, 2, 0, 3)
    want = np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 3)), constant_values=-np.inf)
    batch_last = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    for layout, order in ((x, (0, 1, 2, 3)), (batch_last, (1, 2, 3, 0))):
        padded = pad2d(layout, pads, -np.inf)
        np.testing.assert_array_equal(padded, want)
        assert padded.transpose(order).flags.c_contiguous  # laid out as its input
        np.testing.assert_array_equal(crop2d(padded, pads, x.shape[2:]), x)
    assert pad2d(x, (0, 0, 0, 0)) is x


def test_activation_values(rng):
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    np.testing.assert_array_equal(ReLU().forward(x), [[0, 0, 0, 0.5, 3.0]])
    np.testing.assert_allclose(LeakyReLU(0.1).forward(x), [[-0.2, -0.05, 0, 0.5, 3.0]])
    np.testing.assert_allclose(Tanh().forward(x), np.tanh(x), rtol=1e-15)
    np.testing.assert_allclose(Sigmoid().forward(x), 1 / (1 + np.exp(-x)), rtol=1e-15)
    # no overflow warning or NaN far out in the tails
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = Sigmoid().forward(np.array([-1000.0, 1000.0]))
    np.testing.assert_array_equal(y, [0.0, 1.0])
    # the kink: ReLU's gradient at exactly 0 is 0, as in PyTorch
    relu = ReLU()
    relu.forward(x)
    np.testing.assert_array_equal(relu.backward(np.ones_like(x)), [[0, 0, 0, 1, 1]])


def test_flatten_gradients_and_order(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    layer = Flatten()
    y = layer.forward(x)
    assert y.shape == (2, 60)
    np.testing.assert_array_equal(y[1, 20:40], x[1, 1].ravel())  # (C, H, W) order, as PyTorch
    assert_grads_ok(layer_grad_errors(layer, x, rng))


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients(bias, rng):
    layer = Linear(7, 5, bias=bias, rng=rng, dtype=np.float64)
    errors = layer_grad_errors(layer, rng.standard_normal((4, 7)), rng)
    assert set(errors) == ({"input", "weight", "bias"} if bias else {"input", "weight"})
    assert_grads_ok(errors)


def test_linear_forward_values():
    layer = Linear(3, 2, dtype=np.float64)
    layer.weight.data[...] = [[1, 2, 3], [0, -1, 0]]
    layer.bias.data[...] = [0.5, -0.5]
    np.testing.assert_array_equal(layer.forward(np.array([[1.0, 1.0, 2.0]])), [[9.5, -1.5]])


# --- pooling ----------------------------------------------------------------------------------


POOLS = [
    ((2, 2), None, (0, 0)),
    ((3, 3), (2, 2), (1, 1)),  # overlapping windows, padding
    ((2, 3), (3, 2), (1, 1)),  # non-square, strides that do not divide
    ((3, 2), (1, 2), (1, 0)),
    ((4, 4), (3, 3), (2, 2)),  # padding of half the kernel
]


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
@pytest.mark.parametrize("kernel, stride, padding", POOLS)
def test_pool_gradients(cls, kernel, stride, padding, rng):
    layer = cls(kernel, stride, padding)
    x = spaced_values((2, 3, 7, 8), rng)  # no near-ties for max pooling
    assert_grads_ok(layer_grad_errors(layer, x, rng))


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([MaxPool2d, AvgPool2d]),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(5, 9),
    st.integers(5, 9),
)
def test_pool_gradients_random(cls, kh, kw, sh, sw, h, w):
    rng = np.random.default_rng(h * 10 + w)
    padding = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
    layer = cls((kh, kw), (sh, sw), padding)
    x = spaced_values((1, 2, h, w), rng)
    assert_grads_ok(layer_grad_errors(layer, x, rng))


def test_avgpool_counts_padding_as_zeros():
    # PyTorch's count_include_pad=True: a corner window of a padded 2x2 pool sees 1 pixel of 4
    y = AvgPool2d(2, stride=2, padding=1).forward(np.ones((1, 1, 4, 4)))
    np.testing.assert_array_equal(y[0, 0], [[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]])


def test_maxpool_padding_never_wins():
    y = MaxPool2d(3, stride=1, padding=1).forward(-np.ones((1, 1, 3, 3)))
    np.testing.assert_array_equal(y, -np.ones((1, 1, 3, 3)))


def test_maxpool_routes_each_dy_once_to_the_first_maximum():
    layer = MaxPool2d(2, stride=1)
    x = np.zeros((1, 1, 3, 3))  # every window is a tie
    layer.forward(x)
    dx = layer.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    # each window's first (top-left) pixel takes its dY; nothing is duplicated or lost
    np.testing.assert_array_equal(dx[0, 0], [[1, 2, 0], [3, 4, 0], [0, 0, 0]])


# --- dropout ---------------------------------------------------------------------------------


def test_dropout_gradients_with_a_fixed_mask(rng):
    layer = Dropout(0.3, rng=np.random.default_rng(5))

    def rewind():
        layer.rng = np.random.default_rng(5)

    x = rng.standard_normal((4, 3, 5, 5))
    rewind()
    y = layer.forward(x)
    dropped = y == 0
    assert 0.15 < dropped.mean() < 0.45  # about p of them, not 0 or all
    np.testing.assert_allclose(y[~dropped], x[~dropped] / 0.7, rtol=1e-15)  # inverted scaling
    assert_grads_ok(layer_grad_errors(layer, x, rng, before=rewind))


def test_dropout_eval_is_identity_and_p1_drops_everything(rng):
    x = rng.standard_normal((3, 4))
    layer = Dropout(0.5, rng=rng).eval()
    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)
    all_dropped = Dropout(1.0, rng=rng)
    np.testing.assert_array_equal(all_dropped.forward(x), np.zeros_like(x))
    np.testing.assert_array_equal(all_dropped.backward(x), np.zeros_like(x))


# --- batch norm ------------------------------------------------------------------------------


def random_batchnorm(rng, channels=3):
    layer = BatchNorm2d(channels).to(np.float64)
    layer.weight.data[...] = rng.uniform(0.5, 2.0, channels)
    layer.bias.data[...] = rng.standard_normal(channels)
    layer.running_mean[...] = rng.standard_normal(channels)
    layer.running_var[...] = rng.uniform(0.5, 2.0, channels)
    return layer


@pytest.mark.parametrize("shape", [(4, 3, 3, 5), (2, 3, 1, 1)])
def test_batchnorm_train_gradients(shape, rng):
    layer = random_batchnorm(rng).train()
    x = rng.standard_normal(shape) * 2 + 1
    errors = layer_grad_errors(layer, x, rng)
    assert set(errors) == {"input", "weight", "bias"}
    assert_grads_ok(errors)


def test_batchnorm_eval_gradients(rng):
    layer = random_batchnorm(rng).eval()
    assert_grads_ok(layer_grad_errors(layer, rng.standard_normal((3, 3, 4, 2)), rng))


def test_batchnorm_train_statistics(rng):
    layer = random_batchnorm(rng).train()
    mean0, var0 = layer.running_mean.copy(), layer.running_var.copy()
    x = rng.standard_normal((5, 3, 4, 3)) * 3 + 2
    y = layer.forward(x)
    xhat = (y - layer.bias.data[None, :, None, None]) / layer.weight.data[None, :, None, None]
    np.testing.assert_allclose(xhat.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(
        xhat.var(axis=(0, 2, 3)), 1 / (1 + 1e-5 / x.var(axis=(0, 2, 3))), rtol=1e-12
    )
    # running estimates move 10% towards the batch mean and the *unbiased* variance
    np.testing.assert_allclose(
        layer.running_mean, 0.9 * mean0 + 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-12
    )
    np.testing.assert_allclose(
        layer.running_var, 0.9 * var0 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-12
    )
    assert int(layer.num_batches_tracked) == 1
    layer.eval()
    mean1 = layer.running_mean.copy()
    layer.forward(x)
    np.testing.assert_array_equal(layer.running_mean, mean1)  # eval leaves them alone


# --- losses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n, k", [(6, 5), (1, 3), (8, 2)])
def test_cross_entropy_gradients(n, k, rng):
    logits = rng.standard_normal((n, k)) * 3
    labels = rng.integers(0, k, n)
    loss = CrossEntropyLoss()
    value = loss.forward(logits, labels)
    # the definition: mean over the batch of logsumexp(z) - z[label]
    expected = np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(n), labels])
    assert abs(value - expected) < 1e-12 * max(1.0, abs(expected))
    analytic = loss.backward()
    numeric = finite_diff(lambda: loss.forward(logits, labels), logits)
    assert rel_err(analytic, numeric) < GRAD_TOL


def test_cross_entropy_is_stable_for_large_logits():
    loss = CrossEntropyLoss()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss.forward(np.array([[1000.0, 0.0], [0.0, 1000.0]]), np.array([1, 1]))
    assert value == pytest.approx(500.0)
    np.testing.assert_allclose(loss.backward(), [[0.5, -0.5], [0.0, 0.0]], atol=1e-15)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)])
def test_mse_gradients(shape, rng):
    outputs, targets = rng.standard_normal(shape), rng.standard_normal(shape)
    loss = MSELoss()
    value = loss.forward(outputs, targets)
    assert abs(value - np.mean((outputs - targets) ** 2)) < 1e-14
    analytic = loss.backward()
    numeric = finite_diff(lambda: loss.forward(outputs, targets), outputs)
    assert rel_err(analytic, numeric) < GRAD_TOL


# --- a whole network, and accumulation --------------------------------------------------------


def test_whole_network_gradients(rng):
    net = small_net(rng)
    drop = net["drop"]

    def rewind():
        drop.rng = np.random.default_rng(9)

    x = rng.standard_normal((3, 2, 7, 9))
    errors = layer_grad_errors(net, x, rng, before=rewind)
    assert len(errors) == 2 + 2 * 4  # input, conv1.weight; weight and bias of bn1 conv2 fc1 fc2
    assert_grads_ok(errors)


def test_backward_adds_into_grad_until_zero_grad(rng):
    layer = Conv2d(2, 3, 3, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 2, 5, 6))
    dy = rng.standard_normal(layer.forward(x).shape)
    layer.backward(dy)
    once = layer.weight.grad.copy()
    assert np.abs(once).max() > 0
    layer.forward(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.weight.grad, 2 * once, rtol=1e-14)
    layer.zero_grad()
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


@pytest.mark.parametrize("backend", ["numpy", "reference"])
def test_backward_without_input_grad_gives_the_same_parameter_grads(backend, rng, monkeypatch):
    x = rng.standard_normal((3, 2, 7, 9))
    grads = []
    for input_grad in (True, False):
        net = small_net(np.random.default_rng(4)).set_backend(backend)
        out = net.forward(x)
        dx = net.backward(np.random.default_rng(5).standard_normal(out.shape), input_grad)
        assert (dx is None) == (not input_grad)
        grads.append([p.grad.copy() for p in net.parameters()])
    for with_dx, without in zip(*grads):
        np.testing.assert_array_equal(with_dx, without)
    # and the first conv's full convolution for dX is really skipped
    calls = []
    kernels = net["conv1"].kernels
    full = kernels.conv2d_grad_input
    monkeypatch.setattr(kernels, "conv2d_grad_input", lambda *args: calls.append(1) or full(*args))
    net.backward(np.ones_like(out), input_grad=False)
    assert len(calls) == 1  # conv2's only
