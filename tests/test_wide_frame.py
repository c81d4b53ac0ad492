"""The flat image buffer of the numba backend's wide-row kernels (backends/numba/wide.py): the
frame an image is loaded into, where a row's right padding is the next row's left padding and
a channel plane's bottom padding the next plane's top padding, and the buffer's length.

The kernels read through raw pointers (simd.py), so a read past the buffer, or a valid output
that reads another image's pixels, would go unnoticed there. Here the same reads are made by
NumPy from the same offsets, buffer and loading, with indices that raise when out of range,
and each valid output is held to the plain correlation."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cnnrun.backends import get_backend
from cnnrun.backends.numba import wide


@pytest.mark.parametrize(
    "src_hw, pads, out_hw, want",
    [
        ((8, 8), (1, 1, 1, 1), (8, 8), (9, 9)),  # ResNet-20's last stage: 10x10 padded
        ((10, 10), (4, 4, 4, 4), (14, 14), (14, 14)),  # LeNet conv2's dX: 18x18 padded
        ((14, 14), (0, 0, 0, 0), (10, 10), (14, 14)),  # 'valid': no padding to share
        ((5, 6), (2, 0, 1, 3), (5, 8), (7, 9)),  # uneven pads: the larger of each pair
        ((5, 6), (2, 2, 2, 2), (9, 10), (7, 10)),  # a 1x1 kernel padded 2: rows as wide as Wo
    ],
)
def test_a_frame_shares_the_padding_of_neighbouring_rows_and_planes(src_hw, pads, out_hw, want):
    assert wide.frame(src_hw, pads, out_hw) == want


def _emulated(x, w, pads, dilation, width):
    """y (N, F, Ho, Wo) as the wide-row kernels make it: x's images loaded one after another
    into a buffer of the kernels' length, every tap's run of ``span`` outputs read with
    indices that raise outside it."""
    (n, c, h, wd), (f, _, kh, kw), (dh, dw) = x.shape, w.shape, dilation
    ho = h + pads[0] + pads[1] - dh * (kh - 1)
    wo = wd + pads[2] + pads[3] - dw * (kw - 1)
    padded = wide.frame((h, wd), pads, (ho, wo))
    offs = wide.tap_offsets(w.shape, padded, dilation)
    span = wide.span_up(ho, wo, padded[1], width)
    size = wide.image_size(c, h, pads, *padded)
    xf = np.zeros(wide.buffer_size(n, c, h, pads, padded, span), x.dtype)
    for b in range(n):
        wide._load_padded(xf[b * size :], x[b], pads[0], pads[2], *padded)
    y = np.empty((n, f, ho, wo), x.dtype)
    for b in range(n):
        runs = np.take(xf, b * size + offs[:, None] + np.arange(span), mode="raise")  # (K, span)
        y_wide = w.reshape(f, -1) @ runs  # (F, span)
        for i in range(ho):
            y[b, :, i] = y_wide[:, i * padded[1] : i * padded[1] + wo]
    return y


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 3),
    hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    dilation=st.sampled_from([(1, 1), (2, 1), (1, 2), (2, 2)]),
    pads=st.tuples(*[st.integers(0, 4)] * 4),
    width=st.sampled_from([1, 4, 8, 16]),
    seed=st.integers(0, 2**16),
)
# a kernel wider than the image and one side's padding: its runs read past the image by more
# than their span's rounding (into the row of zeros at the buffer's end)
@example(n=1, c=1, hw=(9, 1), kernel=(5, 5), dilation=(2, 2), pads=(0, 0, 4, 4), width=16, seed=0)
def test_every_read_stays_in_the_buffer_and_every_output_in_its_own_image(
    n, c, hw, kernel, dilation, pads, width, seed
):
    """Random sizes, kernels, dilations and pads of up to 4 on each side (more than a kernel's
    span, and uneven), images stacked as dW stacks a chunk's, runs rounded up to 1, 4, 8 and 16
    elements (a register of float64 or float32 with AVX2 or AVX-512): each run stays in the
    buffer and each valid output is the correlation of its own image."""
    (kh, kw), (dh, dw), (h, wd) = kernel, dilation, hw
    if h + pads[0] + pads[1] < dh * (kh - 1) + 1 or wd + pads[2] + pads[3] < dw * (kw - 1) + 1:
        return  # the kernel does not fit: no output
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, wd))
    w = rng.standard_normal((2, c, kh, kw))
    ref = get_backend("reference")
    want, _ = ref.conv2d_forward(ref.pad2d(x, pads), w, (1, 1), dilation)
    got = _emulated(x, w, pads, dilation, width)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
