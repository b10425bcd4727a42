"""The service execution type: a Python callable named in a message, called inside the worker.

Body (the PHP library's shape, with keyword arguments added)::

    {"service": "myapp.tasks", "method": "send_report", "arguments": [2026], "kwargs": {"to": "ops"}}

``service`` is a module (``myapp.tasks``) or an object in one (``myapp.services:mailer``); ``method`` is
the function or method to call on it. Nothing is imported before ``[allow.services]`` allows the pair:
an import runs code. Names starting with ``_`` are refused (no ``__class__`` walks). The call's return
value is the result; an exception is a failed execution.

The default routing key is the service with ``:`` turned into ``.``, then ``.`` and the method
(``myapp.services:mailer`` + ``send`` -> ``myapp.services.mailer.send``).
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kq.core._allow import AllowMap
from kq.core._errors import ExecutionFailedError, MessageFormatError, NotAllowedError
from kq.core._message import Delivery, Message
from kq.core.handlers._base import Handler, HandlerContext
from kq.core.handlers._codecs import check_list, parse_object
from kq.core.handlers._producer import MessageProducer

logger = logging.getLogger(__name__.replace("._", "."))

_SERVICE = re.compile(r"[A-Za-z][\w]*(?:\.[A-Za-z][\w]*)*(?::[A-Za-z][\w]*(?:\.[A-Za-z][\w]*)*)?\Z")
_METHOD = re.compile(r"[A-Za-z]\w{0,127}\Z")


@dataclass(frozen=True)
class ServiceCall:
    """A validated service-call message."""

    service: str
    method: str
    arguments: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        """The JSON-ready message body."""
        body: dict[str, Any] = {
            "service": self.service,
            "method": self.method,
            "arguments": list(self.arguments),
        }
        if self.kwargs:
            body["kwargs"] = dict(self.kwargs)
        return body

    @property
    def routing_key(self) -> str:
        """The default routing key."""
        return f"{self.service.replace(':', '.')}.{self.method}"


def make_service_call(
    service: str, method: str, arguments: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None
) -> ServiceCall:
    """Build a validated :class:`ServiceCall` (raises MessageFormatError)."""
    if not isinstance(service, str) or not _SERVICE.match(service):
        raise MessageFormatError(
            f"service {str(service)[:80]!r} must be 'module' or 'module:attribute' (no names starting with _)"
        )
    if not isinstance(method, str) or not _METHOD.match(method):
        raise MessageFormatError(f"method {str(method)[:80]!r} must be a name not starting with _")
    values = check_list(arguments)
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise MessageFormatError("'kwargs' must be an object whose keys are Python identifiers")
    return ServiceCall(service=service, method=method, arguments=values, kwargs=dict(kwargs))


def parse_service_call(body: Any) -> ServiceCall:
    """Validate a decoded service-call body (raises MessageFormatError naming the wrong part)."""
    body = parse_object(body, "service-call", ("service", "method", "arguments", "kwargs"))
    # make_service_call checks the types of what the message holds.
    service: Any = body.get("service")
    method: Any = body.get("method")
    arguments: Any = body.get("arguments")
    return make_service_call(service, method, [] if arguments is None else arguments, body.get("kwargs"))


class ServiceHandler(Handler):
    """Calls the allowed Python callables that messages name.

    Args:
        allowed: ``[allow.services]``: service -> methods.
    """

    prefetch = 16  # an in-process Python call: see Handler.prefetch

    kind = "service"
    allow_section = "services"
    requires_signature = True

    def __init__(self, allowed: AllowMap) -> None:
        self.allowed = allowed
        self._targets: dict[tuple[str, str], Any] = {}

    @classmethod
    def from_context(cls, context: HandlerContext) -> ServiceHandler:
        """Use ``[allow.services]``."""
        return cls(context.config.allow.allow_map("services"))

    def describe(self, body: Any) -> str:
        """``service 'module:attr.method'``."""
        if (
            isinstance(body, dict)
            and isinstance(body.get("service"), str)
            and isinstance(body.get("method"), str)
        ):
            return f"service {body['service']}.{body['method']}"
        return "service call"

    def consume(self, body: Any, delivery: Delivery) -> Any:
        """Check the allow-list, resolve (importing only then), call; exceptions are failures."""
        call = parse_service_call(body)
        if not self.allowed.allows(call.service, call.method):
            part = f"method {call.method!r} of" if self.allowed.knows(call.service) else "service"
            note = self.allowed.length_note(call.service, call.method)
            raise NotAllowedError(
                f"{part} {call.service!r} is not in the allow-list ([allow.services]){note}"
            )
        return self._resolve(call)(*call.arguments, **call.kwargs)

    def _resolve(self, call: ServiceCall) -> Any:
        key = (call.service, call.method)
        found = self._targets.get(key)
        if found is not None:
            return found
        module_name, _, attribute = call.service.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise ExecutionFailedError(
                f"service {call.service!r}: cannot import {module_name!r} ({exc})"
            ) from None
        path = [*attribute.split("."), call.method] if attribute else [call.method]
        for part in path:
            try:
                target = getattr(target, part)
            except AttributeError:
                raise MessageFormatError(f"service {call.service!r} has no attribute {part!r}") from None
        if not callable(target):
            raise MessageFormatError(f"{call.service}.{call.method} is not callable")
        self._targets[key] = target
        return target


class ServiceProducer(MessageProducer):
    """Queues calls of Python callables for a service handler (``kq queueservice``).

    ``publish_batch`` takes mappings with ``service``, ``method``, ``arguments`` and ``kwargs``.
    """

    def build(
        self,
        service: str,
        method: str,
        arguments: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        routing_key: str | None = None,
        ttl: float | None = None,
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Build (without sending) the message calling ``service.method(*arguments, **kwargs)``."""
        call = make_service_call(service, method, arguments, kwargs)
        key = call.routing_key if routing_key is None else routing_key
        return self.json_message(call.to_body(), key, ttl=ttl, delay=delay, headers=headers)
