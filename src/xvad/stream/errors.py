"""The error the stream code reports to a user as one line."""
from __future__ import annotations


class StreamError(RuntimeError):
    """A stream cannot be used as asked (bad option, source lost for good): one line for the user."""
