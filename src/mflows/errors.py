"""The exceptions mflows raises on purpose.

Every error a user can act on derives from :class:`MflowsError`, so an application can catch the
whole family in one place (the command line does: one line, exit code 2, or 1 for a diverged
run). Each subclass also derives from the built-in exception that describes its kind, so code
written against ``ValueError`` or ``FloatingPointError`` keeps working.

Bad arguments to a public function (shapes, dtypes, non-finite values, out-of-range options)
raise :class:`InvalidArgumentError`, which is a ``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataNotAvailableError",
    "InvalidArgumentError",
    "MflowsError",
    "ResumeMismatchError",
    "RunError",
    "RunLockedError",
    "TrainingDivergedError",
]


class MflowsError(Exception):
    """Base class of every error mflows raises deliberately."""


class InvalidArgumentError(MflowsError, ValueError):
    """A public function received an argument it cannot use (shape, dtype, value, option)."""


class ConfigError(MflowsError, ValueError):
    """A configuration value, file or override is invalid; the message names the field."""


class RunError(MflowsError):
    """A run directory cannot be used as asked (missing files, not a run, exists already)."""


class RunLockedError(RunError):
    """Another live process is writing to the same run directory."""


class CheckpointError(MflowsError):
    """A checkpoint or model file is corrupt, of an unknown format, or of another version."""


class ResumeMismatchError(MflowsError, ValueError):
    """A checkpoint was written for other data, another model or another schedule."""


class DataNotAvailableError(MflowsError, RuntimeError):
    """The files of a data set are missing or corrupted and could not be (re)downloaded."""


class TrainingDivergedError(MflowsError, FloatingPointError):
    """A loss or gradient became NaN or infinite; the message names epoch, batch and values."""
