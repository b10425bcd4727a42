"""Confirmed publishing on a real RabbitMQ, through the direct write path (``_publish.py``): every message
lands, an unroutable mandatory one is an error naming it, and a confirm that never comes ends the wait at
``confirm_timeout`` (pika's I/O loop does not run timer callbacks, so the deadline is the wait's own).

The broker is the integration harness's (``rabbitmq`` fixture).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pika
import pytest

from kq.core import Message, PublishError
from kq.core.driver import DriverSpec, QueueSpec
from kq.core.testing import unique_queue_name
from kq.drivers.rabbitmq import RabbitMQDriver
from kq.drivers.rabbitmq._producer import RabbitMQProducer
from kq.drivers.rabbitmq._publish import DirectPublish

if TYPE_CHECKING:
    from integration.conftest import RabbitMQEndpoint

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def url(rabbitmq: RabbitMQEndpoint) -> str:
    return rabbitmq.amqp_url


def _driver(url: str, queue: QueueSpec | None = None, **options: Any) -> RabbitMQDriver:
    return RabbitMQDriver(
        DriverSpec(name="rabbit", type="rabbitmq", options={"url": url, **options}),
        [queue] if queue is not None else [],
    )


@pytest.fixture
def queue(url: str) -> Iterator[str]:
    name = unique_queue_name("confirms")
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_delete(name)
        channel.exchange_delete(name)
    finally:
        connection.close()


def _depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        count: int = connection.channel().queue_declare(queue, passive=True).method.message_count
        return count
    finally:
        connection.close()


def test_sends_and_batches_land_and_went_to_the_socket(
    url: str, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    through_pika: list[str] = []
    confirms_taken: list[bool] = []
    publish, take = DirectPublish._through_pika, DirectPublish._take_confirms

    def spy_publish(self: DirectPublish, *args: Any) -> None:
        through_pika.append(args[0])
        publish(self, *args)

    def spy_take(self: DirectPublish, *args: Any) -> bool:
        confirms_taken.append(take(self, *args))
        return confirms_taken[-1]

    monkeypatch.setattr(DirectPublish, "_through_pika", spy_publish)
    monkeypatch.setattr(DirectPublish, "_take_confirms", spy_take)
    driver = _driver(url)
    try:
        producer = driver.producer(queue)
        assert isinstance(producer, RabbitMQProducer)
        for number in range(50):
            producer.send(Message(f"{number}".encode(), routing_key="a.b"))
        assert through_pika == []  # one at a time, pika never had anything left to write
        assert confirms_taken.count(True) >= 45  # the confirms read directly (a heartbeat would be pika's)
        assert producer._direct is not None
        assert producer._direct.direct
        # Bodies of many frames, more than the socket takes at once: what it leaves goes through pika.
        producer.send_batch([Message(b"x" * 300_000, routing_key="a.b") for _ in range(5)])
        producer.send(Message(b"last", routing_key="a.b"))
    finally:
        driver.close()
    assert _depth(url, queue) == 56


def test_an_unroutable_mandatory_message_is_an_error_naming_it(url: str, queue: str) -> None:
    spec = QueueSpec(name=queue, driver="rabbit", routing_keys=("a.*",), options={"mandatory": True})
    driver = _driver(url, spec)
    try:
        producer = driver.producer(queue)
        producer.send(Message(b"routed", routing_key="a.b", message_id="routed"))
        with pytest.raises(PublishError, match="lost matched no binding") as caught:
            producer.send(Message(b"lost", routing_key="b.c", message_id="lost"))
        assert (caught.value.published, caught.value.failed) == ([], ["lost"])
        producer.send(Message(b"routed again", routing_key="a.c"))  # the channel is still usable
    finally:
        driver.close()
    assert _depth(url, queue) == 2


class _Proxy:
    """A TCP proxy to the broker that can hold back what the broker sends (its confirms among it)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.holding = threading.Event()
        self.held = bytearray()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self.listener.accept()
            broker = socket.create_connection(self.upstream)
            self.sockets += [client, broker]
            threading.Thread(target=self._pump, args=(client, broker, False), daemon=True).start()
            self._pump(broker, client, True)

    def _pump(self, source: socket.socket, target: socket.socket, from_broker: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                with self.lock:
                    if from_broker and self.holding.is_set():
                        self.held += data
                        continue
                target.sendall(data)

    def release(self) -> None:
        with self.lock:
            self.holding.clear()
            if self.held and len(self.sockets) == 2:
                self.sockets[0].sendall(bytes(self.held))
            self.held.clear()

    def close(self) -> None:
        for sock in [self.listener, *self.sockets]:
            sock.close()


def test_a_confirm_that_never_comes_ends_the_wait_at_confirm_timeout(url: str, queue: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    proxy = _Proxy((parsed.hostname or "127.0.0.1", parsed.port or 5672))
    credentials = parsed.netloc.rsplit("@", 1)[0] + "@" if "@" in parsed.netloc else ""
    proxied = parsed._replace(netloc=f"{credentials}127.0.0.1:{proxy.port}").geturl()
    driver = _driver(proxied, confirm_timeout=0.5)
    try:
        producer = driver.producer(queue)
        producer.send(Message(b"first", message_id="first"))  # connect, declare, confirm mode
        proxy.holding.set()
        started = time.monotonic()
        with pytest.raises(PublishError, match="did not confirm 1 of 1") as caught:
            producer.send(Message(b"unconfirmed", message_id="unconfirmed"))
        waited = time.monotonic() - started
        assert caught.value.failed == ["unconfirmed"]
        assert 0.45 <= waited < 5, f"the wait took {waited:.2f}s for a confirm_timeout of 0.5s"
        # The late confirm is not taken for the next message's: it is confirmed by its own.
        proxy.release()
        producer.send(Message(b"after", message_id="after"))
    finally:
        proxy.release()
        driver.close()
        proxy.close()
    assert _depth(url, queue) == 3  # the unconfirmed one reached the queue all the same
