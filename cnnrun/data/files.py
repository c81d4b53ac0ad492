"""Files of the data sets on disk: finding them, checking their MD5, reading gzip and IDX.

A data set's files are looked for in a list of folders, the first holding all of them wins;
the message for missing files names the folder that came closest and only what it lacks.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from cnnrun.errors import DataError

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims: (N, rows, cols)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim: (N,)


def find_files(
    folders: Sequence[Path],
    wanted: Mapping[str, Sequence[str]],
    missing: Callable[[Path, list[str]], str],
) -> dict[str, Path]:
    """The path of every wanted file in the first folder that holds them all.

    ``wanted`` maps a file's base name to the names it may have on disk, in order of
    preference. If no folder has them all, raise DataError with ``missing(folder, bases)``: the
    folder that has the most of them (the first one on a tie) and the base names it lacks.
    """
    best = None
    for folder in folders:
        found = {}
        for base, names in wanted.items():
            hit = next((folder / n for n in names if (folder / n).is_file()), None)
            if hit is not None:
                found[base] = hit
        if len(found) == len(wanted):
            return found
        if best is None or len(found) > len(best[1]):
            best = (folder, found)
    folder, found = best
    raise DataError(missing(folder, [b for b in wanted if b not in found]))


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: Path, expected: str) -> None:
    """Raise DataError unless the file's MD5 is ``expected``."""
    actual = _md5(path)
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {path}: expected MD5 {expected}, got {actual}; the file is "
            "corrupt or not the official one: download it again (or set "
            "data.verify_checksums=false for your own files)"
        )


def verify_official(paths: Mapping[str, Path], digests: Mapping[str, str]) -> None:
    """:func:`verify_md5` of each path whose file name has a published digest in ``digests``
    (a file under another name, e.g. unpacked from its ``.gz``, is the user's own)."""
    for path in paths.values():
        if path.name in digests:
            verify_md5(path, digests[path.name])


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed if its name ends in ``.gz``; DataError if unreadable."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped if its name ends in ``.gz``).

    Layout, big-endian: a 4-byte magic number ``0x00 0x00 0x08 ndim``, then ``ndim`` int32
    dimensions, then ``prod(dims)`` bytes row-major. Returns a uint8 array of shape ``dims``;
    a wrong magic number or a payload of the wrong length raises DataError.
    """
    path = Path(path)
    raw = read_bytes(path)
    dims, header = _idx_header(path, raw, magic)
    expected, actual = int(np.prod(dims)), len(raw) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "too long"
        raise DataError(
            f"{path} is {problem}: its header says {dims}, so expected {expected} bytes of "
            f"data after the header, got {actual}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def _idx_header(path: Path, raw: bytes, magic: int) -> tuple[tuple[int, ...], int]:
    """The dimensions an IDX file's header gives and the header's length in bytes."""
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, too short for an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        kind = "images" if magic == IDX_IMAGES_MAGIC else "labels"
        raise DataError(
            f"{path} is not an IDX {kind} file: magic number 0x{found:08x}, expected 0x{magic:08x}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{path} is truncated: expected a {header}-byte header, got {len(raw)} bytes"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return dims, header
