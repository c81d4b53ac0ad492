"""Every backend has every function of :class:`cnnrun.backends.contract.Kernels`, with the same
parameter names, kinds and defaults (numba's public functions are plain Python wrappers)."""

from __future__ import annotations

import inspect
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from cnnrun.backends import BACKENDS, get_backend
from cnnrun.backends.contract import Kernels, kernel_names


def contract_parameters(name: str) -> list[tuple[str, object, object]]:
    params = list(inspect.signature(getattr(Kernels, name)).parameters.values())[1:]  # no self
    return [(p.name, p.kind, p.default) for p in params]


def breaches(module: ModuleType | SimpleNamespace) -> list[str]:
    """What ``module`` lacks or spells otherwise than the contract; empty when it complies."""
    found = []
    if not isinstance(getattr(module, "NAME", None), str):
        found.append("NAME: missing")
    for name in kernel_names():
        fn = getattr(module, name, None)
        if not callable(fn):
            found.append(f"{name}: missing")
            continue
        params = [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
        if params != contract_parameters(name):
            found.append(f"{name}: {params} != {contract_parameters(name)}")
    return found


def test_the_contract_lists_every_kernel():
    assert kernel_names() == (
        "native",
        "pad2d",
        "conv2d_forward",
        "conv2d_grad_weight",
        "conv2d_grad_input",
        "conv2d_grad_bias",
        "maxpool2d_forward",
        "maxpool2d_backward",
        "avgpool2d_forward",
        "avgpool2d_backward",
        "batchnorm2d_forward",
        "batchnorm2d_backward",
        "add",
        "relu_forward",
        "relu_backward",
        "leaky_relu_forward",
        "leaky_relu_backward",
        "tanh_forward",
        "tanh_backward",
        "sigmoid_forward",
        "sigmoid_backward",
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_keeps_the_contract(backend):
    module = get_backend(backend)
    assert breaches(module) == []
    assert module.NAME == backend


def copy_of(module: ModuleType, **changes) -> SimpleNamespace:
    fields = {name: getattr(module, name) for name in ("NAME", *kernel_names())}
    fields.update(changes)
    return SimpleNamespace(**{k: v for k, v in fields.items() if v is not None})


def test_a_missing_or_renamed_kernel_breaks_the_contract():
    numpy_backend = get_backend("numpy")
    assert breaches(copy_of(numpy_backend, tanh_backward=None)) == ["tanh_backward: missing"]

    def renamed(x_pad, w, strides, dilation):  # "stride" misspelt
        return numpy_backend.conv2d_forward(x_pad, w, strides, dilation)

    def no_default(x, gamma, beta, eps, mean, var=None):
        return numpy_backend.batchnorm2d_forward(x, gamma, beta, eps, mean, var)

    def keyword_only(x, *, negative_slope):
        return numpy_backend.leaky_relu_forward(x, negative_slope)

    for change in (
        {"conv2d_forward": renamed},
        {"batchnorm2d_forward": no_default},
        {"leaky_relu_forward": keyword_only},
    ):
        (name,) = change
        (problem,) = breaches(copy_of(numpy_backend, **change))
        assert problem.startswith(f"{name}: ")
    assert breaches(copy_of(numpy_backend, NAME=None)) == ["NAME: missing"]


# -- the activation kernels against the plain formulas ------------------------------------------

ACTIVATIONS = {
    "relu": {},
    "leaky_relu": {"negative_slope": 0.1},
    "tanh": {},
    "sigmoid": {},
}


def run_activation(backend: str, name: str, x: np.ndarray, dy: np.ndarray):
    kernels = get_backend(backend)
    y, ctx = getattr(kernels, f"{name}_forward")(x, **ACTIVATIONS[name])
    return y, getattr(kernels, f"{name}_backward")(dy, ctx)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-14), (np.float32, 1e-6)])
def test_activation_kernels_match_the_formulas(backend, name, dtype, tol):
    data = np.random.default_rng(11)
    x = (data.standard_normal((3, 4, 9, 7)) * 3).astype(dtype)
    x[0, 0, 0, :3] = [0.0, -0.0, 40.0]
    dy = data.standard_normal(x.shape).astype(dtype)
    got = run_activation(backend, name, x, dy)
    want = run_activation("reference", name, x, dy)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_kernels_propagate_nan(backend, name):
    x = np.array([[[[np.nan, 1.0, -1.0]]]])
    y, dx = run_activation(backend, name, x, np.ones_like(x))
    assert np.isnan(y[0, 0, 0, 0]) and np.isfinite(y[0, 0, 0, 1:]).all(), (backend, name)
    if name in ("tanh", "sigmoid"):  # dx from y: NaN
        assert np.isnan(dx[0, 0, 0, 0])
    else:  # NaN > 0 is false: the slope for x <= 0
        assert dx[0, 0, 0, 0] == ACTIVATIONS[name].get("negative_slope", 0.0)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activation_kernels_treat_infinities_and_nans_as_the_formulas_do(backend, name, dtype):
    # every pairing of x in {inf, -inf, NaN, 0, -0} with dy in {1, inf, NaN}: ReLU's backward is
    # a select (a non-finite dy where x <= 0 gives 0, not NaN), tanh and sigmoid saturate at
    # +-inf (y = +-1, 0 or 1; there dx is 0 for a finite dy and NaN for an infinite one)
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], dtype)
    x = np.repeat(special, 3).reshape(1, 1, 5, 3)
    dy = np.tile(np.array([1.0, np.inf, np.nan], dtype), 5).reshape(x.shape)
    with np.errstate(invalid="ignore"):
        got = run_activation(backend, name, x, dy)
        want = run_activation("reference", name, x, dy)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, w, err_msg=f"{backend} {name}")
