"""cnnrun: config-driven experiments on a hand-written backprop engine for CNNs."""

__version__ = "0.1.0"
