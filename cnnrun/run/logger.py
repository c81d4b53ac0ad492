"""The run's TensorBoard dashboard: every write goes through :class:`RunLogger`, every tag is
defined once here (the tests and the README's list import or repeat them).

A run's ``tb/`` holds three TensorBoard runs, as Keras writes them::

    tb/             the run: HParams, results, gradient flow, histograms, pictures, the
                    model graph, the shape trace, the custom-scalars layout
    tb/train/       training curves (Curves/*, epoch averages) and per-step values (Steps/*)
    tb/validation/  validation curves (Curves/*)

Train and validation share the tags ``Curves/loss`` and ``Curves/accuracy``, so TensorBoard
draws them on one chart; capitalised groups sort before lower-case ones, so those two charts
open the Time Series tab. HParams infers its columns from the runs: the hyperparameters that
differ between runs come first, and its metrics are the runs' last values (Curves/* are epoch
averages, as in ``metrics.json``). Per-parameter and per-layer tags carry their position in
the network (``flow/grad_norm/03_conv2.weight``), so they sort in network order.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from . import events, pictures
from .graph import graph_def
from .probe import Probe, layer_label

TRAIN_RUN, VAL_RUN = "train", "validation"  # sub-folders of tb/
LOSS, ACC = "Curves/loss", "Curves/accuracy"  # train (epoch averages) and validation
STEP_LOSS, STEP_ACC = "Steps/loss", "Steps/accuracy"  # each logged step's batch (train run)
LR = "Steps/lr"  # once per epoch, at its first step
SKIPPED = "Steps/skipped_batches"  # trainer.on_nan=skip
RESULT = "Result/{name}"  # once, at the end: test_loss, test_accuracy, val_best_loss, ...
GRAD_NORM = "flow/grad_norm/{param}"  # {param}: "04_conv2.weight", see network_tags()
GRAD_NORM_GLOBAL = "flow/grad_norm_global"
UPDATE_RATIO = "flow/update_ratio/{param}"  # ||w_after - w_before|| / ||w_before||
INACTIVE = "flow/inactive/{layer}"  # dead ReLUs, saturated tanh or sigmoid units
WEIGHTS = "hist/weights/{layer}"  # conv and linear weights, histograms
GRADS = "hist/grads/{layer}"
FILTERS = "pictures/filters_W_dW/{layer}"  # the first conv layer: W beside dW
ACTIVATIONS = "pictures/activations/{layer}"  # each conv layer's maps for the probe images
SALIENCY = "pictures/saliency"  # the probe images beside max_c |dL/dx|
CONFUSION = "pictures/confusion_validation"
SHAPE_TRACE = "shapes/trace"  # text
HPARAMS_FILE = "events.out.tfevents.9999999999.cnnrun-hparams"  # rewritten at each run's end
# the final metrics written under RESULT, from metrics.json's keys
RESULTS = {
    "test/acc": "test_accuracy",
    "test/loss": "test_loss",
    "test/acc_last": "test_accuracy_last",
    "test/loss_last": "test_loss_last",
    "val/best_loss": "val_best_loss",
}


def places(model) -> dict[str, str]:
    """Every layer's place in the network, numbered once from the whole model: the 1-based
    position of its top-level layer, and for a layer inside a container its position among
    everything that container holds (``04`` for LeNet's conv2, ``10-2`` for resnet20's
    ``block2_1.branch.conv1``). A plain and a residual network with the same top-level layers
    and branch names give their branches the same places (a shortcut comes after the branch),
    so TensorBoard draws both on the same charts."""
    top = {name: i for i, (name, _) in enumerate(model.layers, 1)}
    width = len(str(len(top)))
    inner: dict[str, int] = {}
    found = {}
    for name, _ in model.named_modules():
        if not name:
            continue
        head = name.split(".", 1)[0]
        place = f"{top[head]:0{width}d}"
        if name != head:
            inner[head] = inner.get(head, 0) + 1
            place += f"-{inner[head]}"
        found[name] = place
    return found


def network_tags(model, names: list[str], params: bool = False) -> dict[str, str]:
    """Each layer (or, ``params``, parameter) name as a tag that sorts in network order: its
    layer's place (see :func:`places`) in front, an unnamed layer's type after its index
    (``04_conv2.weight``, ``02_1_tanh``, ``10-2_block2_1.branch.conv1.weight``)."""
    where, kinds = places(model), dict(model.named_modules())
    tagged = {}
    for name in names:
        layer = name.rsplit(".", 1)[0] if params else name
        label = name if params else layer_label(name, kinds[name])
        tagged[name] = f"{where[layer]}_{label}"
    return tagged


class RunLogger:
    """A run's event writers (see the module's docstring for the layout).

    The batch's loss and accuracy every ``log_every`` steps, the gradient flow every
    ``flow_every``; histograms at step 0 and every ``histogram_every`` steps (the
    dashboard adds the end's); pictures when the dashboard asks. ``purge_step`` (a
    resumed run) makes TensorBoard drop what earlier files hold from that step on, which the
    resumed run writes again."""

    def __init__(
        self,
        logdir: str | Path,
        *,
        log_every: int = 1,
        flow_every: int = 10,
        histogram_every: int = 100,
        purge_step: int | None = None,
    ):
        self.logdir = Path(logdir)
        self.run = events.EventFile(self.logdir, purge_step=purge_step)
        self.train = events.EventFile(self.logdir / TRAIN_RUN, purge_step=purge_step)
        self.val = events.EventFile(self.logdir / VAL_RUN, purge_step=purge_step)
        self.log_every, self.flow_every = log_every, flow_every
        self.histogram_every = histogram_every
        self._last_histograms = -1

    # -- once per event folder ------------------------------------------------------------
    def describe(self, model, rows, trace_text: str) -> None:
        """The model graph, the shape trace and the custom-scalars layout, at step 0."""
        self.run.graph(graph_def(model, rows))
        self.run.summary(0, [events.text(SHAPE_TRACE, trace_text), _layout()])

    # -- every step -----------------------------------------------------------------------
    def wants_flow(self, step: int) -> bool:
        """Whether the step at ``step`` writes the gradient flow (and measures the update
        ratios and inactive units for it)."""
        return step % self.flow_every == 0

    def train_step(self, step: int, result, model) -> None:
        """After a step that updated the weights (a :class:`cnnrun.run.step.StepResult`)."""
        if step % self.log_every == 0:
            self.train.scalars(step, {STEP_LOSS: result.loss, STEP_ACC: result.acc})
        if self.wants_flow(step):
            self.run.scalars(step, _flow(result, model))
        if step % self.histogram_every == 0:
            self.histograms(step, model)

    def histograms(self, step: int, model) -> None:
        """Weights and gradients of every conv and linear layer (biases and batch-norm
        parameters left out), once per step at most."""
        if step == self._last_histograms:
            return
        self._last_histograms = step
        values = []
        weights = [p for p in model.parameters() if p.name.endswith("weight") and p.data.ndim > 1]
        named = network_tags(model, [p.name.rsplit(".", 1)[0] for p in weights])
        for p in weights:
            layer = named[p.name.rsplit(".", 1)[0]]
            values += [
                events.histogram(WEIGHTS.format(layer=layer), p.data),
                events.histogram(GRADS.format(layer=layer), p.grad),
            ]
        self.run.summary(step, [v for v in values if v is not None])

    def skipped(self, step: int, count: int) -> None:
        self.train.summary(step, [events.scalar(SKIPPED, count)])

    def learning_rate(self, step: int, lr: float) -> None:
        self.train.summary(step, [events.scalar(LR, lr)])

    # -- epochs and the end ---------------------------------------------------------------
    def epoch(self, step: int, train: tuple[float, float], val: tuple[float, float]) -> None:
        """The epoch's (loss, accuracy) averages of train and validation, at its last step."""
        for writer, (loss, acc) in ((self.train, train), (self.val, val)):
            writer.summary(step, [events.scalar(LOSS, loss), events.scalar(ACC, acc)])

    def pictures(self, step: int, model, seen: Probe) -> None:
        """The probe's pictures at ``step``."""
        values = []
        if seen.first_conv is not None:
            picture = pictures.weight_and_gradient(seen.weight, seen.weight_grad)
            first = network_tags(model, [seen.first_conv])[seen.first_conv]
            values.append(events.image(FILTERS.format(layer=first), picture))
        named = network_tags(model, list(seen.conv_maps))
        for name, maps in seen.conv_maps.items():
            values.append(
                events.image(ACTIVATIONS.format(layer=named[name]), pictures.activation_maps(maps))
            )
        if seen.images.ndim == 4:
            values.append(events.image(SALIENCY, pictures.saliency(seen.images, seen.input_grad)))
        self.run.summary(step, values)

    def confusion(self, step: int, counts: np.ndarray) -> None:
        """The validation confusion matrix (``counts[true, predicted]``) at ``step``."""
        self.run.summary(step, [events.image(CONFUSION, pictures.confusion(counts))])

    def results(self, step: int, metrics: dict) -> None:
        finite = [
            events.scalar(RESULT.format(name=name), metrics[key])
            for key, name in RESULTS.items()
            if key in metrics and np.isfinite(metrics[key])
        ]
        self.run.summary(step, finite)

    def hparams(self, hyper: dict, status: str) -> None:
        """The HParams row: ``hyper`` and ``status`` (``ok``, ``failed: ...``,
        ``interrupted ...``). See :func:`write_hparams`."""
        write_hparams(self.logdir, hyper, status)

    def flush(self) -> None:
        for writer in (self.run, self.train, self.val):
            writer.flush()

    def close(self) -> None:
        for writer in (self.run, self.train, self.val):
            writer.close()


def _flow(result, model) -> dict[str, float]:
    """Gradient norms and update ratios per parameter, inactive units per activation layer."""
    named = network_tags(model, [p.name for p in model.parameters()], params=True)
    values = {GRAD_NORM_GLOBAL: result.global_norm}
    values.update({GRAD_NORM.format(param=named[n]): v for n, v in result.grad_norms.items()})
    values.update({UPDATE_RATIO.format(param=named[n]): v for n, v in result.update_ratios.items()})
    layers = network_tags(model, list(result.inactive))  # "03_relu1", unnamed "02_1_tanh"
    values.update({INACTIVE.format(layer=layers[n]): v for n, v in result.inactive.items()})
    return values


def _layout() -> summary_pb2.Summary.Value:
    """The Custom Scalars tab: train and validation on one chart, and the gradient flow of
    every layer on one chart each, in network order."""

    def chart(title: str, regex: str) -> layout_pb2.Chart:
        lines = layout_pb2.MultilineChartContent(tag=[regex])
        return layout_pb2.Chart(title=title, multiline=lines)

    layout = layout_pb2.Layout(
        category=[
            layout_pb2.Category(
                title="Curves: train and validation",
                chart=[chart("loss", f"^{LOSS}$"), chart("accuracy", f"^{ACC}$")],
            ),
            layout_pb2.Category(
                title="Gradient flow, in network order",
                chart=[
                    chart("gradient norm per parameter", r"^flow/grad_norm/"),
                    chart(
                        "update / weight: ||w_after - w_before|| / ||w_before||",
                        r"^flow/update_ratio/",
                    ),
                    chart(
                        "dead ReLUs, saturated tanh or sigmoid units (fraction)",
                        r"^flow/inactive/",
                    ),
                ],
            ),
        ]
    )
    return events.plugin_tensor(
        "custom_scalars__config__", "custom_scalars", b"", [layout.SerializeToString()]
    )


# HParams' session status by the first word of the row's status; "running" (until the run says
# how it ended) is left as TensorBoard's running. An interrupted run stopped with a checkpoint,
# to be resumed: neither a failure nor running
STATUS = {
    "ok": api_pb2.STATUS_SUCCESS,
    "failed": api_pb2.STATUS_FAILURE,
    "interrupted": api_pb2.STATUS_UNKNOWN,
}


def trial_name(logdir: str | Path) -> str:
    """The run's name in HParams' Trial ID column: its folder's name, then the folder above
    (``0_optim.lr=0.05 · 04-02-36-620506`` for a sweep job, ``04-02-36-620506 · 2026-12-02``
    for a lone run), so that what tells runs apart comes first and stays visible."""
    run = Path(logdir).resolve().parent
    return f"{run.name} · {run.parent.name}"


def write_hparams(logdir: str | Path, hyper: dict, status: str) -> None:
    """The run's HParams row in its own file, replaced whole at the end of every run (a
    resumed run rewrites it): ``hyper`` and a ``status`` column. TensorBoard infers the
    columns from every run's row, the hyperparameters that differ first."""
    values = {**hyper, "status": status}
    start = plugin_data_pb2.SessionStartInfo(
        start_time_secs=time.time(), group_name=trial_name(logdir)
    )
    for key, v in values.items():
        if isinstance(v, bool):
            start.hparams[key].bool_value = v
        elif isinstance(v, (int, float)):
            start.hparams[key].number_value = float(v)
        else:
            start.hparams[key].string_value = str(v)
    kind = STATUS.get(status.split(":")[0].split(" ")[0], api_pb2.STATUS_RUNNING)
    end = plugin_data_pb2.SessionEndInfo(status=kind, end_time_secs=time.time())
    summaries = [
        ("session_start_info", plugin_data_pb2.HParamsPluginData(session_start_info=start)),
        ("session_end_info", plugin_data_pb2.HParamsPluginData(session_end_info=end)),
    ]
    written = []
    for tag, data in summaries:
        value = events.plugin_tensor(f"_hparams_/{tag}", "hparams", data.SerializeToString(), [])
        summary = summary_pb2.Summary(value=[value])
        written.append(event_pb2.Event(wall_time=time.time(), summary=summary))
    events.write_events_atomically(Path(logdir) / HPARAMS_FILE, written)


def read_hparams(logdir: str | Path) -> dict | None:
    """The HParams row :func:`write_hparams` left in ``logdir`` (its values as Python
    numbers, strings and booleans), or None."""
    path = Path(logdir) / HPARAMS_FILE
    if not path.is_file():
        return None
    for event in events.read_events(path):
        for value in event.summary.value:
            if value.tag == "_hparams_/session_start_info":
                content = value.metadata.plugin_data.content
                start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
                return {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return None
