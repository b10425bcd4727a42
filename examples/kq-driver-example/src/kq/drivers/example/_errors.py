"""The errors of the example driver: its own, each a kq-core error, and the kq-core ones it raises."""

from __future__ import annotations

from kq.core.driver import ConfigError, KqError, LeaseLostError

__all__ = ["ConfigError", "FolderError", "LeaseLostError"]


class FolderError(KqError):
    """The queue folder cannot be used (not a folder, not writable)."""
