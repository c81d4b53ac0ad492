"""TensorBoard event files, written with the ``tensorboard`` package's own protocol buffers.

An event file is a sequence of records, each ``length (uint64) | masked CRC-32C of length |
data | masked CRC-32C of data``, every record a serialised ``Event``: the file's version
first, then summaries (scalars, histograms, images, text, plugin data) at a step, or a graph.
This module writes them and builds the summary values; nothing here imports a deep-learning
framework (the protos are plain protobuf; the CRC is :mod:`cnnrun.run.crc`).

A file is named ``events.out.tfevents.<seconds>.<host>.<nanoseconds>.cnnrun``: TensorBoard
reads the files of a folder in name order, and a resumed run opened within the same second as
the run it continues must not take that run's name.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
import time
import zlib
from pathlib import Path

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2

from .crc import masked_crc32c

Value = summary_pb2.Summary.Value
EVENT_PREFIX = "events.out.tfevents"


class EventFile:
    """One event file in ``folder`` (made if missing), opened with a ``SessionLog.START``: at
    step 0 for a fresh run, at ``purge_step`` for a resumed one. TensorBoard then drops what
    earlier files hold at and after that step (a run killed after its last checkpoint wrote
    events that the resumed run writes again). The fresh run's START matters too: TensorBoard's
    Python reader takes the first START of a run as its beginning and only a later one as a
    restart.

    Events are held, in order, and written ``HOLD`` at a time or at :meth:`flush` (a run flushes
    before every checkpoint): as the file's own buffer held them before, about a hundred
    steps' scalars. Framed one at a time between two training steps, a step's loss and
    accuracy took about 65 us of Python in a real run; held, then written in a batch, about
    25 (10 between the steps, 15 when written)."""

    HOLD = 64

    def __init__(self, folder: str | Path, *, purge_step: int | None = None, name: str = ""):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = name or f"{EVENT_PREFIX}.{int(now)}.{socket.gethostname()}.{time.time_ns()}.cnnrun"
        self.path = self.folder / name
        # held events: serialised ones, or (time, step, tags, values) of scalars()
        self._held: list[bytes | tuple[float, int, tuple[str, ...], tuple[float, ...]]] = []
        self._scalar_events: dict[tuple[str, ...], event_pb2.Event] = {}  # see _scalar_bytes
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2"))
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        step = 0 if purge_step is None else purge_step
        self.write(event_pb2.Event(wall_time=now, step=step, session_log=start))

    def write(self, event: event_pb2.Event) -> None:
        self._hold(event.SerializeToString(deterministic=True))

    def summary(self, step: int, values: list[Value]) -> None:
        """One event at ``step`` holding every value (a step's scalars travel together)."""
        if values:
            summary = summary_pb2.Summary(value=values)
            self.write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """``{tag: value}`` at ``step``: the event :meth:`summary` writes for them, byte for
        byte, made when it is written."""
        self._hold((time.time(), step, tuple(values), tuple(map(float, values.values()))))

    def graph(self, graph_def: bytes) -> None:
        self.write(event_pb2.Event(wall_time=time.time(), step=0, graph_def=graph_def))

    def flush(self) -> None:
        """Into the operating system's hands: a kill of this process loses nothing written."""
        if not self._file.closed:
            self._write_held()
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._write_held()
            self._file.close()

    def _hold(self, item) -> None:
        self._held.append(item)
        if len(self._held) >= self.HOLD:
            self._write_held()

    def _write_held(self) -> None:
        framed = [record(e if isinstance(e, bytes) else self._scalar_bytes(*e)) for e in self._held]
        self._held.clear()
        self._file.write(b"".join(framed))

    def _scalar_bytes(self, wall_time: float, step: int, tags: tuple, values: tuple) -> bytes:
        """A scalars event, from messages made once per set of tags and then refilled."""
        event = self._scalar_events.get(tags)
        if event is None:
            event = event_pb2.Event(summary=summary_pb2.Summary(value=[Value(tag=t) for t in tags]))
            self._scalar_events[tags] = event
        event.wall_time, event.step = wall_time, step
        for value, v in zip(event.summary.value, values):
            value.simple_value = v
        return event.SerializeToString(deterministic=True)


def record(data: bytes) -> bytes:
    """``data`` framed as one record of a TFRecord file."""
    return _header(len(data)) + data + struct.pack("<I", masked_crc32c(data))


@functools.lru_cache(maxsize=4096)
def _header(length: int) -> bytes:
    """A record's length and its CRC: a run's events come in few lengths (a step's scalars
    in one or two), and the CRC, in Python, costs about a microsecond a byte in a run."""
    packed = struct.pack("<Q", length)
    return packed + struct.pack("<I", masked_crc32c(packed))


def read_events(path: Path) -> list[event_pb2.Event]:
    """The events of a file this module wrote (a torn last record is left out)."""
    data, found, pos = Path(path).read_bytes(), [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        body = data[pos + 12 : pos + 12 + length]
        if len(body) < length:
            break
        found.append(event_pb2.Event.FromString(body))
        pos += 16 + length
    return found


def write_events_atomically(path: Path, events: list[event_pb2.Event]) -> None:
    """A whole event file at once: written beside ``path`` under a name TensorBoard does not
    read, then renamed over it, so that a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    version = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
    with open(tmp, "wb") as f:
        data = [e.SerializeToString(deterministic=True) for e in [version, *events]]
        f.write(b"".join(record(d) for d in data))
    os.replace(tmp, path)


# -- summary values ------------------------------------------------------------------------------
def scalar(tag: str, value: float) -> Value:
    return Value(tag=tag, simple_value=float(value))


def histogram(tag: str, values: np.ndarray, bins: int = 30) -> Value | None:
    """A histogram of the finite entries of ``values``; None when none is finite."""
    finite = np.asarray(values, np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    if hi == lo:  # one value: a narrow range around it, on its own scale
        half = max(abs(lo) * 1e-3, 1e-12)
        lo, hi = lo - half, hi + half
    counts, edges = np.histogram(finite, bins=bins, range=(lo, hi))
    histo = summary_pb2.HistogramProto(
        min=float(finite.min()),
        max=float(finite.max()),
        num=float(finite.size),
        sum=float(finite.sum()),
        sum_squares=float(np.dot(finite, finite)),
        bucket_limit=edges[1:].tolist(),
        bucket=counts.astype(np.float64).tolist(),
    )
    return Value(tag=tag, histo=histo)


def image(tag: str, rgb: np.ndarray) -> Value:
    """An (H, W, 3) uint8 picture, PNG-encoded."""
    h, w, _ = rgb.shape
    encoded = png(rgb)
    picture = summary_pb2.Summary.Image(
        height=h, width=w, colorspace=3, encoded_image_string=encoded
    )
    return Value(tag=tag, image=picture)


def plugin_tensor(tag: str, plugin: str, content: bytes, strings: list[bytes]) -> Value:
    """A string tensor under ``plugin`` (text, hparams, custom scalars), with its content."""
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=content)
    )
    # a vector, also when empty (HParams' summaries carry no values: shape (0,))
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(strings))]
    )
    tensor = tensor_pb2.TensorProto(dtype="DT_STRING", string_val=strings, tensor_shape=shape)
    return Value(tag=tag, metadata=metadata, tensor=tensor)


def text(tag: str, markdown: str) -> Value:
    """Markdown under the Text tab."""
    return plugin_tensor(tag, "text", b"", [markdown.encode("utf-8")])


def png(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 array as a PNG file (8-bit RGB, no filter, zlib level 1: the
    pictures are written during training, and level 6 saves little on them)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, truecolour
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
        + chunk(b"IEND", b"")
    )
