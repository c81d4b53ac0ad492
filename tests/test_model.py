"""Sequential and the layers as a user meets them: state_dict, dtypes, backends, initialisation
and the errors a bad parameter gives."""

import numpy as np
import pytest
from helpers import small_net

from cnnrun.errors import CheckpointError, ConfigError
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
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
    initialize,
)
from cnnrun.optim import SGD, Adam

# --- state_dict ------------------------------------------------------------------------------


def mixed_net(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(
        [
            ("conv1", Conv2d(1, 2, 3, rng=rng)),
            ReLU(),  # unnamed: "1"
            BatchNorm2d(2),  # unnamed: "2"
            ("pool", MaxPool2d(2)),
            Flatten(),
            ("fc", Linear(32, 3, rng=rng)),
            Linear(3, 2, bias=False, rng=rng),  # unnamed: "6"
        ]
    )


def test_state_dict_keys_shapes_and_parameter_names():
    net = mixed_net()
    state = net.state_dict()
    assert list(state) == [
        "conv1.weight",
        "conv1.bias",
        "2.weight",
        "2.bias",
        "2.running_mean",
        "2.running_var",
        "2.num_batches_tracked",
        "fc.weight",
        "fc.bias",
        "6.weight",
    ]
    assert state["conv1.weight"].shape == (2, 1, 3, 3)  # (out, in, kh, kw) as in PyTorch
    assert state["fc.weight"].shape == (3, 32)  # (out, in)
    assert [p.name for p in net.parameters()] == [
        "conv1.weight",
        "conv1.bias",
        "2.weight",
        "2.bias",
        "fc.weight",
        "fc.bias",
        "6.weight",
    ]
    unnamed = Sequential(Conv2d(1, 2, 3), Tanh(), Linear(2, 2))
    assert list(unnamed.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_state_dict_round_trip_through_a_file(tmp_path, rng):
    source, target = mixed_net(seed=1), mixed_net(seed=2)
    x = rng.standard_normal((3, 1, 10, 10)).astype(np.float32)
    source.forward(x)  # moves batch-norm running stats
    np.savez(tmp_path / "ckpt.npz", **source.state_dict())
    with np.load(tmp_path / "ckpt.npz") as saved:
        target.load_state_dict(dict(saved))
    for (k, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    source.eval(), target.eval()
    np.testing.assert_array_equal(source.forward(x), target.forward(x))


def test_state_dict_holds_copies():
    net = mixed_net()
    state = net.state_dict()
    before = net["conv1"].weight.data.copy()
    state["conv1.weight"][...] = 7.0
    np.testing.assert_array_equal(net["conv1"].weight.data, before)
    net.load_state_dict(state)
    state["conv1.weight"][...] = 8.0  # loading copies in, too
    np.testing.assert_array_equal(net["conv1"].weight.data, 7.0)


def assert_unchanged(net, state):
    for (k, a), b in zip(net.state_dict().items(), state.values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_load_state_dict_names_missing_unexpected_and_wrong_shapes():
    net = mixed_net()
    good = net.state_dict()
    other = mixed_net(seed=5).state_dict()

    missing = {k: v for k, v in other.items() if k != "fc.bias"}
    with pytest.raises(CheckpointError, match=r"missing.*fc\.bias"):
        net.load_state_dict(missing)
    assert_unchanged(net, good)  # nothing is half-loaded

    unexpected = {**other, "conv9.weight": np.zeros(3)}
    with pytest.raises(CheckpointError, match=r"unexpected.*conv9\.weight"):
        net.load_state_dict(unexpected)
    assert_unchanged(net, good)

    wrong = {**other, "fc.weight": np.zeros((3, 33), np.float32)}
    with pytest.raises(CheckpointError) as info:
        net.load_state_dict(wrong)
    assert "fc.weight" in str(info.value) and "(3, 33)" in str(info.value)
    assert "(3, 32)" in str(info.value)
    assert_unchanged(net, good)

    net.load_state_dict(missing, strict=False)  # strict=False tolerates a missing key
    np.testing.assert_array_equal(net["fc"].weight.data, other["fc.weight"])
    np.testing.assert_array_equal(net["fc"].bias.data, good["fc.bias"])


# --- dtypes and backends ---------------------------------------------------------------------


def layer_cases():
    rng = np.random.default_rng(0)
    return [
        ("conv_same", Conv2d(2, 3, (3, 2), padding="same", rng=rng), (2, 2, 6, 7)),
        (
            "conv_stride_dilation",
            Conv2d(2, 2, 2, stride=2, dilation=2, padding=1, rng=rng),
            (2, 2, 7, 6),
        ),
        ("maxpool", MaxPool2d(3, 2, 1), (2, 2, 6, 7)),
        ("avgpool", AvgPool2d((2, 3), (2, 1), (1, 1)), (2, 2, 6, 7)),
        ("relu", ReLU(), (2, 3, 4, 4)),
        ("leaky_relu", LeakyReLU(0.1), (2, 3, 4, 4)),
        ("tanh", Tanh(), (2, 3, 4, 4)),
        ("sigmoid", Sigmoid(), (2, 3, 4, 4)),
        ("flatten", Flatten(), (2, 3, 4, 4)),
        ("linear", Linear(5, 4, rng=rng), (3, 5)),
        ("dropout", Dropout(0.5, rng=rng), (3, 5)),
        ("batchnorm_train", BatchNorm2d(3), (4, 3, 2, 2)),
        ("batchnorm_eval", BatchNorm2d(3).eval(), (4, 3, 2, 2)),
    ]


@pytest.mark.parametrize("backend", ["numpy", "reference"])
@pytest.mark.parametrize(
    "index", range(len(layer_cases())), ids=[name for name, _, _ in layer_cases()]
)
def test_float32_in_float32_out(index, backend, rng):
    _, layer, shape = layer_cases()[index]
    layer.set_backend(backend)
    x = rng.standard_normal(shape).astype(np.float32)
    y = layer.forward(x)
    dx = layer.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert y.dtype == np.float32 and dx.dtype == np.float32
    assert dx.shape == x.shape
    for p in layer.parameters():
        assert p.data.dtype == np.float32 and p.grad.dtype == np.float32, p.name
        assert np.abs(p.grad).max() > 0, p.name  # the gradient did arrive
    for name, buffer in layer.named_buffers():
        if name != "num_batches_tracked":
            assert buffer.dtype == np.float32, name


@pytest.mark.parametrize("backend", ["numpy", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", [SGD, Adam])
def test_whole_network_keeps_its_dtype(dtype, backend, optimizer, rng):
    net = small_net(rng, dtype=np.float32).to(dtype).set_backend(backend)
    assert all(p.data.dtype == dtype and p.grad.dtype == dtype for p in net.parameters())
    assert net["bn1"].running_var.dtype == dtype
    opt = optimizer(net.parameters(), lr=0.01, **({"momentum": 0.9} if optimizer is SGD else {}))
    loss = CrossEntropyLoss()
    x = rng.standard_normal((4, 2, 7, 9)).astype(dtype)
    for _ in range(2):
        opt.zero_grad()
        out = net.forward(x)
        assert out.dtype == dtype
        loss.forward(out, rng.integers(0, 3, 4))
        dlogits = loss.backward()
        assert dlogits.dtype == dtype
        assert net.backward(dlogits).dtype == dtype
        opt.step()
    for p in net.parameters():
        assert p.data.dtype == dtype and p.grad.dtype == dtype, p.name
    assert net["bn1"].running_mean.dtype == dtype
    assert all(v.dtype == dtype for state in opt.state for v in state.values())


@pytest.mark.parametrize("other", ["reference", "numba"])
def test_backends_agree_on_a_whole_network(other, rng):
    x = rng.standard_normal((3, 2, 7, 9))
    results = {}
    for backend in ("numpy", other):
        net = small_net(np.random.default_rng(4)).set_backend(backend)
        assert all(layer.backend == backend for layer in net)
        out = net.forward(x)
        dx = net.backward(np.random.default_rng(5).standard_normal(out.shape))
        results[backend] = [out, dx] + [p.grad for p in net.parameters()]
    for a, b in zip(*results.values()):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12 * np.abs(b).max())


# --- initialisation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, fan_in",
    [
        (lambda rng: Conv2d(3, 8, (3, 5), rng=rng), 45),
        (lambda rng: Conv2d(16, 4, 1, rng=rng), 16),
        (lambda rng: Linear(100, 50, rng=rng), 100),
    ],
)
def test_default_init_has_pytorch_bounds(make, fan_in):
    layer = make(np.random.default_rng(0))
    bound = 1 / np.sqrt(fan_in)
    for p in (layer.weight, layer.bias):
        assert np.abs(p.data).max() <= bound
    # and spreads over the whole interval (a wrong fan_in would give another bound)
    assert np.abs(layer.weight.data).max() > 0.8 * bound
    assert abs(layer.weight.data.std() - bound / np.sqrt(3)) < 0.15 * bound


@pytest.mark.parametrize(
    "scheme, variance, dist",
    [
        ("he_normal", lambda fi, fo: 2 / fi, "normal"),
        ("he", lambda fi, fo: 2 / fi, "normal"),
        ("he_uniform", lambda fi, fo: 2 / fi, "uniform"),
        ("xavier_uniform", lambda fi, fo: 2 / (fi + fo), "uniform"),
        ("glorot", lambda fi, fo: 2 / (fi + fo), "uniform"),
        ("xavier_normal", lambda fi, fo: 2 / (fi + fo), "normal"),
        ("lecun_normal", lambda fi, fo: 1 / fi, "normal"),
        ("lecun_uniform", lambda fi, fo: 1 / fi, "uniform"),
    ],
)
def test_init_scheme_statistics(scheme, variance, dist):
    layer = Conv2d(32, 64, 3, init=scheme, rng=np.random.default_rng(1), dtype=np.float64)
    w = layer.weight.data  # 18432 values
    std = np.sqrt(variance(32 * 9, 64 * 9))
    assert abs(w.mean()) < 0.03 * std
    assert abs(w.std() / std - 1) < 0.03
    if dist == "uniform":
        assert np.abs(w).max() <= np.sqrt(3) * std
        assert np.abs(w).max() > 0.99 * np.sqrt(3) * std
    else:
        assert np.abs(w).max() > 3.5 * std  # tails a uniform cannot have
    np.testing.assert_array_equal(layer.bias.data, 0)


def test_same_seed_same_weights_and_dtype_independent():
    a = Conv2d(3, 4, 3, rng=np.random.default_rng(7))
    b = Conv2d(3, 4, 3, rng=np.random.default_rng(7))
    c = Conv2d(3, 4, 3, rng=np.random.default_rng(8))
    d = Conv2d(3, 4, 3, rng=np.random.default_rng(7), dtype=np.float64)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    np.testing.assert_array_equal(a.weight.data, d.weight.data.astype(np.float32))
    # two layers of one shape from one generator differ (no re-seeding inside the library)
    rng = np.random.default_rng(7)
    e, f = Conv2d(3, 4, 3, rng=rng), Conv2d(3, 4, 3, rng=rng)
    assert not np.array_equal(e.weight.data, f.weight.data)
    net = initialize(small_net(np.random.default_rng(0)), "he", np.random.default_rng(3))
    again = initialize(small_net(np.random.default_rng(1)), "he", np.random.default_rng(3))
    for p, q in zip(net.parameters(), again.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def test_building_and_running_layers_leaves_the_global_rng_alone():
    np.random.seed(1234)  # noqa: NPY002 - the legacy global RNG is what is checked
    before = np.random.get_state()  # noqa: NPY002
    net = small_net(np.random.default_rng(0))
    Conv2d(2, 2, 3), Linear(3, 3), Dropout(0.5)  # no rng given: still not global
    initialize(net, "xavier")
    net.forward(np.ones((2, 2, 7, 9), np.float32))
    after = np.random.get_state()  # noqa: NPY002
    assert before[0] == after[0] and before[2:] == after[2:]
    np.testing.assert_array_equal(before[1], after[1])


# --- bad parameters ----------------------------------------------------------------------------


def test_bad_padding_names_the_value_and_the_choices():
    with pytest.raises(ConfigError) as info:
        Conv2d(1, 1, 3, padding="smae")
    message = str(info.value)
    assert "'smae'" in message and "same" in message and "valid" in message
    with pytest.raises(ConfigError, match="-1"):
        Conv2d(1, 1, 3, padding=-1)
    with pytest.raises(ConfigError, match="padding"):
        MaxPool2d(2, padding=2)  # more than half the kernel


@pytest.mark.parametrize(
    "kwargs, value",
    [
        ({"kernel_size": 0}, "0"),
        ({"kernel_size": (3, 0)}, "(3, 0)"),
        ({"stride": 0}, "0"),
        ({"dilation": -1}, "-1"),
    ],
)
def test_bad_sizes_name_the_value(kwargs, value):
    args = {"in_channels": 1, "out_channels": 1, "kernel_size": 3, **kwargs}
    with pytest.raises(ConfigError) as info:
        Conv2d(**args)
    assert value in str(info.value)
    assert next(iter(kwargs)) in str(info.value)


@pytest.mark.parametrize("optimizer", [SGD, Adam])
def test_negative_learning_rate_is_refused(optimizer):
    with pytest.raises(ConfigError, match=r"-0\.1"):
        optimizer(Linear(2, 2).parameters(), lr=-0.1)


def test_unknown_backend_and_init_are_refused():
    with pytest.raises(ConfigError) as info:
        small_net(np.random.default_rng(0)).set_backend("cuda")
    assert "'cuda'" in str(info.value) and "numpy" in str(info.value)
    with pytest.raises(ConfigError) as info:
        Conv2d(1, 1, 3, init="orthogonal")
    assert "'orthogonal'" in str(info.value) and "he_normal" in str(info.value)
    with pytest.raises(ConfigError, match="'bogus'"):
        initialize(Sequential(Linear(2, 2)), "bogus")


@pytest.mark.parametrize(
    "x", [np.ones((2, 4), np.int64), np.ones((2, 3), np.float32), np.ones((2, 4, 1), np.float32)]
)
def test_linear_refuses_what_it_cannot_compute(x):
    from cnnrun.errors import ShapeError

    with pytest.raises(ShapeError, match="expected a floating"):
        Linear(4, 2, rng=np.random.default_rng(0)).forward(x)


def test_dropout_with_a_non_number_is_a_config_error():
    with pytest.raises(ConfigError, match="invalid dropout probability 'abc'"):
        Dropout("abc")
