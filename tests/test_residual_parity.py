"""Residual networks against PyTorch in float64: blocks with and without a projection, with a
stride, inside a network (forward, dX and every parameter's gradient, for a random upstream
gradient and non-square inputs); the whole resnet20 after loading PyTorch's weights; and ten
steps of SGD with momentum that follow PyTorch's. Skipped where PyTorch is not installed.

The twins follow the rule of cnnrun/bench/twin.py (through tests/torch_twins.py): the same
tree of modules under the same names, so that the state dicts load into each other unchanged."""

import numpy as np
import pytest
from helpers import rel_err
from residual_nets import X_SHAPE, block, randomise_batch_norm, residual_net
from runner_helpers import compose_config
from torch_twins import to_torch, torch, torch_module, torch_twin

from cnnrun.models import build_model
from cnnrun.nn import CrossEntropyLoss
from cnnrun.optim import SGD
from cnnrun.run.config import model_spec

torch.set_num_threads(1)
pytestmark = [
    pytest.mark.torch,
    # torch warns that 'same' with an even kernel pads a copy of the input: that is the case
    pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning"),
]
TOL = 1e-10  # float64, relative to the scale of each tensor
F = torch.nn.functional


def compare_pass(net, twin, x: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """One forward and backward pass of both, with the same random upstream gradient G: the
    relative error of y, dX and every parameter's gradient."""
    y = net.forward(x)
    G = rng.standard_normal(y.shape)
    net.zero_grad()
    dx = net.backward(G)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = twin(xt)
    yt.backward(torch.from_numpy(G))
    errors = {"y": rel_err(y, yt.detach().numpy()), "dX": rel_err(dx, xt.grad.numpy())}
    grads = {k: v.grad.numpy() for k, v in twin.named_parameters()}
    assert list(grads) == [p.name for p in net.parameters()]  # the same names, the same order
    errors.update({p.name: rel_err(p.grad, grads[p.name]) for p in net.parameters()})
    return errors


@pytest.mark.parametrize(
    "c_in, c_out, stride, shape",
    [
        (3, 3, 1, (2, 3, 6, 9)),
        (2, 4, 2, (3, 2, 9, 6)),
        (3, 3, 2, (2, 3, 7, 8)),  # same channels, but a stride: a projection
        (2, 3, (1, 2), (2, 2, 5, 11)),
    ],
    ids=["identity", "projection-stride2", "stride2-same-channels", "projection-stride1x2"],
)
def test_a_residual_block_matches_pytorch(rng, c_in, c_out, stride, shape):
    res = block(rng, c_in, c_out, stride)
    randomise_batch_norm(res, rng)
    errors = compare_pass(res, torch_twin(res), rng.standard_normal(shape), rng)
    assert max(errors.values()) < TOL, errors


def test_a_residual_network_matches_pytorch(rng):
    net = residual_net(seed=2)
    twin = torch_twin(net)
    errors = compare_pass(net, twin, rng.standard_normal(X_SHAPE), rng)
    assert len(errors) == len(net.parameters()) + 2
    assert max(errors.values()) < TOL, errors
    twin_state = twin.state_dict()  # the running statistics moved alike
    for key, value in net.state_dict().items():
        assert rel_err(value, twin_state[key].numpy()) < TOL, key


def resnet20(image: int, seed: int = 0):
    cfg = compose_config(["model=resnet20", "data=cifar10", f"data.image_size={image}"])
    net = build_model(model_spec(cfg), (3, image, image), rng=np.random.default_rng(seed))
    return net.to(np.float64)


def test_resnet20_with_pytorch_s_weights_matches_pytorch(rng):
    net = resnet20(12)
    torch.manual_seed(0)
    twin = torch_module(net).double()  # PyTorch's own initial weights
    with torch.no_grad():  # and batch-norm parameters that are not 1 and 0
        for name, p in twin.named_parameters():
            if ".bn" in name or name.startswith("bn"):
                p.uniform_(0.5, 1.5)
    state = twin.state_dict()
    assert list(state) == list(net.state_dict())  # the rule: the same keys, in the same order
    net.load_state_dict(state)
    errors = compare_pass(net, twin, rng.standard_normal((4, 3, 12, 12)), rng)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("make", [pytest.param("resnet20", marks=pytest.mark.slow), "residual_net"])
def test_ten_sgd_momentum_steps_follow_pytorch(make):
    net = resnet20(8) if make == "resnet20" else residual_net(seed=4)
    twin = torch_twin(net)
    initial = net.state_dict()
    opt = SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss_fn, data = CrossEntropyLoss(), np.random.default_rng(1)
    shape = (6, 3, 8, 8) if make == "resnet20" else X_SHAPE
    classes = net.parameters()[-1].shape[0]
    for step in range(10):
        x, labels = data.standard_normal(shape), data.integers(0, classes, shape[0])
        opt.zero_grad()
        loss = loss_fn.forward(net.forward(x), labels)
        net.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        twin_opt.zero_grad()
        twin_loss = F.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels))
        twin_loss.backward()
        twin_opt.step()
        assert rel_err(loss, twin_loss.item()) < 1e-8, (step, loss, twin_loss.item())
        twin_state = twin.state_dict()
        for key, value in net.state_dict().items():
            assert rel_err(value, twin_state[key].numpy()) < 1e-8, (step, key)
    moved = [k for k, v in net.state_dict().items() if rel_err(v, initial[k]) > 1e-4]
    assert len(moved) == len(initial), set(initial) - set(moved)  # every tensor moved


def test_state_dicts_move_both_ways(rng):
    net = residual_net(seed=6)
    net.forward(rng.standard_normal(X_SHAPE))  # running statistics that are not 0 and 1
    twin = torch_module(net).double()
    twin.load_state_dict(to_torch(net.state_dict()))  # strict: every key matches
    back = residual_net(seed=7)
    back.load_state_dict(twin.state_dict())  # tensors load directly
    for key, value in back.state_dict().items():
        np.testing.assert_array_equal(value, net.state_dict()[key], err_msg=key)
