"""Small residual networks for the tests of Residual and GlobalAvgPool2d (not a test file)."""

from __future__ import annotations

import numpy as np

from cnnrun.nn import (
    BatchNorm2d,
    Conv2d,
    GlobalAvgPool2d,
    Linear,
    ReLU,
    Residual,
    Sequential,
)

X_SHAPE = (3, 2, 7, 10)  # (N, C, H, W): non-square, and 7 does not divide by the stride 2


def randomise_batch_norm(model, rng: np.random.Generator) -> None:
    """Random gamma and beta (not 1 and 0), so that their gradients and their effect show."""
    for _, m in model.named_modules():
        if isinstance(m, BatchNorm2d):
            m.weight.data[...] = rng.uniform(0.5, 1.5, m.weight.shape)
            m.bias.data[...] = rng.uniform(-0.5, 0.5, m.bias.shape)


def block(rng, c_in: int, c_out: int, stride: int, dtype=np.float64, act=ReLU) -> Residual:
    """A basic block with a non-square second kernel: branch conv3x3(stride, padding 1) - bn -
    act - conv(3x2, 'same') - bn; shortcut the identity, or a 1x1 conv (stride) - bn where the
    shape changes."""
    kw = {"rng": rng, "dtype": dtype, "bias": False}
    branch = Sequential(
        [
            ("conv1", Conv2d(c_in, c_out, 3, stride, padding=1, **kw)),
            ("bn1", BatchNorm2d(c_out, dtype=dtype)),
            ("act1", act()),
            ("conv2", Conv2d(c_out, c_out, (3, 2), padding="same", **kw)),
            ("bn2", BatchNorm2d(c_out, dtype=dtype)),
        ]
    )
    if stride == 1 and c_in == c_out:
        return Residual(branch)
    shortcut = Sequential(
        [
            ("conv", Conv2d(c_in, c_out, 1, stride, **kw)),
            ("bn", BatchNorm2d(c_out, dtype=dtype)),
        ]
    )
    return Residual(branch, shortcut)


def residual_net(seed: int = 0, dtype=np.float64, act=ReLU, classes: int = 3) -> Sequential:
    """For (N, 2, H, W) inputs: a stem, a projection block with stride 2, an identity block,
    global pooling and a linear layer."""
    rng = np.random.default_rng(seed)
    net = Sequential(
        [
            ("conv1", Conv2d(2, 3, 3, padding=1, bias=False, rng=rng, dtype=dtype)),
            ("bn1", BatchNorm2d(3, dtype=dtype)),
            ("act1", act()),
            ("block1", block(rng, 3, 4, 2, dtype, act)),
            ("act2", act()),
            ("block2", block(rng, 4, 4, 1, dtype, act)),
            ("act3", act()),
            ("pool", GlobalAvgPool2d()),
            ("fc", Linear(4, classes, rng=rng, dtype=dtype)),
        ]
    )
    randomise_batch_norm(net, rng)
    return net
