"""PyTorch twins of cnnrun models for the parity tests (not a test file): the rule is the
bench's, :mod:`cnnrun.bench.twin` (the same tree of modules under the same names; a
``Residual`` is a module with ``branch`` and ``shortcut``; ``GlobalAvgPool2d`` is
``AdaptiveAvgPool2d(1)`` then ``Flatten()``), so that the parity tests check the very twins
the bench times. Importing this module skips the test file where PyTorch is not installed."""

from __future__ import annotations

import pytest

from cnnrun.bench.twin import residual_class, to_torch, torch_module, torch_twin

torch = pytest.importorskip("torch")

__all__ = ["residual_class", "to_torch", "torch", "torch_module", "torch_twin"]
