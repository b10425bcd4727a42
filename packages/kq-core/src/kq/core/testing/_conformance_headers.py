"""Header tests (part of :class:`~kq.core.testing.BasicConformance`): what a producer may put in headers
arrives unchanged, and what brokers reserve is refused before it reaches one."""

from __future__ import annotations

import pytest

from kq.core._driver import Driver
from kq.core._errors import MessageFormatError
from kq.core._message import Message
from kq.core.handlers._producer import GenericMessageProducer
from kq.core.testing._conformance_base import DriverTestBase
from kq.core.testing._helpers import receive_within

#: Headers no broker may lose or alter: more than SQS's 10 message attributes, an empty value, and
#: control characters (a terminal colour escape, a line feed, a tab, a carriage return).
AWKWARD_HEADERS: dict[str, str] = {
    **{f"x-h{i:02d}": f"value {i}" for i in range(12)},
    "x-empty": "",
    "x-ansi": "\x1b[31mred\x1b[0m",
    "x-newline": "first line\nsecond line",
    "x-tab": "a\tb",
    "x-return": "a\r\nb",
    "x-colon": "a: b",
    "x-unicode": "ünïcode ✓",
}

#: Header names brokers reserve (STOMP frame headers, JMS properties, RabbitMQ's x-death): kq refuses
#: them at publish, before a broker drops the connection over them.
RESERVED_NAMES = ("priority", "timestamp", "message-id", "expires", "JMSType", "x-death")


class HeaderTests(DriverTestBase):
    """Header round trips and refusals; every driver."""

    def test_many_headers_with_empty_and_control_character_values_round_trip(
        self, driver: Driver, queue: str
    ) -> None:
        """More than 10 headers, an empty value and control characters in values arrive unchanged,
        whatever the broker allows in its own attributes (drivers pack headers as their broker needs)."""
        sent = Message(b'"headers"', headers=AWKWARD_HEADERS)
        self.publish(driver, queue, sent)
        with driver.consumer(queue) as consumer:
            got = receive_within(consumer, self.receive_timeout)
            consumer.ack(got)
        changed = {
            name: (value, got.headers.get(name, "<missing>"))
            for name, value in AWKWARD_HEADERS.items()
            if got.headers.get(name) != value
        }
        assert not changed, f"headers lost or altered on the way (sent, received): {changed}"

    @pytest.mark.parametrize("name", RESERVED_NAMES)
    def test_reserved_header_names_are_refused_at_publish(
        self, driver: Driver, queue: str, name: str
    ) -> None:
        """A header name a broker reserves is refused with MessageFormatError by every way kq publishes
        (a Message, an application producer, a worker's retry copy) and nothing reaches the queue; the
        driver stays usable."""
        with pytest.raises(MessageFormatError, match="reserved"):
            Message(b"x", headers={name: "1"})
        with pytest.raises(MessageFormatError, match="reserved"):
            GenericMessageProducer(driver, queue).publish(b'"x"', headers={name: "1"})
        self.publish(driver, queue, Message(b'"first"', headers={"x-ok": "1"}))
        with driver.consumer(queue) as consumer:
            first = receive_within(consumer, self.receive_timeout)
            with pytest.raises(MessageFormatError, match="reserved"):
                consumer.retry(first, {**first.headers, name: "1"})
            assert not first.settled, "a refused retry copy must leave the original unsettled"
            consumer.ack(first)
            self.publish(driver, queue, Message(b'"after"', headers={"x-ok": "2"}))
            after = receive_within(consumer, self.receive_timeout)
            consumer.ack(after)
            assert after.body == b'"after"', "the refused copy was queued after all"
            assert after.headers.get("x-ok") == "2"
            assert consumer.receive(self.idle_timeout) is None
