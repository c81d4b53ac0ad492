"""What a run shows in TensorBoard, and when: the trainer calls :class:`Dashboard` at the
moments of a run (its start, each step, each epoch's start and end, its end), and the
dashboard decides what to write through :class:`cnnrun.run.logger.RunLogger`.

- at the start (once per event folder): the model graph, the shape trace, the layout of the
  Custom Scalars tab; at step 0 the probe's pictures of the untrained network;
- every ``trainer.log_every_n_steps`` steps: the batch's loss and accuracy; every
  ``trainer.flow_every_n_steps`` the gradient flow (gradient norms, update ratios, dead or
  saturated units); histograms at step 0, every ``trainer.histogram_every_n_steps`` steps and
  at the end (at the step count, unless the last step was on the interval);
- at each epoch's end: train and validation curves and the validation confusion matrix;
  every ``trainer.pictures_every_n_epochs`` epochs and at the last one, the probe's pictures;
- at the end: the test results and the HParams row, which also a failed or interrupted run
  writes, with its status.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from .build import hyperparameters
from .logger import RunLogger, read_hparams, write_hparams
from .probe import probe
from .signals import Interrupted

PROBE_IMAGES = 8  # the fixed validation images of the pictures: one per class, at most this many


def record_failure(folder: Path, cfg, reason: str, overrides: list[str] | None = None) -> None:
    """The HParams row of a job that ended without a result (killed, or failed before or
    during training), so that the dashboard lists it beside the others. A row the run itself
    wrote as failed is kept (it has the model's values); one from an earlier part of the run
    (``running``, ``interrupted ...``) is replaced, keeping what only the model could say."""
    try:
        earlier = read_hparams(folder / "tb") or {}
        if str(earlier.get("status", "")).startswith("failed"):
            return
        hyper = hyperparameters(cfg, overrides=overrides)
        if "padding used" in earlier:
            hyper["padding used"] = earlier["padding used"]
        write_hparams(folder / "tb", hyper, f"failed: {reason}"[:200])
    except OSError as err:  # a full disk: the summary still lists the job
        logging.getLogger("cnnrun").error("could not write the job's HParams row: %s", err)


PICTURE_SETS = 6  # pictures_every_n_epochs=null: about this many sets over a run


def pictures_every(every: int | None, max_epochs: int) -> int:
    """The epochs between two sets of pictures: ``every``, or (None) about PICTURE_SETS per
    run, each epoch for runs of up to PICTURE_SETS epochs (rounded down, a run of 11 epochs
    had a set every epoch). The pictures cost about 11 ms a set for LeNet: every epoch of the
    12-epoch default run would take a tenth of its time."""
    if every is not None:
        return every
    return max(1, math.ceil(max_epochs / PICTURE_SETS))


def probe_indices(labels: np.ndarray, count: int = PROBE_IMAGES) -> np.ndarray:
    """The first validation image of each class, for the ``count`` lowest class labels
    present (0 to 7 on digits), in label order."""
    _, first = np.unique(labels, return_index=True)  # classes in ascending order
    return first[:count]


class Dashboard:
    """A run's TensorBoard writes (see the module's docstring). ``purge_step``: the step a
    resumed run continues from; ``fresh_folder``: the event folder has no events of this run
    yet (the graph and the shape trace are written once)."""

    def __init__(
        self, logdir: Path, trainer, *, purge_step: int | None, fresh_folder: bool
    ) -> None:
        t = trainer.cfg.trainer
        self.trainer = trainer
        self.logger = RunLogger(
            logdir,
            log_every=t.log_every_n_steps,
            flow_every=t.flow_every_n_steps,
            histogram_every=t.histogram_every_n_steps,
            purge_step=purge_step,
        )
        self.fresh_folder = fresh_folder
        data = trainer.data
        keep = probe_indices(data.y_val)
        self.probe_x, self.probe_y = data.x_val[keep], data.y_val[keep]
        self.steps_trained, self.pictures_at = 0, -1
        self.hyper = hyperparameters(trainer.cfg, trainer.model)

    def start(self, trace_text: str) -> None:
        tr, step = self.trainer, self.trainer.state.step
        if self.fresh_folder:
            self.logger.describe(tr.model, tr.trace_rows, trace_text)
        self.logger.hparams(self.hyper, "running")  # until the run says how it ended
        if step == 0:
            self._pictures(0)

    def measure(self, step: int) -> bool:
        return self.logger.wants_flow(step)

    def step(self, step: int, result) -> None:
        self.logger.train_step(step, result, self.trainer.model)
        self.steps_trained += 1

    def epoch_start(self, step: int, lr: float) -> None:
        self.logger.learning_rate(step, lr)

    def epoch_end(self, step: int, train, val, confusion: np.ndarray) -> None:
        self.logger.epoch(step, train, val)
        t = self.trainer.cfg.trainer
        done = self.trainer.state.epoch + 1  # epochs done, this one included
        self.logger.confusion(step, confusion)  # 1-2 ms: every epoch; the probe's at intervals
        if done % pictures_every(t.pictures_every_n_epochs, t.max_epochs) == 0 or (
            done >= t.max_epochs
        ):
            self._pictures(step)

    def skipped(self, step: int, count: int) -> None:
        self.logger.skipped(step, count)

    def finish(self, metrics: dict) -> None:
        step = self.trainer.state.step  # the steps done; the last one was step - 1
        if self.steps_trained and (step - 1) % self.logger.histogram_every:
            # the end's histograms, at the step a resume continues from (as the results): a
            # resumed run's purge takes them back; at step - 1 they stayed, one set too many
            self.logger.histograms(step, self.trainer.model)
        self.logger.results(step, metrics)
        self.logger.hparams(self.hyper, "ok")

    def stopped(self, err: BaseException) -> None:
        """The HParams row of a run that failed or was interrupted, with why."""
        if isinstance(err, Interrupted):
            status = f"interrupted at step {self.trainer.state.step}"
        else:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            status = f"failed: {reason[:160]}"
        self.logger.hparams(self.hyper, status)

    def _pictures(self, step: int) -> None:
        """The probe's pictures at ``step``, once: with one batch an epoch, the first epoch
        ends at step 0, where the untrained network's pictures are."""
        if len(self.probe_y) == 0 or step == self.pictures_at:
            return
        self.pictures_at = step
        tr = self.trainer
        with np.errstate(over="ignore", invalid="ignore"):
            seen = probe(tr.model, tr.loss_fn, self.probe_x, self.probe_y)
        self.logger.pictures(step, tr.model, seen)

    def flush(self) -> None:
        self.logger.flush()

    def close(self) -> None:
        self.logger.close()
