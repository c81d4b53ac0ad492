"""``python -m cnnrun [overrides]`` and the ``cnnrun`` command (see :mod:`cnnrun.run.main`)."""

from .run.main import main

if __name__ == "__main__":
    main()
