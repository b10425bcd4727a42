"""A small client of RabbitMQ's management HTTP API, for ``kq managequeue`` on the STOMP flavour
``rabbitmq``: STOMP has no admin frames, so listing, counting, purging and deleting queues go through
``/api/queues`` (the ``rabbitmq_management`` plugin). It uses :mod:`urllib.request` from the standard
library, so the driver needs no HTTP package.

The API's counters are sampled: they lag up to ``collect_statistics_interval`` (5 s by default) behind
the queue, so ``info`` right after a publish or a purge can show the old numbers for a few seconds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from kq.core.driver import BrokerUnavailableError, ConfigError, KqError

logger = logging.getLogger(__name__.replace("._", "."))

__all__ = ["ManagementError", "RabbitMQAdmin"]


class ManagementError(KqError):
    """RabbitMQ's management API could not be reached, refused the credentials, or answered an error."""


class ManagementUnreachableError(ManagementError, BrokerUnavailableError):
    """RabbitMQ's management API could not be reached at all (``kq`` exits 69, as for a broker down)."""


class RabbitMQAdmin:
    """Requests against ``<url>/api/queues/<vhost>/...`` with basic authentication.

    Args:
        url: The management API's base URL, such as ``http://127.0.0.1:15672``.
        username: A user with at least the ``management`` tag (``guest`` works on loopback only).
        password: Its password.
        vhost: The virtual host whose queues are administered (``/`` by default on RabbitMQ).
        timeout: Seconds to wait for the API to answer one request.
    """

    def __init__(self, url: str, username: str, password: str, vhost: str, timeout: float) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(f"management_url must be an http:// or https:// URL, got {url!r}")
        self.url = url.rstrip("/")
        self.vhost = vhost
        self.timeout = timeout
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"
        self._username = username

    def queues(self) -> list[dict[str, Any]]:
        """Every queue of the virtual host, with its name and counters."""
        found = self._request("GET", f"/api/queues/{_quote(self.vhost)}")
        return list(found or [])

    def queue(self, name: str) -> dict[str, Any] | None:
        """One queue's details, or ``None`` when it does not exist."""
        found: dict[str, Any] | None = self._request("GET", self._queue_path(name), missing_ok=True)
        return found

    def purge(self, name: str) -> bool:
        """Delete the queue's ready messages (unacknowledged ones stay); ``False`` if it does not exist."""
        return self._request("DELETE", self._queue_path(name) + "/contents", missing_ok=True) is not None

    def delete(self, name: str) -> bool:
        """Delete the queue and its messages; ``False`` if it does not exist."""
        return self._request("DELETE", self._queue_path(name), missing_ok=True) is not None

    def _queue_path(self, name: str) -> str:
        return f"/api/queues/{_quote(self.vhost)}/{_quote(name)}"

    def _request(self, method: str, path: str, *, missing_ok: bool = False) -> Any:
        """Send one request; return the decoded JSON body (``{}`` when there is none), or ``None`` on a
        404 when ``missing_ok``."""
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url + path,
            method=method,
            # No Accept header: RabbitMQ answers 406 to a DELETE that asks for JSON.
            headers={"Authorization": self._authorization},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and missing_ok:
                return None
            raise ManagementError(self._refusal(method, path, exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ManagementUnreachableError(
                f"the RabbitMQ management API at {self.url} is unreachable ({reason}); enable the "
                "rabbitmq_management plugin, or set the driver option management_url"
            ) from None
        if not body:
            return {}
        try:
            return json.loads(body)
        except ValueError:
            raise ManagementError(
                f"the RabbitMQ management API at {self.url} answered {method} {path} with something "
                "that is not JSON; is management_url the management API's address?"
            ) from None

    def _refusal(self, method: str, path: str, exc: urllib.error.HTTPError) -> str:
        if exc.code == 401:
            return (
                f"the RabbitMQ management API at {self.url} refused user '{self._username}' (401); set the "
                "driver options management_user and management_password (they default to login and "
                "passcode, then guest/guest, which RabbitMQ accepts from loopback only)"
            )
        if exc.code == 403:
            return (
                f"the RabbitMQ management API at {self.url} does not let user '{self._username}' "
                f"{method} {path} (403): the user needs the 'management' tag and permissions on virtual "
                f"host '{self.vhost}'"
            )
        if exc.code == 404:
            return (
                f"the RabbitMQ management API at {self.url} knows no {path} (404): "
                f"is virtual host '{self.vhost}' there?"
            )
        detail = ""
        with contextlib.suppress(ValueError, AttributeError, OSError):
            detail = str(json.loads(exc.read()).get("reason", ""))
        return f"the RabbitMQ management API at {self.url} answered {exc.code} to {method} {path}" + (
            f": {detail}" if detail else ""
        )


def _quote(segment: str) -> str:
    """A path segment with every reserved character escaped (the default vhost ``/`` is ``%2F``)."""
    return urllib.parse.quote(segment, safe="")
