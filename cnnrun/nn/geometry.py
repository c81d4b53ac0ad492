"""Sizes, strides and padding of sliding-window layers (conv and pooling).

Output size along one axis, for an input of size ``H`` padded by ``p_lo`` and ``p_hi``, a kernel
of size ``k`` with dilation ``d`` and stride ``s``::

    H_out = floor((H + p_lo + p_hi - d * (k - 1) - 1) / s) + 1

Padding modes of :class:`~cnnrun.nn.Conv2d`:

* ``"valid"``: no padding, ``H_out = floor((H - d(k-1) - 1) / s) + 1``.
* ``"same"``: stride 1 keeps ``H``: the total padding ``d(k-1)`` is split with the odd pixel at the
  bottom/right (as PyTorch does for even kernels). Stride ``s > 1`` gives ``ceil(H / s)`` with the
  total padding ``max((H_out - 1) s + d(k-1) + 1 - H, 0)`` split the same way (TensorFlow's SAME).
* ``"full"``: ``d(k-1)`` on every side, so every input pixel meets every kernel tap.
* an int ``p``, a pair ``(ph, pw)`` or a 4-tuple ``(top, bottom, left, right)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

from ..errors import ConfigError, ShapeError

PADDING_MODES = ("same", "valid", "full")
Padding4 = tuple[int, int, int, int]  # (top, bottom, left, right)


def pair(value, what: str, *, minimum: int = 1) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(2, 3) -> (2, 3)``; anything else is a :class:`ConfigError`."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(value)
    else:
        values = (value, value)
    if len(values) != 2 or not all(_is_int(v) and v >= minimum for v in values):
        raise ConfigError(
            f"invalid {what} {value!r}: expected an int >= {minimum} or a pair of them"
        )
    return int(values[0]), int(values[1])


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def check_padding(padding, owner: str = "Conv2d", modes: Sequence[str] = PADDING_MODES):
    """Validate a padding spec; returns a mode string or a 4-tuple (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding.lower() in modes:
            return padding.lower()
    elif (
        isinstance(padding, Sequence)
        and len(padding) == 4
        and all(_is_int(p) and p >= 0 for p in padding)
    ):
        return tuple(int(p) for p in padding)
    else:
        try:
            ph, pw = pair(padding, "padding", minimum=0)
            return (ph, ph, pw, pw)
        except ConfigError:
            pass
    accepted = ", ".join(modes) + (", " if modes else "")
    raise ConfigError(
        f"invalid padding {padding!r} for {owner}: expected one of {accepted}"
        "an int >= 0, a pair (ph, pw) or (top, bottom, left, right)"
    )


def resolve_padding(
    padding,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    in_hw: tuple[int, int],
) -> Padding4:
    """Turn a checked padding spec into pixels ``(top, bottom, left, right)`` for this input."""
    if not isinstance(padding, str):
        return padding
    if padding == "valid":
        return (0, 0, 0, 0)
    pads = []
    for k, s, d, n in zip(kernel, stride, dilation, in_hw):
        span = d * (k - 1)  # extent of the dilated kernel, minus one
        if padding == "full":
            pads.append((span, span))
        else:  # same
            out = -(-n // s)  # ceil(n / s)
            total = max((out - 1) * s + span + 1 - n, 0)
            pads.append((total // 2, total - total // 2))  # odd pixel at the bottom/right
    (top, bottom), (left, right) = pads
    return (top, bottom, left, right)


def output_hw(
    in_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pads: Padding4,
    owner: str = "layer",
) -> tuple[int, int]:
    """Output (H, W) of a sliding window; a :class:`ShapeError` if the kernel does not fit."""
    padded = (in_hw[0] + pads[0] + pads[1], in_hw[1] + pads[2] + pads[3])
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    if padded[0] < span[0] or padded[1] < span[1]:
        raise ShapeError(
            f"{owner}: input {in_hw[0]}x{in_hw[1]} (padded {padded[0]}x{padded[1]}) is smaller "
            f"than the {kernel[0]}x{kernel[1]} kernel"
            + (f" with dilation {dilation}" if dilation != (1, 1) else "")
            + "; use 'same' padding, a smaller kernel or a larger image"
        )
    return tuple((p - sp) // s + 1 for p, sp, s in zip(padded, span, stride))
