"""The numba backend's loops of their own for common cases, held bit for bit to what they
stand in for: the 2x2 pools every 2 to the general loops and the reference loops, on data with
ties, signed zeros, NaN and infinities, in float32 and float64, on planes that the windows tile
and planes with a row or column left over; the compiled tanh and sigmoid backward passes to
NumPy's, in every layout and dtype they are handed; batch norm's sums, taken plane by plane in
float32, to float64 arithmetic on the same numbers."""

import numpy as np
import pytest
from helpers import assert_same_bits_at_any_thread_count

from cnnrun.backends import elementwise, reference
from cnnrun.backends.numba import act, pool
from cnnrun.backends.numba import norm as numba_norm
from cnnrun.backends.numba.common import out_hw, parallel

SHAPES = [(3, 5, 8, 6), (2, 3, 7, 9), (5, 1, 2, 2), (1, 2, 5, 1)]  # the last: no window


def awkward(shape, dtype, seed=0):
    """Small integers (ties in most windows), with -0.0, NaN and +-inf sprinkled in."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(dtype)
    flat = x.reshape(-1)
    for value in (-0.0, np.nan, np.inf, -np.inf, np.nan) if flat.size else ():
        flat[rng.integers(0, flat.size, max(1, flat.size // 20))] = value
    return x


def general_max(x):
    """The general loops' maximum and its index, run over the same planes."""
    n, c = x.shape[:2]
    ho, wo = out_hw(x.shape[2:], (2, 2), (2, 2), (1, 1))
    y, arg = np.empty((n, c, ho, wo), x.dtype), np.empty((n, c, ho, wo), np.uint8)
    parallel(pool._maxpool_forward, n * c, y, arg, np.ascontiguousarray(x), 2, 2, 2, 2)
    return y, arg


def general_backward(kernel, dy, *extra, padded_hw):
    dx = np.zeros((*dy.shape[:2], *padded_hw), dy.dtype)
    tiled = tuple(padded_hw) == (2 * dy.shape[2], 2 * dy.shape[3])
    flags = (tiled,) if kernel is pool._maxpool_backward else ()
    parallel(kernel, dy.shape[0] * dy.shape[1], dx, dy, *extra, 2, 2, 2, 2, *flags)
    return dx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_2x2_max_pool_is_the_general_loops_bit_for_bit(shape, dtype):
    x = awkward(shape, dtype)
    y, arg = pool.maxpool2d_forward(x, (2, 2), (2, 2))
    y_gen, arg_gen = general_max(x)
    np.testing.assert_array_equal(y, y_gen)
    np.testing.assert_array_equal(arg, arg_gen)
    np.testing.assert_array_equal(y, reference.maxpool2d_forward(x, (2, 2), (2, 2))[0])
    dy = awkward(y.shape, dtype, seed=1) + 0.5  # inf and NaN among the gradients too
    dx = pool.maxpool2d_backward(dy, arg, (2, 2), (2, 2), shape[2:])
    want = general_backward(pool._maxpool_backward, dy, arg, padded_hw=shape[2:])
    np.testing.assert_array_equal(dx, want)
    _, ctx = reference.maxpool2d_forward(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(
        dx, reference.maxpool2d_backward(dy, ctx, (2, 2), (2, 2), shape[2:])
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_2x2_average_pool_is_the_general_loops_bit_for_bit(shape, dtype):
    x = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    x.reshape(-1)[::7] = np.inf
    y, _ = pool.avgpool2d_forward(x, (2, 2), (2, 2))
    ho, wo = y.shape[2:]
    y_gen = np.empty_like(y)
    parallel(pool._avgpool_forward, shape[0] * shape[1], y_gen, x, 2, 2, 2, 2)
    np.testing.assert_array_equal(y, y_gen)
    dy = np.random.default_rng(3).standard_normal(y.shape).astype(dtype)
    dx = pool.avgpool2d_backward(dy, None, (2, 2), (2, 2), shape[2:])
    want = general_backward(pool._avgpool_backward, dy, padded_hw=shape[2:])
    np.testing.assert_array_equal(dx, want)
    ref_dx = reference.avgpool2d_backward(dy, None, (2, 2), (2, 2), shape[2:])
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_2x2_pools_give_the_same_bits_at_any_thread_count():
    x = awkward((9, 3, 10, 12), np.float32)
    dy = np.random.default_rng(4).standard_normal((9, 3, 5, 6)).astype(np.float32)

    def kernels():
        y, arg = pool.maxpool2d_forward(x, (2, 2), (2, 2))
        avg, _ = pool.avgpool2d_forward(x, (2, 2), (2, 2))
        return [
            y,
            arg,
            pool.maxpool2d_backward(dy, arg, (2, 2), (2, 2), (10, 12)),
            avg,
            pool.avgpool2d_backward(dy, None, (2, 2), (2, 2), (10, 12)),
        ]

    assert_same_bits_at_any_thread_count(kernels)


BACKWARD = {"tanh": (act.tanh_backward, elementwise.tanh_backward, np.tanh)}
BACKWARD["sigmoid"] = (
    act.sigmoid_backward,
    elementwise.sigmoid_backward,
    lambda x: 1 / (1 + np.exp(-x)),
)


@pytest.mark.parametrize("name", list(BACKWARD))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_compiled_activation_backward_is_numpy_s_bit_for_bit(name, dtype):
    compiled, numpy_kernel, forward = BACKWARD[name]
    rng = np.random.default_rng(5)
    # 70,001 elements: three blocks of the compiled pass, the last one short
    y = forward(rng.standard_normal((7, 10_001)) * 3).astype(dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy[0, :4] = [np.inf, -np.inf, np.nan, 0.0]
    y[1, :2] = [1.0, 0.0]  # tanh' is 0 at y = 1: inf * 0 is NaN in both
    dy[1, :2] = np.inf
    cases = {
        "C order": (dy, y),
        "transposed alike": (dy.T, y.T),  # dense, not C order: the pass runs as it lies
        "dy of another layout": (np.asfortranarray(dy), y),  # copied to C order first
        "dy that broadcasts": (dy[:1], y),  # NumPy's kernel
        # NumPy's kernel and its result dtype (float64 with a float32 y, say)
        "dy of another dtype": (dy.astype(np.float64 if dtype != np.float64 else np.float32), y),
    }
    for case, (d, v) in cases.items():
        with np.errstate(invalid="ignore"):  # inf * 0 on purpose
            got, want = compiled(d, v), numpy_kernel(d, v)
        assert got.dtype == want.dtype and got.shape == want.shape, case
        np.testing.assert_array_equal(got, want, err_msg=case)
        assert got.strides == v.strides or case in ("dy that broadcasts", "dy of another dtype")
        assert case != "dy of another dtype" or got.dtype == np.result_type(d, v), case


def test_compiled_activation_backward_gives_the_same_bits_at_any_thread_count():
    rng = np.random.default_rng(6)
    y, dy = np.tanh(rng.standard_normal((3, 40_000))), rng.standard_normal((3, 40_000))
    assert_same_bits_at_any_thread_count(
        lambda: [act.tanh_backward(dy, y), act.sigmoid_backward(dy, y)]
    )


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_threaded_activation_forward_is_numpy_s_bit_for_bit(name, dtype):
    compiled = getattr(act, f"{name}_forward")
    numpy_kernel = getattr(elementwise, f"{name}_forward")
    rng = np.random.default_rng(7)
    # 150,011 elements: above the threads' threshold, five blocks, the last one short
    x = (rng.standard_normal((11, 13_637)) * 4).astype(dtype)
    x[0, :5] = [np.nan, np.inf, -np.inf, -0.0, 30.0]
    assert x.size >= act.THREADED_NUMPY
    cases = {"C order": x, "transposed": x.T, "strided": x[:, ::2], "small": x[:1]}
    for case, v in cases.items():
        with np.errstate(over="ignore"):
            (got, ctx), (want, _) = compiled(v), numpy_kernel(v)
        assert ctx is got and got.dtype == want.dtype and got.shape == v.shape, case
        np.testing.assert_array_equal(got, want, err_msg=case)


def test_threaded_activation_forward_gives_the_same_bits_at_any_thread_count():
    x = np.random.default_rng(8).standard_normal((5, 40_000)).astype(np.float32)
    assert_same_bits_at_any_thread_count(
        lambda: [act.tanh_forward(x)[0], act.sigmoid_forward(x)[0]]
    )


def test_the_compiled_sum_is_numpy_s_in_every_layout():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((3, 5, 100, 97)).astype(np.float32)  # 145,500: threaded
    b = rng.standard_normal(a.shape).astype(np.float32)
    a[0, 0, 0, :3], b[0, 0, 0, :3] = [np.inf, np.nan, -0.0], [-np.inf, 1.0, -0.0]
    assert a.size >= act.THREADED_NUMPY
    cases = {
        "C order": (a, b),
        "transposed alike": (a.transpose(1, 2, 3, 0), b.transpose(1, 2, 3, 0)),
        "layouts that differ": (a, np.asfortranarray(b)),
        "dtypes that differ": (a, b.astype(np.float64)),
        "small": (a[:1, :1], b[:1, :1]),
    }
    for case, (x, y) in cases.items():
        with np.errstate(invalid="ignore"):  # inf - inf
            got, want = act.add(x, y), np.add(x, y)
        assert got.dtype == want.dtype and got.shape == want.shape, case
        np.testing.assert_array_equal(got, want, err_msg=case)
    assert act.add(*cases["transposed alike"]).strides == cases["transposed alike"][0].strides
    assert_same_bits_at_any_thread_count(lambda: [act.add(a, b)])


def test_the_fast_paths_are_the_ones_that_run(monkeypatch):
    """The checks above compare results; these see which loops ran: a fast path that fell back
    to the general loops or to NumPy every time would pass them too."""
    ran = []

    def recording(kernel, items, *args):
        ran.append(getattr(kernel, "__name__", ""))
        return parallel(kernel, items, *args)

    monkeypatch.setattr(pool, "parallel", recording)
    monkeypatch.setattr(act, "parallel", recording)
    x = np.random.default_rng(10).standard_normal((4, 3, 128, 128)).astype(np.float32)
    assert x.size >= act.THREADED_NUMPY
    y, arg = pool.maxpool2d_forward(x, (2, 2), (2, 2))
    pool.maxpool2d_backward(y, arg, (2, 2), (2, 2), (128, 128))
    avg, _ = pool.avgpool2d_forward(x, (2, 2), (2, 2))
    pool.avgpool2d_backward(avg, None, (2, 2), (2, 2), (128, 128))
    t, _ = act.tanh_forward(x)
    act.tanh_backward(x, t)
    act.sigmoid_backward(x, act.sigmoid_forward(x)[0])
    act.add(x, t)
    from cnnrun.backends import get_backend
    from cnnrun.backends.numba import phases

    monkeypatch.setattr(phases, "parallel", recording)
    nb, w = get_backend("numba"), np.ones((5, 3, 3, 3), np.float32)
    y, ctx = nb.conv2d_forward(nb.pad2d(x, (1, 1, 1, 1)), w, (2, 2), (1, 1))
    nb.conv2d_grad_input(y, w, (2, 2), (1, 1), (130, 130), (1, 1, 128, 128))
    assert ran[-2:] == ["_phase_stack_by_two", "_unstack_by_two"]  # (wide.py's calls aside)
    del ran[-2:]
    assert ran == [
        "_maxpool_forward_2x2",
        "_maxpool_backward_2x2",
        "_avgpool_forward_2x2",
        "_avgpool_backward_2x2",
        "_tanh_range",
        "_tanh_backward",
        "_sigmoid_range",
        "_sigmoid_backward",
        "_add",
    ]


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 1, 1, 2), (1, 0, 0, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_phase_stacking_by_two_is_the_general_loops_bit_for_bit(pads, dtype):
    """The loops of their own for stride 2 and four phases (even widths) against the general
    ones: the stacked phases forward, and dX's unstacking into a window."""
    from cnnrun.backends.numba import phases

    x = awkward((3, 4, 7, 10), dtype)  # an odd height: rows phases of unequal lengths
    top, bottom, left, right = pads
    hq, wq = -(-(7 + top + bottom) // 2), -(-(10 + left + right) // 2)
    general = np.full((3, 16, hq, wq), np.nan, dtype)  # every element is written
    parallel(phases._phase_stack, 3, general, x, 2, 2, 2, 2, top, left)
    fast = phases.phase_stack(x, pads, (2, 2), (3, 3))
    np.testing.assert_array_equal(fast, general)
    assert fast.tobytes() == general.tobytes()  # signed zeros and NaN payloads too
    window = (top, left, 7, 10)
    dx = np.full((3, 4, 7, 10), np.nan, dtype)
    parallel(phases._unstack, 3, dx, fast, 2, 2, 2, 2, top, left)
    fast_dx = np.empty_like(dx)
    parallel(phases._unstack_by_two, 3, fast_dx, fast, *window[:2])
    assert fast_dx.tobytes() == dx.tobytes()
    assert dx.tobytes() == x.tobytes()  # unstacking the stacked x gives x back


@pytest.mark.parametrize(
    "shape, mean, first, dy_mean",
    [
        ((256, 3, 28, 28), -50.0, None, 0.0),  # LeNet-sized planes, a large batch
        ((1, 2, 1024, 1024), 0.0, None, 0.0),  # one large plane
        ((1, 2, 2048, 2048), 0.0, None, 5.0),  # dbeta of a whole plane in float32: 1.2e-6
        ((8, 3, 64, 64), 1e3, 0.0, 0.0),  # a first element far from the mean: the shift misses
    ],
)
def test_numba_batch_norm_stays_at_float32_rounding(shape, mean, first, dy_mean):
    """Batch norm's statistics, parameter gradients and dX against float64 arithmetic on the
    same float32 numbers. The backward sums runs of a plane in float32 and the runs in float64;
    sums of whole planes in float32, and float32 statistics shifted by an unlucky first
    element, lost up to 1e-3 of the variance and 5e-4 of dX."""
    rng = np.random.default_rng(3)
    x = mean + 3.0 * rng.standard_normal(shape)
    if first is not None:
        x[0, :, 0, 0] = first
    x, dy = x.astype(np.float32), (dy_mean + rng.standard_normal(shape)).astype(np.float32)
    c, axes = shape[1], (0, 2, 3)
    g, b = np.linspace(0.5, 1.5, c).astype(np.float32), np.zeros(c, np.float32)
    _, xhat, mu, var, inv_std = numba_norm.batchnorm2d_forward(x, g, b, 1e-5)
    dx, dgamma, dbeta = numba_norm.batchnorm2d_backward(dy, xhat, g, inv_std, True)
    x64, dy64, m = x.astype(np.float64), dy.astype(np.float64), x.size // c
    mu64, var64 = x64.mean(axis=axes), x64.var(axis=axes)
    xhat64 = (x64 - mu64[None, :, None, None]) / np.sqrt(var64 + 1e-5)[None, :, None, None]
    dg64, db64 = (dy64 * xhat64).sum(axis=axes), dy64.sum(axis=axes)
    a = (g / np.sqrt(var64 + 1e-5))[None, :, None, None]
    dx64 = a * (dy64 - db64[None, :, None, None] / m - xhat64 * dg64[None, :, None, None] / m)
    assert np.abs(mu - mu64).max() <= 1e-6 * np.sqrt(var64).min() + 1e-7 * abs(mean)
    assert np.abs(var / var64 - 1).max() <= 1e-6
    assert np.abs(dgamma - dg64).max() <= 1e-7 * np.abs(dy64 * xhat64).sum(axis=axes).max()
    assert np.abs(dbeta - db64).max() <= 1e-7 * np.abs(dy64).sum(axis=axes).max()
    assert np.abs(dx - dx64).max() <= 1e-5 * np.abs(dx64).max()
