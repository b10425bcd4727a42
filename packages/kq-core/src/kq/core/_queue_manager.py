"""The driver-level :class:`QueueManager`: administrative actions on queues (``kq managequeue``)."""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from kq.core._errors import UnsupportedOperationError

if TYPE_CHECKING:
    from kq.core._driver import Driver


class QueueManager(abc.ABC):
    """Administrative actions on a driver's queues (``kq managequeue``).

    ``info`` returns a dict with at least ``messages``: the number of messages waiting to be delivered.
    Drivers add what their broker knows (``in_flight``, ``delayed``, ``consumers``, ...).
    """

    #: Actions that need a queue argument.
    queue_actions: ClassVar[frozenset[str]] = frozenset({"info", "purge", "delete"})

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    @property
    def actions(self) -> tuple[str, ...]:
        """The actions this manager supports: the driver's declared ``Capabilities.queue_actions``."""
        return self.driver.capabilities_for().queue_actions

    @property
    def unavailable_actions(self) -> Mapping[str, str]:
        """Standard actions this manager does not offer, each with the reason, which ``execute`` gives
        when one is asked for (for example ``{"delete": "ActiveMQ cannot delete a queue over STOMP"}``).
        Empty by default."""
        return {}

    def execute(
        self, action: str, queue: str | None = None, arguments: Mapping[str, str] | None = None
    ) -> Any:
        """Run ``action`` by name (as the CLI does) and return its JSON-friendly result."""
        if action not in self.actions:
            reason = self.unavailable_actions.get(action)
            raise UnsupportedOperationError(
                f"driver '{self.driver.name}' has no queue action '{action}'"
                + (f" ({reason})" if reason else "")
                + f"; available: {', '.join(self.actions)}"
            )
        if action in self.queue_actions and not queue:
            raise UnsupportedOperationError(f"action '{action}' needs a queue name")
        method = getattr(self, action.replace("-", "_"))
        accepted = [
            p.name
            for p in inspect.signature(method).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "queue"
        ]
        for name in arguments or {}:
            if name not in accepted:
                takes = f"takes {', '.join(accepted)}" if accepted else "takes no arguments"
                raise UnsupportedOperationError(f"action '{action}' has no argument '{name}' (it {takes})")
        if action in self.queue_actions or "queue" in inspect.signature(method).parameters:
            return method(queue, **(arguments or {}))
        return method(**(arguments or {}))

    def list_configured(self) -> list[dict[str, Any]]:
        """The queues configured for this driver instance."""
        return [
            {
                "queue": spec.name,
                "driver": self.driver.name,
                "consumer": spec.consumer,
                "routing_keys": list(spec.routing_keys),
                "dead_letter_queue": spec.dead_letter_queue,
            }
            for spec in self.driver.configured_queues.values()
            if spec.configured
        ]

    @abc.abstractmethod
    def list_available(self) -> list[str]:
        """Names of the queues that exist on the broker."""

    @abc.abstractmethod
    def info(self, queue: str) -> dict[str, Any]:
        """State of ``queue``: at least ``messages`` (waiting to be delivered)."""

    @abc.abstractmethod
    def purge(self, queue: str) -> int | None:
        """Delete every waiting message; return how many when the broker says."""

    @abc.abstractmethod
    def delete(self, queue: str) -> bool:
        """Delete the queue and its messages.

        Returns:
            ``True`` when the queue existed and was deleted, ``False`` when there was no such queue (then
            nothing was done, and nothing was created on the way). ``kq managequeue delete`` reports it
            as ``{"deleted": true|false}``.
        """
