"""The numba backend's register-blocked conv kernels (backends/numba/wide.py, wide_grad.py) and
the vector operations they are written in (simd.py), against the plain loops and NumPy.

The shapes of test_backends.py have at most three filters, where dW takes its few-filters path
and the forward kernel one group of filters; these have as many filters as one and several
vector registers hold, counts that are not whole registers or groups, runs that end inside a
block, batches that are not whole chunks, and tap counts that are not whole blocks (24 taps with
AVX-512, 12 with AVX2). Compiled for either width, the micro-kernels keep their accumulators in
registers."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import ConvCase, assert_same_bits_at_any_thread_count, check_numba_conv, conv_cases
from hypothesis import example, given, settings
from numba import njit
from numba.core import errors

from cnnrun.backends import get_backend
from cnnrun.backends.numba import simd

WIDE_CASES = {
    # 17 filters: a register and one filter (float32 on AVX-512; two and one on AVX2), groups
    # of eight or four filters with one left over; 5 images
    "f17_same": ConvCase(5, 3, 17, 9, 13, 3, padding="same"),
    "f16_dilated": ConvCase(2, 5, 16, 11, 7, (2, 3), dilation=(2, 1)),
    "f40_stride2_same": ConvCase(3, 2, 40, 6, 6, 3, stride=2, padding="same"),
    "f24_1x1_thin": ConvCase(1, 7, 24, 33, 5, 1),  # 7 taps: a block of 24 (12) mostly padding
    # 16 channels, 8 filters: dW few-filters in float32 on AVX-512, register blocks otherwise;
    # dX of 16 channels by the forward kernel
    "c16_f8_same": ConvCase(4, 16, 8, 8, 8, 3, padding="same"),
    "f20_full_k5": ConvCase(2, 2, 20, 6, 9, 5, padding="full"),
    # strided layers on their stacked phases (phases.py): ResNet's 3x3 stride 2 on even maps
    # (the loops of their own), odd maps and another stride in each axis (the general ones),
    # a 1x1 stride-2 shortcut (one phase), a kernel smaller than its stride in one axis
    "s2_resnet_even": ConvCase(5, 3, 17, 10, 8, 3, stride=2, padding="same"),
    "s2_odd_maps": ConvCase(3, 2, 9, 9, 11, 3, stride=2, padding="same"),
    "s23_padded": ConvCase(2, 3, 5, 11, 13, (3, 4), stride=(2, 3), padding=(2, 1)),
    "s2_1x1": ConvCase(4, 6, 16, 8, 8, 1, stride=2),
    "s3_k2x4": ConvCase(2, 2, 7, 9, 12, (2, 4), stride=3, padding=(1, 2)),
}


@pytest.mark.parametrize("name", list(WIDE_CASES))
def test_wide_kernels_match_loops_and_numpy(name):
    check_numba_conv(WIDE_CASES[name])


@settings(max_examples=25, deadline=None)
@given(conv_cases(max_extra=9, images=(1, 6), channels=(1, 5), filters=(8, 36)))
def test_wide_kernels_match_loops_and_numpy_random_shapes(case):
    check_numba_conv(case)


def test_wide_kernels_do_not_depend_on_the_thread_count():
    """dW sums each chunk of images in registers and adds the chunks in order: 1, 2 and 3
    threads give the same bits with 19 filters and 11 images."""
    nb = get_backend("numba")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((11, 4, 10, 9)).astype(np.float32)
    dy = rng.standard_normal((11, 19, 8, 7)).astype(np.float32)
    w = rng.standard_normal((19, 4, 3, 3)).astype(np.float32)
    assert_same_bits_at_any_thread_count(
        lambda: [
            nb.conv2d_forward(x, w, (1, 1), (1, 1))[0],
            nb.conv2d_grad_weight(x, None, dy, (3, 3), (1, 1), (1, 1)),
            nb.conv2d_grad_input(dy, w, (1, 1), (1, 1), (10, 9)),
        ]
    )


@njit
def _transpose(src, src_at, src_stride, dst, dst_at, dst_stride):
    simd.vtranspose(src, src_at, src_stride, dst, dst_at, dst_stride)


@njit
def _lanes(a):
    return simd.lanes(a)


@njit
def _block_steps(a, a_at, a_off, b, b_at, out, stride):
    """Two steps of a block of 3 rows by 2 registers, stored from out[1] on."""
    acc = simd.vzeros(b, 3, 2)
    acc = simd.outer_fma(acc, a, a_at, a_off, b, b_at)
    acc = simd.outer_fma(acc, a, a_at, a_off + 1, b, b_at + 1)
    simd.store_block(out, 1, stride, acc)


@njit
def _row_indices(offs, at, plus, like):
    return simd.row_indices(offs, at, plus, simd.vzeros(like, 3, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_at", [(5, 0, 9), 2], ids=["indices", "consecutive"])
def test_a_block_of_registers_multiplies_adds_and_stores_what_numpy_does(dtype, a_at):
    """vzeros, outer_fma (its broadcasts read at a tuple of indices, or at consecutive ones)
    and store_block: integers, so that every product and sum is exact and the comparison is
    equality; nothing outside the block's rows is written."""
    n = simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    rng = np.random.default_rng(3)
    a = rng.integers(-9, 10, 16).astype(dtype)
    b = rng.integers(-9, 10, 4 * n).astype(dtype)
    stride = 2 * n + 3
    out = np.full(1 + 3 * stride, -1, dtype)
    _block_steps(a, a_at, 1, b, 3, out, stride)
    at = np.array(a_at) if isinstance(a_at, tuple) else a_at + np.arange(3)
    want = a[at + 1, None] * b[3 : 3 + 2 * n] + a[at + 2, None] * b[4 : 4 + 2 * n]
    rows = out[1:].reshape(3, stride)
    np.testing.assert_array_equal(rows[:, : 2 * n], want)
    assert (rows[:, 2 * n :] == -1).all() and out[0] == -1


def test_row_indices_and_what_the_block_intrinsics_refuse():
    offs = np.array([4, 7, 11, 20], np.int64)
    assert _row_indices(offs, 1, 100, np.zeros(1, np.float32)) == (107, 111, 120)
    n = simd.VECTOR_BYTES // 4
    a, b = np.ones(8, np.float32), np.ones(4 * n, np.float32)
    out = np.zeros(4 * 3 * n, np.float32)
    for bad in (
        (a.astype(np.float64), b, out),  # another dtype than the block's
        (a, np.ones(8 * n, np.float32)[::2], out),  # strided: addressed as if contiguous
        (a, b, out.reshape(3, -1)),  # not 1-D
    ):
        with pytest.raises(errors.TypingError):
            _block_steps(bad[0], 0, 0, bad[1], 0, bad[2], n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose_of_a_tile_in_registers(dtype):
    n = simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    assert _lanes(np.zeros(1, dtype)) == n
    src = np.arange(3 + n * (n + 5), dtype=dtype)  # rows of n + 5 from offset 3
    dst = np.full(2 + n * (n + 1), -1, dtype)  # rows of n + 1 from offset 2
    _transpose(src, 3, n + 5, dst, 2, n + 1)
    tile = src[3:].reshape(n, n + 5)[:, :n]
    got = dst[2:].reshape(n, n + 1)
    np.testing.assert_array_equal(got[:, :n], tile.T)
    assert (got[:, n] == -1).all() and (dst[:2] == -1).all()  # nothing else written


@pytest.mark.parametrize(
    "name, features, want",
    [
        (None, "+avx2,+fma,+avx512f", 64),
        (None, "+avx2,+fma,-avx512f", 32),
        ("haswell", "+avx2,+fma,+avx512f", 64),  # the features decide, as they do for Numba
    ],
)
def test_register_width_follows_the_features_numba_compiles_for(monkeypatch, name, features, want):
    monkeypatch.setattr(simd.config, "CPU_NAME", name)
    monkeypatch.setattr(simd.config, "CPU_FEATURES", features)
    assert simd._vector_bytes() == want


def test_register_width_without_features_is_the_host_s_as_numba_reads_it(monkeypatch):
    """A CPU name alone does not change what Numba compiles for (it still takes the host's
    features) nor its cache key, so it must not change the width; NUMBA_ENABLE_AVX=0 does."""
    from numba.core import codegen

    monkeypatch.setattr(simd.config, "CPU_FEATURES", None)
    host = 64 if "+avx512f" in codegen.get_host_cpu_features() else 32
    for name in (None, "haswell"):
        monkeypatch.setattr(simd.config, "CPU_NAME", name)
        assert simd._vector_bytes() == host
    monkeypatch.setattr(simd.config, "ENABLE_AVX", False)
    assert simd._vector_bytes() == 32


def _no_avx512_features() -> str:
    """The host's features as Numba reads them, every AVX-512 one switched off."""
    from numba.core import codegen

    flags = codegen.get_host_cpu_features().split(",")
    return ",".join("-" + f[1:] if f[1:].startswith("avx512") else f for f in flags if f)


@pytest.mark.slow
def test_wide_kernels_on_a_target_without_avx512(tmp_path):
    """Compiled for AVX2 (Haswell's name and the host's features less AVX-512: 16 registers of
    32 bytes, 8 float32 and 4 float64 lanes), the kernels use no 512-bit register, take the
    micro-kernels sized for 16 registers (four filters, twelve taps), and still match the
    loops: every block, tile and padding follows the register width."""
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, "tests")
        import numpy as np
        from helpers import ConvCase, check_numba_conv
        from cnnrun.backends.numba import simd, wide, wide_grad
        assert simd.VECTOR_BYTES == 32 and simd.REGISTERS == 16, simd.VECTOR_BYTES
        assert (wide.GROUP, wide_grad.TAPS) == (4, 12), (wide.GROUP, wide_grad.TAPS)
        for case in (
            ConvCase(5, 3, 17, 9, 13, 3, padding="same"),
            ConvCase(3, 2, 12, 6, 7, 3, stride=2, padding="same"),
            ConvCase(2, 9, 5, 8, 8, 3, padding="full"),
        ):
            check_numba_conv(case)
        asm = "".join(wide._corr_wide.inspect_asm(s) for s in wide._corr_wide.signatures)
        assert "ymm" in asm and "zmm" not in asm
        print("ok")
        """
    )
    env = dict(
        os.environ,
        NUMBA_CPU_NAME="haswell",
        NUMBA_CPU_FEATURES=_no_avx512_features(),
        NUMBA_CACHE_DIR=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.slow
def test_a_cpu_name_does_not_mix_register_widths_in_a_shared_cache(tmp_path):
    """Two processes share Numba's cache; the second names the host's own CPU. Numba compiles
    and keys its cache by features, not by that name, so the second loads the first's kernels:
    it must size their buffers for the same width (it once took 32 bytes, wrote past dW's
    buffers and aborted, or returned NaN)."""
    script = textwrap.dedent(
        """
        import numpy as np
        from cnnrun.backends import get_backend
        from cnnrun.backends.numba import simd
        rng = np.random.default_rng(0)
        for f in (16, 24, 32):
            x = rng.standard_normal((5, 3, 9, 9)).astype(np.float32)
            dy = rng.standard_normal((5, f, 7, 7)).astype(np.float32)
            got = get_backend("numba").conv2d_grad_weight(x, None, dy, (3, 3), (1, 1), (1, 1))
            want = get_backend("numpy").conv2d_grad_weight(x, None, dy, (3, 3), (1, 1), (1, 1))
            assert np.abs(got - want).max() < 1e-3, (f, simd.VECTOR_BYTES)
        print(simd.VECTOR_BYTES)
        """
    )
    import llvmlite.binding as llvm

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("NUMBA_CPU_NAME", None)
    env.pop("NUMBA_CPU_FEATURES", None)
    widths = []
    for extra in ({}, {"NUMBA_CPU_NAME": llvm.get_host_cpu_name()}):
        done = subprocess.run(
            [sys.executable, "-c", script],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        widths.append(done.stdout.strip())
    assert widths[0] == widths[1]


_SPILL_SCRIPT = textwrap.dedent(
    r"""
    import re
    from numba import types
    from cnnrun.backends.numba import simd, wide, wide_grad

    f32, i64 = types.float32, types.int64
    arr = lambda nd: types.Array(f32, nd, "C")
    offs = types.Array(i64, 1, "C", readonly=True)
    pair, quad = types.UniTuple(i64, 2), types.UniTuple(i64, 4)
    kernels = {
        "forward": (wide._corr_wide, (arr(4), arr(4), arr(2), offs, quad, pair, arr(1), i64, i64)),
        "dW": (
            wide_grad._grad_weight_blocks,
            (arr(2), arr(4), quad, pair, arr(4), offs, types.boolean, i64, i64),
        ),
    }
    register = "zmm" if simd.REGISTERS == 32 else "ymm"
    for name, (kernel, signature) in kernels.items():
        kernel.compile(signature)  # compiled only: the host may lack these features
        blocks = re.split(r"\n(?=\.LBB\d+_\d+:)", kernel.inspect_asm(signature))
        loops = [b for b in blocks if "vfmadd231ps" in b]
        fmas = sum(b.count("vfmadd231ps") for b in loops)
        stack = [
            line for b in loops for line in b.splitlines()
            if "(%rsp)" in line and re.search(r"%[xyz]mm", line)
        ]
        print(name, simd.REGISTERS, fmas, all(register in b for b in loops), len(stack))
    """
)


def _features(avx512: bool) -> str:
    """The host's features as Numba reads them, with AVX-512 (F, VL, BW, DQ) on or off."""
    from numba.core import codegen

    wanted = {"avx512f", "avx512vl", "avx512bw", "avx512dq"}
    flags = [f for f in codegen.get_host_cpu_features().split(",") if f]
    if not avx512:
        return ",".join("-" + f[1:] if f[1:].startswith("avx512") else f for f in flags)
    return ",".join("+" + f[1:] if f[1:] in wanted else f for f in flags)


@pytest.mark.slow
@pytest.mark.parametrize("avx512, registers", [(False, 16), (True, 32)])
def test_micro_kernels_keep_their_accumulators_in_registers(tmp_path, avx512, registers):
    """Compiled for AVX2 (16 vector registers) and for AVX-512 (32), on any host, the forward
    and dW kernels' multiply-add loops use registers of that width and never load or store a
    vector register on the stack. With 24 accumulators on AVX2 they did, 126 times in the
    forward loop and 28 in dW's, and the 3x3 layers ran at a third of the GEMM peak."""
    env = dict(
        os.environ,
        NUMBA_CPU_NAME="skylake-avx512" if avx512 else "haswell",
        NUMBA_CPU_FEATURES=_features(avx512),
        NUMBA_CACHE_DIR=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-c", _SPILL_SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in done.stdout.strip().splitlines():
        name, width, fmas, right_registers, stack = line.split()
        assert int(width) == registers, line
        assert int(fmas) > 0 and right_registers == "True", line
        assert int(stack) == 0, line


@pytest.mark.parametrize("filters", [16, 6])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_a_non_finite_pixel_reaches_only_the_dw_of_its_own_channel(stride, filters):
    """dW[:, c] sums channel c's pixels alone. Wide rows multiply the pixels that their junk
    columns and rounding reach (the next row, channel or image) by a dY of zero: a NaN or inf
    there made 0 * NaN = NaN in the dW of another channel (48 entries of channel 2 here, from a
    NaN in channel 0 of the next image). 6 filters take the few-filters dot products with
    AVX-512, which still run over whole rows."""
    nb, ref = get_backend("numba"), get_backend("numpy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 9, 9)).astype(np.float32)
    x[1, 0] = np.nan
    x[3, 1, 4, 4] = np.inf
    ho = (9 - 3) // stride[0] + 1
    dy = rng.standard_normal((5, filters, ho, ho)).astype(np.float32)
    got = nb.conv2d_grad_weight(x, None, dy, (3, 3), stride, (1, 1))
    want = ref.conv2d_grad_weight(x, None, dy, (3, 3), stride, (1, 1))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    assert np.isfinite(got[:, 2]).all()
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)


def test_dw_reads_no_memory_it_did_not_write():
    """dW's x runs read past each image into junk columns (times a dY of zero): that memory
    must be zeros, not whatever the allocator hands back. Freed blocks full of NaN are what
    it would hand back (a run's earlier arrays, say); a step of LeNet once went NaN this way."""
    nb = get_backend("numba")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 14, 14)).astype(np.float32)
    dy = rng.standard_normal((3, 16, 10, 10)).astype(np.float32)
    for size in range(4700, 5000, 4):  # blocks of about its x buffer's 4 * 6 * 14 * 14 + 16
        del_me = np.full(size, np.nan, np.float32)
        del del_me
        dw = nb.conv2d_grad_weight(x, None, dy, (5, 5), (1, 1), (1, 1))
        assert np.isfinite(dw).all(), size


def _window_case(case: ConvCase, dtype):
    """dY, w, the padded size and the layer's window (top, left, H, W) of dX_pad for a case."""
    layer = case.layer(np.random.default_rng(1), dtype=dtype)
    x_hw = case.x_shape[2:]
    pads = layer.pads(x_hw)
    padded = (x_hw[0] + pads[0] + pads[1], x_hw[1] + pads[2] + pads[3])
    dy = np.random.default_rng(2).standard_normal(layer.output_shape(case.x_shape)).astype(dtype)
    return dy, layer.weight.data, layer, padded, (pads[0], pads[2], *x_hw)


@settings(max_examples=40, deadline=None)
@given(conv_cases(filters=(1, 20)))
@example(ConvCase(3, 4, 17, 8, 8, 3, padding="same"))  # the window alone
@example(ConvCase(2, 2, 3, 5, 6, 1, padding=2))  # padded by more than the span: cut
@example(ConvCase(2, 3, 4, 9, 7, 3, stride=2, padding="same"))  # strided: cut
def test_grad_input_window_is_the_crop_of_the_whole(case):
    """Asked for the window of dX_pad that a layer keeps (its input's rows and columns), every
    backend gives the crop of the whole dX_pad; numba computes the window alone at stride 1
    (dY padded by what the window reaches), or cuts it from the whole where that padding
    would be negative (a layer padded by more than its kernel's span), in C order."""
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        dy, w, layer, padded, window = _window_case(case, dtype)
        args = (dy, w, layer.stride, layer.dilation, padded)
        whole = get_backend("reference").conv2d_grad_input(*args)
        top, left, h, w_ = window
        want = whole[:, :, top : top + h, left : left + w_]
        scale = max(1.0, float(np.abs(want).max(initial=0)))
        for name in ("numba", "numpy", "reference"):
            got = get_backend(name).conv2d_grad_input(*args, window)
            assert got.shape == want.shape and got.dtype == dtype, name
            assert np.abs(got - want).max(initial=0) <= tol * scale, (name, case)
            if name == "numba":
                assert got.flags.c_contiguous


@pytest.mark.parametrize("stride", [1, 2])
def test_numba_x_pad_is_padded_as_it_is_loaded(stride):
    """The numba backend's pad2d hands its kernels x and the pads: the padded shape and dtype,
    the padded array under np.asarray, and the same y and dW from its conv kernels as the
    padded array gives (stride 2: the phases are cut from that array)."""
    nb = get_backend("numba")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 7, 9)).astype(np.float32)
    w = rng.standard_normal((18, 3, 3, 3)).astype(np.float32)
    pads = (1, 2, 0, 3)
    x_pad = nb.pad2d(x, pads)
    whole = get_backend("reference").pad2d(x, pads)
    assert x_pad.shape == whole.shape == (5, 3, 10, 12) and x_pad.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(x_pad), whole)
    y, ctx = nb.conv2d_forward(x_pad, w, (stride, stride), (1, 1))
    y_whole, ctx_whole = nb.conv2d_forward(whole, w, (stride, stride), (1, 1))
    np.testing.assert_array_equal(y, y_whole)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(
        nb.conv2d_grad_weight(x_pad, ctx, dy, (3, 3), (stride, stride), (1, 1)),
        nb.conv2d_grad_weight(whole, ctx_whole, dy, (3, 3), (stride, stride), (1, 1)),
    )


@pytest.mark.parametrize("backend", ["numba", "numpy", "reference"])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_forward_adds_the_bias_to_the_finished_sum(backend, stride):
    """Given a bias, conv2d_forward adds it to each finished sum (numba: as it writes y out):
    the same bits as the sum without a bias, plus the bias afterwards."""
    kernels = get_backend(backend)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 8, 9)).astype(np.float32)
    w = rng.standard_normal((11, 2, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(11).astype(np.float32)
    x_pad = kernels.pad2d(x, (1, 1, 1, 1))
    y, _ = kernels.conv2d_forward(x_pad, w, (stride, stride), (1, 1), bias)
    y0, _ = kernels.conv2d_forward(x_pad, w, (stride, stride), (1, 1))
    np.testing.assert_array_equal(y, y0 + bias[None, :, None, None])
