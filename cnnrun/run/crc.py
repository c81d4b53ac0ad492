"""CRC-32C (Castagnoli), as TensorBoard's record format needs it, fast enough for images.

The table-driven update ``R = T[(R ^ byte) & 0xFF] ^ (R >> 8)`` (reflected polynomial
0x82F63B78) runs a byte at a time in Python for short records. A long record is cut into
blocks of ``BLOCK`` bytes whose registers, each started at zero, NumPy updates side by side;
they are then chained in order: feeding ``BLOCK`` more bytes maps a register ``R`` to
``Z(R) ^ block_register``, where ``Z`` (running ``BLOCK`` zero bytes) is linear over GF(2)
and kept as four 256-entry tables, one per byte of ``R``.
"""

from __future__ import annotations

import sys

import numpy as np

POLY = 0x82F63B78
BLOCK = 256
JIT_FROM = 16  # the compiled loop from this many bytes: below, its call costs more (2 us)
SHORT = 8192  # below this many bytes the plain loop is faster: about 65 ns a byte, against
# the blocks' 0.65 ms floor (BLOCK steps of NumPy calls; a 4 KB histogram took 0.64 ms, not 0.26)


def _table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(POLY), t >> 1).astype(np.uint32)
    return t


TABLE = _table()
_TABLE_LIST = [int(v) for v in TABLE]


def _zeros(registers: np.ndarray, count: int) -> np.ndarray:
    """The registers after ``count`` zero bytes."""
    for _ in range(count):
        registers = TABLE[registers & 0xFF] ^ (registers >> 8)
    return registers


# Z as four tables: Z(R) = xor over k of _SHIFT[k][(R >> 8k) & 0xFF], Z being linear
_SHIFT = _zeros(
    (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]),
    BLOCK,
)
_SHIFT_LIST = [[int(v) for v in row] for row in _SHIFT]


def _update(register: int, data: bytes) -> int:
    table = _TABLE_LIST
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def crc32c(data: bytes) -> int:
    """The CRC-32C of ``data`` (initial value and final xor 0xFFFFFFFF): compiled where the
    process has Numba loaded already (:mod:`.crc_jit`), else by the loops here."""
    if "numba" in sys.modules and len(data) >= JIT_FROM:
        from .crc_jit import crc32c as compiled

        return compiled(data)
    return _crc32c_numpy(data)


def _crc32c_numpy(data: bytes) -> int:
    """:func:`crc32c` by the plain loop, or NumPy's blocks for long data (module's notes)."""
    register = 0xFFFFFFFF
    n_blocks = len(data) // BLOCK if len(data) >= SHORT else 0
    if n_blocks:
        blocks = np.frombuffer(data, np.uint8, n_blocks * BLOCK).reshape(n_blocks, BLOCK)
        partial = np.zeros(n_blocks, np.uint32)
        for j in range(BLOCK):  # every block's register, started at zero, side by side
            partial = TABLE[(partial ^ blocks[:, j]) & 0xFF] ^ (partial >> 8)
        s0, s1, s2, s3 = _SHIFT_LIST
        for p in partial.tolist():
            r = register
            register = s0[r & 0xFF] ^ s1[(r >> 8) & 0xFF] ^ s2[(r >> 16) & 0xFF] ^ s3[r >> 24] ^ p
    register = _update(register, data[n_blocks * BLOCK :])
    return register ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC of TFRecord files: rotated right by 15 bits, plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
