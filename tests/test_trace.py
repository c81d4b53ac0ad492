"""The shape trace: the right operations and shapes for LeNet under 'same' and 'valid', strides,
a model left as it was, and a broken backward caught."""

import numpy as np
import pytest
from helpers import lenet, small_net

from cnnrun.nn import Conv2d, Flatten, Linear, Sequential
from cnnrun.trace import TraceError, format_markdown, format_text, shape_trace

LENET_NAMES = [
    "conv1",
    "tanh1",
    "pool1",
    "conv2",
    "tanh2",
    "pool2",
    "flatten",
    "fc1",
    "tanh3",
    "fc2",
    "tanh4",
    "fc3",
]


def trace_lenet(padding):
    net = lenet(padding, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((64, 1, 32, 32)).astype(np.float32)
    rows = shape_trace(net, x, np.arange(64) % 10)
    return {row.name: row for row in rows}, rows


def products(row):
    return [str(p) for p in row.products]


def test_lenet_same():
    by_name, rows = trace_lenet("same")
    assert [r.name for r in rows] == LENET_NAMES
    conv1 = by_name["conv1"]
    assert conv1.type == "Conv2d" and conv1.padding_mode == "same"
    assert conv1.input == (64, 1, 32, 32) and conv1.output == (64, 6, 32, 32)
    assert conv1.padding == (2, 2, 2, 2) and conv1.padded_input == (64, 1, 36, 36)
    assert conv1.params == {"weight": (6, 1, 5, 5), "bias": (6,)}
    assert products(conv1) == [
        "dW = corr_valid(x_pad (64,1,36,36), dY (64,6,32,32)) -> (6,1,5,5)",
        "dX = conv_full(dY (64,6,32,32), W (6,1,5,5)) -> (64,1,36,36), cropped to (64,1,32,32)",
        "db = sum_NHW(dY (64,6,32,32)) -> (6)",
    ]
    assert by_name["pool1"].output == (64, 6, 16, 16)
    assert by_name["conv2"].padded_input == (64, 6, 20, 20)
    assert products(by_name["conv2"])[0] == (
        "dW = corr_valid(x_pad (64,6,20,20), dY (64,16,16,16)) -> (16,6,5,5)"
    )
    assert by_name["flatten"].output == (64, 1024)
    assert by_name["fc1"].params["weight"] == (120, 1024)
    assert products(by_name["fc1"])[0] == "dW = matmul(dY^T (120,64), x (64,1024)) -> (120,1024)"
    assert by_name["fc3"].output == (64, 10)
    assert by_name["tanh1"].products == [] and by_name["tanh1"].padding is None
    # both renderings carry the products word for word
    for text in (format_text(rows), format_markdown(rows)):
        for line in products(conv1):
            assert line in text
    assert "same (2, 2, 2, 2) -> x_pad (64,1,36,36)" in format_text(rows)
    assert format_markdown(rows).count("\n") == 2 + len(rows)  # header, rule, a row per layer


def test_lenet_valid():
    by_name, rows = trace_lenet("valid")
    assert [r.name for r in rows] == LENET_NAMES
    conv1, conv2 = by_name["conv1"], by_name["conv2"]
    assert conv1.output == (64, 6, 28, 28)
    assert conv1.padding == (0, 0, 0, 0) and conv1.padded_input == conv1.input
    assert conv2.input == (64, 6, 14, 14) and conv2.output == (64, 16, 10, 10)
    assert products(conv2)[:2] == [
        "dW = corr_valid(x_pad (64,6,14,14), dY (64,16,10,10)) -> (16,6,5,5)",
        "dX = conv_full(dY (64,16,10,10), W (16,6,5,5)) -> (64,6,14,14)",  # nothing to crop
    ]
    assert by_name["pool2"].output == (64, 16, 5, 5)
    assert by_name["flatten"].output == (64, 400)
    assert by_name["fc1"].params["weight"] == (120, 400)


def test_stride_shows_the_dilated_error():
    # 'same' with stride 2 on 10x9: out 5x5, pads (0, 1, 1, 1), dY dilated to 9x9
    net = Sequential(
        [
            ("conv", Conv2d(1, 4, 3, stride=2, padding="same")),
            ("flat", Flatten()),
            ("fc", Linear(100, 3)),
        ]
    )
    rows = shape_trace(net, np.ones((2, 1, 10, 9), np.float32), np.array([0, 2]))
    conv = rows[0]
    assert conv.output == (2, 4, 5, 5) and conv.padding == (0, 1, 1, 1)
    assert products(conv)[:2] == [
        "dW = corr_valid(x_pad (2,1,11,11), dilate(dY, stride 2x2) (2,4,9,9)) -> (4,1,3,3)",
        "dX = conv_full(dilate(dY, stride 2x2) (2,4,9,9), W (4,1,3,3)) -> (2,1,11,11), "
        "cropped to (2,1,10,9)",
    ]


def test_uneven_stride_and_dilation():
    # stride 3 on 9 rows leaves the last row unvisited: the full convolution of the dilated
    # 7x7 error with the 2x2 kernel (dilated to 2x3) is 8x9, zero-padded to the input's 9x10
    net = Sequential(
        [
            ("conv", Conv2d(2, 2, 2, stride=3, dilation=(1, 2))),
            ("flat", Flatten()),
            ("fc", Linear(2 * 3 * 3, 2)),
        ]
    )
    rows = shape_trace(net, np.ones((1, 2, 9, 10), np.float32), np.array([1]))
    assert rows[0].output == (1, 2, 3, 3)
    assert products(rows[0])[1] == (
        "dX = conv_full(dilate(dY, stride 3x3) (1,2,7,7), W dilation 1x2 (2,2,2,2)) -> (1,2,8,9), "
        "zero-padded to (1,2,9,10) (pixels no window reached)"
    )


def test_tracing_leaves_the_model_as_it_was():
    rng = np.random.default_rng(1)
    net = small_net(rng, dtype=np.float32)
    for p in net.parameters():
        p.grad[...] = rng.standard_normal(p.grad.shape)  # grads mid-accumulation
    state = net.state_dict()
    grads = [p.grad.copy() for p in net.parameters()]
    rows = shape_trace(
        net, rng.standard_normal((5, 2, 7, 9)).astype(np.float32), rng.integers(0, 3, 5)
    )
    assert len(rows) == len(net)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)  # incl. running stats
    for p, g in zip(net.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g, err_msg=p.name)
    assert not any(layer.tracing or layer.products for layer in net)


def test_a_backward_with_a_wrong_shape_is_caught(monkeypatch):
    net = Sequential(
        [
            ("conv", Conv2d(1, 2, (2, 3), padding="same")),
            ("flat", Flatten()),
            ("fc", Linear(2 * 11 * 28, 3)),
        ]
    )
    conv = net["conv"]
    right = conv.backward
    # a classic layout bug: H and W swapped in dX (11x28 is not square, so it shows)
    monkeypatch.setattr(conv, "backward", lambda dy: right(dy).transpose(0, 1, 3, 2))
    state = net.state_dict()
    with pytest.raises(TraceError, match=r"conv.*\(1, 1, 28, 11\).*\(1, 1, 11, 28\)"):
        shape_trace(net, np.ones((1, 1, 11, 28), np.float32), np.array([0]))
    assert not any(layer.tracing for layer in net)  # cleaned up after the failure
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, state[key])


def test_a_gradient_product_with_a_wrong_shape_is_caught(monkeypatch):
    net = Sequential([("fc", Linear(4, 3))])
    fc = net["fc"]
    right = fc.backward

    def transposed_dw(dy):  # records dW as (in, out) instead of the weight's (out, in)
        dx = right(dy)
        fc.products[0].shape = fc.products[0].shape[::-1]
        return dx

    monkeypatch.setattr(fc, "backward", transposed_dw)
    with pytest.raises(TraceError, match=r"fc: dW has shape \(4, 3\), weight \(3, 4\)"):
        shape_trace(net, np.ones((2, 4), np.float32), np.array([0, 1]))


def test_batch_norm_rows_and_real_gradient_shapes():
    """Batch norm shows its three products; every dW/db row carries the shape of the array the
    backward pass computed, so a layer returning a wrong-shaped gradient is caught."""
    from cnnrun.nn import BatchNorm2d

    net = Sequential(
        [
            ("conv", Conv2d(1, 3, (2, 3), bias=False)),
            ("bn", BatchNorm2d(3)),
            ("flat", Flatten()),
            ("fc", Linear(3 * 4 * 3, 2)),
        ]
    )
    rng = np.random.default_rng(0)
    rows = shape_trace(net, rng.standard_normal((4, 1, 5, 5)), rng.integers(0, 2, 4))
    assert products(rows[1]) == [
        "dW = sum_NHW(dY * xhat (4,3,4,3)) -> (3)",
        "db = sum_NHW(dY (4,3,4,3)) -> (3)",
        "dX = batch_norm_backward(dY (4,3,4,3), xhat (4,3,4,3)) -> (4,3,4,3)",
    ]
    assert [p.grad for p in rows[0].products] == ["dW", "dX"]  # no bias, no db row

    # a Linear whose dW comes out transposed (same size, wrong shape) cannot hide in the trace
    fc = net["fc"]
    original = Linear.backward

    def transposed_dw(self, dy):
        dx = original(self, dy)
        if self.tracing:
            self.products[0].shape = self.products[0].shape[::-1]
        return dx

    fc.backward = transposed_dw.__get__(fc)
    with pytest.raises(TraceError, match="fc: dW has shape"):
        shape_trace(net, rng.standard_normal((4, 1, 5, 5)), rng.integers(0, 2, 4))
