"""kq against a real RabbitMQ with real processes: the tutorial, managequeue, interoperability with plain
pika (and so with the PHP library), crashes, long commands, and a broker restart under load."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pika
import psutil
import pytest

from kq.core import (
    App,
    ConsumeLoop,
    Delivery,
    Handler,
    Limits,
    parse_config,
    remove_dead_letters,
    retry_dead_letters,
    show_dead_letters,
)
from kq.core.testing import Workspace, unique_queue_name

if TYPE_CHECKING:
    from integration.conftest import RabbitMQEndpoint

pytestmark = pytest.mark.rabbitmq


def _config(rabbitmq: RabbitMQEndpoint, queue: str, extra: str = "", driver: str = "") -> str:
    management = f'management_url = "{rabbitmq.management_url}"\n' if rabbitmq.management_url else ""
    return f"""
default_driver = "rabbit"

[drivers.rabbit]
type = "rabbitmq"
url = "{rabbitmq.amqp_url}"
{management}{driver}
[queues.{queue}]
{extra}
[allow]
commands = ["echoback", "record"]
"""


@pytest.fixture
def queue() -> str:
    return unique_queue_name("e2e")


@pytest.fixture
def space(workspace: Workspace, rabbitmq: RabbitMQEndpoint, queue: str) -> Iterator[Workspace]:
    workspace.write_config(_config(rabbitmq, queue), recorder=False)
    yield workspace
    for name in (queue, f"{queue}.failed"):
        workspace.kq("managequeue", "delete", name, check=False)


def _plain_pika(rabbitmq: RabbitMQEndpoint) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(rabbitmq.amqp_url))


def test_tutorial_flow(space: Workspace, queue: str) -> None:
    """kq consume in the background, kq queuecommand echoback, the output file appears."""
    worker = space.start_consumer(queue, "testconsumer")
    space.kq("queuecommand", queue, "echoback", "hello world again", "-o", "f=testoutput2.txt")
    output = space.root / "testoutput2.txt"
    space.wait_for(output.exists, 30, "testoutput2.txt")
    assert output.read_text().rstrip().endswith("says: hello world again")
    assert space.stop(worker) == 0
    assert "Stopped because: received SIGTERM" in space.output("testconsumer")
    assert space.kq_json("managequeue", "info", queue)["messages"] == 0


def test_managequeue_actions(space: Workspace, queue: str, rabbitmq: RabbitMQEndpoint) -> None:
    setup = space.kq_json("managequeue", "setup", queue)
    assert setup == [{"queue": queue, "amqp_queue": queue, "exchange": queue, "bindings": ["#"]}]
    space.kq("queuemessage", queue, '{"n": 1}', "-n", "3", "-b")
    info = space.kq_json("managequeue", "info", queue)
    assert (info["exists"], info["messages"], info["consumers"]) == (True, 3, 0)
    configured = space.kq_json("managequeue", "list-configured")
    assert [item["queue"] for item in configured] == [queue]
    if rabbitmq.management_url:
        assert queue in space.kq_json("managequeue", "list-available")
    assert space.kq_json("managequeue", "purge", queue) == {"queue": queue, "purged": 3}
    assert space.kq_json("managequeue", "info", queue)["messages"] == 0
    assert space.kq_json("managequeue", "delete", queue) == {"queue": queue, "deleted": True}
    assert space.kq_json("managequeue", "info", queue)["exists"] is False
    if rabbitmq.management_url:
        assert queue not in space.kq_json("managequeue", "list-available")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("password", "the broker refused the user name or password"),
        ("vhost", "the broker refused access to the virtual host"),
    ],
)
def test_refused_connections_say_why_without_credentials(
    workspace: Workspace, rabbitmq: RabbitMQEndpoint, queue: str, change: str, reason: str
) -> None:
    url = pika.URLParameters(rabbitmq.amqp_url)
    user = url.credentials.username
    password = "wrong-hunter2" if change == "password" else url.credentials.password
    vhost = "kq-no-such-vhost" if change == "vhost" else urllib.parse.quote(url.virtual_host, safe="")
    bad = f"amqp://{user}:{password}@{url.host}:{url.port}/{vhost}"
    workspace.write_config(_config(rabbitmq, queue).replace(rabbitmq.amqp_url, bad), recorder=False)
    done = workspace.kq("managequeue", "info", queue, check=False)
    assert done.returncode == 69, done.stderr
    [line] = done.stderr.strip().splitlines()  # one line, no pika traceback at the default level
    assert line.startswith(f"kq: error: cannot connect to RabbitMQ at {url.host}:{url.port}/")
    assert reason in line
    assert password not in done.stderr + done.stdout


def test_php_shaped_message_from_plain_pika_is_executed(
    space: Workspace, queue: str, rabbitmq: RabbitMQEndpoint
) -> None:
    """What the PHP library's producer sends (no message id, no kq headers) runs on a kq worker whose
    queue accepts unsigned messages (the PHP library cannot sign)."""
    space.write_config(_config(rabbitmq, queue, extra="require_signature = false\n"), recorder=False)
    space.kq("managequeue", "setup", queue)
    body = {"command": "echoback", "arguments": ["from php"], "options": {"f": "php.txt"}}
    connection = _plain_pika(rabbitmq)
    try:
        connection.channel().basic_publish(
            exchange=queue,
            routing_key="kaliop_queueing.echoback",
            body=json.dumps(body),
            properties=pika.BasicProperties(content_type="application/json", delivery_mode=2),
        )
    finally:
        connection.close()
    worker = space.start_consumer(queue, "php", "-m", "1")
    assert worker.wait(timeout=60) == 0, space.output("php")
    assert (space.root / "php.txt").read_text().rstrip().endswith("says: from php")


def test_kq_message_read_back_with_plain_pika(
    space: Workspace, queue: str, rabbitmq: RabbitMQEndpoint
) -> None:
    """Body, content type, headers, routing key, expiration and persistence, as any AMQP client sees them."""
    sent = space.kq_json("queuecommand", queue, "echoback", "hi", "-o", "f=x.txt", "--ttl", "30")
    space.kq("queuemessage", queue, "plain text", "-c", "text/plain", "-H", "trace=abc", "-r", "hello.world")
    connection = _plain_pika(rabbitmq)
    try:
        channel = connection.channel()
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        assert json.loads(body) == {"command": "echoback", "arguments": ["hi"], "options": {"f": "x.txt"}}
        assert method.routing_key == "echoback"
        assert properties.content_type == "application/json"
        assert properties.message_id == sent["message_id"]
        assert properties.expiration == "30000"
        assert properties.delivery_mode == 2
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        assert (body, method.routing_key, properties.content_type) == (
            b"plain text",
            "hello.world",
            "text/plain",
        )
        headers = dict(properties.headers)
        assert headers.pop("trace") == "abc"
        # Signed by kq's producer (the local key, as no [signing] keys are configured):
        assert sorted(headers) == ["kq-key-id", "kq-nonce", "kq-signature", "kq-signed-at"]
        assert headers["kq-key-id"] == "local"
        assert properties.expiration is None
    finally:
        connection.close()


def test_sigkill_mid_message_loses_nothing(space: Workspace, queue: str, rabbitmq: RabbitMQEndpoint) -> None:
    """A worker killed while its command runs: the broker redelivers the message to the next worker."""
    space.write_config(_config(rabbitmq, queue))  # workers run the recorder command
    space.kq("queuecommand", queue, "record", "precious", "-o", "sleep-first=60")
    victim = space.start_consumer(queue, "victim")
    space.wait_for(lambda: ["start", "precious", "victim", "1"] in space.lines(), 30, "the victim's start")
    orphans = psutil.Process(victim.pid).children(recursive=True)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    for child in orphans:
        child.kill()
    rescuer = space.start_consumer(queue, "rescuer", "-m", "1")
    assert rescuer.wait(timeout=60) == 0, space.output("rescuer")
    assert ["done", "precious", "rescuer", "2"] in space.lines()
    assert space.kq_json("managequeue", "info", queue)["messages"] == 0


class _Slow(Handler):
    accepted_content_types = None

    def consume(self, body: Any, delivery: Delivery) -> Any:
        time.sleep(6)
        return body


def test_handler_longer_than_heartbeats_keeps_the_connection(
    rabbitmq: RabbitMQEndpoint, queue: str, tmp_path: Path
) -> None:
    """A 6 s handler on a 1 s heartbeat: no reconnection, acknowledged once, never redelivered."""
    config = parse_config(
        {
            "default_driver": "rabbit",
            "drivers": {"rabbit": {"type": "rabbitmq", "url": rabbitmq.amqp_url, "heartbeat": 1}},
            "queues": {queue: {}},
        },
        root=str(tmp_path),  # the local signing key goes there
    )
    with App(config) as app:
        app.producer(queue).publish(b'"slow"')
        loop = app.consume_loop(queue, handler=_Slow(), limits=Limits(messages=1, time=60), poll_interval=0.5)
        assert isinstance(loop, ConsumeLoop)
        loop.run()
        assert (loop.stats.consumed, loop.stats.reconnects) == (1, 0)
        driver, _ = app.queue(queue)
        with driver.consumer(queue) as consumer:
            assert consumer.receive(3) is None, "the message came back: its ack was lost"
        driver.queue_manager().delete(queue)


PRODUCER = """
import json, sys, time
from kq.core import App
config, queue, count, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with App.from_config(config) as app, open(log, "a") as confirmed:
    producer = app.producer(queue)
    for n in range(count):
        producer.publish(json.dumps({"n": n}))  # returns once the broker confirmed it
        confirmed.write(f"{n}\\n")
        confirmed.flush()
        time.sleep(0.02)
"""


def test_broker_restart_loses_no_confirmed_message(
    workspace: Workspace, rabbitmq: RabbitMQEndpoint, queue: str
) -> None:
    """Restart RabbitMQ while a producer publishes and a worker consumes: both recover by themselves, and
    every message the producer saw confirmed is consumed."""
    workspace.write_config(_config(rabbitmq, queue, extra='consumer = "kq_recorder:record"\n'))
    (workspace.root / "producer.py").write_text(PRODUCER)
    confirmed_log = workspace.root / "confirmed.log"
    worker = workspace.start_consumer(queue, "worker")
    producer = workspace.start(
        "producer",
        sys.executable,
        str(workspace.root / "producer.py"),
        str(workspace.config),
        queue,
        "600",
        str(confirmed_log),
    )

    def confirmed() -> set[int]:
        return {int(n) for n in confirmed_log.read_text().split()} if confirmed_log.exists() else set()

    def consumed() -> set[int]:
        return {int(words[0]) for words in workspace.lines()}

    workspace.wait_for(lambda: len(consumed()) >= 100, 60, "100 messages consumed before the restart")
    rabbitmq.restart()
    assert producer.wait(timeout=180) == 0, workspace.output("producer")
    assert len(confirmed()) == 600
    workspace.wait_for(lambda: consumed() >= confirmed(), 120, "every confirmed message consumed")
    assert workspace.stop(worker) == 0
    assert worker.returncode == 0
    output = workspace.output("worker")
    assert "reconnecting" in output, "the worker should have lost and regained its connection"
    assert workspace.output("producer").count("reconnecting") >= 1
    workspace.kq("managequeue", "delete", queue, check=False)


def test_retry_reaches_only_its_own_queue_when_the_exchange_is_shared(
    rabbitmq: RabbitMQEndpoint, tmp_path: Path
) -> None:
    """Two queues bound to one exchange: a retried copy goes back to the retrying queue only, with its
    routing key intact (it travels through the default exchange)."""
    exchange = unique_queue_name("shared")
    first, second = unique_queue_name("first"), unique_queue_name("second")
    config = parse_config(
        {
            "default_driver": "rabbit",
            "drivers": {"rabbit": {"type": "rabbitmq", "url": rabbitmq.amqp_url}},
            "queues": {first: {"exchange": exchange}, second: {"exchange": exchange}},
        },
        root=str(tmp_path),
    )
    with App(config) as app:
        driver, _ = app.queue(first)
        manager = driver.queue_manager()
        manager.execute("setup")
        try:
            app.producer(first).publish(b'"once"', routing_key="report.daily")
            with driver.consumer(first) as consumer:
                delivery = consumer.receive(10)
                assert delivery is not None
                consumer.retry(delivery, {**delivery.headers, "kq-attempt": "2"})
                again = consumer.receive(10)
                assert again is not None
                assert (again.message_id, again.routing_key) == (delivery.message_id, "report.daily")
                assert again.headers.get("kq-attempt") == "2"
                assert "kq-routing-key" not in again.headers
                consumer.ack(again)
            assert manager.info(second)["messages"] == 1, "the other queue must not receive the retried copy"
        finally:
            for name in (first, second):
                manager.delete(name)


class _AlwaysFailing(Handler):
    def consume(self, body: Any, delivery: Delivery) -> Any:
        raise RuntimeError(f"cannot handle {body!r}")


class _Recording(Handler):
    def __init__(self) -> None:
        self.ids: list[str] = []

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.ids.append(delivery.message_id)
        return body


def test_dead_letters_are_shown_retried_and_removed_on_a_real_broker(
    rabbitmq: RabbitMQEndpoint, tmp_path: Path
) -> None:
    """Browsing the dead-letter queue settles nothing it does not act on: RabbitMQ gets the other
    deliveries back when the browsing channel closes, in their order."""
    queue = unique_queue_name("redrive")
    config = parse_config(
        {
            "default_driver": "rabbit",
            "drivers": {"rabbit": {"type": "rabbitmq", "url": rabbitmq.amqp_url}},
            "queues": {queue: {"consumer": "noop", "retry": {"max_attempts": 2, "delay": 0.2}}},
        },
        root=str(tmp_path),
    )
    with App(config) as app:
        driver, spec = app.queue(queue)
        manager = driver.queue_manager()
        try:
            producer = app.producer(queue)
            ids = [producer.publish(f'{{"n": {n}}}', routing_key=f"job.{n}").message_id for n in range(3)]
            app.consume_loop(queue, handler=_AlwaysFailing(), limits=Limits(messages=6, time=30)).run()
            shown = show_dead_letters(app, queue, idle=0.5)
            assert [item["message_id"] for item in shown] == ids
            assert {(item["reason"], item["attempts"]) for item in shown} == {("failed", 2)}
            assert manager.info(spec.dead_letter_queue)["messages"] == 3, "show must leave every dead letter"
            assert retry_dead_letters(app, queue, [ids[1]], idle=0.5).done == (ids[1],)
            assert remove_dead_letters(app, queue, [ids[2]], idle=0.5).done == (ids[2],)
            assert [item["message_id"] for item in show_dead_letters(app, queue, idle=0.5)] == [ids[0]]
            worker = _Recording()
            app.consume_loop(queue, handler=worker, limits=Limits(messages=1, time=30)).run()
            assert worker.ids == [ids[1]]
            assert manager.info(queue)["messages"] == 0
        finally:
            for name in (queue, spec.dead_letter_queue):
                manager.delete(name)
