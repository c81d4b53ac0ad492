"""``train(cfg)``: the whole run, importable (the tests call it) and wrapped by ``python -m cnnrun``.

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
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from . import __version__, nn, optim
from .checkpoint import load_checkpoint, restore, save_checkpoint
from .config import image_hw, validate, value
from .data import iterate_batches, load_data
from .errors import CnnrunError, ConfigError
from .models import build_model
from .tb import filter_grid, open_writer, write_hparams
from .trace import format_markdown, format_text, shape_trace

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
        raise ConfigError("paths.output_dir is not set: run through `python -m cnnrun`, or "
                          "pass paths.output_dir=<folder> when calling train(cfg)")
    return Path(out)


def absolute(path: str) -> str:
    """A path from the config, relative to the folder the command was started in."""
    from hydra.utils import to_absolute_path
    return to_absolute_path(str(path))


def make_optimizer(cfg: DictConfig, params) -> optim.Optimizer:
    name = value(cfg.name)
    if name == "sgd":
        return optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                         nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if name == "adam":
        return optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                          weight_decay=cfg.weight_decay)
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


def set_threads(threads: int | None) -> None:
    """Cap BLAS threads (``backend.threads``; None leaves the machine's default)."""
    if threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=int(threads))


def first_non_finite(model: nn.Sequential, x: np.ndarray) -> str:
    """The first layer whose output, on ``x``, holds a NaN or an infinity (or 'none')."""
    for name, layer in model.layers:
        x = layer.forward(x)
        if not np.all(np.isfinite(x)):
            return name
    return "none"


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


def hyperparameters(cfg: DictConfig) -> dict:
    """The values that tell runs apart, for the HParams dashboard."""
    return {
        "model": cfg.model.name, "conv.padding": value(cfg.conv.padding),
        "backend": value(cfg.backend.name), "data": value(cfg.data.name),
        "data.image_size": str(OmegaConf.to_container(cfg.data, resolve=True)["image_size"]),
        "data.batch_size": cfg.data.batch_size, "optim": value(cfg.optim.name),
        "optim.lr": cfg.optim.lr, "optim.momentum": cfg.optim.momentum,
        "optim.weight_decay": cfg.optim.weight_decay, "optim.schedule": value(cfg.optim.schedule),
        "trainer.max_epochs": cfg.trainer.max_epochs, "seed": cfg.seed,
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


def _rng_states(*rngs: np.random.Generator) -> list[dict]:
    return [r.bit_generator.state for r in rngs]


def _set_rng_states(rngs, states) -> None:
    for r, s in zip(rngs, states):
        r.bit_generator.state = s


# -- the run ------------------------------------------------------------------------------

def train(cfg: DictConfig) -> float:
    """Train the model of ``cfg``; returns the final validation loss."""
    started = time.perf_counter()
    validate(cfg)
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    handler = _log_file(out)
    try:
        return _run(cfg, out, started)
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def _run(cfg: DictConfig, out: Path, started: float) -> float:
    t, d = cfg.trainer, cfg.data
    set_threads(cfg.backend.threads)
    checkpoint = load_checkpoint(absolute(t.resume)) if t.resume else None

    # independent streams for weights (and dropout masks) and for shuffling, all from one seed
    init_rng, shuffle_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed)
                             .spawn(2))
    data = load_data(value(d.name), root=absolute(d.root), image_size=image_hw(cfg),
                     channels=d.channels, num_classes=d.num_classes, num_samples=d.num_samples,
                     val_fraction=d.val_fraction, seed=cfg.seed,
                     verify_checksums=d.verify_checksums)
    in_shape = (data.channels, *data.image_size)
    model = build_model(cfg.model, in_shape, default_padding=value(cfg.conv.padding), rng=init_rng)
    model.set_backend(value(cfg.backend.name))
    optimizer = make_optimizer(cfg.optim, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    n_params = sum(p.data.size for p in model.parameters())
    log.info("model %s: %d parameters, input %s, padding %s, backend %s", cfg.model.name,
             n_params, in_shape, value(cfg.conv.padding), value(cfg.backend.name))
    log.info("data %s: %d train, %d validation images", data.name, len(data.y_train),
             len(data.y_val))

    epoch, step, best = 0, 0, math.inf
    if checkpoint is not None:
        meta = restore(checkpoint, model, optimizer, t.resume)
        epoch, step, best = meta["epoch"], meta["step"], meta["best_val_loss"]
        _set_rng_states((init_rng, shuffle_rng), meta["rng"])
        log.info("resumed from %s at epoch %d, step %d", t.resume, epoch, step)
        if epoch >= t.max_epochs:
            log.info("checkpoint is already at epoch %d of %d: nothing to train", epoch,
                     t.max_epochs)

    ckpt_dir = out / "checkpoints"
    writer = open_writer(out / "tb", purge_step=step if checkpoint is not None else None)
    progress = sys.stderr.isatty() if t.progress is None else bool(t.progress)
    first_conv = next((n for n, layer in model.layers if isinstance(layer, nn.Conv2d)), None)
    bs = d.batch_size
    val_loss = val_acc = train_loss = train_acc = math.nan
    images = 0
    train_seconds = 0.0
    skipped = 0
    try:
        if checkpoint is None:
            xb, yb = data.x_train[:bs], data.y_train[:bs]
            rows = shape_trace(model, xb, yb, loss_fn)
            (out / "shape_trace.md").write_text(
                f"# Shape trace: {cfg.model.name}, padding {value(cfg.conv.padding)}, "
                f"batch {tuple(xb.shape)}\n\n" + format_markdown(rows))
            writer.add_text("shapes/trace", format_markdown(rows), 0)
            log.info("shape trace (one real forward and backward pass):\n%s", format_text(rows))

        epochs = tqdm(range(epoch, t.max_epochs), desc="epochs", disable=not progress,
                      initial=epoch, total=t.max_epochs)
        for epoch in epochs:
            lr = learning_rate(cfg.optim, epoch, t.max_epochs)
            optimizer.lr = lr
            model.train()
            n_batches = math.ceil(len(data.y_train) / bs)
            if t.limit_train_batches:
                n_batches = min(n_batches, t.limit_train_batches)
            batches = tqdm(iterate_batches(data.x_train, data.y_train, bs, shuffle=True,
                                           rng=shuffle_rng),
                           total=n_batches, desc=f"epoch {epoch + 1}", leave=False,
                           disable=not progress)
            loss_sum = correct = seen = 0
            for i, (xb, yb) in enumerate(batches):
                if i >= n_batches:
                    break
                tick = time.perf_counter()
                model.zero_grad()
                logits = model.forward(xb)
                loss = loss_fn.forward(logits, yb)
                grads_ok = math.isfinite(loss)
                if grads_ok:
                    model.backward(loss_fn.backward(), input_grad=False)  # no dX for data
                    norms = {p.name: float(np.sqrt(np.sum(p.grad * p.grad)))
                             for p in model.parameters()}
                    global_norm = math.sqrt(sum(v * v for v in norms.values()))
                    grads_ok = math.isfinite(global_norm)
                if not grads_ok:
                    where = first_non_finite(model, xb) if not math.isfinite(loss) else next(
                        p.name for p in model.parameters() if not np.all(np.isfinite(p.grad)))
                    what = f"loss {loss}" if not math.isfinite(loss) else "gradient"
                    if value(t.on_nan) == "skip":
                        skipped += 1
                        log.warning("non-finite %s at step %d (first in %s): batch skipped",
                                    what, step, where)
                        writer.add_scalar("train/skipped_batches", skipped, step)
                        continue
                    raise NonFiniteError(
                        f"non-finite {what} at step {step} (epoch {epoch + 1}), first in layer "
                        f"{where}; the last checkpoint ({ckpt_dir / 'last.npz'}) is intact. "
                        "Lower optim.lr, or set trainer.on_nan=skip")
                optimizer.step()
                train_seconds += time.perf_counter() - tick
                images += len(yb)
                batch_acc = float((logits.argmax(axis=1) == yb).mean())
                loss_sum += loss * len(yb)
                correct += batch_acc * len(yb)
                seen += len(yb)
                if step % t.log_every_n_steps == 0:
                    writer.add_scalar("train/loss", loss, step)
                    writer.add_scalar("train/acc", batch_acc, step)
                    writer.add_scalar("lr", lr, step)
                    writer.add_scalar("grad_norm/global", global_norm, step)
                    for name, norm in norms.items():
                        writer.add_scalar(f"grad_norm/{name}", norm, step)
                if step % t.histogram_every_n_steps == 0:
                    for p in model.parameters():
                        writer.add_histogram(f"weights/{p.name}", p.data, step)
                        writer.add_histogram(f"grads/{p.name}", p.grad, step)
                    if first_conv is not None:
                        writer.add_image(f"filters/{first_conv}",
                                         filter_grid(model[first_conv].weight.data), step)
                if progress:
                    batches.set_postfix(loss=f"{loss:.4f}", acc=f"{batch_acc:.3f}")
                step += 1
            train_loss = loss_sum / max(seen, 1)
            train_acc = correct / max(seen, 1)
            val_loss, val_acc = evaluate(model, loss_fn, data.x_val, data.y_val, bs,
                                         t.limit_val_batches)
            writer.add_scalar("val/loss", val_loss, step)
            writer.add_scalar("val/acc", val_acc, step)
            epochs.set_postfix(val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.3f}")
            log.info("epoch %d/%d  train/loss %.4f  train/acc %.4f  val/loss %.4f  val/acc %.4f"
                     "  lr %.3g", epoch + 1, t.max_epochs, train_loss, train_acc, val_loss,
                     val_acc, lr)
            meta = {"model_name": cfg.model.name, "epoch": epoch + 1, "step": step,
                    "best_val_loss": min(best, val_loss), "val_loss": val_loss,
                    "val_acc": val_acc, "rng": _rng_states(init_rng, shuffle_rng),
                    "config": OmegaConf.to_yaml(cfg), "cnnrun_version": __version__}
            save_checkpoint(ckpt_dir / "last.npz", model, optimizer, meta)
            if val_loss < best:
                best = val_loss
                save_checkpoint(ckpt_dir / "best.npz", model, optimizer, meta)
        epochs.close()
        if math.isnan(val_loss):  # resumed at or past max_epochs: report where it stands
            val_loss, val_acc = evaluate(model, loss_fn, data.x_val, data.y_val, bs,
                                         t.limit_val_batches)
        done = max(epoch + 1, t.max_epochs) if t.max_epochs > epoch else epoch

        seconds = time.perf_counter() - started
        metrics = {
            "train/loss": train_loss, "train/acc": train_acc, "val/loss": val_loss,
            "val/acc": val_acc, "val/best_loss": best, "lr": optimizer.lr,
            "epoch": done, "step": step, "seconds": round(seconds, 3),
            "train/images_per_s": images / train_seconds if train_seconds else 0.0,
            "train/skipped_batches": skipped,
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_hparams(writer, hyperparameters(cfg),
                      {k: metrics[k] for k in ("val/loss", "val/acc", "train/loss", "train/acc")
                       if math.isfinite(metrics[k])})
        log.info("done in %.1f s: val/loss %.4f, val/acc %.4f, %.0f images/s; run folder %s",
                 seconds, val_loss, val_acc, metrics["train/images_per_s"], out)
    finally:
        writer.close()
    return float(val_loss)

