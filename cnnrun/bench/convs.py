"""The benchmark's single conv layers, forward and forward+backward at batch 64, with the
floating-point operations that make their GFLOP/s.

LeNet's two convolutions (conv1's input is the data, so its backward is dW and db only, as in
training) and six 3x3 'same' layers of the widths of a CIFAR net's stages (16->32, 32->64 and
64->64 channels, each on 32x32 and 16x16 maps). A layer's x (except conv1's, the data) and dY
are laid out as the layers around it would hand them over in a network, in the backend's own
layout. Case names: ``forward/<layer>`` and ``forward_backward/<layer>``.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from .nets import Case, random_data

LAYER_BATCH = 64
# name: (in channels, out channels, kernel, image size, padding, input is data)
LAYERS = {
    "lenet_conv1": (1, 6, 5, 32, "valid", True),
    "lenet_conv2": (6, 16, 5, 14, "valid", False),
    **{
        f"same3x3_{c}to{f}_{size}px": (c, f, 3, size, "same", False)
        for c, f in ((16, 32), (32, 64), (64, 64))
        for size in (32, 16)
    },
}
KINDS = ("forward", "forward_backward")


def conv_flops(name: str, batch: int = LAYER_BATCH) -> tuple[float, float]:
    """(forward, forward+backward) floating-point operations of a conv layer, bias left out:
    ``2 N F Ho Wo C kh kw`` per product; the backward has dW and, unless the input is data, dX."""
    c, f, k, size, padding, first = LAYERS[name]
    out = size if padding == "same" else size - k + 1
    forward = 2.0 * batch * f * out * out * c * k * k
    return forward, forward * (2 if first else 3)


def conv_setup(name: str) -> tuple[nn.Conv2d, np.ndarray, np.ndarray, bool]:
    """A conv case's layer (weights from seed 1), its x and dY (NCHW, C order), and whether
    its input is data (then its backward is dW and db only)."""
    c, f, k, size, padding, first = LAYERS[name]
    layer = nn.Conv2d(c, f, k, padding=padding, rng=np.random.default_rng(1))
    x, _ = random_data((LAYER_BATCH, c, size, size))
    dy, _ = random_data(layer.output_shape(x.shape), seed=2)
    return layer, x, dy, first


def cnnrun_conv(backend: str, name: str) -> dict[str, Case]:
    """``forward/<name>`` and ``forward_backward/<name>`` of a conv case on ``backend``."""
    layer, x, dy, first = conv_setup(name)
    layer.set_backend(backend)
    # laid out as inside a network: dY always, and x unless it is the data, come from the
    # layers around it, in the backend's own layout (batch-last on numpy)
    dy = layer.kernels.native(dy)
    if not first:
        x = layer.kernels.native(x)

    def forward_backward() -> None:
        layer.forward(x)
        if first:
            layer.backward_params(dy)
        else:
            layer.backward(dy)

    return {
        f"forward/{name}": lambda: layer.forward(x),
        f"forward_backward/{name}": forward_backward,
    }


def torch_conv(name: str) -> dict[str, Case]:
    """A conv case in PyTorch: the twin of the same layer, the same x and dY; x wants its
    gradient unless it is the data."""
    import torch

    from .twin import torch_twin

    layer, x, dy, first = conv_setup(name)
    twin = torch_twin(layer)
    xt = torch.from_numpy(x).requires_grad_(not first)
    dyt = torch.from_numpy(dy)

    def forward() -> None:
        with torch.no_grad():
            twin(xt)

    def forward_backward() -> None:
        xt.grad = None
        twin(xt).backward(dyt)

    return {f"forward/{name}": forward, f"forward_backward/{name}": forward_backward}
