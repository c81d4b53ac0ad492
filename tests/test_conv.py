"""Conv2d: gradients against finite differences, output sizes, and the vectorised kernels against
the plain loops, over named and random (hypothesis) shapes."""

import contextlib
import math

import numpy as np
import pytest
from helpers import (
    CONV_CASES,
    GRAD_TOL,
    ConvCase,
    conv_cases,
    conv_term_scales,
    layer_grad_errors,
    pool_cases,
    rel_err,
    run_conv,
    term_err,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnrun.backends import gemm, numpy_conv
from cnnrun.errors import ShapeError
from cnnrun.nn import AvgPool2d, Conv2d, MaxPool2d

F64_TOL = 1e-12  # numpy vs reference in float64: only the summation order differs
F32_TOL = 1e-5  # ... and in float32, relative to the sum of |terms| (conv_term_scales)

CASE_IDS = list(CONV_CASES)


def expected_out_size(size, k, s, d, padding, axis) -> int:
    """The output size formulas of the design, written out independently of the engine."""
    span = d * (k - 1)
    if padding == "same":
        return size if s == 1 else math.ceil(size / s)
    if padding == "valid":
        lo = hi = 0
    elif padding == "full":
        lo = hi = span
    elif isinstance(padding, int):
        lo = hi = padding
    elif len(padding) == 2:
        lo = hi = padding[axis]
    else:
        lo, hi = padding[2 * axis], padding[2 * axis + 1]
    return (size + lo + hi - span - 1) // s + 1


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def check_output_shape(case: ConvCase):
    layer = case.layer(np.random.default_rng(0))
    y = layer.forward(np.zeros(case.x_shape))
    k, s, d = pair(case.kernel), pair(case.stride), pair(case.dilation)
    expected = tuple(
        expected_out_size(size, k[i], s[i], d[i], case.padding, i)
        for i, size in enumerate((case.h, case.w))
    )
    assert y.shape == (case.n, case.f, *expected)
    assert layer.output_shape(case.x_shape) == y.shape


# --- the forward pass, by hand -----------------------------------------------------------------


def test_forward_is_a_cross_correlation_with_bias():
    # y[i, j] = x[i, j] - x[i+1, j+1] + b: the kernel is *not* flipped (as in every DL library)
    x = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 4)  # rows differ by 4, columns by 1
    layer = Conv2d(1, 1, 2, dtype=np.float64)
    layer.weight.data[...] = [[[[1.0, 0.0], [0.0, -1.0]]]]
    layer.bias.data[...] = 0.5
    y = layer.forward(x)
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 3), -5.0 + 0.5))


def test_forward_sums_over_channels_and_keeps_filters_apart():
    x = np.stack([np.ones((3, 3)), 2 * np.ones((3, 3))])[None]  # (1, 2, 3, 3)
    layer = Conv2d(2, 2, 3, bias=False, dtype=np.float64)
    layer.weight.data[...] = 0
    layer.weight.data[0, 0, 0, 0] = 1.0  # filter 0 reads channel 0 once: 1
    layer.weight.data[1, 1] = 1.0  # filter 1 sums channel 1 over 3x3: 18
    np.testing.assert_array_equal(layer.forward(x).ravel(), [1.0, 18.0])


def test_same_padding_puts_the_odd_pixel_at_bottom_right():
    assert Conv2d(1, 1, 4, padding="same").pads((7, 9)) == (1, 2, 1, 2)
    assert Conv2d(1, 1, (2, 5), padding="same").pads((7, 9)) == (0, 1, 2, 2)
    # stride 2, TensorFlow's SAME: out = ceil(10 / 2) = 5, total = (5-1)*2 + 3 - 10 = 1
    assert Conv2d(1, 1, 3, stride=2, padding="same").pads((10, 11)) == (0, 1, 1, 1)
    assert Conv2d(1, 1, 3, dilation=2, padding="full").pads((5, 5)) == (4, 4, 4, 4)


@pytest.mark.parametrize("name", CASE_IDS)
def test_output_shape_named_cases(name):
    check_output_shape(CONV_CASES[name])


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_output_shape_random(case):
    check_output_shape(case)


def test_input_smaller_than_kernel_is_a_shape_error_naming_the_shapes():
    layer = Conv2d(1, 2, 5)
    with pytest.raises(ShapeError) as info:
        layer.forward(np.zeros((1, 1, 3, 4), np.float32))
    message = str(info.value)
    assert "3x4" in message and "5x5" in message
    with pytest.raises(ShapeError, match="6x6"):
        Conv2d(1, 1, 3, dilation=3).forward(np.zeros((1, 1, 6, 6), np.float32))  # span 7
    with pytest.raises(ShapeError, match="channels"):
        Conv2d(3, 1, 1).forward(np.zeros((1, 2, 4, 4), np.float32))


# --- gradients against finite differences ---------------------------------------------------


@pytest.mark.parametrize("name", CASE_IDS)
def test_gradients_named_cases(name, rng):
    case = CONV_CASES[name]
    layer = case.layer(rng)
    errors = layer_grad_errors(layer, rng.standard_normal(case.x_shape), rng)
    assert set(errors) == {"input", "weight", "bias"}
    assert max(errors.values()) < GRAD_TOL, errors


@settings(max_examples=100, deadline=None)
@given(conv_cases(), st.booleans())
def test_gradients_random_shapes(case, with_bias):
    rng = np.random.default_rng(case.h * 100 + case.w)
    layer = case.layer(rng, bias=with_bias)
    errors = layer_grad_errors(layer, rng.standard_normal(case.x_shape), rng, allow_zero=True)
    assert max(errors.values()) < GRAD_TOL, (case, errors)


@pytest.mark.parametrize("backend", ["numpy", "numba", "reference"])
def test_bias_gradient_is_the_nearest_float32_to_the_exact_sum(backend):
    # dY values that cancel: a float32 running sum loses digits, in an order that depends on
    # the layout a backend hands over; the bias gradient must not
    rng = np.random.default_rng(11)
    layer = Conv2d(3, 2, 1, rng=rng).set_backend(backend)
    x = rng.standard_normal((64, 3, 9, 7)).astype(np.float32)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy -= dy.mean(axis=(0, 2, 3), keepdims=True)  # sums near 0: all cancellation
    exact = dy.astype(np.float64).sum(axis=(0, 2, 3))
    for grad in (dy, np.ascontiguousarray(dy.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)):
        layer.bias.grad[...] = 0
        layer.forward(x)
        layer.backward(grad)
        np.testing.assert_array_equal(layer.bias.grad, exact.astype(np.float32))


# --- vectorised (numpy) backend against the loops (reference) --------------------------------


def check_conv_backends(case: ConvCase):
    scales = conv_term_scales(case)
    for dtype, tol in ((np.float64, F64_TOL), (np.float32, F32_TOL)):
        fast, loops = run_conv(case, "numpy", dtype), run_conv(case, "reference", dtype)
        for key in fast:
            assert fast[key].dtype == loops[key].dtype == dtype
            assert fast[key].shape == loops[key].shape, key
            err = (
                rel_err(fast[key], loops[key])
                if dtype == np.float64
                else term_err(fast[key], loops[key], scales[key])
            )
            assert err < tol, (case, key, dtype)


@pytest.mark.parametrize("name", CASE_IDS)
def test_numpy_backend_matches_loops_named_cases(name):
    check_conv_backends(CONV_CASES[name])


@settings(max_examples=100, deadline=None)
@given(conv_cases())
def test_numpy_backend_matches_loops_random_shapes(case):
    check_conv_backends(case)


# the tile paths of numpy_conv, which full-size layers take (ResNet-20's, batch 64), forced on
# small shapes: one output row per tile, no column matrix kept for dW, dX in channel groups
SMALL_TILES = {"TILE": 1, "BLOCK_WORK": 1, "KEEP_COLS": 0, "WHOLE_DX": 0}


@contextlib.contextmanager
def small_tiles(pool: int | None = None, tiles: bool = True, small: int | None = None):
    """``tiles``: the settings of SMALL_TILES; ``small``: every product of more than ``small``
    columns made in blocks of that many (gemm.product_into), as OpenBLAS's small-product
    kernel makes the full-size layers' ones (the widths it picks are gemm's own tests').
    Yields a list that counts the products made in blocks."""
    before = {name: getattr(numpy_conv, name) for name in SMALL_TILES}
    rule, workers = gemm.block_columns, gemm.workers()
    blocked = []

    def forced(m, k, n):
        if small is None or small >= n:
            return None
        blocked.append(n)
        return small

    try:
        for name, value in SMALL_TILES.items() if tiles else ():
            setattr(numpy_conv, name, value)
        gemm.set_workers(pool)
        gemm.block_columns = forced
        yield blocked
    finally:
        for name, value in before.items():
            setattr(numpy_conv, name, value)
        gemm.block_columns = rule
        gemm.set_workers(workers)


@pytest.mark.parametrize("name", CASE_IDS)
def test_numpy_conv_tiles_match_loops_named_cases(name):
    with small_tiles():
        check_conv_backends(CONV_CASES[name])


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_numpy_conv_tiles_match_loops_random_shapes(case):
    with small_tiles(pool=3):  # tiles taken by 3 threads in turn
        check_conv_backends(case)


# the products' blocks of columns, forced on small shapes (whose products are narrow): this
# many columns a block, the last one narrower where they do not divide the product's
SMALL_COLUMNS = 3


@pytest.mark.parametrize("name", CASE_IDS)
@pytest.mark.parametrize("tiles", [False, True])
@pytest.mark.parametrize("columns", [1, SMALL_COLUMNS])
def test_numpy_conv_small_products_match_loops_named_cases(name, tiles, columns):
    with small_tiles(pool=2, tiles=tiles, small=columns) as blocked:
        check_conv_backends(CONV_CASES[name])
    # one column a block: every product of two or more is cut, the case tests something
    assert blocked or columns > 1, "no product was made in blocks: the case tests nothing"


@settings(max_examples=40, deadline=None)
@given(conv_cases(), st.booleans(), st.integers(1, 8))
def test_numpy_conv_small_products_match_loops_random_shapes(case, tiles, columns):
    with small_tiles(pool=2, tiles=tiles, small=columns):
        check_conv_backends(case)


@pytest.mark.parametrize("name", ["stride2_uneven", "11x28_k2x3_full"])
@pytest.mark.parametrize("small", [None, SMALL_COLUMNS])
def test_numpy_conv_tiles_give_the_same_bits_for_any_pool_size(name, small):
    results = []
    for pool in (1, 2, 3):
        with small_tiles(pool, small=small) as blocked:
            results.append(run_conv(CONV_CASES[name], "numpy", np.float32))
        assert bool(blocked) == bool(small)
    for got in results[1:]:
        for key, value in got.items():
            np.testing.assert_array_equal(value, results[0][key], err_msg=key)


def run_pool(cls, shape, kernel, stride, padding, backend, dtype, integer_valued):
    data = np.random.default_rng(3)
    x = data.integers(-2, 3, shape) if integer_valued else data.standard_normal(shape)
    layer = cls(kernel, stride, padding).set_backend(backend)
    y = layer.forward(x.astype(dtype))
    dy = data.standard_normal(y.shape).astype(dtype)
    return y, layer.backward(dy)


@settings(max_examples=60, deadline=None)
@given(pool_cases())
def test_pool_numpy_backend_matches_loops(case):
    shape, kernel, stride, padding = case
    for cls in (MaxPool2d, AvgPool2d):
        for integer_valued in (False, True):  # integer values: ties inside the windows
            for dtype, tol in ((np.float64, F64_TOL), (np.float32, F32_TOL)):
                args = (cls, shape, kernel, stride, padding)
                y_fast, dx_fast = run_pool(*args, "numpy", dtype, integer_valued)
                y_loop, dx_loop = run_pool(*args, "reference", dtype, integer_valued)
                assert y_fast.dtype == dx_fast.dtype == dtype
                assert y_fast.shape == y_loop.shape and dx_fast.shape == shape
                if cls is MaxPool2d:
                    # a max is exact, and both route dY to the same (first) maximum
                    np.testing.assert_array_equal(y_fast, y_loop)
                    assert rel_err(dx_fast, dx_loop) < tol
                else:
                    assert rel_err(y_fast, y_loop) < tol
                    assert rel_err(dx_fast, dx_loop) < tol
