"""Oracles shared by the engine tests: finite differences, error measures, random conv shapes.

Everything here is independent of the engine's own checking code (``cnnrun.gradcheck``), so a
bug there cannot hide a bug in a layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from cnnrun.nn import (
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)

EPS = 1e-6  # finite-difference step in float64
GRAD_TOL = 1e-6  # largest relative error accepted against finite differences


def rel_err(a, b) -> float:
    """``max |a - b| / max(|a|, |b|)``: the error relative to the scale of the two arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    diff = float(np.max(np.abs(a - b), initial=0.0))
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
    return 0.0 if diff == 0.0 else diff / max(scale, np.finfo(np.float64).tiny)


def finite_diff(f, array: np.ndarray, G: np.ndarray | None = None, eps: float = EPS) -> np.ndarray:
    """Central differences of a scalar function of ``array`` (changed in place, then restored).

    With ``G``, ``f()`` returns the layer output y and the scalar is the projection
    ``sum(G * y)``: its difference is taken as ``sum(G * (y+ - y-))``, which loses fewer digits.
    """
    assert array.dtype == np.float64 and array.flags.c_contiguous
    flat = array.reshape(-1)  # a view: writing it perturbs what the layer reads
    grad = np.empty(flat.size)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = np.array(f(), copy=True)  # a copy: the output may be a view of the input
        flat[i] = old - eps
        down = np.array(f(), copy=True)
        flat[i] = old
        grad[i] = (np.sum(G * (up - down)) if G is not None else up - down) / (2 * eps)
    return grad.reshape(array.shape)


def layer_grad_errors(
    layer,
    x: np.ndarray,
    rng: np.random.Generator,
    before=None,
    eps: float = EPS,
    allow_zero: bool = False,
) -> dict[str, float]:
    """Relative errors of ``layer``'s input gradient and every parameter gradient against
    central finite differences of ``loss = sum(G * layer(x))``, G random (never all ones).

    ``before()`` runs before every forward pass (to rewind a dropout generator).
    Unless ``allow_zero`` (a random shape may put every window in the padding), a gradient that
    is zero everywhere fails: it would make the comparison vacuous.
    """
    assert x.dtype == np.float64

    def forward():
        if before is not None:
            before()
        return layer.forward(x)

    y = forward()
    G = rng.standard_normal(y.shape)
    layer.zero_grad()
    analytic = {"input": layer.backward(G)}
    analytic.update({name: p.grad.copy() for name, p in layer.named_parameters()})
    numeric = {"input": finite_diff(forward, x, G, eps)}
    numeric.update(
        {name: finite_diff(forward, p.data, G, eps) for name, p in layer.named_parameters()}
    )
    for name in analytic:
        assert allow_zero or np.abs(numeric[name]).max() > 1e-3, f"{name}: gradient is ~0"
    return {name: rel_err(analytic[name], numeric[name]) for name in analytic}


class Projection:
    """A loss for ``cnnrun.gradcheck``: ``forward(y, G) = sum(G * y)``, ``backward() = G``."""

    def forward(self, y, G) -> float:
        self._G = G
        return float(np.sum(G * y))

    def backward(self):
        return self._G


# --- conv shapes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvCase:
    """One conv layer and input: (n, c, h, w) -> f filters."""

    n: int
    c: int
    f: int
    h: int
    w: int
    kernel: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: str | int | tuple = "valid"
    dilation: int | tuple[int, int] = 1

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    def layer(self, rng, dtype=np.float64, bias=True):
        return Conv2d(
            self.c,
            self.f,
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
            bias=bias,
            rng=rng,
            dtype=dtype,
        )


def run_conv(case: ConvCase, backend: str, dtype) -> dict[str, np.ndarray]:
    """y, dX, dW and db of one forward and backward pass on one backend: the weights from
    ``default_rng(1)``, x and then dY from ``default_rng(2)``, the same every time."""
    layer = case.layer(np.random.default_rng(1), dtype=dtype).set_backend(backend)
    data = np.random.default_rng(2)
    x = data.standard_normal(case.x_shape).astype(dtype)
    y = layer.forward(x)
    dy = data.standard_normal(y.shape).astype(dtype)  # random: a uniform dY hides layout bugs
    dx = layer.backward(dy)
    return {"y": y, "dX": dx, "dW": layer.weight.grad, "db": layer.bias.grad}


def conv_term_scales(case: ConvCase) -> dict[str, np.ndarray]:
    """For the pass that the backend comparisons make (weights from ``default_rng(1)``, x and
    then dY from ``default_rng(2)``), the sum of the absolute values of the terms behind each
    y, dX, dW and db: the loops in float64 on |W|, |b|, |x| and |dY|.

    Two float32 sums of the same terms in different orders differ by a few roundings of this
    sum, not of the result, which terms that cancel can make as small as they like (a dW or
    db of a single entry summed over the batch, say)."""
    layer = case.layer(np.random.default_rng(1), dtype=np.float64).set_backend("reference")
    for p in layer.parameters():
        np.abs(p.data, out=p.data)
    data = np.random.default_rng(2)
    x = data.standard_normal(case.x_shape)
    y = layer.forward(np.abs(x))
    dx = layer.backward(np.abs(data.standard_normal(y.shape)))
    return {"y": y, "dX": dx, "dW": layer.weight.grad, "db": layer.bias.grad}


F64_TOL = 1e-12  # float64: only the summation order differs
F32_CONV_TOL = 1e-5  # float32 conv: rounding, relative to the sum of |terms|


def check_numba_conv(case: ConvCase) -> None:
    """The numba backend's y, dX, dW and db of ``case`` against the plain loops and NumPy, in
    float64 and float32, each error relative to the sum of the |terms| behind each element:
    two orders of one sum differ by roundings of that, not of the result, which cancelling
    terms can make as small as they like (a float64 db of 81 terms of about 1 that summed to
    -0.0014 differed by 1.0e-12 of itself, 2e-17 of its terms)."""
    scales = conv_term_scales(case)
    for dtype, tol in ((np.float64, F64_TOL), (np.float32, F32_CONV_TOL)):
        got = run_conv(case, "numba", dtype)
        for other in ("reference", "numpy"):
            want = run_conv(case, other, dtype)
            for key in got:
                assert got[key].dtype == dtype, (key, got[key].dtype)
                assert got[key].shape == want[key].shape, key
                err = term_err(got[key], want[key], scales[key])
                assert err < tol, (case, key, dtype, other, err)


def term_err(a, b, scale) -> float:
    """``max |a - b| / scale``, element by element, with ``scale`` from :func:`conv_term_scales`;
    where the scale is 0 (no terms), a and b must both be exactly 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape == np.shape(scale), (a.shape, b.shape, np.shape(scale))
    diff = np.abs(a - b)
    return float(np.max(diff / np.maximum(scale, np.finfo(np.float64).tiny), initial=0.0))


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


# Named cases that random draws might miss: each is in the list.
CONV_CASES = {
    "11x28_k2x3_valid": ConvCase(2, 2, 3, 11, 28, (2, 3)),
    "11x28_k2x3_same": ConvCase(2, 2, 3, 11, 28, (2, 3), padding="same"),
    "11x28_k2x3_full": ConvCase(1, 2, 2, 11, 28, (2, 3), padding="full"),
    "11x28_k2x3_stride3_same": ConvCase(2, 1, 2, 11, 28, (2, 3), stride=3, padding="same"),
    "even_k4_same": ConvCase(2, 2, 2, 7, 9, 4, padding="same"),
    "even_k2x4_same": ConvCase(1, 3, 2, 6, 5, (2, 4), padding="same"),
    "stride2_uneven": ConvCase(2, 2, 3, 9, 8, 3, stride=2),
    "stride3_uneven": ConvCase(2, 1, 2, 11, 10, (3, 2), stride=3),
    "stride2_same": ConvCase(2, 2, 2, 9, 10, 3, stride=2, padding="same"),
    "stride_2x3_same_even_k": ConvCase(1, 2, 2, 10, 11, (4, 2), stride=(2, 3), padding="same"),
    "dilation2_valid": ConvCase(2, 2, 2, 9, 8, 3, dilation=2),
    "dilation2_same": ConvCase(1, 2, 2, 8, 9, (3, 2), dilation=2, padding="same"),
    "dilation2_full_stride2": ConvCase(1, 1, 2, 6, 7, 2, stride=2, dilation=2, padding="full"),
    "padding0": ConvCase(2, 2, 2, 6, 7, 3, padding=0),
    "padding_int2": ConvCase(1, 2, 3, 5, 6, 3, padding=2),
    "padding_pair_1_2": ConvCase(2, 1, 2, 5, 7, (3, 2), padding=(1, 2)),
    "padding_4tuple": ConvCase(2, 2, 2, 6, 5, (2, 3), padding=(0, 2, 1, 0)),
    "padding_4tuple_stride2": ConvCase(1, 2, 2, 7, 8, 3, stride=2, padding=(1, 0, 2, 1)),
    "batch1_channel1": ConvCase(1, 1, 1, 5, 6, 2),
    "1x1_kernel_stride2": ConvCase(2, 3, 2, 5, 6, 1, stride=2),
    "kernel_equals_input": ConvCase(2, 2, 3, 4, 3, (4, 3)),
}


@st.composite
def conv_cases(
    draw, max_extra: int = 6, images=(1, 2), channels=(1, 3), filters=(1, 3)
) -> ConvCase:
    """Random conv layers and inputs: non-square sizes and kernels, strides 1-3 that need not
    divide the size, dilation 1-2, every padding mode, ints, pairs and 4-tuples; the counts of
    images, channels and filters in the inclusive ranges given."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.sampled_from([1, 2, 3, (1, 2), (2, 1), (2, 3), (3, 1)]))
    dilation = draw(st.sampled_from([1, 1, 2, (1, 2), (2, 1)]))
    padding = draw(
        st.one_of(
            st.sampled_from(["valid", "same", "full"]),
            st.integers(0, 2),
            st.tuples(st.integers(0, 2), st.integers(0, 2)),
            st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
        )
    )
    if padding in ("same", "full"):
        pad_hw = (10**6, 10**6)  # any size fits
    elif padding == "valid":
        pad_hw = (0, 0)
    elif isinstance(padding, int):
        pad_hw = (2 * padding, 2 * padding)
    elif len(padding) == 2:
        pad_hw = (2 * padding[0], 2 * padding[1])
    else:
        pad_hw = (padding[0] + padding[1], padding[2] + padding[3])
    dil = _pair(dilation)
    sizes = []
    for k, d, p in zip(kernel, dil, pad_hw):
        smallest = max(1, d * (k - 1) + 1 - p)  # the padded input must hold the dilated kernel
        sizes.append(draw(st.integers(smallest, smallest + max_extra)))
    return ConvCase(
        n=draw(st.integers(*images)),
        c=draw(st.integers(*channels)),
        f=draw(st.integers(*filters)),
        h=sizes[0],
        w=sizes[1],
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
    )


@st.composite
def pool_cases(draw):
    """(x shape, kernel, stride, padding) for pooling: padding at most half the kernel."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    h = draw(st.integers(max(1, kernel[0] - 2 * padding[0]), 9))
    w = draw(st.integers(max(1, kernel[1] - 2 * padding[1]), 9))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)
    return shape, kernel, stride, padding


def small_net(rng, dtype=np.float64, dropout_rng=None):
    """Every layer type in one net, for (2, 7, 9) inputs and 3 classes."""
    return Sequential(
        [
            ("conv1", Conv2d(2, 3, (2, 3), padding="same", bias=False, rng=rng, dtype=dtype)),
            ("bn1", BatchNorm2d(3, dtype=dtype)),
            ("relu1", ReLU()),
            ("pool1", MaxPool2d(2, padding=1)),
            ("conv2", Conv2d(3, 4, 3, stride=2, padding="same", rng=rng, dtype=dtype)),
            ("act2", LeakyReLU(0.1)),
            ("pool2", AvgPool2d(2, stride=1)),
            ("flat", Flatten()),
            ("drop", Dropout(0.25, rng=dropout_rng or np.random.default_rng(0))),
            ("fc1", Linear(8, 5, rng=rng, dtype=dtype)),
            ("act3", Sigmoid()),
            ("fc2", Linear(5, 3, rng=rng, dtype=dtype)),
            ("act4", Tanh()),
        ]
    )


def fc1_inputs(padding: str, size: int = 32) -> int:
    """16 maps of the image after conv 5x5, pool 2, conv 5x5, pool 2."""
    for _ in range(2):
        size = (size if padding == "same" else size - 4) // 2
    return 16 * size * size


def lenet(padding: str, seed: int = 0, dtype=np.float64) -> Sequential:
    """LeNet-5 for 1x32x32 inputs; under 'same' the convs keep the size, so fc1 grows."""
    rng = np.random.default_rng(seed)
    kw = {"rng": rng, "dtype": dtype}
    return Sequential(
        [
            ("conv1", Conv2d(1, 6, 5, padding=padding, **kw)),
            ("tanh1", Tanh()),
            ("pool1", AvgPool2d(2)),
            ("conv2", Conv2d(6, 16, 5, padding=padding, **kw)),
            ("tanh2", Tanh()),
            ("pool2", AvgPool2d(2)),
            ("flatten", Flatten()),
            ("fc1", Linear(fc1_inputs(padding), 120, **kw)),
            ("tanh3", Tanh()),
            ("fc2", Linear(120, 84, **kw)),
            ("tanh4", Tanh()),
            ("fc3", Linear(84, 10, **kw)),
        ]
    )


def spaced_values(shape, rng: np.random.Generator) -> np.ndarray:
    """Distinct values at least 0.01 apart in random order: no max-pool window has a near-tie
    that a finite-difference step could flip."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.01 - size * 0.005 + 0.003).reshape(shape)


def assert_same_bits_at_any_thread_count(kernels) -> None:
    """``kernels()`` (a list of arrays computed by numba kernels) run on 1, 2 and 3 threads
    gives the same bits each time; the thread count is put back after."""
    from cnnrun.backends.numba import common

    before = common.threads()
    try:
        results = []
        for threads in (1, 2, 3):
            common.set_threads(threads)
            results.append(kernels())
    finally:
        common.set_threads(before)
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)
            # bit for bit: -0.0 against 0.0 and NaN payloads too, which the above lets pass
            assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()
