"""The numba backend against the plain loops and the NumPy backend, over the conv tests' shapes.
No timings are asserted: speed is the benchmark's (tests/test_bench.py)."""

import numpy as np
import pytest
from helpers import (
    CONV_CASES,
    F64_TOL,
    ConvCase,
    assert_same_bits_at_any_thread_count,
    check_numba_conv,
    conv_cases,
    lenet,
    pool_cases,
    rel_err,
)
from hypothesis import given, settings
from residual_nets import X_SHAPE, residual_net

from cnnrun import nn, optim
from cnnrun.backends import get_backend, numpy_backend, numpy_conv, reference
from cnnrun.errors import ConfigError
from cnnrun.nn import AvgPool2d, MaxPool2d

numba_backend = get_backend("numba")

F32_TOL = 1e-5  # float32: rounding, relative to the result
BACKENDS = ("numba", "numpy", "reference")


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_numba_conv_matches_loops_and_numpy_named_cases(name):
    check_numba_conv(CONV_CASES[name])


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_numba_conv_matches_loops_and_numpy_random_shapes(case):
    check_numba_conv(case)


@pytest.mark.parametrize(
    "case",
    [
        ConvCase(3, 4, 6, 12, 9, (3, 2)),  # a batch that is not a chunk
        ConvCase(9, 2, 5, 7, 11, 3, padding="same"),  # 9 images: chunks of 4, 4 and 1
        ConvCase(5, 3, 7, 8, 8, 3, stride=2, dilation=2, padding="full"),
    ],
)
def test_numba_conv_odd_filter_counts_and_batches(case):
    # 5, 6 and 7 filters: the blocks of four, two and one filters all run
    check_numba_conv(case)


@settings(max_examples=40, deadline=None)
@given(pool_cases())
def test_numba_pools_match_loops(case):
    shape, kernel, stride, padding = case
    for cls in (MaxPool2d, AvgPool2d):
        for integer_valued in (False, True):  # integers: ties inside the windows
            for dtype, tol in ((np.float64, F64_TOL), (np.float32, F32_TOL)):
                data = np.random.default_rng(3)
                x = (
                    data.integers(-2, 3, shape) if integer_valued else data.standard_normal(shape)
                ).astype(dtype)
                results = {}
                for backend in BACKENDS:
                    layer = cls(kernel, stride, padding).set_backend(backend)
                    y = layer.forward(x)
                    dy = np.random.default_rng(4).standard_normal(y.shape).astype(dtype)
                    results[backend] = (y, layer.backward(dy))
                (y, dx), (y_ref, dx_ref) = results["numba"], results["reference"]
                assert y.dtype == dx.dtype == dtype and dx.shape == shape
                if cls is MaxPool2d:
                    np.testing.assert_array_equal(y, y_ref)
                    np.testing.assert_array_equal(dx, dx_ref)  # one add per pixel: exact
                else:
                    assert rel_err(y, y_ref) < tol and rel_err(dx, dx_ref) < tol
                assert rel_err(dx, results["numpy"][1]) < tol


@pytest.mark.parametrize(
    "shape, kernel, padding",
    [
        ((2, 3, 8, 6), 2, 0),  # LeNet's pools: 2x2 windows every 2 tile the image
        ((1, 2, 9, 4), (3, 2), 0),  # non-square tiles
        ((2, 1, 6, 6), 2, 1),  # tiles of the padded image
        ((1, 1, 7, 6), 2, 0),  # one row left over: no tiling
    ],
)
def test_pools_that_tile_the_image(shape, kernel, padding):
    data = np.random.default_rng(5)
    x = data.standard_normal(shape)
    for cls in (AvgPool2d, MaxPool2d):
        results = {}
        for backend in BACKENDS:
            layer = cls(kernel, padding=padding).set_backend(backend)
            y = layer.forward(x)
            results[backend] = (
                y,
                layer.backward(np.random.default_rng(6).standard_normal(y.shape)),
            )
        for backend in ("numba", "numpy"):
            for got, want in zip(results[backend], results["reference"]):
                assert got.shape == want.shape
                assert rel_err(got, want) < F64_TOL, (cls, backend)


def test_max_pool_routes_each_gradient_once_on_ties():
    x = np.zeros((1, 1, 4, 4))  # every window is a tie
    x[0, 0, 3, 3] = -1.0
    dy = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    for backend in BACKENDS:
        layer = MaxPool2d(2, stride=1).set_backend(backend)
        layer.forward(x)
        dx = layer.backward(dy)
        assert dx.sum() == dy.sum(), backend  # nothing lost, nothing doubled
        expected = np.zeros((4, 4))
        expected[:3, :3] = dy[0, 0]  # each to its window's first pixel
        np.testing.assert_array_equal(dx[0, 0], expected)


def test_max_pool_nan_wins_as_in_argmax():
    x = np.array([[[[1.0, np.nan], [3.0, 2.0]]]])
    for backend in BACKENDS:
        layer = MaxPool2d(2).set_backend(backend)
        assert np.isnan(layer.forward(x)).all(), backend
        np.testing.assert_array_equal(
            layer.backward(np.ones((1, 1, 1, 1)))[0, 0], [[0.0, 1.0], [0.0, 0.0]]
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride", [(1, 1), (2, 3)])
def test_numba_kernels_keep_the_dtype(dtype, stride):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    y, ctx = numba_backend.conv2d_forward(x, w, stride, (1, 1))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dW = numba_backend.conv2d_grad_weight(x, ctx, dy, (3, 2), stride, (1, 1))
    dx = numba_backend.conv2d_grad_input(dy, w, stride, (1, 1), x.shape[2:])
    assert y.dtype == dW.dtype == dx.dtype == dtype
    assert dW.shape == w.shape and dx.shape == x.shape
    for fwd, bwd in (
        (numba_backend.maxpool2d_forward, numba_backend.maxpool2d_backward),
        (numba_backend.avgpool2d_forward, numba_backend.avgpool2d_backward),
    ):
        y, ctx = fwd(x, (2, 3), stride)
        assert y.dtype == dtype
        assert bwd(np.ones_like(y), ctx, (2, 3), stride, x.shape[2:]).dtype == dtype


@pytest.mark.parametrize("module", [numba_backend, numpy_backend], ids=["numba", "numpy"])
def test_kernels_accept_views(module):
    # strided and transposed arrays, as a caller may pass them
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 10, 12))[:, :, ::2, 1:]  # (3, 2, 5, 11), a view
    w = rng.standard_normal((2, 4, 3, 3)).transpose(1, 0, 2, 3)  # (4, 2, 3, 3), a view
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    y, ctx = module.conv2d_forward(x, w, (1, 1), (1, 1))
    y_ref, _ = reference.conv2d_forward(x, w, (1, 1), (1, 1))
    assert rel_err(y, y_ref) < F64_TOL
    dy = rng.standard_normal(y.shape)[..., ::-1]
    assert (
        rel_err(
            module.conv2d_grad_weight(x, ctx, dy, (3, 3), (1, 1), (1, 1)),
            reference.conv2d_grad_weight(x, None, dy, (3, 3), (1, 1), (1, 1)),
        )
        < F64_TOL
    )
    assert (
        rel_err(
            module.conv2d_grad_input(dy, w, (1, 1), (1, 1), x.shape[2:]),
            reference.conv2d_grad_input(dy, w, (1, 1), (1, 1), x.shape[2:]),
        )
        < F64_TOL
    )


def test_max_pool_routes_to_the_first_nan_of_a_window():
    x = np.array([[[[1.0, np.nan, 0.0], [np.nan, 2.0, 7.0], [np.nan, 4.0, 6.0]]]])
    for backend in BACKENDS:
        layer = MaxPool2d(2, stride=1).set_backend(backend)  # overlapping windows
        y = layer.forward(x)[0, 0]
        assert np.isnan(y[0]).all() and np.isnan(y[1, 0]) and y[1, 1] == 7.0, backend
        dx = layer.backward(np.array([[[[1.0, 2.0], [4.0, 8.0]]]]))[0, 0]
        # three windows hold NaNs, two of them two each: each sends its dY to its first NaN
        np.testing.assert_array_equal(dx, [[0, 3.0, 0], [4.0, 0, 8.0], [0, 0, 0]])


# -- the NumPy backend's batch-last layout ------------------------------------------------------


def batch_last_copy(x):
    """The same (N, C, H, W) values, laid out (C, H, W, N) in memory."""
    return numpy_backend.batch_first(np.ascontiguousarray(x.transpose(1, 2, 3, 0)))


def test_numpy_kernels_hand_back_batch_last_views():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 9, 7))
    y, ctx = numpy_backend.conv2d_forward(x, rng.standard_normal((4, 3, 3, 2)), (1, 1), (1, 1))
    assert y.shape == (5, 4, 7, 6) and not y.flags.c_contiguous
    y_t = numpy_backend.batch_last(y)
    assert y_t.shape == (4, 7, 6, 5) and np.shares_memory(y_t, y)  # no copy on the way in
    np.testing.assert_array_equal(ctx.x_t, x.transpose(1, 2, 3, 0))  # x batch-last, for dW
    assert ctx.cols.shape == (3, 3, 2, 7, 6, 5)  # small: the column matrix kept whole
    for kernel in (numpy_backend.avgpool2d_forward, numpy_backend.maxpool2d_forward):
        pooled, _ = kernel(y, (2, 2), (2, 2))
        assert np.shares_memory(numpy_backend.batch_last(pooled), pooled)


LAYOUTS = {
    "C": np.ascontiguousarray,
    "batch_last": batch_last_copy,
    "strided": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],  # a view, not contiguous
    "reversed": lambda a: np.ascontiguousarray(a[::-1])[::-1],  # negative batch stride
}


def a_net(rng):
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding="same", bias=False, rng=rng),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.3, rng=np.random.default_rng(9)),
        nn.MaxPool2d(2, padding=1),
        nn.Conv2d(4, 3, (2, 3), stride=(1, 2), rng=rng),
        nn.Sigmoid(),
        nn.AvgPool2d(2),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(6, 5, rng=rng),
    )


def net_results(backend, x, dy):
    net = a_net(np.random.default_rng(4)).to(np.float64).set_backend(backend)
    out = net.forward(x)
    dx = net.backward(dy)
    return [out, dx] + [p.grad for p in net.parameters()]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_network_matches_the_loops_for_any_input_layout(backend, layout):
    data = np.random.default_rng(3)
    x = data.standard_normal((3, 2, 10, 9))
    dy = data.standard_normal((3, 5))
    want = net_results("reference", x, dy)
    got = net_results(backend, LAYOUTS[layout](x), dy)
    for g, w in zip(got, want):
        assert g.shape == w.shape and rel_err(g, w) < F64_TOL


@pytest.mark.parametrize("x_layout", list(LAYOUTS))
@pytest.mark.parametrize("dy_layout", list(LAYOUTS))
def test_every_layer_matches_the_loops_whatever_the_layouts_it_is_handed(x_layout, dy_layout):
    # inside a network each layer gets what its neighbours hand it: any of these layouts
    data = np.random.default_rng(5)
    x = data.standard_normal((3, 4, 8, 6))
    for make in (
        lambda: nn.Conv2d(4, 3, (3, 2), padding="same"),
        lambda: nn.Conv2d(4, 2, 3, stride=2, dilation=(1, 2), bias=False),
        lambda: nn.MaxPool2d(2, stride=1, padding=1),
        lambda: nn.AvgPool2d((2, 3)),
        lambda: nn.BatchNorm2d(4),
        nn.ReLU,
        nn.Tanh,
        nn.Sigmoid,
        lambda: nn.Dropout(0.5, rng=np.random.default_rng(1)),
        nn.Flatten,
    ):
        results = []
        for backend, lay_x, lay_dy in (("reference", "C", "C"), ("numpy", x_layout, dy_layout)):
            layer = make().set_backend(backend)
            for i, p in enumerate(layer.parameters()):  # the same for both
                p.data[...] = np.random.default_rng(6 + i).standard_normal(p.shape)
            y = layer.forward(LAYOUTS[lay_x](x))
            dy = np.random.default_rng(7).standard_normal(y.shape)
            if dy.ndim == 4:
                dy = LAYOUTS[lay_dy](dy)
            results.append([y, layer.backward(dy)] + [p.grad for p in layer.parameters()])
        for got, want in zip(results[1], results[0]):
            assert got.shape == want.shape and rel_err(got, want) < F64_TOL, make()


def test_each_backend_names_its_own_layout():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    assert reference.native(x) is x
    assert numba_backend.native(x) is x and numba_backend.native(x.T).flags.c_contiguous
    x_nat = numpy_backend.native(x)
    np.testing.assert_array_equal(x_nat, x)
    assert x_nat.transpose(1, 2, 3, 0).flags.c_contiguous
    assert numpy_backend.native(x_nat) is not x_nat  # a view ...
    assert np.shares_memory(numpy_backend.native(x_nat), x_nat)  # ... of the same memory


def test_max_pool_routes_to_the_first_of_equal_maxima_signed_zeros_included():
    # -0.0 == 0.0: the first of them is the maximum that gets the gradient, as with argmax
    x = np.array([[[[-0.0, 0.0, 2.0, 2.0, 0.0, -0.0]]]])
    for backend in BACKENDS:
        layer = MaxPool2d((1, 2)).set_backend(backend)
        np.testing.assert_array_equal(layer.forward(x)[0, 0, 0], [0.0, 2.0, 0.0])
        np.testing.assert_array_equal(
            layer.backward(np.ones((1, 1, 1, 3)))[0, 0, 0],
            [1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
            err_msg=backend,
        )


def test_max_pool_routes_non_finite_gradients_like_the_loops():
    data = np.random.default_rng(8)
    x = data.standard_normal((2, 3, 6, 4))
    dy = data.standard_normal((2, 3, 3, 2))
    dy[0, 1, 1, 0], dy[1, 2, 0, 1] = np.inf, np.nan
    results = {}
    for backend in BACKENDS:
        layer = MaxPool2d(2).set_backend(backend)
        layer.forward(x)
        results[backend] = layer.backward(dy)
    for backend in ("numpy", "numba"):
        np.testing.assert_array_equal(results[backend], results["reference"])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("shape", [(5, 3, 7, 4), (2, 1, 1, 9), (33, 4, 2, 2)])
def test_batch_norm_kernels_match_the_definition(backend, shape):
    for dtype, tol in ((np.float64, F64_TOL), (np.float32, F32_TOL)):
        results = {}
        for name in ("reference", backend):
            layer = nn.BatchNorm2d(shape[1], momentum=0.3).to(dtype).set_backend(name)
            layer.weight.data[...] = np.random.default_rng(1).standard_normal(shape[1])
            layer.bias.data[...] = np.random.default_rng(2).standard_normal(shape[1])
            x = (np.random.default_rng(3).standard_normal(shape) * 2 + 1).astype(dtype)
            dy = np.random.default_rng(4).standard_normal(shape).astype(dtype)
            out = []
            for training in (True, True, False):  # two training steps, then eval
                layer.train(training)
                layer.zero_grad()
                out += [
                    layer.forward(x),
                    layer.backward(dy),
                    layer.weight.grad.copy(),
                    layer.bias.grad.copy(),
                    layer.running_mean.copy(),
                    layer.running_var.copy(),
                ]
            results[name] = out
        for got, want in zip(results[backend], results["reference"]):
            assert got.dtype == want.dtype == dtype
            assert rel_err(got, want) < tol, (backend, shape, dtype)


def test_backward_uses_the_kernels_of_its_forward():
    # a layer whose backend changes between forward and backward still pairs them correctly
    data = np.random.default_rng(2)
    x = data.standard_normal((2, 2, 4, 4))
    for make in (
        lambda: MaxPool2d(2),
        lambda: AvgPool2d(2, stride=1),
        lambda: nn.Conv2d(2, 3, 3, rng=np.random.default_rng(0)),
        nn.ReLU,  # the activations' ctx differs too: a mask, a slope, x or y
        lambda: nn.LeakyReLU(0.2),
        nn.Tanh,
        nn.Sigmoid,
    ):
        want_layer = make().set_backend("reference")
        y = want_layer.forward(x)
        dy = data.standard_normal(y.shape)
        want = want_layer.backward(dy)
        for first, second in (("numpy", "numba"), ("numba", "reference"), ("reference", "numpy")):
            layer = make().set_backend(first)
            layer.forward(x)
            layer.set_backend(second)
            assert rel_err(layer.backward(dy), want) < F64_TOL, (first, second)


def test_backward_before_forward_is_a_clear_error():
    for layer in (nn.Conv2d(1, 2, 3), MaxPool2d(2), nn.BatchNorm2d(2)):
        with pytest.raises(RuntimeError, match="backward\\(\\) called before forward\\(\\)"):
            layer.backward(np.zeros((1, 2, 2, 2)))


def test_numpy_conv_computes_in_the_input_dtype():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3))  # float64
    y, ctx = numpy_backend.conv2d_forward(x, w, (1, 1), (1, 1))
    assert y.dtype == np.float32
    dx = numpy_backend.conv2d_grad_input(y, w, (1, 1), (1, 1), x.shape[2:])
    assert dx.dtype == np.float32


@pytest.mark.parametrize(
    "k, f, m",
    [
        (25, 6, 4 * 512),  # whole blocks
        (25, 6, 3 * 512 + 77),  # and a remainder
        (3, 2, 700),  # fewer than two blocks: one product
        (40, 6, 4 * 512),  # a long kernel axis: one product
    ],
)
def test_dw_reduction_in_blocks_is_the_whole_product(k, f, m):
    rng = np.random.default_rng(k + m)
    cols, dy = rng.standard_normal((k, m)), rng.standard_normal((f, m))
    got = numpy_conv._product_over_pixels(cols, dy)
    want = np.einsum("km,fm->kf", cols, dy)
    assert got.shape == (k, f) and rel_err(got, want) < F64_TOL


def test_numba_kernels_do_not_depend_on_the_thread_count():
    """Every numba kernel cuts its work items among the threads (``common.parallel``); dW sums
    per chunk of images and adds the chunks in order. 1, 2 and 3 threads: the same bits, with
    a batch of 11 (chunks that do not divide evenly) and 5 filters (a padded group)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((11, 3, 9, 9)).astype(np.float32)
    dy = rng.standard_normal((11, 5, 7, 7)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    g, b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    nb = numba_backend

    def kernels() -> list[np.ndarray]:
        pooled, arg = nb.maxpool2d_forward(x, (2, 2), (2, 2))
        bn = nb.batchnorm2d_forward(x, g, b, 1e-5)
        return [
            nb.conv2d_forward(x, w, (1, 1), (1, 1))[0],
            nb.conv2d_grad_weight(x, None, dy, (3, 3), (1, 1), (1, 1)),
            nb.conv2d_grad_input(dy, w, (1, 1), (1, 1), (9, 9)),
            nb.conv2d_grad_input(dy, w[:, :1], (1, 1), (1, 1), (9, 9)),  # one channel
            nb.conv2d_grad_bias(dy),
            pooled,
            nb.maxpool2d_backward(pooled, arg, (2, 2), (2, 2), (9, 9)),
            nb.avgpool2d_forward(x, (3, 3), (2, 2))[0],
            bn[0],
            nb.batchnorm2d_backward(x, bn[1], g, bn[4], True)[0],
        ]

    assert_same_bits_at_any_thread_count(kernels)


def test_numba_threads_hand_back_errors_and_serve_two_callers():
    """An error in a worker thread's range is raised in the caller, and the workers serve the
    next call; two Python threads calling at once both get the whole result (the second runs
    its kernel alone while the workers are busy)."""
    import threading

    from cnnrun.backends.numba import common

    before = common.threads()
    common.set_threads(3)

    def fill(out, value, lo, hi):
        if value < 0 and lo > 0:  # a worker's range, not the caller's
            raise ValueError(f"range {lo}:{hi}")
        out[lo:hi] = value

    try:
        with pytest.raises(ValueError, match="range"):
            common.parallel(fill, 9, np.zeros(9), -1.0)
        outs = [np.zeros(10_000) for _ in range(8)]
        callers = [
            threading.Thread(target=common.parallel, args=(fill, out.size, out, float(i)))
            for i, out in enumerate(outs)
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
    finally:
        common.set_threads(before)
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out, np.full(out.size, float(i)))


def test_polling_sees_another_thread_s_write_and_gives_up_after_its_polls():
    """spin.wait_for reads the flag again at every poll (a load hoisted out of the loop would
    never see the write), and returns False once its polls are spent."""
    import threading
    import time

    from cnnrun.backends.numba.spin import wait_for

    flags = np.zeros(16, np.int64)
    assert not wait_for(flags, 3, 7, 1000)

    def write() -> None:
        time.sleep(0.02)
        flags[3] = 7

    writer = threading.Thread(target=write)
    writer.start()
    assert wait_for(flags, 3, 7, 50_000_000)  # seconds of polls; the write comes in 20 ms
    writer.join()


def test_a_handover_marks_first_then_polls_then_settles():
    """spin.handover writes its mark before it polls (the caller that sees it finds the worker
    past Python), sees the other thread's write, and gives up after its polls, marked all the
    same."""
    import threading
    import time

    from cnnrun.backends.numba.spin import handover

    flags = np.zeros(16, np.int64)
    assert not handover(flags, 8, 5, 0, 1, 1000, 100)
    assert flags[8] == 5

    def write() -> None:
        while flags[8] != 6:  # the mark comes before the ticket is posted
            time.sleep(0.001)
        flags[0] = 2

    writer = threading.Thread(target=write)
    writer.start()
    assert handover(flags, 8, 6, 0, 2, 50_000_000, 100)
    writer.join()


# name: (model from a dtype, input shape, classes); the residual net has blocks with and
# without a projection, a stride 2 and global pooling (tests/residual_nets.py)
STEP_NETS = {
    "lenet": (lambda dtype: lenet("valid", seed=3, dtype=dtype), (5, 1, 32, 32), 10),
    "residual": (lambda dtype: residual_net(seed=3, dtype=dtype), X_SHAPE, 3),
}


@pytest.mark.parametrize("net", list(STEP_NETS))
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-11), (np.float32, 1e-5)])
def test_a_step_gives_the_same_loss_and_grads_on_numpy_and_numba(net, dtype, tol):
    make, shape, classes = STEP_NETS[net]
    data = np.random.default_rng(7)
    x = data.standard_normal(shape).astype(dtype)
    y = data.integers(0, classes, shape[0])
    results = {}
    for backend in ("numpy", "numba"):
        model = make(dtype).set_backend(backend)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        losses = []
        for _ in range(2):  # the second step runs on updated weights
            model.zero_grad()
            losses.append(loss_fn.forward(model.forward(x), y))
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
        results[backend] = (
            losses,
            {p.name: p.grad.copy() for p in model.parameters()},
            {p.name: p.data.copy() for p in model.parameters()},
        )
    (loss_np, grads_np, params_np), (loss_nb, grads_nb, params_nb) = results.values()
    np.testing.assert_allclose(loss_nb, loss_np, rtol=tol)
    for name in grads_np:
        assert grads_nb[name].dtype == dtype, name
        assert rel_err(grads_nb[name], grads_np[name]) < tol, name
        assert rel_err(params_nb[name], params_np[name]) < tol, name


def test_get_backend_loads_numba_and_names_the_accepted_ones():
    assert get_backend("numba").NAME == "numba"
    assert get_backend("numba").__name__ == "cnnrun.backends.numba"  # the package
    assert get_backend("NUMBA") is numba_backend
    assert get_backend("numpy") is numpy_backend
    with pytest.raises(ConfigError, match="numpy, numba, reference"):
        get_backend("tpu")


@pytest.mark.parametrize(
    "layout",
    [
        lambda a: a,  # C order
        lambda a: np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2),  # batch-last
        lambda a: np.asfortranarray(a),
        lambda a: np.pad(a, ((0, 0), (0, 0), (0, 1), (0, 0)))[:, :, :-1],  # not dense
    ],
    ids=["c_order", "batch_last", "fortran", "not_dense"],
)
def test_numba_relu_matches_the_loops_in_any_layout(layout):
    """The numba ReLU keeps y as its context and selects dy on y > 0, in one pass over dense
    arrays as they lie, through NumPy otherwise: the same numbers as the loops, specials
    included (NaN x stays NaN and passes no gradient; dy's inf and NaN where x <= 0 give 0),
    and y laid out as x."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 50, 70))  # 42,000 elements: two blocks of 2**15
    x.flat[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0]
    dy = rng.standard_normal(x.shape)
    dy.flat[6:12] = [np.inf, -np.inf, np.nan, np.inf, np.nan, 2.0]
    x.flat[6:12] = [-1.0, 0.0, -2.0, 3.0, -0.0, -1.0]
    for dtype in (np.float64, np.float32):
        xs, dys = layout(x.astype(dtype)), layout(dy.astype(dtype))
        y, ctx = numba_backend.relu_forward(xs)
        y_ref, ctx_ref = reference.relu_forward(xs)
        np.testing.assert_array_equal(y, y_ref)
        assert np.signbit(y).sum() == 0  # -0 gives +0
        if xs.flags.c_contiguous or xs.flags.f_contiguous:
            assert y.strides == xs.strides
        np.testing.assert_array_equal(
            numba_backend.relu_backward(dys, ctx), reference.relu_backward(dys, ctx_ref)
        )


def test_numba_batch_norm_hands_on_x_for_xhat():
    """The numba forward does not write xhat: it hands on (x, mean, inv_std), which np.asarray
    makes the xhat of the definition, and its backward gives the same numbers from that as
    from the xhat array itself."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5, 6)) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    g, b = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    y, xhat, mean, var, inv_std = numba_backend.batchnorm2d_forward(x, g, b, 1e-5)
    want = reference.batchnorm2d_forward(x, g, b, 1e-5)
    assert xhat.shape == x.shape and xhat.dtype == np.float32
    assert rel_err(np.asarray(xhat), want[1]) < 1e-6 and rel_err(y, want[0]) < 1e-6
    from_x = numba_backend.batchnorm2d_backward(dy, xhat, g, inv_std, True)
    from_array = numba_backend.batchnorm2d_backward(dy, np.asarray(xhat), g, inv_std, True)
    for got, other in zip(from_x, from_array):
        assert rel_err(got, other) < 1e-6


def test_numba_relu_of_float16_goes_through_numpy():
    """The compiled ReLU passes know float32 and float64 only; float16 takes NumPy's kernels
    (it raised NotImplementedError in a compiled loop)."""
    x = np.array([[[[-1.0, 2.0, np.nan, -0.0]]]], np.float16)
    y, ctx = numba_backend.relu_forward(x)
    np.testing.assert_array_equal(y, reference.relu_forward(x)[0])
    assert y.dtype == np.float16
    dx = numba_backend.relu_backward(np.full_like(x, 3), ctx)
    np.testing.assert_array_equal(dx, np.array([[[[0, 3, 0, 0]]]], np.float16))


def test_bias_gradients_are_the_float32_nearest_the_exact_sum_on_every_backend():
    """float32 dY with large terms that cancel: a float32 sum loses digits; each backend sums in
    float64 and gives the float32 nearest the exact (math.fsum) sum, in any layout."""
    import math

    rng = np.random.default_rng(11)
    dy = (rng.standard_normal((7, 5, 9, 11)) * 1e4).astype(np.float32)
    for f in range(5):  # each filter's sum cancels to about 0.5
        dy[0, f, 0, 0] -= np.float32(dy[:, f].sum(dtype=np.float64) - 0.5)
    exact = np.array([math.fsum(dy[:, f].astype(np.float64).ravel()) for f in range(5)])
    assert np.all(np.abs(exact) < 100)  # from terms of about 1e4: cancelled
    naive = dy.sum(axis=(0, 2, 3), dtype=np.float32)
    assert not np.array_equal(naive, exact.astype(np.float32))  # float32 sums do lose digits
    for backend in BACKENDS:
        kernels = get_backend(backend)
        for layout, d in (("C", dy), ("batch-last", batch_last_copy(dy)), ("reversed", dy[::-1])):
            db = kernels.conv2d_grad_bias(d)
            assert db.dtype == np.float32 and db.shape == (5,), (backend, layout)
            np.testing.assert_array_equal(
                db, exact.astype(np.float32), err_msg=f"{backend} {layout}"
            )
        empty = kernels.conv2d_grad_bias(np.zeros((0, 5, 3, 3), np.float32))
        np.testing.assert_array_equal(empty, np.zeros(5, np.float32))  # no images: zeros
        dy64 = dy.astype(np.float64)
        assert kernels.conv2d_grad_bias(dy64).dtype == np.float64
        np.testing.assert_allclose(kernels.conv2d_grad_bias(dy64), exact, rtol=0, atol=1e-9)
