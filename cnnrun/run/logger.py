"""The run's TensorBoard events: every write goes through :class:`RunLogger`, every tag is
defined once here (the tests import them).

Events are written with tensorboardX into the run's own ``tb/``. A new dashboard panel is a tag
constant and a method (or a line in one) of :class:`RunLogger`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

# tensorboardX is imported where a writer is opened: it imports torch when torch is installed
# (about 2 s), which a run that stops at a bad config value should not wait for

TRAIN_LOSS = "train/loss"
TRAIN_ACC = "train/acc"
VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
LR = "lr"
GRAD_NORM_GLOBAL = "grad_norm/global"
GRAD_NORM = "grad_norm/{param}"  # one per parameter, e.g. grad_norm/conv1.weight
WEIGHTS = "weights/{param}"  # histograms
GRADS = "grads/{param}"  # histograms
FILTERS = "filters/{layer}"  # the first conv layer's filters, as an image
SKIPPED = "train/skipped_batches"  # trainer.on_nan=skip
SHAPE_TRACE = "shapes/trace"  # text
# the scalars every run writes, besides GRAD_NORM per parameter
SCALARS = (TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC, LR, GRAD_NORM_GLOBAL)
# the final metrics shown beside the hyperparameters in HParams
HPARAM_METRICS = (VAL_LOSS, VAL_ACC, TRAIN_LOSS, TRAIN_ACC, "test/loss", "test/acc")


class RunLogger:
    """A run's event writer: scalars every ``log_every`` steps, histograms and the first conv
    layer's filters every ``histogram_every`` steps, validation points, the shape trace, and
    the HParams entry at the end. ``purge_step`` (a resumed run) drops the events at and after
    that step, which the resumed run writes again."""

    def __init__(
        self,
        logdir: str | Path,
        *,
        log_every: int = 1,
        histogram_every: int = 100,
        first_conv: str | None = None,
        purge_step: int | None = None,
    ):
        self.writer = open_writer(logdir, purge_step)
        self.log_every, self.histogram_every = log_every, histogram_every
        self.first_conv = first_conv

    def train_step(self, step: int, result, lr: float, model) -> None:
        """After a step that updated the weights (a :class:`cnnrun.run.step.StepResult`)."""
        w = self.writer
        if step % self.log_every == 0:
            w.add_scalar(TRAIN_LOSS, result.loss, step)
            w.add_scalar(TRAIN_ACC, result.acc, step)
            w.add_scalar(LR, lr, step)
            w.add_scalar(GRAD_NORM_GLOBAL, result.global_norm, step)
            for name, norm in result.grad_norms.items():
                w.add_scalar(GRAD_NORM.format(param=name), norm, step)
        if step % self.histogram_every == 0:
            for p in model.parameters():
                add_histogram(w, WEIGHTS.format(param=p.name), p.data, step)
                add_histogram(w, GRADS.format(param=p.name), p.grad, step)
            if self.first_conv is not None:
                grid = filter_grid(model[self.first_conv].weight.data)
                w.add_image(FILTERS.format(layer=self.first_conv), grid, step)

    def validation(self, step: int, loss: float, acc: float) -> None:
        self.writer.add_scalar(VAL_LOSS, loss, step)
        self.writer.add_scalar(VAL_ACC, acc, step)

    def skipped(self, step: int, count: int) -> None:
        self.writer.add_scalar(SKIPPED, count, step)

    def shape_trace(self, table: str) -> None:
        add_text(self.writer, SHAPE_TRACE, table, 0)

    def hparams(self, hyper: dict, metrics: dict) -> None:
        """The HParams entry: ``hyper`` beside the finite ones of :data:`HPARAM_METRICS`."""
        finite = {k: metrics[k] for k in HPARAM_METRICS if np.isfinite(metrics[k])}
        write_hparams(self.writer, hyper, finite)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_writer(logdir, purge_step: int | None = None):
    """A tensorboardX writer; ``purge_step`` drops events at or after that step.

    Event files are named by the second they were opened in: a resumed run started within the
    same second would truncate the first run's file, so the name gets a nanosecond suffix."""
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(
        logdir=str(logdir),
        purge_step=purge_step,
        flush_secs=10,
        filename_suffix=f".{time.time_ns()}",
    )
    _write_in_this_thread(writer)
    return writer


def _write_in_this_thread(writer) -> None:
    """tensorboardX hands every event to a queue that a thread of its own writes out, and its
    flush() does not wait for that queue: a flush before a checkpoint could leave the epoch's
    validation point in the queue, and a kill -9 then lost it (a test caught it once in
    ~20 runs). Events are written by the caller instead, under the event file's lock, so a
    flush leaves nothing behind; the thread still flushes every ``flush_secs``."""
    events = getattr(writer._get_file_writer(), "event_writer", None)
    file = getattr(events, "_ev_writer", None)
    if file is None or not hasattr(file, "write_event"):  # another tensorboardX: its own way
        return
    events.add_event = lambda event: None if events._closed else file.write_event(event)


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
