"""The errors xvad reports to a user as one line (the CLI prints them without a traceback)."""
from __future__ import annotations


def _user_errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import CheckpointError
    from .data import DatasetError
    from .models.backbones import WeightsError
    from .stream.errors import StreamError
    from .video import VideoError

    errors: list[type[BaseException]] = [CheckpointError, DatasetError, StreamError, WeightsError, VideoError]
    try:
        from .explain import ExplainError
        errors.append(ExplainError)
    except ImportError:
        pass
    return tuple(errors)


USER_ERRORS = _user_errors()
