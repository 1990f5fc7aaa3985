"""Every error xvad reports to a user: one base, :class:`XvadError`, and one class per kind of input.

The command line turns any ``XvadError`` into a single line naming the file or option and the
problem (no traceback) and exits non-zero. This module imports nothing of the package, so any
module can raise these without an import cycle.
"""
from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DatasetError", "ExplainError", "ModelVersionError", "StreamError",
           "VideoError", "VideoWarning", "WeightsError", "XvadError"]


class XvadError(Exception):
    """An error meant for the user: its message is one line naming what is wrong and where."""


class VideoError(XvadError):
    """A video cannot be read: missing, not a video, no video stream, unsupported codec or no decodable frames."""


class VideoWarning(UserWarning):
    """A video was only partly readable (truncated or damaged); the frames that did decode are returned."""


class CheckpointError(XvadError, RuntimeError):
    """A checkpoint file is missing, truncated, foreign or inconsistent."""


class WeightsError(XvadError, RuntimeError):
    """Backbone weights cannot be found, downloaded or verified."""


class DatasetError(XvadError, ValueError):
    """A dataset folder or CSV cannot be used as given."""


class ConfigError(XvadError, ValueError):
    """A setting (command-line option or configuration field) has a value that cannot work."""


class ExplainError(XvadError, ValueError):
    """An explanation cannot be computed as asked (unknown method, layer or target)."""


class StreamError(XvadError, RuntimeError):
    """A stream cannot be used as asked (bad option, source lost for good)."""


class ModelVersionError(XvadError, ValueError):
    """A camera's model version cannot be adopted or gone back to as asked (no such camera or version)."""
