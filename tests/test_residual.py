"""Residual blocks and global pooling: gradients against finite differences in float64, names
through nesting, and the error for paths that disagree. (The same numbers on every backend:
tests/test_backends.py; against PyTorch: tests/test_residual_parity.py.)"""

import numpy as np
import pytest
from helpers import GRAD_TOL, layer_grad_errors
from residual_nets import X_SHAPE, block, randomise_batch_norm, residual_net

from cnnrun import nn
from cnnrun.errors import ShapeError
from cnnrun.nn import (
    BatchNorm2d,
    Conv2d,
    GlobalAvgPool2d,
    Linear,
    Residual,
    Sequential,
    Tanh,
)


@pytest.mark.parametrize(
    "c_in, c_out, stride, shape",
    [(3, 3, 1, (2, 3, 5, 7)), (2, 3, 2, (2, 2, 7, 6)), (2, 2, (2, 1), (1, 2, 5, 4))],
    ids=["identity", "projection-stride2", "projection-stride2x1"],
)
def test_a_residual_block_matches_finite_differences(rng, c_in, c_out, stride, shape):
    res = block(rng, c_in, c_out, stride, act=Tanh)
    randomise_batch_norm(res, rng)
    assert (res.shortcut is None) == (stride == 1 and c_in == c_out)
    errors = layer_grad_errors(res, rng.standard_normal(shape), rng)
    names = {n for n, _ in res.named_parameters()}
    assert names <= set(errors) and "input" in errors
    assert max(errors.values()) < GRAD_TOL, errors


@pytest.mark.slow  # about 1 s: the quick loop stays under a minute
def test_a_residual_network_matches_finite_differences(rng):
    net = residual_net(seed=1, act=Tanh)
    errors = layer_grad_errors(net, rng.standard_normal(X_SHAPE), rng)
    assert len(errors) == len(net.parameters()) + 1  # every parameter, and the input
    assert max(errors.values()) < GRAD_TOL, errors


def test_the_identity_adds_dy_to_the_branch_gradient(rng):
    """dX = dX_branch + dY exactly: the backward of the identity shortcut is dY itself."""
    res = block(rng, 2, 2, 1, act=Tanh)
    x = rng.standard_normal((2, 2, 4, 5))
    y = res.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = res.backward(dy)
    res.branch.forward(x)
    np.testing.assert_array_equal(dx, res.branch.backward(dy) + dy)
    np.testing.assert_array_equal(y, res.branch.forward(x) + x)


def test_global_avg_pool_is_the_mean_of_each_map_flattened(rng):
    pool = GlobalAvgPool2d()
    x = rng.standard_normal((3, 4, 5, 2))
    y = pool.forward(x)
    assert y.shape == (3, 4)
    np.testing.assert_allclose(y, x.mean(axis=(2, 3)), rtol=1e-14)
    errors = layer_grad_errors(pool, x, rng)
    assert errors["input"] < GRAD_TOL, errors
    x32 = x.astype(np.float32)
    assert pool.forward(x32).dtype == np.float32
    assert pool.backward(np.ones((3, 4), np.float32)).dtype == np.float32
    with pytest.raises(ShapeError, match=r"GlobalAvgPool2d: expected a floating \(N, C, H, W\)"):
        pool.forward(np.zeros((3, 4)))


def test_paths_that_disagree_are_one_line_naming_the_block_and_both_shapes(rng):
    res = Residual(Sequential([("conv", Conv2d(2, 3, 3, stride=2, padding=1, rng=rng))]))
    net = Sequential([("block7", res)])
    with pytest.raises(ShapeError) as err:
        net.forward(np.zeros((1, 2, 8, 6), np.float32))
    text = str(err.value)
    assert "\n" not in text
    assert "block7" in text and "(1, 3, 4, 3)" in text and "(1, 2, 8, 6)" in text


def test_named_modules_walks_the_network_in_order_with_dotted_names():
    net = residual_net()
    names = [n for n, _ in net.named_modules()]
    assert names[:9] == [
        "",
        "conv1",
        "bn1",
        "act1",
        "block1",
        "block1.branch",
        "block1.branch.conv1",
        "block1.branch.bn1",
        "block1.branch.act1",
    ]
    assert names[names.index("block1.branch.bn2") + 1 :][:3] == [
        "block1.shortcut",
        "block1.shortcut.conv",
        "block1.shortcut.bn",
    ]
    assert "block2.shortcut" not in names  # the identity is no module
    for name, module in net.named_modules():
        if name:
            assert module.name == name and net[name] is module
    convs = [n for n, m in net.named_modules() if isinstance(m, Conv2d)]
    assert convs == [
        "conv1",
        "block1.branch.conv1",
        "block1.branch.conv2",
        "block1.shortcut.conv",
        "block2.branch.conv1",
        "block2.branch.conv2",
    ]
    with pytest.raises(KeyError):
        net["block1.branch.conv9"]


def test_parameters_and_state_are_keyed_by_path_in_network_order():
    net = residual_net()
    names = [p.name for p in net.parameters()]
    assert names == [n for n, _ in net.named_parameters()]
    assert names[:5] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "block1.branch.conv1.weight",
        "block1.branch.bn1.weight",
    ]
    assert "block1.shortcut.conv.weight" in names and names[-2:] == ["fc.weight", "fc.bias"]
    state = net.state_dict()
    assert list(state)[3:7] == [
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "block1.branch.conv1.weight",
    ]
    other = residual_net(seed=5)
    other.load_state_dict(state)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_modes_dtypes_backends_and_zero_grad_reach_every_nested_layer(rng):
    net = residual_net(dtype=np.float32)
    inner = [m for _, m in net.named_modules()]
    net.eval()
    assert not any(m.training for m in inner)
    net.train()
    assert all(m.training for m in inner)
    net.set_backend("numba")
    assert all(m.backend == "numba" for m in inner)
    net.to(np.float64)
    assert all(p.data.dtype == p.grad.dtype == np.float64 for p in net.parameters())
    bn = net["block1.shortcut.bn"]
    assert bn.running_mean.dtype == np.float64
    x = rng.standard_normal(X_SHAPE)
    net.forward(x)
    net.backward(rng.standard_normal((3, 3)))
    assert all(np.any(p.grad != 0) for p in net.parameters())
    net.zero_grad()
    assert not any(np.any(p.grad) for p in net.parameters())


def test_nn_initialize_reaches_the_layers_inside_blocks(rng):
    net = residual_net()
    before = net["block1.branch.conv1"].weight.data.copy()
    nn.initialize(net, "he_normal", rng)
    assert not np.array_equal(net["block1.branch.conv1"].weight.data, before)


def test_a_residual_of_linear_layers_works_on_features(rng):
    """Nothing in Residual is about images: an (N, F) block with a Linear branch."""
    res = Residual([Linear(5, 5, rng=rng, dtype=np.float64), Tanh()])
    assert [n for n, _ in res.named_parameters()] == ["branch.0.weight", "branch.0.bias"]
    errors = layer_grad_errors(res, rng.standard_normal((4, 5)), rng)
    assert max(errors.values()) < GRAD_TOL, errors


def test_a_batch_norm_in_the_shortcut_learns_from_the_shortcut_alone(rng):
    """Its gradients are those of the shortcut path: zero if the branch is cut off."""
    res = block(rng, 2, 3, 2, act=Tanh)
    x = rng.standard_normal((2, 2, 6, 5))
    dy = rng.standard_normal(res.forward(x).shape)
    res.backward(dy)
    grad = res.shortcut[1].bias.grad.copy()
    np.testing.assert_allclose(grad, dy.sum(axis=(0, 2, 3)), rtol=1e-12)  # db = sum_NHW dY
    assert isinstance(res.shortcut[1], BatchNorm2d)
