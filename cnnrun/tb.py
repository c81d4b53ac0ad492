"""TensorBoard output through tensorboardX: the tags of DESIGN.md, in the run's own ``tb/``."""

from __future__ import annotations

import time

import numpy as np

# tensorboardX is imported where a writer is opened: it imports torch when torch is installed
# (about 2 s), which a run that stops at a bad config value should not wait for


def open_writer(logdir, purge_step: int | None = None):
    """A writer; ``purge_step`` drops events at or after that step (a resumed run).

    Event files are named by the second they were opened in: a resumed run started within the
    same second would truncate the first run's file, so the name gets a nanosecond suffix."""
    from tensorboardX import SummaryWriter

    return SummaryWriter(
        logdir=str(logdir),
        purge_step=purge_step,
        flush_secs=10,
        filename_suffix=f".{time.time_ns()}",
    )


def add_histogram(writer, tag: str, values: np.ndarray, step: int) -> bool:
    """A histogram of the finite values; False (and nothing written) when tensorboardX cannot
    bin them (none finite, or a range so wide that its bins overflow)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return False
    try:
        writer.add_histogram(tag, finite.astype(np.float64), step)
    except ValueError:
        return False
    return True


def filter_grid(weight: np.ndarray, scale: int = 8, gap: int = 1) -> np.ndarray:
    """First-layer filters (F, C, kh, kw) as one (3, H, W) image in [0, 1]: a tile per filter,
    each normalised on its own, RGB when C == 3 and grey (channel mean) otherwise, enlarged
    ``scale`` times so that 5x5 kernels can be seen."""
    f, c, kh, kw = weight.shape
    w = weight.astype(np.float32)
    tiles = w if c == 3 else np.repeat(w.mean(axis=1, keepdims=True), 3, axis=1)  # (F, 3, kh, kw)
    lo = tiles.min(axis=(1, 2, 3), keepdims=True)
    hi = tiles.max(axis=(1, 2, 3), keepdims=True)
    tiles = (tiles - lo) / np.where(hi > lo, hi - lo, 1)
    tiles = tiles.repeat(scale, axis=2).repeat(scale, axis=3)  # (F, 3, kh*s, kw*s)
    cols = int(np.ceil(np.sqrt(f)))
    rows = int(np.ceil(f / cols))
    th, tw = kh * scale, kw * scale
    grid = np.ones((3, rows * (th + gap) + gap, cols * (tw + gap) + gap), np.float32)
    for i in range(f):
        r, q = divmod(i, cols)
        top, left = gap + r * (th + gap), gap + q * (tw + gap)
        grid[:, top : top + th, left : left + tw] = tiles[i]
    return grid


def add_text(writer, tag: str, text: str, step: int) -> None:
    """Text under exactly ``tag`` (tensorboardX's ``add_text`` appends ``/text_summary``)."""
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboardX.proto.tensor_pb2 import TensorProto
    from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto

    plugin = SummaryMetadata.PluginData(plugin_name="text")
    tensor = TensorProto(
        dtype="DT_STRING",
        string_val=[text.encode("utf-8")],
        tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]),
    )
    value = Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin), tensor=tensor)
    writer.file_writer.add_summary(Summary(value=[value]), step)


def write_hparams(writer, hparam_dict: dict, metric_dict: dict) -> None:
    """The HParams entry, written into the run's own event file (tensorboardX's ``add_hparams``
    would open a new sub-folder). Its metrics are the run's scalar tags (``val/loss`` ...), so
    the dashboard reads their final values from the same run."""
    from tensorboardX.summary import hparams

    clean = {
        k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparam_dict.items()
    }
    for summary in hparams(clean, metric_dict):
        writer.file_writer.add_summary(summary)
