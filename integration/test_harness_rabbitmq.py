"""The RabbitMQ harness itself: the broker it gives is usable, observable, durable and speaks STOMP."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import pika  # type: ignore[import-untyped, unused-ignore]
import pytest
import requests

if TYPE_CHECKING:
    from integration.conftest import RabbitMQEndpoint

pytestmark = pytest.mark.rabbitmq

PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
TRANSIENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Transient)


@contextmanager
def channel(amqp_url: str) -> Iterator[Any]:
    """A channel with publisher confirms, so a publish has reached the broker when it returns."""
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as connection:
        ch = connection.channel()
        ch.confirm_delivery()
        yield ch


@pytest.fixture
def queue_name(rabbitmq: RabbitMQEndpoint) -> Iterator[str]:
    """A fresh durable queue, deleted afterwards (the broker lives for the whole session)."""
    name = f"kq-harness-{uuid.uuid4().hex[:12]}"
    with channel(rabbitmq.amqp_url) as ch:
        ch.queue_declare(name, durable=True)
    yield name
    with channel(rabbitmq.amqp_url) as ch:
        ch.queue_delete(name)


def test_publish_and_consume_a_persistent_message(rabbitmq: RabbitMQEndpoint, queue_name: str) -> None:
    with channel(rabbitmq.amqp_url) as ch:
        ch.basic_publish("", queue_name, b"hello", PERSISTENT)
        method, properties, body = ch.basic_get(queue_name)
        assert method is not None, "the message did not arrive"
        assert body == b"hello"
        assert properties.delivery_mode == pika.DeliveryMode.Persistent.value
        ch.basic_ack(method.delivery_tag)
        assert ch.queue_declare(queue_name, passive=True).method.message_count == 0


def test_management_api_lists_the_queue_with_its_depth(rabbitmq: RabbitMQEndpoint, queue_name: str) -> None:
    if rabbitmq.management_url is None:
        pytest.skip("KQ_TEST_RABBITMQ_MANAGEMENT_URL is not set")
    with channel(rabbitmq.amqp_url) as ch:
        for i in range(3):
            ch.basic_publish("", queue_name, f"m{i}".encode(), PERSISTENT)
    url = f"{rabbitmq.management_url}/api/queues/%2F/{quote(queue_name, safe='')}"
    # Queue statistics are sampled (every 500 ms with the harness's config): poll for the count.
    deadline = time.monotonic() + 20.0
    while True:
        response = requests.get(url, auth=("guest", "guest"), timeout=5.0)
        assert response.status_code == 200, response.text
        info = response.json()
        if info.get("messages") == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert info["name"] == queue_name
    assert info["durable"] is True
    assert info["messages"] == 3


def test_persistent_message_survives_a_restart(rabbitmq: RabbitMQEndpoint, queue_name: str) -> None:
    with channel(rabbitmq.amqp_url) as ch:
        ch.basic_publish("", queue_name, b"kept", PERSISTENT)
        # A transient message in the same durable queue is dropped by a restart: its absence afterwards
        # shows that the broker really went down, not that restart() did nothing.
        ch.basic_publish("", queue_name, b"lost", TRANSIENT)
    rabbitmq.restart()
    with channel(rabbitmq.amqp_url) as ch:
        assert ch.queue_declare(queue_name, passive=True).method.message_count == 1
        method, _, body = ch.basic_get(queue_name, auto_ack=True)
        assert method is not None
        assert body == b"kept"


def test_stomp_port_speaks_stomp(rabbitmq: RabbitMQEndpoint) -> None:
    if rabbitmq.stomp_url is None:
        pytest.skip("KQ_TEST_RABBITMQ_STOMP_URL is not set")
    address = urlsplit(rabbitmq.stomp_url)
    assert address.hostname is not None
    assert address.port is not None
    frame = b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00"
    with socket.create_connection((address.hostname, address.port), timeout=5.0) as sock:
        sock.sendall(frame)
        reply = sock.recv(4096)
    assert reply.startswith(b"CONNECTED"), reply


def test_rabbitmqctl_reaches_the_node(rabbitmq: RabbitMQEndpoint, queue_name: str) -> None:
    """The CLI finds the node's cookie and epmd: the harness's environment is self-consistent."""
    if rabbitmq.broker is None:
        pytest.skip("only for a broker started by the harness")
    assert queue_name in rabbitmq.broker.ctl("list_queues", "name")
