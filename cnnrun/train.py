"""``train(cfg)``: the whole run, importable (the tests call it), wrapped by ``python -m cnnrun``.

A run reads its data, builds its model by a shape pass, records the shape trace from a real
forward and backward pass at step 0, trains with the hand-written engine, validates every
epoch, and leaves in its folder: ``cnnrun.log``, ``tb/`` (TensorBoard), ``shape_trace.md``,
``checkpoints/last.npz`` and ``best.npz``, and ``metrics.json``. It returns the final
validation loss, which sweepers minimise.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from . import __version__, nn, optim
from .checkpoint import atomic_write_text, load_checkpoint, restore, save_checkpoint
from .config import image_hw, validate, value
from .data import iterate_batches, load_data
from .errors import CheckpointError, CnnrunError, ConfigError
from .models import build_model, takes_default_padding
from .sweep import job_threads
from .tb import add_histogram, add_text, filter_grid, open_writer, write_hparams
from .trace import format_markdown, format_text, padding_summary, shape_trace

log = logging.getLogger("cnnrun")


class NonFiniteError(CnnrunError):
    """The loss or a gradient became NaN or infinite."""


# -- pieces a run is made of --------------------------------------------------------------


def output_dir(cfg: DictConfig) -> Path:
    """The run's folder: ``paths.output_dir`` (Hydra's run folder under ``python -m cnnrun``)."""
    try:
        out = cfg.paths.output_dir
    except Exception:  # ${hydra:...} outside a Hydra run
        out = None
    if not out:
        raise ConfigError(
            "paths.output_dir is not set: run through `python -m cnnrun`, or "
            "pass paths.output_dir=<folder> when calling train(cfg)"
        )
    return Path(out)


def absolute(path: str) -> str:
    """A path from the config, relative to the folder the command was started in."""
    from hydra.utils import to_absolute_path

    return to_absolute_path(str(path))


def make_optimizer(cfg: DictConfig, params) -> optim.Optimizer:
    name = value(cfg.name)
    if name == "sgd":
        return optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            dampening=cfg.dampening,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    if name == "adam":
        return optim.Adam(
            params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    raise ConfigError(f"unknown optimizer {name!r}: expected one of sgd, adam")


def learning_rate(cfg: DictConfig, epoch: int, max_epochs: int) -> float:
    """The schedule, per epoch (0-based): ``none``; ``step``: ``lr * gamma^(epoch // step_size)``;
    ``cosine``: ``min_lr + (lr - min_lr) (1 + cos(pi epoch / max_epochs)) / 2``."""
    kind = value(cfg.schedule)
    if kind == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_size)
    if kind == "cosine":
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * epoch / max_epochs)) / 2
    return float(cfg.lr)


def set_threads(threads: int | None) -> int:
    """Share the cores (``backend.threads``; None: all of them) between BLAS and Numba's threads;
    see :func:`cnnrun.backends.set_threads`. Returns the number of threads."""
    from .backends import set_threads as share_cores

    return share_cores(threads)


def _launcher_config() -> DictConfig | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().launcher if HydraConfig.initialized() else None


def evaluate(model, loss_fn, x, y, batch_size: int, limit: int | None) -> tuple[float, float]:
    """Mean loss and accuracy over (at most ``limit`` batches of) a split, in eval mode."""
    model.eval()
    total = correct = 0
    loss_sum = 0.0
    for i, (xb, yb) in enumerate(iterate_batches(x, y, batch_size, shuffle=False)):
        if limit is not None and i >= limit:
            break
        logits = model.forward(xb)
        loss_sum += loss_fn.forward(logits, yb) * len(yb)
        correct += int((logits.argmax(axis=1) == yb).sum())
        total += len(yb)
    model.train()
    return loss_sum / max(total, 1), correct / max(total, 1)


def hyperparameters(cfg: DictConfig, model: nn.Sequential) -> dict:
    """The values that tell runs apart, for the HParams dashboard."""
    return {
        "model": cfg.model.name,
        "conv.padding": value(cfg.conv.padding),
        "padding used": padding_summary(model),
        "backend": value(cfg.backend.name),
        "data": value(cfg.data.name),
        "data.image_size": str(OmegaConf.to_container(cfg.data, resolve=True)["image_size"]),
        "data.batch_size": cfg.data.batch_size,
        "optim": value(cfg.optim.name),
        "optim.lr": cfg.optim.lr,
        "optim.momentum": cfg.optim.momentum,
        "optim.weight_decay": cfg.optim.weight_decay,
        "optim.schedule": value(cfg.optim.schedule),
        "trainer.max_epochs": cfg.trainer.max_epochs,
        "seed": cfg.seed,
    }


def _log_file(out: Path) -> logging.Handler | None:
    """Outside Hydra (tests, notebooks) nobody writes ``cnnrun.log``: add a handler that does."""
    target = (out / "cnnrun.log").resolve()
    for h in logging.getLogger().handlers + log.handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() == target:
            return None
    handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return handler


class Interrupted(CnnrunError):
    """SIGINT, SIGTERM or SIGUSR1/2: the run wrote a checkpoint and stops; exit 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class SignalGuard:
    """Turns SIGINT, SIGTERM and SIGUSR1/2 into a flag the loop reads after each step, so a
    signal ends the run at a step boundary with a checkpoint. A second Ctrl-C stops at once.
    The handlers found on entry (a cluster launcher's requeue hook) are put back on exit and
    can be called with :meth:`forward` once the checkpoint is safe."""

    SIGNALS = tuple(
        getattr(signal, n)
        for n in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
        if hasattr(signal, n)
    )

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def forward(self) -> None:
        """Hand the signal to the handler that was there before (e.g. submitit's requeue)."""
        handler = self.previous.get(self.received)
        self.__exit__()
        if callable(handler) and handler is not signal.default_int_handler:
            handler(self.received, None)


def resolve_resume(resume: str | None, out: Path, runs_dir: str) -> Path | None:
    """The checkpoint to continue from. ``last``: this run folder's ``last.npz``, else the newest
    ``last.npz`` under ``paths.runs_dir``. A job requeued by a cluster (submitit) that finds its
    own ``last.npz`` continues from it without being told."""
    own = out / "checkpoints" / "last.npz"
    if resume is None:
        return own if os.environ.get("SUBMITIT_EXECUTOR") and own.is_file() else None
    if str(resume) != "last":
        return Path(absolute(resume))
    if own.is_file():
        return own
    root = Path(absolute(runs_dir))
    found = sorted(root.glob("**/checkpoints/last.npz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CheckpointError(
            f"trainer.resume=last: no checkpoints/last.npz in {out} or under "
            f"{root}; give the path of a checkpoint instead"
        )
    return found[-1]


def check_writable(out: Path) -> None:
    """Fail at the start, not at the first checkpoint, if the run folder cannot be written.
    Temporary files left by a run killed mid-write (``kill -9``) are cleared away."""
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out / "checkpoints"):
            pass
        for stale in (out / "checkpoints").glob(".*.npz.*.tmp"):
            stale.unlink()
    except OSError as err:
        raise CnnrunError(
            f"run folder {out} cannot be written ({err.strerror}): choose "
            "another with hydra.run.dir=... or paths.runs_dir=..."
        ) from None


class Trainer:
    """One run: data, model, optimiser, RNG streams and where the run stands.

    Where it stands is ``epoch`` (0-based, the one in progress), ``batch`` (the next batch of
    that epoch), ``step`` (optimiser steps so far) and the epoch's running sums; with the state
    of the shuffling RNG at the start of the epoch, that is enough to continue a run stopped
    between any two steps with exactly the numbers of an uninterrupted one.
    """

    def __init__(self, cfg: DictConfig, out: Path):
        self.cfg, self.out = cfg, out
        t, d = cfg.trainer, cfg.data
        threads = set_threads(cfg.backend.threads or job_threads(_launcher_config()))
        self.resume_from = resolve_resume(t.resume, out, cfg.paths.runs_dir)
        checkpoint = load_checkpoint(self.resume_from) if self.resume_from else None
        # independent streams for weights (and dropout masks) and for shuffling, from one seed
        self.init_rng, self.shuffle_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(2)
        )
        self.data = load_data(
            value(d.name),
            root=absolute(d.root),
            image_size=image_hw(cfg),
            channels=d.channels,
            num_classes=d.num_classes,
            num_samples=d.num_samples,
            val_fraction=d.val_fraction,
            seed=cfg.seed,
            verify_checksums=d.verify_checksums,
        )
        in_shape = (self.data.channels, *self.data.image_size)
        self.model = build_model(
            cfg.model, in_shape, default_padding=value(cfg.conv.padding), rng=self.init_rng
        )
        self.model.set_backend(value(cfg.backend.name))
        self.optimizer = make_optimizer(cfg.optim, self.model.parameters())
        self.loss_fn = nn.CrossEntropyLoss()
        self.first_conv = next(
            (n for n, layer in self.model.layers if isinstance(layer, nn.Conv2d)), None
        )
        log.info(
            "model %s: %d parameters, input %s, padding %s, backend %s, threads %s",
            cfg.model.name,
            sum(p.data.size for p in self.model.parameters()),
            in_shape,
            value(cfg.conv.padding),
            value(cfg.backend.name),
            threads,
        )
        if not takes_default_padding(cfg.model):
            log.warning(
                "conv.padding=%s is not used: every conv layer of %s sets its own padding (%s)",
                value(cfg.conv.padding),
                cfg.model.name,
                padding_summary(self.model),
            )
        log.info(
            "data %s: %d train, %d validation images",
            self.data.name,
            len(self.data.y_train),
            len(self.data.y_val),
        )

        # the trace runs before a checkpoint is restored: restoring resets every RNG it used
        self.trace_rows = shape_trace(
            self.model,
            self.data.x_train[: d.batch_size],
            self.data.y_train[: d.batch_size],
            self.loss_fn,
        )
        self.epoch = self.batch = self.step = self.skipped = 0
        self.best = math.inf
        self.sums = [0.0, 0.0, 0]  # the epoch so far: loss * n, correct, n
        self.epoch_rng_state = self.shuffle_rng.bit_generator.state
        self.val = (math.nan, math.nan)
        self.images, self.train_seconds = 0, 0.0
        if checkpoint is not None:
            self._restore(checkpoint)

    # -- checkpoints -----------------------------------------------------------------------
    def _restore(self, checkpoint: dict) -> None:
        configured = self.optimizer.state_dict()["hyper"]
        meta = restore(checkpoint, self.model, self.optimizer, self.resume_from)
        for key, want in configured.items():  # the command line wins over the checkpoint
            had = getattr(self.optimizer, key)
            if key != "lr" and had != want:  # lr follows the schedule every epoch anyway
                log.warning(
                    "optim.%s: %s from the config replaces the checkpoint's %s", key, want, had
                )
                setattr(self.optimizer, key, want)
        self.epoch, self.batch, self.step = meta["epoch"], meta["batch"], meta["step"]
        self.best, self.skipped, self.sums = meta["best_val_loss"], meta["skipped"], meta["sums"]
        self.val = (meta["val_loss"], meta["val_acc"])
        self.init_rng.bit_generator.state = meta["rng"]["init"]
        self.shuffle_rng.bit_generator.state = meta["rng"]["epoch_start"]
        self.epoch_rng_state = meta["rng"]["epoch_start"]
        log.info(
            "resumed from %s at epoch %d, batch %d, step %d",
            self.resume_from,
            self.epoch + 1,
            self.batch,
            self.step,
        )

    def save(self, name: str = "last.npz") -> Path:
        meta = {
            "model_name": self.cfg.model.name,
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "best_val_loss": self.best,
            "skipped": self.skipped,
            "sums": list(self.sums),
            "val_loss": self.val[0],
            "val_acc": self.val[1],
            "rng": {"init": self.init_rng.bit_generator.state, "epoch_start": self.epoch_rng_state},
            "config": OmegaConf.to_yaml(self.cfg),
            "cnnrun_version": __version__,
        }
        return save_checkpoint(self.out / "checkpoints" / name, self.model, self.optimizer, meta)

    # -- the loop --------------------------------------------------------------------------
    def fit(self) -> dict:
        t = self.cfg.trainer
        started = time.perf_counter()
        self.writer = open_writer(
            self.out / "tb", purge_step=self.step if self.resume_from else None
        )
        self.progress = sys.stderr.isatty() if t.progress is None else bool(t.progress)
        try:
            # the guard is up before the first file of the run is written: a signal from then
            # on ends the run at a step boundary with a checkpoint. NaN and overflow are looked
            # for after every step; numpy's warnings would only clutter that message
            with SignalGuard() as guard, np.errstate(over="ignore", invalid="ignore"):
                self._shape_trace()
                if self.epoch >= t.max_epochs:  # resumed at the end: report where it stands
                    self.val = self._evaluate()
                epochs = tqdm(
                    desc="epochs", initial=self.epoch, total=t.max_epochs, disable=not self.progress
                )
                while self.epoch < t.max_epochs:
                    self._train_epoch(guard)
                    self._end_epoch()
                    epochs.update(1)
                    epochs.set_postfix(val_loss=f"{self.val[0]:.4f}", val_acc=f"{self.val[1]:.3f}")
                epochs.close()
                if guard.received is not None:  # after the last step: nothing left to stop
                    log.warning(
                        "%s arrived after the last training step; the run completes",
                        signal.Signals(guard.received).name,
                    )
            return self._finish(time.perf_counter() - started)
        finally:
            self.writer.close()

    def _shape_trace(self) -> None:
        """``shape_trace.md`` in every run folder; the TensorBoard text once per event folder."""
        cfg, rows = self.cfg, self.trace_rows
        table = format_markdown(rows)
        header = (
            f"# Shape trace: {cfg.model.name}, padding {padding_summary(self.model)}, "
            f"batch {rows[0].input}\n\n"
        )
        atomic_write_text(self.out / "shape_trace.md", header + table)
        if self.resume_from is None or self.resume_from.parent.parent != self.out:
            add_text(self.writer, "shapes/trace", table, 0)
        log.info("shape trace (one real forward and backward pass):\n%s", format_text(rows))

    def _train_epoch(self, guard: SignalGuard) -> None:
        t, bs = self.cfg.trainer, self.cfg.data.batch_size
        lr = learning_rate(self.cfg.optim, self.epoch, t.max_epochs)
        self.optimizer.lr = lr
        self.model.train()
        n_batches = math.ceil(len(self.data.y_train) / bs)
        if t.limit_train_batches:
            n_batches = min(n_batches, t.limit_train_batches)
        if self.batch == 0:  # a fresh epoch: remember where its shuffle starts, reset its sums
            self.epoch_rng_state = self.shuffle_rng.bit_generator.state
            self.sums = [0.0, 0.0, 0]
        batches = iterate_batches(
            self.data.x_train, self.data.y_train, bs, shuffle=True, rng=self.shuffle_rng
        )
        bar = tqdm(
            total=n_batches,
            initial=self.batch,
            desc=f"epoch {self.epoch + 1}",
            leave=False,
            disable=not self.progress,
        )
        for i, (xb, yb) in enumerate(batches):
            if i >= n_batches:
                break
            if i < self.batch:  # resumed mid-epoch: these batches were trained already
                continue
            self._train_step(xb, yb, lr, bar)
            self.batch = i + 1
            bar.update(1)
            if guard.received is not None:
                bar.close()
                self._interrupt(guard)
        bar.close()
        self.batch = 0

    def _train_step(self, xb, yb, lr: float, bar) -> None:
        t, model = self.cfg.trainer, self.model
        tick = time.perf_counter()
        # what a skipped batch must not change (batch-norm statistics, the dropout RNG): kept
        # only when batches may be skipped
        before = None
        if value(t.on_nan) == "skip":
            before = (
                {n: b.copy() for n, b in model.named_buffers()},
                self.init_rng.bit_generator.state,
            )
        model.zero_grad()
        x, outputs = xb, []
        for name, layer in model.layers:  # Sequential.forward, keeping each output
            x = layer.forward(x)
            outputs.append((name, x))
        logits = x
        loss = self.loss_fn.forward(logits, yb)
        global_norm = math.nan
        if math.isfinite(loss):
            model.backward(self.loss_fn.backward(), input_grad=False)  # no dX for the data
            # norms in float64: a float32 sum of squares overflows long before the gradients
            # do, so a non-finite norm means a NaN or infinite gradient entry
            norms = {
                p.name: float(np.linalg.norm(p.grad.ravel().astype(np.float64)))
                for p in model.parameters()
            }
            global_norm = math.sqrt(sum(v * v for v in norms.values()))
        if not math.isfinite(global_norm):
            self._non_finite(loss, outputs, before)
            return
        self.optimizer.step()
        bad = next((p.name for p in model.parameters() if not np.all(np.isfinite(p.data))), None)
        if bad is not None:  # the update itself overflowed: nothing left to skip back to
            raise NonFiniteError(
                f"non-finite weights in {bad} after the update at step {self.step} (epoch "
                f"{self.epoch + 1}); {self._kept()}. Lower optim.lr"
            )
        self.train_seconds += time.perf_counter() - tick
        self.images += len(yb)
        acc = float((logits.argmax(axis=1) == yb).mean())
        self.sums[0] += loss * len(yb)
        self.sums[1] += acc * len(yb)
        self.sums[2] += len(yb)
        w, step = self.writer, self.step
        if step % t.log_every_n_steps == 0:
            w.add_scalar("train/loss", loss, step)
            w.add_scalar("train/acc", acc, step)
            w.add_scalar("lr", lr, step)
            w.add_scalar("grad_norm/global", global_norm, step)
            for name, norm in norms.items():
                w.add_scalar(f"grad_norm/{name}", norm, step)
        if step % t.histogram_every_n_steps == 0:
            for p in model.parameters():
                add_histogram(w, f"weights/{p.name}", p.data, step)
                add_histogram(w, f"grads/{p.name}", p.grad, step)
            if self.first_conv is not None:
                w.add_image(
                    f"filters/{self.first_conv}",
                    filter_grid(model[self.first_conv].weight.data),
                    step,
                )
        if self.progress:
            bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}")
        self.step += 1

    def _non_finite(self, loss: float, outputs: list, before: tuple | None) -> None:
        """A NaN or infinite loss or gradient: skip the batch or stop, naming the step and the
        first layer where it appeared (in the forward pass for the loss, else the backward)."""
        if not math.isfinite(loss):
            what = f"loss ({loss})"
            where = next(
                (f"layer {name}" for name, out in outputs if not np.isfinite(out).all()),
                "the loss (every layer's output is finite)",
            )
        else:
            what = "gradient"
            name = next(
                (
                    p.name
                    for p in reversed(self.model.parameters())
                    if not np.isfinite(p.grad).all()
                ),
                None,
            )
            where = (
                f"the gradient of {name}"
                if name is not None
                else "the gradient norm (every entry is finite; their norm overflows)"
            )
        if value(self.cfg.trainer.on_nan) == "skip":
            buffers, rng_state = before  # as if the batch had never been seen
            self.model.load_state_dict(buffers, strict=False)
            self.init_rng.bit_generator.state = rng_state
            self.model.zero_grad()
            self.skipped += 1
            log.warning(
                "non-finite %s at step %d, first in %s: batch skipped (%d so far)",
                what,
                self.step,
                where,
                self.skipped,
            )
            self.writer.add_scalar("train/skipped_batches", self.skipped, self.step)
            return
        raise NonFiniteError(
            f"non-finite {what} at step {self.step} (epoch {self.epoch + 1}), "
            f"first in {where}; {self._kept()}. Lower optim.lr, or set "
            "trainer.on_nan=skip"
        )

    def _kept(self) -> str:
        last = self.out / "checkpoints" / "last.npz"
        return f"the last checkpoint ({last}) is intact" if last.is_file() else "no checkpoint yet"

    def _interrupt(self, guard: SignalGuard) -> None:
        name = signal.Signals(guard.received).name
        path = self.save()
        self.writer.flush()
        from hydra.core.hydra_config import HydraConfig

        folder = "hydra.run.dir" if HydraConfig.initialized() else "paths.output_dir"
        message = (
            f"{name} at step {self.step} (epoch {self.epoch + 1}, batch {self.batch}): "
            f"checkpoint written to {path}; to continue in this folder, run the same "
            f"command with {folder}={self.out} trainer.resume=last (or "
            f"trainer.resume={path} for a new folder)"
        )
        log.warning(message)
        guard.forward()  # a cluster launcher's own handler (requeue) runs now, if any
        raise Interrupted(message, guard.received)

    def _evaluate(self) -> tuple[float, float]:
        t, d = self.cfg.trainer, self.data
        return evaluate(
            self.model,
            self.loss_fn,
            d.x_val,
            d.y_val,
            self.cfg.data.batch_size,
            t.limit_val_batches,
        )

    def _end_epoch(self) -> None:
        t = self.cfg.trainer
        self.val = self._evaluate()
        val_loss, val_acc = self.val
        # at the epoch's last training step: a run resumed from this checkpoint purges events
        # from self.step on, and must keep this point
        at = max(self.step - 1, 0)
        self.writer.add_scalar("val/loss", val_loss, at)
        self.writer.add_scalar("val/acc", val_acc, at)
        loss_sum, correct, seen = self.sums
        log.info(
            "epoch %d/%d  train/loss %.4f  train/acc %.4f  val/loss %.4f  val/acc %.4f  lr %.3g",
            self.epoch + 1,
            t.max_epochs,
            loss_sum / seen if seen else math.nan,
            correct / seen if seen else math.nan,
            val_loss,
            val_acc,
            self.optimizer.lr,
        )
        improved = val_loss < self.best
        self.best = min(self.best, val_loss)
        self.epoch += 1  # the checkpoint continues at the start of the next epoch
        self.batch = 0
        self.epoch_rng_state = self.shuffle_rng.bit_generator.state
        self.save("last.npz")
        if improved:
            self.save("best.npz")

    def _finish(self, seconds: float) -> dict:
        loss_sum, correct, seen = self.sums
        metrics = {
            "train/loss": loss_sum / seen if seen else math.nan,
            "train/acc": correct / seen if seen else math.nan,
            "val/loss": self.val[0],
            "val/acc": self.val[1],
            "val/best_loss": self.best,
            "lr": self.optimizer.lr,
            "epoch": self.epoch,
            "step": self.step,
            "seconds": round(seconds, 3),
            "train/images_per_s": self.images / self.train_seconds if self.train_seconds else 0.0,
            "train/skipped_batches": self.skipped,
        }
        # strict JSON: a NaN or infinite metric is written as null
        clean = {
            k: v if not isinstance(v, float) or math.isfinite(v) else None
            for k, v in metrics.items()
        }
        atomic_write_text(
            self.out / "metrics.json", json.dumps(clean, indent=2, allow_nan=False) + "\n"
        )
        write_hparams(
            self.writer,
            hyperparameters(self.cfg, self.model),
            {
                k: metrics[k]
                for k in ("val/loss", "val/acc", "train/loss", "train/acc")
                if math.isfinite(metrics[k])
            },
        )
        log.info(
            "done in %.1f s: val/loss %.4f, val/acc %.4f, %.0f images/s; run folder %s",
            seconds,
            metrics["val/loss"],
            metrics["val/acc"],
            metrics["train/images_per_s"],
            self.out,
        )
        return metrics


def train(cfg: DictConfig) -> float:
    """Train the model of ``cfg`` in its run folder; returns the final validation loss."""
    validate(cfg)
    out = output_dir(cfg)
    check_writable(out)
    handler = _log_file(out)
    try:
        return float(Trainer(cfg, out).fit()["val/loss"])
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
