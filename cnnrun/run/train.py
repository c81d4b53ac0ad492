"""``train(cfg)``: the whole run, importable (the tests call it), wrapped by ``python -m cnnrun``.

A run reads its data, builds its model by a shape pass, records the shape trace from a real
forward and backward pass at step 0, trains with the hand-written engine, validates every
epoch, and leaves in its folder: ``cnnrun.log``, ``tb/`` (TensorBoard), ``shape_trace.md``,
``checkpoints/last.npz`` and ``best.npz``, and ``metrics.json``. It returns the final
validation loss, which sweepers minimise.

The loop is :class:`Trainer`; one step is :func:`cnnrun.run.step.train_step`, and everything
around it (skipping a batch, timing, logging, the progress bar, signals) is here.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm.auto import tqdm

from .. import nn
from ..backends import configure_process
from ..data import iterate_batches
from ..data.augment import random_crop_flip
from ..errors import CnnrunError
from ..trace import format_markdown, format_report, format_text, padding_summary, shape_trace
from .build import (
    build_optimizer,
    build_run_model,
    describe_run,
    learning_rate,
    load_run_data,
)
from .checkpoint import atomic_write_text, load_checkpoint, restore, write_metrics
from .config import validate, value
from .dashboard import Dashboard
from .folder import RunFolder, output_dir
from .resume import (
    adopt_best,
    continues_own_checkpoint,
    repair_best,
    resolve_resume,
    resume_record,
)
from .saver import CheckpointSaver
from .signals import (
    Interrupted,
    SignalGuard,
    continue_hint,
    log_to_file_only,
    progress_logging,
)
from .state import RunState
from .step import StepResult, evaluate, test_metrics, train_step
from .sweep import run_threads

log = logging.getLogger("cnnrun")


class NonFiniteError(CnnrunError):
    """The loss, a gradient or a weight became NaN or infinite."""


class Trainer:
    """One run: its data, model, optimiser, where it stands (:class:`RunState`) and its
    TensorBoard logger (opened by :meth:`fit`)."""

    def __init__(self, cfg: DictConfig, out: Path):
        self.cfg, self.out = cfg, out
        # process-wide settings (thread pools, allocator): set here, once, for this run
        threads = run_threads(cfg.backend.threads)
        self.process = configure_process(threads, value(cfg.backend.name))
        self.resume_from = resolve_resume(cfg.trainer.resume, out, continues_own_checkpoint())
        checkpoint = load_checkpoint(self.resume_from) if self.resume_from else None
        self.changes: list[dict] = []  # what each resume changed (optimiser, backend)
        if checkpoint is not None:  # before the data is read: a wrong checkpoint fails fast
            self.changes = resume_record(
                checkpoint["meta"], cfg, self.resume_from, self.process.threads
            )
        self.state = RunState.fresh(cfg.seed)
        self.data = load_run_data(cfg)
        in_shape = (self.data.channels, *self.data.image_size)
        self.model = build_run_model(cfg, in_shape, self.state.init_rng)
        self.optimizer = build_optimizer(cfg, self.model.parameters())
        self.loss_fn = nn.CrossEntropyLoss()
        describe_run(cfg, self.model, self.data, self.process)
        # the trace runs before a checkpoint is restored: restoring resets every RNG it used
        bs = cfg.data.batch_size
        with np.errstate(over="ignore", invalid="ignore"):  # a NaN is reported by the loop
            self.trace_rows = shape_trace(
                self.model, self.data.x_train[:bs], self.data.y_train[:bs], self.loss_fn
            )
        # throughput: images trained, seconds inside the steps, seconds of the epochs' loop
        self.images, self.train_seconds, self.loop_seconds = 0, 0.0, 0.0
        self.dashboard: Dashboard | None = None  # opened by fit()
        threads = self.process.threads
        self.skip_bad = value(cfg.trainer.on_nan) == "skip"  # trainer.on_nan, read once
        self.checkpoints = CheckpointSaver(out / "checkpoints", cfg, threads, self.changes)
        if checkpoint is not None:
            self._restore(checkpoint)

    # -- checkpoints -----------------------------------------------------------------------
    def _restore(self, checkpoint: dict) -> None:
        configured = self.optimizer.state_dict()["hyper"]
        meta = restore(checkpoint, self.model, self.optimizer, self.resume_from)
        for key, want in configured.items():  # the config wins (check_resume allowed it)
            if key != "lr":  # lr follows the schedule every epoch anyway
                setattr(self.optimizer, key, want)
        self.state.load_meta(meta)
        s = self.state
        log.info(
            "resumed from %s at epoch %d, batch %d, step %d",
            self.resume_from,
            s.epoch + 1,
            s.batch,
            s.step,
        )

    def save(self, name: str = "last.npz") -> Path:
        """A checkpoint, after every event up to its step is on disk: a run resumed from it
        drops the events after its step, and must find all those before it."""
        if getattr(self, "dashboard", None) is not None:
            self.dashboard.flush()
        return self.checkpoints.save(name, self.model, self.optimizer, self.state)

    # -- the loop --------------------------------------------------------------------------
    def fit(self) -> dict:
        t, s = self.cfg.trainer, self.state
        started = time.perf_counter()
        own = self.resume_from is not None and self.resume_from.parent.parent == self.out
        self.dashboard = Dashboard(
            self.out / "tb",
            self,
            purge_step=s.step if self.resume_from else None,
            fresh_folder=not own,
        )
        self.progress = sys.stderr.isatty() if t.progress is None else bool(t.progress)
        try:
            # the guard is up before the first file of the run is written: a signal from then
            # on ends the run at a step boundary with a checkpoint. NaN and overflow are looked
            # for after every step; numpy's warnings would only clutter that message
            with (
                SignalGuard() as guard,
                np.errstate(over="ignore", invalid="ignore"),
                progress_logging(self.progress),
            ):
                self._shape_trace()
                if self.resume_from == self.out / "checkpoints" / "last.npz":
                    repair_best(self.out, s)
                adopt_best(self.out, self.resume_from, s.best_val_loss)
                if s.epoch >= t.max_epochs:  # resumed at the end: report where it stands
                    s.val_loss, s.val_acc = self._evaluate()
                self._epochs(guard)
                if guard.received is not None:  # after the last step: nothing left to stop
                    name = signal.Signals(guard.received).name
                    log.warning("%s arrived after the last training step; the run completes", name)
            return self._finish(time.perf_counter() - started)
        except BaseException as err:  # the HParams row stays, with how the run ended
            self.dashboard.stopped(err)
            raise
        finally:
            self.checkpoints.sync()
            self.dashboard.close()

    def _epochs(self, guard: SignalGuard) -> None:
        s, total, off = self.state, self.cfg.trainer.max_epochs, not self.progress
        bar = tqdm(desc="epochs", unit="epoch", initial=s.epoch, total=total, disable=off)
        started = time.perf_counter()
        while s.epoch < total:
            self._train_epoch(guard)
            self._end_epoch()
            bar.update(1)
            bar.set_postfix(val_loss=f"{s.val_loss:.4f}", val_acc=f"{s.val_acc:.3f}")
            self.loop_seconds = time.perf_counter() - started
        bar.close()

    def _shape_trace(self) -> None:
        """``shape_trace.md`` in every run folder; the TensorBoard text once per event folder."""
        rows = self.trace_rows
        table = format_markdown(rows)
        header = (
            f"# Shape trace: {self.cfg.model.name}, padding {padding_summary(self.model)}, "
            f"batch {rows[0].input}\n\n"
        )
        atomic_write_text(self.out / "shape_trace.md", header + table)
        self.dashboard.start(header + "```\n" + format_report(rows) + "```\n")
        log.info("shape trace (one real forward and backward pass):\n%s", format_text(rows))

    def _train_epoch(self, guard: SignalGuard) -> None:
        t, s, bs = self.cfg.trainer, self.state, self.cfg.data.batch_size
        augment = bool(self.cfg.data.augment)  # read once: a config read costs about 40 us
        lr = self.optimizer.lr = learning_rate(self.cfg.optim, s.epoch, t.max_epochs)
        self.model.train()
        n_batches = math.ceil(len(self.data.y_train) / bs)
        if t.limit_train_batches:
            n_batches = min(n_batches, t.limit_train_batches)
        if s.batch == 0:
            s.start_epoch()
            self.dashboard.epoch_start(s.step, lr)
        batches = iterate_batches(
            self.data.x_train, self.data.y_train, bs, shuffle=True, rng=s.shuffle_rng
        )
        bar = tqdm(
            total=n_batches,
            initial=s.batch,
            desc=f"epoch {s.epoch + 1}",
            unit="batch",  # batches a second of wall-clock, the steps' logging included
            leave=False,
            disable=not self.progress,
        )
        for i, (xb, yb) in enumerate(batches):
            if i >= n_batches:
                break
            if i < s.batch:  # resumed mid-epoch: these batches were trained already
                continue
            if augment:  # its stream is saved at every checkpoint
                xb = random_crop_flip(xb, s.augment_rng)
            self._train_step(xb, yb, lr, bar)
            s.batch = i + 1
            bar.update(1)
            if guard.received is not None:
                bar.close()
                self._interrupt(guard)
        bar.close()
        s.batch = 0

    def _train_step(self, xb: np.ndarray, yb: np.ndarray, lr: float, bar) -> None:
        """:func:`train_step` on one batch, and the bookkeeping around it."""
        s, skip = self.state, self.skip_bad
        tick = time.perf_counter()
        # what a skipped batch must not change (batch-norm statistics, the dropout RNG)
        before = self._snapshot() if skip else None
        measure = self.dashboard.measure(s.step)
        result = train_step(self.model, self.loss_fn, self.optimizer, xb, yb, measure)
        if result.problem is not None:
            self._non_finite(result, before)
            return
        self.train_seconds += time.perf_counter() - tick
        self.images += len(yb)
        s.sums.add(result.loss, result.acc, len(yb))
        s.skips_in_a_row = 0
        self.dashboard.step(s.step, result)
        if self.progress:
            # shown at the bar's next redraw (ten a second at most), not with one of its own
            bar.set_postfix(loss=f"{result.loss:.4f}", acc=f"{result.acc:.3f}", refresh=False)
        s.step += 1

    def _snapshot(self) -> tuple[dict, dict]:
        buffers = {n: b.copy() for n, b in self.model.named_buffers()}
        return buffers, self.state.init_rng.bit_generator.state

    def _non_finite(self, result: StepResult, before: tuple | None) -> None:
        """A NaN or infinite loss or gradient: skip the batch (``trainer.on_nan=skip``) or stop,
        naming the step and the first layer where it appeared."""
        s = self.state
        if result.updated:  # the update itself overflowed: nothing left to skip back to
            raise NonFiniteError(
                f"non-finite weights in {result.where} after the update at step {s.step} "
                f"(epoch {s.epoch + 1}); {self._kept()}. Lower optim.lr"
            )
        limit = self.cfg.trainer.max_consecutive_skips
        if before is not None and s.skips_in_a_row < limit:
            buffers, rng_state = before  # as if the batch had never been seen
            self.model.load_state_dict(buffers, strict=False)
            s.init_rng.bit_generator.state = rng_state
            self.model.zero_grad()
            s.skipped += 1
            s.skips_in_a_row += 1
            log.warning(
                "non-finite %s at step %d, first in %s: batch skipped (%d so far)",
                result.problem,
                s.step,
                result.where,
                s.skipped,
            )
            self.dashboard.skipped(s.step, s.skipped)
            return
        if before is not None:
            raise NonFiniteError(
                f"non-finite {result.problem} at step {s.step} (epoch {s.epoch + 1}), first in "
                f"{result.where}, after {limit} batches skipped in a row: the run has diverged; "
                f"{self._kept()}. Lower optim.lr, or raise trainer.max_consecutive_skips"
            )
        raise NonFiniteError(
            f"non-finite {result.problem} at step {s.step} (epoch {s.epoch + 1}), first in "
            f"{result.where}; {self._kept()}. Lower optim.lr, or set trainer.on_nan=skip"
        )

    def _kept(self) -> str:
        last = self.out / "checkpoints" / "last.npz"
        return f"the last checkpoint ({last}) is intact" if last.is_file() else "no checkpoint yet"

    def _interrupt(self, guard: SignalGuard) -> None:
        s, name = self.state, signal.Signals(guard.received).name
        path = self.save()
        message = (
            f"{name} at step {s.step} (epoch {s.epoch + 1}, batch {s.batch}): "
            f"checkpoint written to {path}; {continue_hint(self.out, path)}"
        )
        log_to_file_only(log, logging.WARNING, message)  # the command's last line says it
        guard.forward()  # a cluster launcher's own handler (requeue) runs now, if any
        raise Interrupted(message, guard.received)

    def _evaluate(self, confusion: np.ndarray | None = None) -> tuple[float, float]:
        d, bs = self.data, self.cfg.data.batch_size
        limit = self.cfg.trainer.limit_val_batches
        return evaluate(self.model, self.loss_fn, d.x_val, d.y_val, bs, limit, confusion)

    def _end_epoch(self) -> None:
        s = self.state
        confusion = np.zeros((self.data.num_classes,) * 2, np.int64)
        val_loss, val_acc = self._evaluate(confusion)
        if not math.isfinite(val_loss) or not s.sums.seen:  # never saved over a good checkpoint
            what = f"validation loss {val_loss}" if s.sums.seen else "every batch skipped"
            raise NonFiniteError(
                f"epoch {s.epoch + 1}: {what}, the run has diverged; {self._kept()}. Lower optim.lr"
            )
        # at the epoch's last training step: a run resumed from this checkpoint purges events
        # from its step on, and must keep this point
        train_loss, train_acc = s.sums.means()
        self.dashboard.epoch_end(
            max(s.step - 1, 0), (train_loss, train_acc), (val_loss, val_acc), confusion
        )
        log.info(
            "epoch %d/%d  train/loss %.4f  train/acc %.4f  val/loss %.4f  val/acc %.4f  lr %.3g",
            s.epoch + 1,
            self.cfg.trainer.max_epochs,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            self.optimizer.lr,
        )
        improved = s.end_epoch(val_loss, val_acc)  # the checkpoint continues at the next epoch
        if improved:  # best first: a kill between the two leaves best.npz never behind
            self.save("best.npz")
        self.save("last.npz")

    def _finish(self, seconds: float) -> dict:
        s = self.state
        train_loss, train_acc = s.sums.means()
        metrics = {
            "train/loss": train_loss,
            "train/acc": train_acc,
            "val/loss": s.val_loss,
            "val/acc": s.val_acc,
            "val/best_loss": s.best_val_loss,
            "lr": self.optimizer.lr,
            "epoch": s.epoch,
            "step": s.step,
            "seconds": round(seconds, 3),
            # wall-clock, evaluation, logging and checkpoints included; and the steps alone
            "train/images_per_s": self.images / self.loop_seconds if self.loop_seconds else 0.0,
            "train/step_images_per_s": (
                self.images / self.train_seconds if self.train_seconds else 0.0
            ),
            "train/skipped_batches": s.skipped,
        }
        d, best = self.data, self.out / "checkpoints" / "best.npz"
        metrics.update(test_metrics(self.model, self.loss_fn, d, self.cfg.data.batch_size, best))
        if self.changes:
            metrics["changes_on_resume"] = self.changes
        write_metrics(self.out / "metrics.json", metrics)
        self.dashboard.finish(metrics)
        log.info(
            "done in %.1f s: val/loss %.4f, val/acc %.4f; test/loss %.4f, test/acc %.4f (best "
            "checkpoint; last: %.4f, %.4f); %.0f images/s wall-clock (%.0f inside the steps "
            "alone); run folder %s",
            seconds,
            *(metrics[k] for k in ("val/loss", "val/acc", "test/loss", "test/acc")),
            *(metrics[k] for k in ("test/loss_last", "test/acc_last", "train/images_per_s")),
            metrics["train/step_images_per_s"],
            self.out,
        )
        return metrics


def train(cfg: DictConfig) -> float:
    """Train the model of ``cfg`` in its run folder; returns the final validation loss.

    The folder is locked for the run; nothing is written into it until the run has passed
    its checks (:class:`cnnrun.run.folder.RunFolder`)."""
    validate(cfg)
    out = output_dir(cfg)
    with RunFolder(out) as folder:
        trainer = Trainer(cfg, out)
        folder.commit(cfg)
        return float(trainer.fit()["val/loss"])
