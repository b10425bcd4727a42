"""A minimal client of RabbitMQ's management HTTP API (for ``list-available`` and queue details)."""

from __future__ import annotations

import urllib.parse
from typing import Any

from kq.drivers.rabbitmq._errors import ManagementError


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
        # Imported here: requests costs ~0.15 s to import, and every `kq queuecommand` imports this
        # driver package, while only `list-available` and queue details talk to the management API.
        import requests

        try:
            response = requests.get(self.url + path, auth=self.auth, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ManagementError(
                f"the RabbitMQ management API at {self.url} is unreachable ({type(exc).__name__}); "
                "enable the "
                "rabbitmq_management plugin or set management_url"
            ) from None
        if response.status_code != 200:
            raise ManagementError(
                f"the RabbitMQ management API at {self.url} answered {response.status_code} for {path}"
            )
        return response.json()
