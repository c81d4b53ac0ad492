"""A run's folder: where it is, one run at a time in it, and nothing written before it starts.

A run owns its folder from start to end: :class:`RunFolder` takes an exclusive ``flock`` on
the folder itself (no lock file; the kernel releases it when the process ends, ``kill -9``
included), so a second run in the same folder stops at once, naming the holder's PID.

Until the run has passed every check (config, lock, checkpoint, data, model) it writes nothing
into its folder: Hydra is told not to write ``.hydra/`` or ``cnnrun.log`` itself
(``conf/hydra/default.yaml``), the log lines so far are held in memory, and
:meth:`RunFolder.commit` writes ``.hydra/``, opens ``cnnrun.log`` with those lines and clears
the temporary files a killed run of this folder left behind. A run that fails before that
point leaves an existing folder's files exactly as they were.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import CnnrunError, ConfigError
from .checkpoint import atomic_write_text

log = logging.getLogger("cnnrun")

HYDRA_FILES = ".hydra"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class FolderInUse(CnnrunError):
    """Another live process holds the run folder's lock."""


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


def _cannot_write(out: Path, err: OSError) -> CnnrunError:
    return CnnrunError(
        f"run folder {out} cannot be written ({err.strerror or err}): choose "
        "another with hydra.run.dir=... or paths.runs_dir=..."
    )


def lock_folder(out: Path, what: str = "run") -> int:
    """An exclusive lock on ``out`` (made if missing), as an open descriptor; a
    :class:`FolderInUse` naming the holder when another process has it.

    A ``flock`` on the folder itself where the file system has it; where it does not (NFS
    emulates flock with POSIX locks, which a folder opened read-only cannot take; Lustre
    mounted ``noflock``), a POSIX lock on ``.cnnrun.lock`` in the folder."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise _cannot_write(out, err) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        holder = lock_holder(fd)
        os.close(fd)
        raise _in_use(out, holder, what) from None
    except OSError as err:
        os.close(fd)
        if err.errno not in NO_FLOCK:
            raise _cannot_write(out, err) from None
    return _lock_file(out, what)


NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EBADF, errno.EINVAL, errno.ENOSYS)
LOCK_FILE = ".cnnrun.lock"


def _in_use(out: Path, holder: int | None, what: str) -> FolderInUse:
    pid = f" (PID {holder})" if holder else ""
    key = "hydra.sweep.dir" if what == "sweep" else "hydra.run.dir"
    return FolderInUse(
        f"{what} folder {out} is in use by another {what}{pid}: wait for it to end, or give "
        f"this {what} a folder of its own ({key}=...)"
    )


def _lock_file(out: Path, what: str) -> int:
    """A POSIX write lock on ``out/.cnnrun.lock``; its holder's PID comes from F_GETLK."""
    try:
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise _cannot_write(out, err) from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EAGAIN):
            os.close(fd)
            log.warning(
                "run folder %s cannot be locked (%s): run one run at a time in it", out, err
            )
            return os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        query = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0)
        holder = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, query))[4]
        os.close(fd)
        raise _in_use(out, holder or None, what) from None


def lock_holder(fd: int) -> int | None:
    """The PID holding a flock on the file behind ``fd``, from Linux's ``/proc/locks``."""
    st = os.fstat(fd)
    target = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == target:
            return int(fields[4]) if fields[4].isdigit() else None
    return None


def check_writable(out: Path) -> None:
    """Fail at the start, not at the first checkpoint, if the run folder cannot be written.
    Leaves nothing behind."""
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise _cannot_write(out, err) from None


def clean_temporary(out: Path) -> None:
    """Remove the half-written checkpoints (``.*.npz.*.tmp``) of a killed run of this folder.
    Only with the folder's lock held: no live run of it can be writing them."""
    for stale in (out / "checkpoints").glob(".*.npz.*.tmp"):
        stale.unlink(missing_ok=True)


def write_hydra_files(out: Path, cfg: DictConfig) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra writes them,
    unless Hydra wrote them itself (``hydra.output_subdir`` set) or this is no Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is not None:
        return
    hydra_cfg = HydraConfig.get()
    folder = out / HYDRA_FILES
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(folder / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}))
    atomic_write_text(folder / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))


class _Held(logging.Handler):
    """Log records kept in memory until the run folder may be written."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class RunFolder:
    """``with RunFolder(out) as folder: ...; folder.commit(cfg); ...``: the lock for the whole
    run, the log held until :meth:`commit`, the log file closed (with the error, if the run
    failed after committing) on the way out."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.fd: int | None = None
        self.held: _Held | None = None
        self.handler: logging.Handler | None = None
        self.made = False

    def __enter__(self) -> RunFolder:
        self.held = _Held()  # first: a warning about the lock belongs in cnnrun.log too
        log.addHandler(self.held)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        self.made = not self.out.exists()  # by this run, outside Hydra (which makes its own)
        try:
            self.fd = lock_folder(self.out)
            check_writable(self.out)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def commit(self, cfg: DictConfig) -> None:
        """The run starts: write ``.hydra/``, open ``cnnrun.log`` with the lines held so far."""
        write_hydra_files(self.out, cfg)
        try:
            (self.out / "checkpoints").mkdir(exist_ok=True)
        except OSError as err:
            raise _cannot_write(self.out, err) from None
        clean_temporary(self.out)
        self.handler = log_file(self.out)
        held, self.held = self.held, None
        log.removeHandler(held)
        if self.handler is not None:
            for record in held.records:
                self.handler.handle(record)

    def __exit__(self, exc_type, exc, tb) -> None:
        from .signals import Interrupted

        if self.held is not None:  # ended before commit: nothing of this run is kept
            log.removeHandler(self.held)
            self.held = None
            if self.made and self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()
        if self.handler is not None:
            if exc is not None and not isinstance(exc, Interrupted):  # logged where it arose
                self.handler.handle(_error_record(exc))
            log.removeHandler(self.handler)
            self.handler.close()
        self._unlock()

    def _unlock(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


def _error_record(exc: BaseException) -> logging.LogRecord:
    from .cli import describe

    message = describe(exc) if isinstance(exc, Exception) else None
    text = message or f"{type(exc).__name__}: {exc}"
    record = logging.LogRecord("cnnrun", logging.ERROR, __file__, 0, "%s", (text,), None)
    if message is None and isinstance(exc, Exception):  # a bug: keep its traceback
        record.exc_info = (type(exc), exc, exc.__traceback__)
    return record


def log_file(out: Path) -> logging.Handler | None:
    """A handler writing ``cnnrun.log`` in the run folder; None where one is there already
    (a user's own ``hydra/job_logging``). The caller removes and closes it at the end."""
    target = (out / "cnnrun.log").resolve()
    for h in logging.getLogger().handlers + log.handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() == target:
            return None
    try:
        handler = logging.FileHandler(target)
    except OSError as err:
        raise _cannot_write(out, err) from None
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    log.addHandler(handler)
    return handler
