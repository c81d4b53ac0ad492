"""``python -m cnnrun [overrides]`` and the ``cnnrun`` command (see :mod:`cnnrun.run.main`)."""

import sys


def main() -> None:
    try:  # Hydra, OmegaConf and NumPy take seconds to import: a Ctrl-C then is one line too
        from .run.main import main as run_main
    except KeyboardInterrupt:
        print("cnnrun: error: interrupted while starting; nothing was written", file=sys.stderr)
        sys.exit(130)
    run_main()


if __name__ == "__main__":
    main()
