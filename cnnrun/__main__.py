"""``python -m cnnrun [overrides]`` and the ``cnnrun`` command (see :mod:`cnnrun.run.main`)."""

import os
import signal
import sys
import threading

STARTING = "cnnrun: error: interrupted while starting; nothing was written"


def _end_while_starting(signum, frame) -> None:
    """Ctrl-C while Hydra, OmegaConf and NumPy are imported: one line, status 130, at once.

    A KeyboardInterrupt raised inside those imports can surface as another library's error with a
    traceback (OmegaConf's config store half built), or the interpreter can report the interrupt
    as a kill by SIGINT after the line is printed. Nothing has been written yet, so ending here
    without unwinding loses nothing.
    """
    sys.stderr.write(STARTING + "\n")
    sys.stderr.flush()
    os._exit(130)


def main() -> None:
    previous = signal.getsignal(signal.SIGINT)
    # a job started with Ctrl-C ignored keeps it ignored; a handler not set from Python (None)
    # could not be put back; only the main thread may set one (main() called from another)
    ours = previous not in (signal.SIG_IGN, None)
    ours = ours and threading.current_thread() is threading.main_thread()
    if ours:
        signal.signal(signal.SIGINT, _end_while_starting)
    try:
        from .run.main import main as run_main
    finally:
        if ours:
            signal.signal(signal.SIGINT, previous)
    run_main()


if __name__ == "__main__":
    main()
