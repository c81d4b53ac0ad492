"""SGD and Adam against torch.optim, step by step from the same random gradients, and the
optimiser state_dict round trip."""

import numpy as np
import pytest
from helpers import rel_err

from cnnrun.errors import CheckpointError
from cnnrun.nn import Parameter
from cnnrun.optim import SGD, Adam

SHAPES = [(3, 4), (5,), (2, 3, 2, 2)]
STEPS = 5
TOL = {np.float64: 1e-12, np.float32: 1e-5}

CONFIGS = [
    ("sgd", SGD, {"lr": 0.1}),
    ("sgd_momentum", SGD, {"lr": 0.1, "momentum": 0.9}),
    ("sgd_dampening", SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    ("sgd_nesterov", SGD, {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    ("sgd_weight_decay", SGD, {"lr": 0.1, "weight_decay": 0.01}),
    ("sgd_all", SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05}),
    (
        "sgd_dampening_decay",
        SGD,
        {"lr": 0.05, "momentum": 0.7, "dampening": 0.5, "weight_decay": 0.1},
    ),
    ("adam", Adam, {"lr": 0.01}),
    ("adam_betas_eps", Adam, {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6}),
    ("adam_weight_decay", Adam, {"lr": 0.01, "weight_decay": 0.1}),
]
IDS = [name for name, _, _ in CONFIGS]


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype), f"p{i}") for i, s in enumerate(SHAPES)]


def gradient_sequence(dtype, steps=STEPS, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]


def engine_step(opt, params, grads):
    opt.zero_grad()
    for p, g in zip(params, grads):
        p.grad += g  # as backward does: add into the zeroed grad
    opt.step()


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, cls, kwargs", CONFIGS, ids=IDS)
def test_matches_torch_optim(name, cls, kwargs, dtype, torch):
    params = make_params(dtype)
    twins = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
    opt = cls(params, **kwargs)
    twin_opt = getattr(torch.optim, cls.__name__)(twins, **kwargs)
    for step, grads in enumerate(gradient_sequence(dtype)):
        if step == 3:  # a scheduler changes lr between steps
            opt.lr = twin_opt.param_groups[0]["lr"] = kwargs["lr"] / 2
        engine_step(opt, params, grads)
        twin_opt.zero_grad()
        for q, g in zip(twins, grads):
            q.grad = torch.from_numpy(g.copy())
        twin_opt.step()
        for p, q in zip(params, twins):
            assert p.data.dtype == dtype
            err = rel_err(p.data, q.detach().numpy())
            assert err < TOL[dtype], (name, step, p.name, err)
    # and the optimiser state itself: momentum buffers, Adam's moments
    for state, q in zip(opt.state, twins):
        for key, value in state.items():
            assert value.dtype == dtype
            assert rel_err(value, twin_opt.state[q][key].numpy()) < TOL[dtype], key
    if kwargs.get("momentum") or cls is Adam:
        assert all(opt.state)  # the state was really compared


@pytest.mark.parametrize("name, cls, kwargs", CONFIGS, ids=IDS)
def test_state_dict_round_trip_continues_identically(name, cls, kwargs):
    grads = gradient_sequence(np.float64, steps=6)
    params = make_params(np.float64)
    opt = cls(params, **kwargs)
    for g in grads[:3]:
        engine_step(opt, params, g)
    saved = opt.state_dict()
    # a fresh optimiser over a copy of the parameters, as after loading a checkpoint
    params2 = [Parameter(p.data.copy(), p.name) for p in params]
    opt2 = cls(params2, lr=123.0)  # hyperparameters come from the state dict too
    opt2.load_state_dict(saved)
    for state in saved["state"]:  # the loaded state is a copy, not shared
        for value in state.values():
            value[...] = np.nan
    for g in grads[3:]:
        engine_step(opt, params, g)
        engine_step(opt2, params2, g)
    for p, q in zip(params, params2):
        np.testing.assert_array_equal(p.data, q.data)
    assert opt2.steps == opt.steps == 6


def test_load_state_dict_of_another_optimiser_is_refused():
    params = make_params(np.float64)
    sgd = SGD(params, lr=0.1, momentum=0.9)
    engine_step(sgd, params, gradient_sequence(np.float64, steps=1)[0])
    with pytest.raises(CheckpointError, match="SGD"):
        Adam(params).load_state_dict(sgd.state_dict())
    other = [Parameter(p.data.copy(), "q" + p.name) for p in params]
    with pytest.raises(CheckpointError, match="p0"):
        SGD(other, lr=0.1, momentum=0.9).load_state_dict(sgd.state_dict())


def test_zero_grad_clears_every_gradient():
    params = make_params(np.float32)
    for p in params:
        p.grad += 1
    SGD(params, lr=0.1).zero_grad()
    assert all(not p.grad.any() for p in params)
