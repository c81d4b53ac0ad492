"""Signals end a run at a step boundary, with a checkpoint.

SIGINT (Ctrl-C), SIGTERM and SIGUSR1/2 (a cluster's pre-emption or time limit) set a flag that
the loop reads after each step; the loop then writes ``last.npz``, hands the signal to the
handler that was there before (submitit's requeue) and raises :class:`Interrupted`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import signal
import sys
import threading
from pathlib import Path

from ..errors import CnnrunError


class Interrupted(CnnrunError):
    """SIGINT, SIGTERM or SIGUSR1/2: the run wrote a checkpoint and stops; exit 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + signum

    def __reduce__(self):  # sent back from a sweep's job process
        return (type(self), (str(self), self.signum))


class StopSweep(BaseException):
    """The whole sweep stops: a signal to the process that runs its jobs one after another
    (Hydra's basic launcher; the job in progress wrote its checkpoint and status, and the jobs
    left must not start), or its folder in use by another sweep. A BaseException, so that
    neither Hydra's run_job (which records an Exception as the job's return and goes on) nor
    its callbacks (which turn one into a warning) swallow it; the command line prints it as
    its one line."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


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
        self.finishing = False  # see finish()

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.finishing and signum == signal.SIGINT:
            return
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def finish(self) -> None:
        """What is left is a message and the process's exit (a sweep that a signal stopped): a
        further Ctrl-C has nothing to stop, and is ignored from now on, here and after
        :meth:`__exit__`, so that it cannot cut the message short or turn the exit status
        into a death by SIGINT (a second Ctrl-C 50 ms after the first landed there once the
        sweep stopped that fast)."""
        self.finishing = True

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            finished = self.finishing and s == signal.SIGINT
            signal.signal(s, signal.SIG_IGN if finished else handler)
        self.previous = {}

    def forward(self) -> None:
        """Hand the signal to the handler that was there before (e.g. submitit's requeue)."""
        handler = self.previous.get(self.received)
        self.__exit__()
        if callable(handler) and handler is not signal.default_int_handler:
            handler(self.received, None)


def override(key: str, text: object) -> str:
    """``key=value`` as it can be pasted into a shell, quoted for Hydra's override grammar
    where the value has characters that grammar reads (``=``, ``,``, spaces, quotes)."""
    value = str(text)
    if not re.fullmatch(r"[\w./\-+@%~]+", value):
        value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return shlex.quote(f"{key}={value}")


def continue_hint(out: Path, checkpoint: Path) -> str:
    """How to continue an interrupted run: a sweep by re-running it into its folder, a single
    run in its folder, or from its checkpoint in a new one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return f"to continue, call train() again with {override('trainer.resume', checkpoint)}"
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        return (
            "to continue the sweep, run the same command with "
            f"{override('hydra.sweep.dir', hydra.sweep.dir)} (finished jobs are kept, this "
            "one resumes)"
        )
    return (
        f"to continue in this folder, run the same command with "
        f"{override('hydra.run.dir', out)} trainer.resume=last (or "
        f"{override('trainer.resume', checkpoint)} for a new folder)"
    )


def log_to_file_only(log: logging.Logger, level: int, message: str) -> None:
    """``message`` into the run's ``cnnrun.log`` (the file handlers of ``log``) and not onto the
    terminal: the command's last line (``cnnrun: error: ...``) says it there, once."""
    record = log.makeRecord(log.name, level, __file__, 0, "%s", (message,), None)
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler) and level >= handler.level:
            handler.handle(record)


@contextlib.contextmanager
def progress_logging(enabled: bool):
    """Log lines printed above the progress bars instead of through them (tqdm's logging
    redirection), while ``enabled``; nothing changes otherwise. Only the loggers with a console
    handler are redirected (root's, from Hydra): tqdm gives a logger without one a handler of
    its own, and cnnrun's records, which also reach root's, would print twice."""
    if not enabled:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    loggers = [logging.getLogger(), logging.getLogger("cnnrun")]
    with logging_redirect_tqdm(loggers=[lg for lg in loggers if _has_console(lg)]):
        yield


def _has_console(log: logging.Logger) -> bool:
    """Whether ``log`` has a handler writing to the terminal (stdout or stderr)."""
    return any(
        isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)
        for h in log.handlers
    )
