"""The residual block (He et al. 2016): a branch, a shortcut, and their sum."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, ShapeError
from .module import Module, Product, Sequential, fmt_shape
from .registry import register_layer


@dataclass
class Merge(Product):
    """The sum that ends a residual block's backward pass, as the shape trace shows it:
    ``dX = dX_branch (64,16,32,32) + dX_shortcut (64,16,32,32)``."""

    def __str__(self) -> str:
        terms = " + ".join(f"{label} {fmt_shape(shape)}" for label, shape in self.operands)
        return f"{self.grad} = {terms}"


def _as_sequential(part, what: str) -> Sequential:
    if isinstance(part, Sequential):
        return part
    if isinstance(part, Module):
        return Sequential([("0", part)])
    if isinstance(part, (list, tuple)):
        return Sequential(list(part))
    raise ConfigError(f"invalid {what} {part!r}: expected a Sequential, a layer or a list of them")


@register_layer
class Residual(Module):
    """``y = branch(x) + shortcut(x)``, the shortcut the identity by default.

    ``branch`` and ``shortcut`` are :class:`Sequential` s (a layer or a list of layers is
    wrapped in one); both take the block's input x (N, C, H, W) and must give outputs of one
    shape, the block's output. The branch learns the residual ``F(x) = y - x``.

    Backward: y depends on x through both paths, so the error dY is handed, unchanged, to each:
    ``dX = dX_branch + dX_shortcut`` with ``dX_branch = branch.backward(dY)`` and
    ``dX_shortcut = shortcut.backward(dY)`` (``dY`` itself for the identity). The identity part
    carries dY down to the block's input whatever the branch does to it: why deep residual
    networks keep a gradient in their first layers when plain ones of the same depth lose it.

    Names, as PyTorch names a module with attributes ``branch`` and ``shortcut``: the
    parameters of the branch's layer ``conv1`` are ``branch.conv1.weight`` here, and
    ``block1_1.branch.conv1.weight`` when the block is the layer ``block1_1`` of a model; the
    identity shortcut has none. So a ``state_dict`` loads unchanged into the PyTorch module whose
    ``branch`` and ``shortcut`` are ``torch.nn.Sequential`` s of the twin layers under the same
    names and whose ``forward`` returns ``branch(x) + shortcut(x)``.
    """

    def __init__(self, branch, shortcut=None):
        super().__init__()
        self.branch = _as_sequential(branch, "branch")
        self.shortcut = None if shortcut is None else _as_sequential(shortcut, "shortcut")
        self._set_names()

    @property
    def label(self) -> str:
        return self.name or "Residual"

    def named_children(self) -> list[tuple[str, Module]]:
        parts = [("branch", self.branch)]
        if self.shortcut is not None:
            parts.append(("shortcut", self.shortcut))
        return parts

    def forward(self, x: np.ndarray) -> np.ndarray:
        y_branch = self.branch.forward(x)
        y_short = x if self.shortcut is None else self.shortcut.forward(x)
        if y_branch.shape != y_short.shape:
            what = "the identity shortcut" if self.shortcut is None else "the shortcut"
            raise ShapeError(
                f"residual block {self.label}: the branch gives {tuple(y_branch.shape)} but "
                f"{what} {tuple(y_short.shape)}, and the two are added; give the block a "
                "shortcut that maps its input to the branch's shape (a 1x1 conv with the "
                "branch's stride and channels)"
            )
        kernels = self.kernels
        self._cache = (x.shape, kernels)
        return kernels.add(y_branch, y_short)  # the layout of the two (batch-last on NumPy)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        _, kernels = self._forward_cache()
        dx_branch = self.branch.backward(dy)
        dx_short = dy if self.shortcut is None else self.shortcut.backward(dy)
        dx = kernels.add(dx_branch, dx_short)  # (N, C, H, W), the input's shape
        if self.tracing:
            operands = [("dX_branch", dx_branch.shape), ("dX_shortcut", dx_short.shape)]
            self.products = [Merge("dX", "+", operands, dx.shape)]
        return dx

    def __repr__(self) -> str:
        short = "identity" if self.shortcut is None else repr(self.shortcut)
        body = f"branch={self.branch!r}\nshortcut={short}"
        return "Residual(\n  " + body.replace("\n", "\n  ") + "\n)"
