"""A run gives the same bits whatever its thread count: a sweep launcher may hand a job every
core or half of them, and neither a run's numbers nor a sweep's winner may change with it.

OpenBLAS's float32 products change their bits with its thread count, so BLAS runs on one thread
and :func:`cnnrun.backends.gemm.matmul` cuts large products into blocks planned from the shapes
alone (see its module's notes); Numba's kernels are bit-identical at any count on their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnrun.backends import gemm

THREADS = (1, 2, 3)

# a few SGD steps of a small LeNet-like network on non-square images, batch 77, its conv1 and
# fc1 large enough for their products to be cut into blocks; prints, per
# backend, a hash of every parameter's bytes (and the losses)
TRAIN = """
import hashlib, json, sys
import numpy as np
from cnnrun import nn, optim
from cnnrun.backends import configure_process

def net(rng):
    return nn.Sequential(
        nn.Conv2d(2, 12, 4, rng=rng),  # a kernel axis of 32: dW reduces in fixed blocks
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(12, 16, 3, rng=rng),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 8 * 7, 512, rng=rng),
        nn.ReLU(),
        nn.Linear(512, 10, rng=rng),
    )

def train(backend):
    configure_process(int(sys.argv[1]), backend)
    data = np.random.default_rng(5)
    x = data.standard_normal((77, 2, 40, 36)).astype(np.float32)
    y = data.integers(0, 10, 77)
    model = net(np.random.default_rng(3)).set_backend(backend)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(3):
        model.zero_grad()
        losses.append(float(loss_fn.forward(model.forward(x), y)))
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
    hashes = {n: hashlib.sha256(p.data.tobytes()).hexdigest() for n, p in model.named_parameters()}
    return {"losses": [l.hex() for l in losses], "weights": hashes}

print(json.dumps({backend: train(backend) for backend in ("numpy", "numba")}))
"""


@pytest.fixture(scope="module")
def trained() -> dict[int, dict]:
    """TRAIN's output for each thread count, each in a fresh process (started together)."""
    runs = {
        t: subprocess.Popen(
            [sys.executable, "-c", TRAIN, str(t)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for t in THREADS
    }
    results = {}
    for t, run in runs.items():
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        results[t] = json.loads(out.splitlines()[-1])
    return results


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_training_steps_give_the_same_bits_at_any_thread_count(trained, backend):
    # the products are cut into blocks, those of fc1 on both backends: the test is not vacuous
    assert len(gemm.plan((12, 32), (32, 37 * 33 * 77))[1]) > 2  # conv1's forward
    assert len(gemm.plan((77, 512), (512, 16 * 8 * 7))[1]) > 2  # fc1's dX
    one = trained[THREADS[0]][backend]
    assert len(one["weights"]) == 8
    for t in THREADS[1:]:
        assert trained[t][backend] == one, f"{backend}: {t} threads differ from 1"


@pytest.fixture
def pool_size():
    """Set the gemm pool's size within a test; the size before it is restored afterwards."""
    before = gemm.workers()
    yield gemm.set_workers
    gemm.set_workers(before)


def _operands(case: str, rng: np.random.Generator, dtype=np.float32):
    """(a, b) for a product that the plan cuts into blocks."""
    shapes = {
        "columns": ((16, 150), (150, 51200)),  # LeNet conv2's forward at batch 512
        "rows": ((8000, 100), (100, 120)),
        "stack": ((480, 25, 512), (480, 512, 6)),  # dW's fixed reduction blocks
    }
    a_shape, b_shape = shapes[case]
    return rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype)


@pytest.mark.parametrize("case", ["columns", "rows", "stack"])
@pytest.mark.parametrize("transposed", [False, True])
def test_gemm_gives_the_same_bits_for_any_pool_size(pool_size, rng, case, transposed):
    a, b = _operands(case, rng)
    if transposed:  # views laid out as the engine's dY.T and W.T are
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
        b = np.ascontiguousarray(np.swapaxes(b, -1, -2)).swapaxes(-1, -2)
    _, edges = gemm.plan(a.shape, b.shape)
    assert len(edges) > 3, "not cut into blocks: the case tests nothing"
    results = []
    for n in (1, 2, 3, 5):
        pool_size(n)
        results.append(gemm.matmul(a, b))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])
    k = a.shape[-1]
    scale = float(np.max(np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)))
    tol = 2 * k * np.finfo(np.float32).eps * scale  # rounding of sums of k products
    assert results[0].shape == (a @ b).shape and results[0].dtype == np.float32
    assert np.allclose(results[0], a @ b, rtol=0, atol=tol)


def test_gemm_keeps_small_products_whole_and_plans_from_shapes_only():
    assert gemm.plan((64, 84), (84, 10))[1] == [0, 64]  # small: one call
    axis, edges = gemm.plan((32, 144), (144, 65536))  # a 3x3 conv, 16 to 32 channels, 32x32
    assert axis == 1 and len(edges) == gemm.MAX_BLOCKS + 1 and edges[-1] == 65536
    assert all(e % gemm.MIN_WIDTH == 0 for e in edges[:-1])
    assert gemm.plan((150, 25600), (25600, 16))[0] == 0  # rows: the reduction stays whole
    assert gemm.plan((3,), (3, 4)) == (0, [])  # vectors: plain a @ b


def test_gemm_before_configure_process_is_plain_matmul(pool_size, rng):
    a, b = _operands("columns", rng)
    pool_size(None)
    np.testing.assert_array_equal(gemm.matmul(a, b), a @ b)
    with pytest.raises(ValueError):
        pool_size(2)
        gemm.matmul(a, b[:-1])  # shapes that do not match: a @ b's own error


@pytest.fixture
def small_products():
    """Set gemm's small-product blocks within a test; the setting before is restored after."""
    before = gemm.small_products()
    yield gemm.set_small_products
    gemm.set_small_products(before)


def test_small_product_blocks_come_from_the_shapes_within_the_work(small_products):
    small_products(None)
    assert gemm.block_columns(16, 144, 8192) is None  # off: one call
    small_products(gemm.SMALL_WORK)
    width = gemm.block_columns(16, 144, 8192)  # ResNet-20's first stage: 16 filters, 144 taps
    assert width % gemm.SMALL_STEP == 0 and 16 * 144 * width <= gemm.SMALL_WORK
    assert 16 * 144 * (width + gemm.SMALL_STEP) > gemm.SMALL_WORK  # the widest that fits
    assert gemm.block_columns(16, 144, width) is None  # one block: one call
    assert gemm.block_columns(64, 576, 8192) is None  # blocks too narrow to pay
    assert gemm.block_columns(0, 144, 8192) is None


@pytest.mark.parametrize("n", [13 * 320, 4096 + 77])  # whole blocks; and a narrower one after them
def test_product_into_makes_each_block_as_its_own_call_would(small_products, rng, n):
    """The stacked call gives each block's columns the bits of a BLAS call on that block
    alone, into strided views as the conv kernels hand it (a tile of a larger array)."""
    small_products(gemm.SMALL_WORK)
    a = rng.standard_normal((16, 150)).astype(np.float32)  # LeNet conv2: 16 filters, 150 taps
    big = rng.standard_normal((150, n + 40)).astype(np.float32)
    b = big[:, 20 : 20 + n]
    out_big = np.full((16, n + 8), np.nan, np.float32)
    width = gemm.block_columns(*a.shape, n)
    assert width == 320 and width < n
    gemm.product_into(a, b, out_big[:, 4 : 4 + n])
    assert np.isnan(out_big[:, :4]).all() and np.isnan(out_big[:, 4 + n :]).all()
    for j in range(0, n, width):
        end = min(n, j + width)
        np.testing.assert_array_equal(out_big[:, 4 + j : 4 + end], a @ b[:, j:end])
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert np.all(
        np.abs(out_big[:, 4 : 4 + n] - exact) <= 2 * 150 * np.finfo(np.float32).eps * scale
    )


def test_gemm_with_small_products_gives_the_same_bits_for_any_pool_size(
    pool_size, small_products, rng
):
    small_products(gemm.SMALL_WORK)
    a, b = _operands("columns", rng)
    assert len(gemm.plan(a.shape, b.shape)[1]) > 3 and gemm.block_columns(*a.shape, 3200)
    results = []
    for n in (1, 2, 3):
        pool_size(n)
        results.append(gemm.matmul(a, b))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])
    small_products(None)
    assert np.allclose(results[0], gemm.matmul(a, b), rtol=0, atol=1e-3)


def _blas(internal: str, core: str = "", version: str = "0.3.31") -> dict:
    name = f"lib{internal}.so"
    return {
        "user_api": "blas",
        "internal_api": internal,
        "architecture": core,
        "filepath": name,
        "version": version,
    }


def _in(folder: Path, pool: dict) -> dict:
    return pool | {"filepath": str(folder / pool["filepath"])}


def test_small_products_only_where_numpy_has_openblas_avx512_kernel():
    wheel = Path(np.__file__).resolve().parent.parent / "numpy.libs"  # a wheel's own BLAS
    system = Path("/usr/lib")
    assert gemm.blas_small_kernel([_in(wheel, _blas("openblas", "SkylakeX"))])
    assert gemm.blas_small_kernel([_in(system, _blas("openblas", "Cooperlake"))])
    assert not gemm.blas_small_kernel([_in(wheel, _blas("openblas", "Haswell"))])  # AVX2
    # NumPy's own library decides, whatever SciPy brought beside it
    numpy_own, scipy_own = _blas("openblas", "SkylakeX"), _blas("openblas", "Zen")
    assert gemm.blas_small_kernel([_in(wheel, numpy_own), _in(system, scipy_own)])
    assert not gemm.blas_small_kernel([_in(wheel, scipy_own), _in(system, numpy_own)])
    # a system BLAS: every one loaded must have the kernel
    assert not gemm.blas_small_kernel([_in(system, numpy_own), _in(system, scipy_own)])
    assert not gemm.blas_small_kernel([_in(system, _blas("mkl"))])
    openmp = {"user_api": "openmp", "internal_api": "openmp", "filepath": "/usr/lib/libgomp.so"}
    assert not gemm.blas_small_kernel([openmp])  # no BLAS found
    # the small-problem kernels came with OpenBLAS 0.3.18
    for version, small in (("0.3.17", False), ("0.3.18", True), ("0.3.21.dev", True), ("", False)):
        assert gemm.blas_small_kernel([_in(wheel, _blas("openblas", "SkylakeX", version))]) is small
    assert not gemm.blas_small_kernel([_in(wheel, _blas("openblas", "SkylakeX", None))])


def test_product_into_leaves_bad_shapes_to_numpy(small_products, rng):
    small_products(gemm.SMALL_WORK)
    a, b = np.ones((16, 144), np.float32), np.ones((144, 4096), np.float32)
    assert gemm.block_columns(16, 144, 4096)
    for out in (np.empty((32, 2048), np.float32), np.empty((16, 4000), np.float32)):
        with pytest.raises(ValueError, match="mismatch"):
            gemm.product_into(a, b, out)
    with pytest.raises(ValueError, match="mismatch"):
        gemm.product_into(a, b[:-1], np.empty((16, 4096), np.float32))
