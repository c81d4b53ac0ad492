"""Optimisers with PyTorch's update rules, for lists of :class:`cnnrun.nn.Parameter`.

SGD (``torch.optim.SGD``), with ``g = grad + weight_decay * w``::

    b = g                                  first step
    b = momentum * b + (1 - dampening) * g  later steps
    g = g + momentum * b  if nesterov else b
    w = w - lr * g

Adam (``torch.optim.Adam``, L2 weight decay added to the gradient), at step t::

    m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
    w = w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Every optimiser is registered by name (:func:`register`): the runner's config schema for
``optim=<name>`` is made from its constructor's typed arguments, so adding an optimiser is its
class here, its ``conf/optim/<name>.yaml`` and its test.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping

import numpy as np

from .errors import CheckpointError, ConfigError


def _check(name: str, value, ok: bool, accepted: str) -> float:
    if not ok:
        raise ConfigError(f"invalid {name} {value!r}: expected {accepted}")
    return float(value)


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value)


OPTIMIZERS: dict[str, type[Optimizer]] = {}


def register(name: str) -> Callable[[type[Optimizer]], type[Optimizer]]:
    """Class decorator: the optimiser is ``optim=<name>`` in configs and :func:`create`."""

    def add(cls: type[Optimizer]) -> type[Optimizer]:
        OPTIMIZERS[name] = cls
        return cls

    return add


def hyperparameters(cls: type[Optimizer]) -> list[inspect.Parameter]:
    """The constructor's arguments after ``params``: what a config may set."""
    return list(inspect.signature(cls.__init__).parameters.values())[2:]


def create(name: str, params, hyper: Mapping) -> Optimizer:
    """The optimiser registered as ``name`` over ``params``, with the ``hyper`` values its
    constructor takes (lists become tuples); a :class:`ConfigError` for an unknown name."""
    cls = OPTIMIZERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")
    kwargs = {}
    for p in hyperparameters(cls):
        if p.name in hyper:
            v = hyper[p.name]
            kwargs[p.name] = tuple(v) if isinstance(v, (list, tuple)) else v
    return cls(params, **kwargs)


class Optimizer:
    """Base: holds the parameters, per-parameter state and hyperparameters (``lr`` may change)."""

    hyper: tuple[str, ...] = ()
    state_keys: tuple[str, ...] = ()

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ConfigError("optimizer got an empty parameter list")
        self.lr = _check("lr", lr, _finite(lr) and lr >= 0, "a float >= 0")
        self.state: list[dict[str, np.ndarray]] = [{} for _ in self.params]
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad.fill(0)

    def step(self) -> None:
        self.steps += 1
        for p, state in zip(self.params, self.state):
            self._update(p, state)

    def _update(self, p, state) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Hyperparameters, the step count, parameter names and per-parameter state arrays."""
        return {
            "type": type(self).__name__,
            "hyper": {"lr": self.lr, **{k: getattr(self, k) for k in self.hyper}},
            "steps": self.steps,
            "param_names": [p.name for p in self.params],
            "state": [{k: v.copy() for k, v in s.items()} for s in self.state],
        }

    def load_state_dict(self, state: dict) -> None:
        names = [p.name for p in self.params]
        if state.get("type") != type(self).__name__ or list(state.get("param_names", [])) != names:
            raise CheckpointError(
                f"optimizer state is for {state.get('type')} over "
                f"{list(state.get('param_names', []))}, not {type(self).__name__} over {names}"
            )
        for s, p in zip(state["state"], self.params):
            for k, v in s.items():
                if np.shape(v) != p.data.shape:
                    raise CheckpointError(
                        f"optimizer state {k} of {p.name} has shape "
                        f"{np.shape(v)}, expected {p.data.shape}"
                    )
        for k, v in state["hyper"].items():
            setattr(self, k, tuple(v) if isinstance(v, (list, tuple)) else v)
        self.steps = int(state["steps"])
        self.state = [
            {k: np.array(v, dtype=p.data.dtype) for k, v in s.items()}
            for s, p in zip(state["state"], self.params)
        ]


@register("sgd")
class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

    hyper = ("momentum", "dampening", "nesterov", "weight_decay")

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        self.momentum = _check(
            "momentum", momentum, _finite(momentum) and momentum >= 0, "a float >= 0"
        )
        self.dampening = _check("dampening", dampening, _finite(dampening), "a finite float")
        self.weight_decay = _check(
            "weight_decay",
            weight_decay,
            _finite(weight_decay) and weight_decay >= 0,
            "a float >= 0",
        )
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ConfigError("invalid nesterov=True: needs momentum > 0 and dampening = 0")
        self.nesterov = bool(nesterov)

    def _update(self, p, state) -> None:
        g = p.grad
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, dtype=p.data.dtype, copy=True)
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p.data -= self.lr * g


@register("adam")
class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, as ``torch.optim.Adam``."""

    hyper = ("betas", "eps", "weight_decay")

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        pair = tuple(betas) if isinstance(betas, (list, tuple)) else ()
        ok = len(pair) == 2 and all(_finite(b) and 0 <= b < 1 for b in pair)
        if not ok:
            raise ConfigError(f"invalid betas {betas!r}: expected two floats in [0, 1)")
        self.betas = (float(pair[0]), float(pair[1]))
        self.eps = _check("eps", eps, _finite(eps) and eps >= 0, "a float >= 0")
        self.weight_decay = _check(
            "weight_decay",
            weight_decay,
            _finite(weight_decay) and weight_decay >= 0,
            "a float >= 0",
        )

    def _update(self, p, state) -> None:
        b1, b2 = self.betas
        g = p.grad
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if "exp_avg" not in state:
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        t = self.steps
        step_size = self.lr / (1 - b1**t)
        denom = np.sqrt(v) / math.sqrt(1 - b2**t) + self.eps
        p.data -= step_size * (m / denom)
