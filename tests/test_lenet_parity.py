"""LeNet-5 built with cnnrun.nn.Sequential, trained step by step beside the same network in
PyTorch, and state dicts moved both ways between the two."""

from collections import OrderedDict

import numpy as np
import pytest
from helpers import fc1_inputs, lenet, rel_err

from cnnrun.nn import (
    BatchNorm2d,
    Conv2d,
    CrossEntropyLoss,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
)
from cnnrun.optim import SGD

torch = pytest.importorskip("torch")
nn = torch.nn
torch.set_num_threads(1)
pytestmark = pytest.mark.torch

TOL = 1e-10  # float64, relative to the scale of each tensor


def test_fc1_inputs():
    assert fc1_inputs("valid") == 16 * 5 * 5  # 32 -> 28 -> 14 -> 10 -> 5
    assert fc1_inputs("same") == 16 * 8 * 8  # 32 -> 32 -> 16 -> 16 -> 8


def torch_lenet(padding: str) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 6, 5, padding=padding)),
                ("tanh1", nn.Tanh()),
                ("pool1", nn.AvgPool2d(2)),
                ("conv2", nn.Conv2d(6, 16, 5, padding=padding)),
                ("tanh2", nn.Tanh()),
                ("pool2", nn.AvgPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(fc1_inputs(padding), 120)),
                ("tanh3", nn.Tanh()),
                ("fc2", nn.Linear(120, 84)),
                ("tanh4", nn.Tanh()),
                ("fc3", nn.Linear(84, 10)),
            ]
        )
    ).double()


def to_torch(state: dict) -> dict:
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}


@pytest.mark.parametrize("padding", ["valid", pytest.param("same", marks=pytest.mark.slow)])
def test_lenet_trains_like_pytorch_step_by_step(padding):
    net, twin = lenet(padding), torch_lenet(padding)
    twin.load_state_dict(to_torch(net.state_dict()))
    initial = net.state_dict()
    opt = SGD(net.parameters(), lr=0.05, momentum=0.9)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    loss_fn, data = CrossEntropyLoss(), np.random.default_rng(1)
    for step in range(10):
        x = data.standard_normal((8, 1, 32, 32))
        labels = data.integers(0, 10, 8)

        opt.zero_grad()
        loss = loss_fn.forward(net.forward(x), labels)
        net.backward(loss_fn.backward())
        opt.step()

        twin_opt.zero_grad()
        twin_loss = nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(labels))
        twin_loss.backward()
        twin_opt.step()

        assert rel_err(loss, twin_loss.item()) < TOL, (step, loss, twin_loss.item())
        twin_state = twin.state_dict()
        for key, value in net.state_dict().items():
            err = rel_err(value, twin_state[key].numpy())
            assert err < TOL, (padding, step, key, err)
    # ten steps of lr 0.05 with momentum moved every tensor well beyond the tolerance
    for key, value in net.state_dict().items():
        assert rel_err(value, initial[key]) > 1e-4, key


def bn_net(seed: int) -> Sequential:
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2d(2, 4, 3, padding="same", bias=False, rng=rng),
        BatchNorm2d(4),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(4 * 3 * 4, 5, rng=rng),
    )


def torch_bn_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding="same", bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 4, 5),
    )


def test_state_dict_moves_to_pytorch_and_back():
    net, twin = bn_net(seed=0), torch_bn_net()
    # the same keys in the same order, so either state dict loads into the other model
    assert list(net.state_dict()) == list(twin.state_dict())
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 2, 6, 8)).astype(np.float32)
    net.forward(x)  # non-trivial running stats
    twin.load_state_dict(to_torch(net.state_dict()))
    net.eval(), twin.eval()
    with torch.no_grad():
        np.testing.assert_allclose(
            net.forward(x), twin(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6
        )

    # train the PyTorch model a little, then bring its weights back
    twin.train()
    opt = torch.optim.SGD(twin.parameters(), lr=0.5)
    out = twin(torch.from_numpy(x))
    nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    other = bn_net(seed=9)
    other.load_state_dict(twin.state_dict())  # tensors load directly
    for key, value in other.state_dict().items():
        expected = twin.state_dict()[key].numpy()
        np.testing.assert_array_equal(value, expected, err_msg=key)
        assert value.dtype == expected.dtype, key
    assert int(other[1].num_batches_tracked) == 2
    other.eval(), twin.eval()
    with torch.no_grad():
        np.testing.assert_allclose(
            other.forward(x), twin(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6
        )
