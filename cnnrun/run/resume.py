"""Which checkpoint a run continues from, and whether it may.

* ``trainer.resume=last`` is this folder's ``checkpoints/last.npz`` and nothing else; without
  one the run starts from scratch and says so. A sweep job, or a job a cluster requeued, that
  finds its own ``last.npz`` continues from it without being told.
* Whatever the checkpoint, it must come from the same experiment: the model (and
  ``conv.padding``), the data and the seed of its config must equal the run's, or the run
  stops with one line listing the differences. Optimiser settings may change on a resume
  only where the command line says so explicitly; each change is logged, and recorded in every
  later checkpoint and in ``metrics.json`` (``changes_on_resume``). A change of backend is
  allowed with a warning (the backends agree to float32 rounding, not bit for bit).
* ``best.npz`` is written before ``last.npz``; a folder where ``last.npz`` holds a better epoch
  than ``best.npz`` (a kill between the two writes by an older cnnrun) is repaired on resume.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import CheckpointError
from ..models import takes_default_padding
from .folder import absolute

log = logging.getLogger("cnnrun")

# what makes two runs the same experiment: must match on any resume
SAME_EXPERIMENT = ("model", "conv.padding", "data", "seed", "optim.name")
# the data may move between machines, and checking its files changes no number
NOT_COMPARED = ("data.root", "data.verify_checksums")
EXPLICIT_ONLY = ("optim",)  # may change, where the command line says so
WARN_ONLY = ("backend.name",)
SHOWN = 4  # differences spelled out in the one-line refusal


def resolve_resume(resume: str | None, out: Path, continue_own: bool) -> Path | None:
    """The checkpoint to continue from, or None for a fresh start. A sweep job or a requeued
    job that has its own checkpoint continues it, whatever ``trainer.resume`` says (that was
    where it started from). Without ``trainer.resume``, a folder that already holds a run's
    checkpoint is refused: a fresh run would overwrite it."""
    own = out / "checkpoints" / "last.npz"
    if continue_own and own.is_file():
        return own
    if resume is None:
        if own.is_file():
            raise CheckpointError(
                f"run folder {out} already holds a run ({own}): continue it with "
                "trainer.resume=last, or give this run a folder of its own"
            )
        return None
    if str(resume) != "last":
        path = Path(absolute(resume))
        if path.is_dir():
            inside = path / "checkpoints" / "last.npz"
            if not inside.is_file():
                raise CheckpointError(
                    f"trainer.resume={resume}: the folder has no checkpoints/last.npz; give a "
                    "run folder that has one, or the path of a .npz checkpoint"
                )
            return inside
        return path
    if own.is_file():
        return own
    log.warning(
        "trainer.resume=last: this folder has no checkpoint of its own (%s); starting from scratch",
        own,
    )
    return None


def continues_own_checkpoint() -> bool:
    """A job of a sweep, or one a cluster requeued: its own ``last.npz`` is its own past."""
    if os.environ.get("SUBMITIT_EXECUTOR"):
        return True
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def explicit_keys() -> set[str] | None:
    """The keys the command line set (``optim.lr=...``, ``optim=adam``); None outside Hydra,
    where the caller's whole config is explicit."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    keys = set()
    for text in HydraConfig.get().overrides.task:
        key = str(text).split("=", 1)[0].lstrip("+~")
        keys.add(key.split("@", 1)[0])
    return keys


def _flat(node, prefix: str) -> dict[str, object]:
    """Dotted keys to leaves: ``model.layers.0.out_channels``."""
    if not isinstance(node, (dict, list)):
        return {prefix: node}
    items = node.items() if isinstance(node, dict) else enumerate(node)
    out: dict[str, object] = {}
    for k, v in items:
        out.update(_flat(v, f"{prefix}.{k}"))
    return out


def _leaves(cfg: DictConfig, keys: tuple[str, ...]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key in keys:
        node = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if OmegaConf.is_config(node):
            node = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
        elif hasattr(node, "name") and not isinstance(node, (str, int, float)):
            node = node.name  # an enum value
        out.update(_flat(node, key))
    size = [v for k, v in sorted(out.items()) if k.startswith("data.image_size")]
    if size:  # 12 and [12, 12] are the same size: one leaf, (H, W)
        for k in [k for k in out if k.startswith("data.image_size")]:
            del out[k]
        out["data.image_size"] = tuple(size * 2 if len(size) == 1 else size)
    model = OmegaConf.select(cfg, "model", default=None)
    if model is not None and "layers" in model and not takes_default_padding(model):
        out.pop("conv.padding", None)  # every conv layer sets its own
    return {k: v for k, v in out.items() if k not in NOT_COMPARED}


def _differences(was: DictConfig, now: DictConfig, keys: tuple[str, ...]) -> dict:
    a, b = _leaves(was, keys), _leaves(now, keys)
    differ = [k for k in a.keys() | b.keys() if a.get(k) != b.get(k)]
    # the names first (model.name says more than its twelfth layer), then the rest in order
    differ.sort(key=lambda k: (not k.endswith(".name"), k.count("."), k))
    return {k: (a.get(k), b.get(k)) for k in differ}


def _explicit(key: str, explicit: set[str] | None) -> bool:
    if explicit is None:
        return True
    return any(key == e or key.startswith(e + ".") for e in explicit)


def _spelled(diffs: dict) -> str:
    items = [f"{k} {was!r} there, {now!r} here" for k, (was, now) in list(diffs.items())[:SHOWN]]
    more = len(diffs) - SHOWN
    return "; ".join(items) + (f"; and {more} more" if more > 0 else "")


def check_resume(meta: dict, cfg: DictConfig, path: Path, explicit: set[str] | None) -> dict:
    """Refuse a checkpoint of another experiment; returns the changes the resume makes
    (``{key: [was, now]}``), each logged as a warning."""
    try:
        was = OmegaConf.create(meta.get("config") or "{}")
    except Exception:  # noqa: BLE001 - any YAML problem: the checkpoint is damaged
        raise CheckpointError(f"checkpoint {str(path)!r}: its config cannot be read") from None
    if OmegaConf.select(was, "data.test_fraction", default=None) is None:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is from a cnnrun before the three splits (its validation "
            "split was the test files, or the whole of digits and synthetic): its run cannot "
            "go on with the same data; start a new run"
        )
    other = _differences(was, cfg, SAME_EXPERIMENT)
    optim = {k: v for k, v in _differences(was, cfg, EXPLICIT_ONLY).items() if k not in other}
    implicit = {k: v for k, v in optim.items() if not _explicit(k, explicit)}
    if other or implicit:
        keep = " ".join(f"{k}={was}" for k, (was, _) in implicit.items())
        hint = (
            f"; pass {keep} to continue as the checkpoint did, or give the new value on the "
            "command line to change it"
            if implicit and not other
            else "; resume with the same model, optimiser, data and seed, or start a new run"
        )
        raise CheckpointError(
            f"checkpoint {str(path)!r} is from another run: {_spelled({**other, **implicit})}"
            + hint
        )
    changes = {**optim, **_differences(was, cfg, WARN_ONLY)}
    for key, (before, after) in changes.items():
        note = " (the backends agree to float32 rounding, not bit for bit)"
        note = note if key in WARN_ONLY else ""
        log.warning("resume: %s is %r, the checkpoint's was %r%s", key, after, before, note)
    return {k: [a, b] for k, (a, b) in changes.items()}


def resume_record(meta: dict, cfg: DictConfig, path: Path, threads: int) -> list[dict]:
    """:func:`check_resume`, and the run's record of what its resumes changed: the
    checkpoint's, plus this resume's changes if it makes any."""
    changed = check_resume(meta, cfg, path, explicit_keys())
    record = list(meta.get("changes_on_resume", []))
    if changed:
        record.append({"step": meta["step"], "checkpoint": str(path), "changed": changed})
    written = meta.get("process", {}).get("threads")
    if written is not None and written != threads:
        log.info(
            "the checkpoint was written with %s threads, this run has %s: the numbers do not "
            "depend on it",
            written,
            threads,
        )
    return record


def adopt_best(out: Path, resumed_from: Path | None, best_val_loss: float) -> None:
    """A run resumed from another folder's checkpoint takes that run's ``best.npz`` too,
    where it is the best epoch the checkpoint knows of: the test figures of the best
    checkpoint come from it, as in the run that continued in its own folder."""
    from .checkpoint import atomic_write, load_checkpoint

    own = out / "checkpoints" / "best.npz"
    if resumed_from is None or resumed_from.parent == own.parent or own.exists():
        return
    theirs = resumed_from.parent / "best.npz"
    try:
        if load_checkpoint(theirs)["meta"]["val_loss"] != best_val_loss:
            raise CheckpointError("a later best")
    except CheckpointError:
        log.warning(
            "no best.npz beside %s for its best epoch: test figures of the last only", resumed_from
        )
        return
    atomic_write(own, lambda f: f.write(theirs.read_bytes()), what="checkpoint")


def repair_best(folder: Path, state) -> None:
    """Make ``best.npz`` the best epoch that ``last.npz`` (restored into the RunState
    ``state``) knows of, where ``last.npz`` is that epoch itself and ``best.npz`` is missing
    or older. Called once the run has started: a failed start writes nothing."""
    from .checkpoint import atomic_write, load_checkpoint

    best = folder / "checkpoints" / "best.npz"
    last = folder / "checkpoints" / "last.npz"
    if state.batch or state.val_loss != state.best_val_loss:
        return  # mid-epoch, or the last epoch was not the best: best.npz is older by design
    try:
        best_step = load_checkpoint(best)["meta"]["step"] if best.is_file() else None
    except CheckpointError:
        best_step = None
    if best_step != state.step:
        log.warning("best.npz is older than the best epoch in last.npz: repaired from it")
        atomic_write(best, lambda f: f.write(last.read_bytes()), what="checkpoint")
