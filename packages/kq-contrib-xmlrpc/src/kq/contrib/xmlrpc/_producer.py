"""The XML-RPC producer: queues calls for an XML-RPC consumer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kq.contrib.xmlrpc._call import make_xmlrpc_call
from kq.core import Message, MessageProducer


class XmlRpcProducer(MessageProducer):
    """Queues XML-RPC calls; get one with ``app.producer_of(XmlRpcProducer, queue)``.

    The default routing key is the server, ``.`` and the method, with ``:`` and ``/`` turned into ``.``
    (``http://h:8000/RPC2`` + ``add`` -> ``http...h.8000.RPC2.add``), as in the PHP library.
    """

    def build(
        self,
        server: str,
        method: str,
        arguments: Iterable[Any] = (),
        *,
        routing_key: str | None = None,
        ttl: float | None = None,
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Build (without sending) the message calling ``method(*arguments)`` on ``server``.

        Raises:
            MessageFormatError: the server, the method or an argument would be refused by consumers.
        """
        call = make_xmlrpc_call(server, method, arguments)
        key = call.routing_key if routing_key is None else routing_key
        return self.json_message(call.to_body(), key, ttl=ttl, delay=delay, headers=headers)

    def publish(self, server: str, method: str, arguments: Iterable[Any] = (), **options: Any) -> Message:
        """Queue one call; keyword options as for :meth:`build`. Returns the sent message."""
        message = self.build(server, method, arguments, **options)
        self.send([message])
        return message

    def publish_batch(self, calls: Iterable[Mapping[str, Any]], **options: Any) -> list[Message]:
        """Queue several calls (mappings with ``server``, ``method`` and ``arguments``) as one batch."""
        messages = [self.build(c["server"], c["method"], c.get("arguments") or (), **options) for c in calls]
        self.send(messages)
        return messages
