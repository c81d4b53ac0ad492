"""What the numba kernels share: the fastmath flags, the chunk of images per work item, and
the output size of a window sweep."""

from __future__ import annotations

# fused multiply-add and vectorised reductions; NaN and infinity keep their meaning
_FAST = {"contract", "reassoc", "nsz", "arcp"}

Pair = tuple[int, int]
CHUNK = 4  # images per parallel work item: scratch rows are allocated once per item


def out_hw(padded_hw: Pair, kernel: Pair, stride: Pair, dilation: Pair) -> Pair:
    """(Ho, Wo) of ``kernel`` taps ``dilation`` apart, every ``stride``, over (Hp, Wp)."""
    return tuple(
        (p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(padded_hw, kernel, stride, dilation)
    )
