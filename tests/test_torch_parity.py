"""Every layer and loss against torch.nn.functional, loaded with the layer's own weights, the
same input and the same random upstream gradient: float64 within 1e-10 and float32 within 1e-4
of the scale of each result. Skipped where PyTorch is not installed."""

import numpy as np
import pytest
from helpers import CONV_CASES, ConvCase, conv_cases, pool_cases, rel_err
from hypothesis import given, settings

from cnnrun.nn import (
    AvgPool2d,
    BatchNorm2d,
    CrossEntropyLoss,
    LeakyReLU,
    Linear,
    MaxPool2d,
    MSELoss,
    ReLU,
    Sigmoid,
    Tanh,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)
pytestmark = [
    pytest.mark.torch,
    # torch warns that 'same' with an even kernel pads a copy of the input: that is the case
    pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning"),
]

TOL = {np.float64: 1e-10, np.float32: 1e-4}
DTYPES = [np.float64, np.float32]


def t(a, grad=False):
    """A torch tensor sharing nothing with the NumPy array (the engine may keep its input)."""
    return torch.from_numpy(np.array(a, copy=True)).requires_grad_(grad)


def assert_close(errors: dict, dtype):
    assert max(errors.values()) < TOL[dtype], errors


# --- conv -------------------------------------------------------------------------------------


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def torch_conv(case: ConvCase, layer, x, w, b):
    """PyTorch's own idea of each padding mode, not the engine's: padding='same' for stride 1,
    explicit (d(k-1), d(k-1)) for 'full'; only 'same' with a stride (which PyTorch refuses)
    and 4-tuples pad with F.pad by the engine's ``layer.pads``."""
    stride, dilation, padding = pair(case.stride), pair(case.dilation), case.padding
    kernel = pair(case.kernel)
    if padding == "same" and stride == (1, 1):
        return F.conv2d(x, w, b, stride, "same", dilation)
    if padding == "full":
        full = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
        return F.conv2d(x, w, b, stride, full, dilation)
    if padding == "valid" or isinstance(padding, int) or len(padding) == 2:
        return F.conv2d(x, w, b, stride, padding, dilation)
    top, bottom, left, right = layer.pads(x.shape[2:])
    return F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride, 0, dilation)


def conv_errors(case: ConvCase, dtype) -> dict[str, float]:
    rng = np.random.default_rng(case.h * 31 + case.w)
    layer = case.layer(rng, dtype=dtype)
    x = rng.standard_normal(case.x_shape).astype(dtype)
    y = layer.forward(x)
    G = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(G)
    xt, wt, bt = t(x, True), t(layer.weight.data, True), t(layer.bias.data, True)
    yt = torch_conv(case, layer, xt, wt, bt)
    assert tuple(yt.shape) == y.shape
    yt.backward(t(G))
    assert y.dtype == dx.dtype == layer.weight.grad.dtype == dtype
    return {
        "y": rel_err(y, yt.detach().numpy()),
        "dX": rel_err(dx, xt.grad.numpy()),
        "dW": rel_err(layer.weight.grad, wt.grad.numpy()),
        "db": rel_err(layer.bias.grad, bt.grad.numpy()),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv_named_cases(name, dtype):
    assert_close(conv_errors(CONV_CASES[name], dtype), dtype)


@pytest.mark.slow  # 100 random cases; the named ones above stay in the quick loop
@settings(max_examples=100, deadline=None)
@given(conv_cases())
def test_conv_random_shapes(case):
    for dtype in DTYPES:
        assert_close(conv_errors(case, dtype), dtype)


# --- pooling -------------------------------------------------------------------------------------


def pool_errors(cls, shape, kernel, stride, padding, dtype, integer_valued, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape) if integer_valued else rng.standard_normal(shape)
    x = x.astype(dtype)
    layer = cls(kernel, stride, padding)
    y = layer.forward(x)
    G = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(G)
    fn = F.max_pool2d if cls is MaxPool2d else F.avg_pool2d
    xt = t(x, True)
    yt = fn(xt, kernel, stride, padding)
    assert tuple(yt.shape) == y.shape
    yt.backward(t(G))
    return {"y": rel_err(y, yt.detach().numpy()), "dX": rel_err(dx, xt.grad.numpy())}


@pytest.mark.slow  # 60 random cases
@settings(max_examples=60, deadline=None)
@given(pool_cases())
def test_pools_random_shapes(case):
    for cls in (MaxPool2d, AvgPool2d):
        for integer_valued in (False, True):
            for dtype in DTYPES:
                assert_close(pool_errors(cls, *case, dtype, integer_valued), dtype)


@pytest.mark.parametrize(
    "kernel, stride, padding",
    [
        (2, 2, 0),
        (3, 1, 1),
        (3, 2, 1),
        ((2, 3), (1, 2), (1, 1)),
        (4, 3, 2),
    ],
)
def test_maxpool_ties_route_each_dy_once_like_torch(kernel, stride, padding):
    rng = np.random.default_rng(0)
    for x in (
        np.zeros((2, 2, 7, 8)),  # every window a tie
        rng.integers(0, 2, (2, 2, 7, 8)).astype(float),
    ):  # many ties
        layer = MaxPool2d(kernel, stride, padding)
        y = layer.forward(x)
        G = rng.integers(1, 10, y.shape).astype(float)  # exact sums
        dx = layer.backward(G)
        assert dx.sum() == G.sum()  # nothing lost or doubled
        xt = t(x, True)
        F.max_pool2d(xt, kernel, stride, padding).backward(t(G))
        np.testing.assert_array_equal(dx, xt.grad.numpy())  # the same pixel each time


# --- element-wise, linear ------------------------------------------------------------------------


ACTIVATIONS = [
    (ReLU(), F.relu),
    (LeakyReLU(), lambda x: F.leaky_relu(x, 0.01)),
    (LeakyReLU(0.3), lambda x: F.leaky_relu(x, 0.3)),
    (Tanh(), torch.tanh),
    (Sigmoid(), torch.sigmoid),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "layer, fn", ACTIVATIONS, ids=["relu", "leaky_relu", "leaky_relu_0.3", "tanh", "sigmoid"]
)
def test_activations(layer, fn, dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 4, 5, 6)) * 4).astype(dtype)
    x[0, 0, 0, :3] = [0.0, 40.0, -40.0]  # the kink and far into the tails
    y = layer.forward(x)
    G = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(G)
    xt = t(x, True)
    yt = fn(xt)
    yt.backward(t(G))
    assert y.dtype == dx.dtype == dtype
    assert_close({"y": rel_err(y, yt.detach().numpy()), "dX": rel_err(dx, xt.grad.numpy())}, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear(dtype, bias):
    rng = np.random.default_rng(2)
    layer = Linear(13, 7, bias=bias, rng=rng, dtype=dtype)
    x = rng.standard_normal((5, 13)).astype(dtype)
    y = layer.forward(x)
    G = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(G)
    xt, wt = t(x, True), t(layer.weight.data, True)
    bt = t(layer.bias.data, True) if bias else None
    yt = F.linear(xt, wt, bt)
    yt.backward(t(G))
    errors = {
        "y": rel_err(y, yt.detach().numpy()),
        "dX": rel_err(dx, xt.grad.numpy()),
        "dW": rel_err(layer.weight.grad, wt.grad.numpy()),
    }
    if bias:
        errors["db"] = rel_err(layer.bias.grad, bt.grad.numpy())
    assert_close(errors, dtype)


# --- batch norm -----------------------------------------------------------------------------------


def batchnorm_pair(dtype, rng, channels=4):
    layer = BatchNorm2d(channels, eps=1e-3, momentum=0.2).to(dtype)
    twin = torch.nn.BatchNorm2d(channels, eps=1e-3, momentum=0.2).to(
        torch.float64 if dtype == np.float64 else torch.float32
    )
    layer.weight.data[...] = rng.uniform(0.5, 2.0, channels)
    layer.bias.data[...] = rng.standard_normal(channels)
    layer.running_mean[...] = rng.standard_normal(channels)
    layer.running_var[...] = rng.uniform(0.5, 2.0, channels)
    twin.load_state_dict({k: t(v) for k, v in layer.state_dict().items()})
    return layer, twin


def batchnorm_step(layer, twin, x, G):
    y = layer.forward(x)
    layer.zero_grad()
    dx = layer.backward(G)
    twin.zero_grad()
    xt = t(x, True)
    yt = twin(xt)
    yt.backward(t(G))
    return {
        "y": rel_err(y, yt.detach().numpy()),
        "dX": rel_err(dx, xt.grad.numpy()),
        "dgamma": rel_err(layer.weight.grad, twin.weight.grad.numpy()),
        "dbeta": rel_err(layer.bias.grad, twin.bias.grad.numpy()),
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_train_output_grads_and_running_stats(dtype):
    rng = np.random.default_rng(3)
    layer, twin = batchnorm_pair(dtype, rng)
    for _ in range(3):
        x = (rng.standard_normal((5, 4, 3, 6)) * 2 + 1).astype(dtype)
        G = rng.standard_normal(x.shape).astype(dtype)
        errors = batchnorm_step(layer.train(), twin.train(), x, G)
        errors["running_mean"] = rel_err(layer.running_mean, twin.running_mean.numpy())
        errors["running_var"] = rel_err(layer.running_var, twin.running_var.numpy())
        assert_close(errors, dtype)
    assert int(layer.num_batches_tracked) == int(twin.num_batches_tracked) == 3


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_eval(dtype):
    rng = np.random.default_rng(4)
    layer, twin = batchnorm_pair(dtype, rng)
    x = (rng.standard_normal((3, 4, 5, 2)) * 2).astype(dtype)
    G = rng.standard_normal(x.shape).astype(dtype)
    assert_close(batchnorm_step(layer.eval(), twin.eval(), x, G), dtype)


# --- losses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k", [(7, 10), (1, 2), (16, 3)])
def test_cross_entropy(dtype, n, k):
    rng = np.random.default_rng(n * k)
    logits = (rng.standard_normal((n, k)) * 5).astype(dtype)
    labels = rng.integers(0, k, n)
    loss = CrossEntropyLoss()
    value = loss.forward(logits, labels)
    grad = loss.backward()
    assert grad.dtype == dtype
    zt = t(logits, True)
    lt = F.cross_entropy(zt, torch.from_numpy(labels))
    lt.backward()
    assert_close({"loss": rel_err(value, lt.item()), "dz": rel_err(grad, zt.grad.numpy())}, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 4, 5)])
def test_mse(dtype, shape):
    rng = np.random.default_rng(5)
    out, target = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    loss = MSELoss()
    value = loss.forward(out, target)
    grad = loss.backward()
    assert grad.dtype == dtype
    ot = t(out, True)
    lt = F.mse_loss(ot, t(target))
    lt.backward()
    assert_close({"loss": rel_err(value, lt.item()), "dy": rel_err(grad, ot.grad.numpy())}, dtype)
