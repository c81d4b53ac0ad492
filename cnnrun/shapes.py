"""``python -m cnnrun.shapes [overrides]``: the shape trace of a config's model, no training
(see :func:`cnnrun.run.tools.shapes_main`)."""

from .run.tools import shapes_main

if __name__ == "__main__":
    shapes_main()
