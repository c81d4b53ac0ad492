"""Checkpoints: one ``.npz`` with the model, the optimiser, every RNG state and the config.

Layout: ``model/<param or buffer>`` and ``optim/<index>/<state>`` arrays, and ``meta``, a JSON
string with the format version, model name, epoch, step, best validation loss, RNG states,
optimiser hyperparameters, the config as YAML and a SHA-256 of every array (dtype, shape and
bytes), checked on load: a changed array is named, even where the zip's own CRCs were redone.
Written atomically: a temporary file in the
same folder, flushed and fsynced, then renamed over the old one, so a run killed at any instant
leaves the previous complete checkpoint readable. The fsync of the folder, which makes the
rename itself durable, can wait (``sync_folder=False``): until it runs, a power cut leaves
the previous complete file under the name, never a torn one; a killed process loses nothing
the operating system was handed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, CnnrunError

FORMAT = "cnnrun-checkpoint"
VERSION = 2
READS = (1, 2)  # version 1 had no array hashes: it loads unverified


def array_hash(a: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order)."""
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save_checkpoint(
    path: str | Path, model, optimizer, meta: dict, *, sync_folder: bool = True
) -> Path:
    """Write ``path`` atomically; ``meta`` holds epoch, step, RNG states, config and so on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(
        path,
        lambda f: f.write(checkpoint_bytes(model, optimizer, meta)),
        what="checkpoint",
        sync_folder=sync_folder,
    )


def checkpoint_bytes(model, optimizer, meta: dict) -> bytes:
    """The whole ``.npz`` file of a checkpoint, in memory (a run writes the same bytes to
    ``best.npz`` and ``last.npz``)."""
    opt_state = optimizer.state_dict()
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    for i, state in enumerate(opt_state["state"]):
        arrays.update({f"optim/{i}/{k}": v for k, v in state.items()})
    info = {
        **meta,
        "format": FORMAT,
        "version": VERSION,
        "optimizer": {k: opt_state[k] for k in ("type", "hyper", "steps", "param_names")},
    }
    info["hashes"] = {k: array_hash(v) for k, v in arrays.items()}
    info["hashes"]["meta"] = meta_hash(info)
    arrays["meta"] = np.array(json.dumps(info))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def atomic_write(path: Path, write, what: str = "file", *, sync_folder: bool = True) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``: readers see the old file or the new one, never a half-written one. A failed write
    (disk full, read-only folder) removes the temporary file, leaves ``path`` as it was and
    raises a :class:`CnnrunError` naming the file. ``sync_folder``: fsync the folder too (see
    the module's docstring; :func:`fsync_folder` does it later)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        kept = "the previous one is intact" if path.exists() else "nothing was written"
        raise CnnrunError(f"could not write {what} {path}: {err.strerror or err}; {kept}") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    if sync_folder:
        _fsync_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()), what="file")


def atomic_write_json(path: Path, values: dict) -> Path:
    """Strict JSON, atomically: a NaN or infinite float is written as null."""
    import math

    clean = {
        k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in values.items()
    }
    return atomic_write_text(path, json.dumps(clean, indent=2, allow_nan=False) + "\n")


def fsync_folder(folder: Path) -> None:
    """Make the renames done in ``folder`` durable (an fsync of the folder)."""
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint: ``{"meta", "model", "optim"}``; a :class:`CheckpointError` with the
    reason if it is missing, truncated, not a cnnrun checkpoint or of another version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} not found: expected a .npz file "
            "written by cnnrun (runs/.../checkpoints/last.npz)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable: truncated, or not an "
            ".npz file written by cnnrun"
        ) from None
    if "meta" not in arrays:
        raise CheckpointError(f"{str(path)!r} is not a cnnrun checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError:
        raise CheckpointError(f"{str(path)!r}: its 'meta' entry is not valid JSON") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a cnnrun checkpoint")
    if meta.get("version") not in READS:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version "
            f"{meta.get('version')!r}; this cnnrun reads versions "
            f"{', '.join(map(str, READS))}"
        )
    if meta["version"] >= 2:
        _verify(path, arrays, meta)
    model = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
    optim: dict[int, dict[str, np.ndarray]] = {}
    for k, v in arrays.items():
        if k.startswith("optim/"):
            _, index, name = k.split("/", 2)
            optim.setdefault(int(index), {})[name] = v
    return {"meta": meta, "model": model, "optim": optim}


def meta_hash(meta: dict) -> str:
    """SHA-256 of the meta entry (its own hashes left out): the config, seed, RNG states and
    position are checked as the arrays are."""
    rest = {k: v for k, v in meta.items() if k != "hashes"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _verify(path: Path, arrays: dict, meta: dict) -> None:
    """Every array and the meta entry as written: none changed, missing or added since."""
    hashes = dict(meta.get("hashes") or {})
    if hashes.pop("meta", None) not in (None, meta_hash(meta)):
        arrays = {**arrays, "meta": None}
        hashes["meta"] = ""  # reported as changed below
    changed = sorted(
        k
        for k in arrays.keys() & hashes.keys()
        if arrays[k] is None or array_hash(arrays[k]) != hashes[k]
    )
    missing, extra = sorted(hashes.keys() - arrays.keys()), sorted(arrays.keys() - hashes.keys())
    found = (("changed", changed), ("missing", missing), ("not written by it", extra))
    problems = [f"{what} {', '.join(names)}" for what, names in found if names]
    if problems:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not as cnnrun wrote it (arrays {'; '.join(problems)}): "
            "use an intact copy, or start a new run"
        )


def restore(checkpoint: dict, model, optimizer, path: str | Path = "checkpoint") -> dict:
    """Load a checkpoint's model and optimiser state into ``model`` and ``optimizer``."""
    meta = checkpoint["meta"]
    try:
        model.load_state_dict(checkpoint["model"])
    except CheckpointError as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} (model {meta.get('model_name')!r}) "
            f"does not fit this model: {str(err).split('; ', 1)[-1]}"
        ) from None
    opt = meta["optimizer"]
    state = [checkpoint["optim"].get(i, {}) for i in range(len(opt["param_names"]))]
    try:
        optimizer.load_state_dict({**opt, "state": state})
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint {str(path)!r}: {err}") from None
    return meta


def write_metrics(path: Path, metrics: dict) -> None:
    """``metrics.json``, atomically, as strict JSON: a NaN or infinite metric is null."""
    clean = {
        k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in metrics.items()
    }
    atomic_write_text(path, json.dumps(clean, indent=2, allow_nan=False) + "\n")
