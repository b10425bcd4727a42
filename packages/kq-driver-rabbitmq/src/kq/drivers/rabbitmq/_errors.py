"""The errors this driver raises, each a kq.core error, so callers and the CLI need to know no driver.

- :class:`ManagementError` (a :class:`~kq.core.KqError`): the management HTTP API, used by
  ``list-available`` and queue details, refused the request; :class:`ManagementUnreachableError`, also
  a :class:`~kq.core.BrokerUnavailableError` (``kq`` exits 69), when it could not be reached at all.
- A batch published only in part raises kq's own :class:`~kq.core.PublishError`, re-exported here
  and from the package, naming the message ids published and those not.
- An unreachable broker raises :class:`~kq.core.BrokerUnavailableError`, a bad option
  :class:`~kq.core.ConfigError`, and a stream queue asked to consume
  :class:`~kq.core.UnsupportedOperationError`: the core's classes, as every driver does.
"""

from __future__ import annotations

from kq.core.driver import BrokerUnavailableError, KqError, PublishError

__all__ = ["ManagementError", "ManagementUnreachableError", "PublishError"]


class ManagementError(KqError):
    """The management API could not be reached or refused the request."""


class ManagementUnreachableError(ManagementError, BrokerUnavailableError):
    """The management API could not be reached at all (connection refused, timeout, not HTTP)."""
