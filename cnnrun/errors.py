"""Errors that are the user's to fix.

The command-line entry points catch :class:`CnnrunError` and print its message as a single
line (no traceback unless ``HYDRA_FULL_ERROR=1``), then exit with a non-zero status. Anything
else that escapes is a bug in cnnrun and keeps its traceback.
"""


class CnnrunError(Exception):
    """A mistake in the user's input: the message names the value and what would be accepted."""


class ConfigError(CnnrunError, ValueError):
    """A config value that does not exist or is out of range."""


class ShapeError(CnnrunError, ValueError):
    """A network whose layers do not fit the data (for example an image shrunk below a kernel)."""


class DataError(CnnrunError):
    """A data file that is missing, truncated or fails its checksum."""


class CheckpointError(CnnrunError):
    """A checkpoint that is unreadable or belongs to another model."""
