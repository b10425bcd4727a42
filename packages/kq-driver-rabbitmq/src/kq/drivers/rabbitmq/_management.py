"""A minimal client of RabbitMQ's management HTTP API (for ``list-available`` and queue details)."""

from __future__ import annotations

import urllib.parse
from typing import Any

from kq.drivers.rabbitmq._errors import ManagementError, ManagementUnreachableError


class Management:
    """``GET`` requests against ``http(s)://host:15672/api/...`` with the broker's credentials."""

    def __init__(self, url: str, username: str, password: str, vhost: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.auth = (username, password)
        self.vhost = vhost
        self.timeout = timeout

    def queues(self) -> list[dict[str, Any]]:
        """Every queue of the virtual host, with its counters."""
        found: list[dict[str, Any]] = self._get(f"/api/queues/{urllib.parse.quote(self.vhost, safe='')}")
        return found

    def queue(self, name: str) -> dict[str, Any] | None:
        """One queue's details, or ``None`` if it does not exist."""
        path = f"/api/queues/{urllib.parse.quote(self.vhost, safe='')}/{urllib.parse.quote(name, safe='')}"
        try:
            found: dict[str, Any] = self._get(path)
        except ManagementError as exc:
            if "404" in str(exc):
                return None
            raise
        return found

    def _get(self, path: str) -> Any:
        # The standard library's client, imported here: a few GET requests with basic authentication
        # need no third-party package, and every `kq queuecommand` imports this driver package while
        # only `list-available` and queue details talk to the management API.
        import base64
        import http.client
        import json
        import urllib.error
        import urllib.request

        if not self.url.startswith(("http://", "https://")):
            raise ManagementError(f"management_url {self.url!r} must be an http:// or https:// URL")
        credentials = base64.b64encode(":".join(self.auth).encode()).decode("ascii")
        request = urllib.request.Request(  # noqa: S310 (http(s), checked above)
            self.url + path, headers={"Authorization": f"Basic {credentials}", "Accept": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (http(s), checked above)
                body = response.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            raise ManagementError(
                f"the RabbitMQ management API at {self.url} answered {exc.code} for {path}"
            ) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError
            raise ManagementUnreachableError(
                f"the RabbitMQ management API at {self.url} is unreachable ({type(exc).__name__}); "
                "enable the rabbitmq_management plugin or set management_url"
            ) from None
        try:
            return json.loads(body)
        except ValueError:
            raise ManagementError(
                f"the RabbitMQ management API at {self.url} answered {path} with something that is not JSON"
            ) from None
